// damage_sweep: every damaged copy of a small database is refused, or read correctly; never
// returned as good, never a crash, a hang, or a write (docs/reliability.md, "The damage sweep").
//
// A child process builds a small database through the public API (three arrays of different
// dtypes, orders and shapes in 4 KiB blocks, one of them with 30 blocks of small payloads that
// LMDB keeps inside leaf pages, so that the blocks B-tree has a branch page; a rename, a resize,
// a drop, five commits, so that both of LMDB's meta pages and the change log hold something)
// and records the truth: every array's name, dtype, order, shape, stored blocks and bytes, and
// which arrays changed since the second commit.
//
// The parent then classifies the pages of data.mdb (walking the trees of the newest meta page,
// then those of the older one) and, for each case, writes a copy of the database with one byte
// changed (xor 0xff, xor 0x01, +1, -1 or -2: the small changes hit transaction ids and counters)
// and forks a child that, within a time limit,
//   1. opens it read-only, lists the names, reads every array completely (View::Load), its
//      stored blocks, and the arrays changed since the second commit;
//   2. runs the verifier: Snapshot::VerifyRecords and Snapshot::VerifyBlocks of every array;
//   3. opens it for writing (default options) and closes it without a change;
// and reports on a pipe. The parent classifies each case:
//   detected (open)    the read-only open returned an error (the structural check, the format
//                      and commit records)
//   detected (read)    the open succeeded, a later read returned an error
//   detected (verify)  the reads were right, only the verifier reported damage
//   read-bad/verify    a read returned something else than the truth without an error, and the
//                      verifier reported damage (damage only `verify` finds: a lost record)
//   harmless           everything succeeded and equals the truth
//   AS-GOOD            everything succeeded and something differs from the truth   (failure)
//   CRASH              the child died of a signal                                   (failure)
//   HANG               the child did not finish within the time limit               (failure)
//   WROTE              data.mdb changed (any of its bytes, its size, or data past its end) (failure)
//
// Usage: damage_sweep [--full] [--jobs N] [--timeout S] [--kind K] [--case OFFSET:PATTERN]
//                     [--keep DIR] [--list] [--save DIR] [--from DIR]
//   default   the short sweep of `make test` (~560 cases): every byte of both meta pages that
//             LMDB reads, their transaction ids with every pattern, and a seeded sample of the
//             other pages: 12 bytes of each branch and leaf page, 3 of each overflow run's headers,
//             1 or 2 of the rest ($BIGARRAY_SEED replays the sample)
//   --full    every byte of every structural page (meta, branch, leaf) with xor 0xff, the bytes
//             LMDB reads of the meta pages with every pattern, the page headers and node
//             pointers also with xor 0x01, every byte of the overflow runs' headers, and a sample
//             of the rest (`make torture`, ~49,000 cases)
//   --case    one case, with the child's messages; --keep DIR leaves its damaged copy in DIR
//   --list    the page map only
//   --save    keeps the database built (data.mdb, truth.txt) in DIR; --from sweeps it instead
//             of building one. Array ids are random, so each build lays data.mdb out
//             differently: a case is replayed with --from on the template it failed on, which
//             a sweep with failures saves by itself (it prints where)
// Exit status: 0 when no case failed.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bigarray/database.h"
#include "bigarray/storage/block_store.h"
#include "test_util.h"

using namespace bigarray;

namespace {

// ---- small utilities --------------------------------------------------------------------------

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "damage_sweep: %s\n", what.c_str());
  std::exit(2);
}
[[noreturn]] void DieErrno(const std::string& what) { Die(what + ": " + std::strerror(errno)); }

// Forks a child that runs `child` with the write end of a pipe, then exits; returns its pid and
// the read end.
template <typename Child>
std::pair<pid_t, int> ForkWriter(Child&& child) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) DieErrno("pipe");
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) DieErrno("fork");
  if (pid == 0) {
    close(fds[0]);
    child(fds[1]);
    _exit(0);
  }
  close(fds[1]);
  return {pid, fds[0]};
}

void WriteAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) DieErrno("write");
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void PwriteAll(int fd, const void* data, size_t n, off_t at) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, at);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) DieErrno("pwrite");
    p += w;
    at += w;
    n -= static_cast<size_t>(w);
  }
}

// Reads [at, at + n) of fd; false on a short file.
bool PreadAll(int fd, void* data, size_t n, off_t at) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = pread(fd, p, n, at);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) DieErrno("pread");
    if (r == 0) return false;
    p += r;
    at += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// The first `limit` bytes of a file (all of it by default), and its size.
std::vector<unsigned char> ReadFile(const std::string& path, off_t* size, uint64_t limit = UINT64_MAX) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) DieErrno("open " + path);
  struct stat st;
  if (fstat(fd, &st) != 0) DieErrno("stat " + path);
  *size = st.st_size;
  std::vector<unsigned char> bytes(static_cast<size_t>(std::min<uint64_t>(limit, static_cast<uint64_t>(st.st_size))));
  if (!PreadAll(fd, bytes.data(), bytes.size(), 0)) Die("short read of " + path);
  if (close(fd) != 0) DieErrno("close " + path);
  return bytes;
}

uint64_t Fnv(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

template <typename T>
T Get(const std::vector<unsigned char>& p, size_t at) {
  T v;
  std::memcpy(&v, p.data() + at, sizeof v);
  return v;
}

// ---- the database and its truth -------------------------------------------------------------

constexpr uint64_t kBlock = 4096;
constexpr int kGammaBlocks = 30;    // blocks of 200 bytes each: stored inside leaf pages
constexpr size_t kGammaPayload = 200;

// What a reader must see: one line per array, sorted by name, then the arrays changed since
// the second commit.
struct Truth {
  std::vector<std::string> arrays;    // "name dtype order shape blocks=N fnv=H"
  std::string changed;                // "alpha,beta2,gamma"
  uint64_t since = 0;                 // the commit ArraysChangedSince is asked about
  std::vector<std::pair<uint64_t, uint64_t>> ids;  // array id, block size: for the verifier
};

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::vector<std::string> parts;
  for (int64_t d : shape) parts.push_back(std::to_string(d));
  return Join(parts, ",");
}

// One array as a reader sees it: its line of the truth, or the error that stopped the read.
Result<std::string> Describe(Database& db, const std::string& name) {
  BA_ASSIGN_OR_RETURN(Array a, db.Get(name));
  if (a.nbytes() > (64 << 20)) {  // a damaged shape: do not read gigabytes, it differs anyway
    return name + " " + a.dtype().str() + " shape=" + ShapeText(a.shape()) + " (too large to read)";
  }
  BA_ASSIGN_OR_RETURN(View v, a.view());
  BA_RETURN_IF_ERROR(v.Load());  // only then may the bytes be read
  const uint64_t h = Fnv(v.data(), static_cast<size_t>(v.nbytes()));
  BA_ASSIGN_OR_RETURN(std::vector<uint64_t> blocks, a.StoredBlocks());
  BA_ASSIGN_OR_RETURN(uint64_t stored, a.BlocksStored());
  std::vector<std::string> list;
  for (uint64_t b : blocks) list.push_back(std::to_string(b));
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016" PRIx64, h);
  return name + " " + a.dtype().str() + " " + static_cast<char>(a.order()) + " shape=" + ShapeText(a.shape()) +
         " bs=" + std::to_string(a.block_size()) + " stored=" + std::to_string(stored) + ":" + Join(list, ",") +
         " fnv=" + hex;
}

struct ReadOutcome {
  Status read;    // first error of the reads
  bool at_open = false;  // `read` is the open's error
  Status verify;  // first error of the verifier
  std::vector<std::string> arrays;
  std::string changed;
};

// The reads and the verifier of one case (or of the truth).
ReadOutcome ReadEverything(const std::string& path, const Truth* truth, int report_fd) {
  ReadOutcome out;
  auto phase = [&](const char* p) {
    if (report_fd >= 0) {
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
      std::string line = std::string("P ") + p + " " + std::to_string(t) + "\n";
      WriteAll(report_fd, line.data(), line.size());
    }
  };
  std::vector<std::pair<uint64_t, uint64_t>> ids;  // to verify
  {
    phase("open-read-only");
    Options o;
    o.read_only = true;
    o.create_if_missing = false;
    o.cache_bytes = 4 << 20;
    o.loader_threads = 1;
    auto db = Database::Open(path, o);
    if (!db.ok()) {
      out.read = db.status();
      out.at_open = true;
    } else {
      phase("names");
      auto names = db->Names();
      if (!names.ok()) {
        out.read = names.status();
      } else {
        std::vector<std::string> sorted = *names;
        std::sort(sorted.begin(), sorted.end());
        phase("read-arrays");
        for (const std::string& name : sorted) {
          auto line = Describe(*db, name);
          if (!line.ok()) {
            out.read = line.status();
            break;
          }
          out.arrays.push_back(*line);
        }
      }
      if (out.read.ok()) {
        phase("changes");
        auto changed = db->ArraysChangedSince(truth ? truth->since : 2);
        if (!changed.ok()) {
          out.read = changed.status();
        } else {
          std::vector<std::string> c = *changed;
          std::sort(c.begin(), c.end());
          out.changed = Join(c, ",");
        }
      }
    }
  }
  // The verifier, on the store itself: every record, and every block of every array the
  // catalog lists ("n/<name>" -> id, "a/<id>" -> record with "block_size=") and of the truth.
  phase("verify");
  storage::LmdbOptions lo;
  lo.read_only = true;
  lo.create_if_missing = false;
  auto store = storage::OpenLmdbStore(path, lo);
  if (!store.ok()) {
    out.verify = store.status();
    return out;
  }
  auto snap = (*store)->OpenSnapshot();
  if (!snap.ok()) {
    out.verify = snap.status();
    return out;
  }
  auto damaged = [&](const Status& st) {
    if (out.verify.ok()) out.verify = st;
  };
  Status st = (*snap)->VerifyRecords(damaged);
  if (!st.ok()) damaged(st);
  std::map<uint64_t, uint64_t> block_sizes;
  if (truth) {
    for (const auto& [id, bs] : truth->ids) block_sizes[id] = bs;
  }
  st = (*snap)->ForEachMeta("a/", [&](std::string_view key, std::string_view value) {
    const uint64_t id = std::strtoull(std::string(key.substr(2)).c_str(), nullptr, 16);
    const size_t at = value.find("block_size=");
    uint64_t bs = at == std::string_view::npos ? 0 : std::strtoull(std::string(value.substr(at + 11)).c_str(), nullptr, 10);
    if (bs == 0 || bs > (64 << 20)) bs = kBlock;  // a damaged record: the blocks still get read
    block_sizes.emplace(id, bs);
    return true;
  });
  if (!st.ok()) damaged(st);
  for (const auto& [id, bs] : block_sizes) {
    st = (*snap)->VerifyBlocks(id, bs, [&](storage::BlockIndex, const Status& s) { damaged(s); }).status();
    if (!st.ok()) damaged(st);
  }
  return out;
}

// Builds the database at `path` and returns its truth. Runs in a child: the parent never opens
// a database, so that every case's child starts from a process without library threads.
Truth BuildDatabase(const std::string& path) {
  Options o;
  o.cache_bytes = 8 << 20;
  Database db = Database::Open(path, o).value();
  const ArrayOptions c_order{Order::kC, kBlock}, f_order{Order::kF, kBlock};
  std::map<std::string, std::vector<unsigned char>> expect;
  auto fill = [&](Array& a, uint64_t tag) {
    View v = a.view().value();
    auto bytes = testing::Pattern(static_cast<size_t>(v.nbytes()), tag);
    std::memcpy(v.data(), bytes.data(), bytes.size());
    expect[a.name()].assign(reinterpret_cast<unsigned char*>(bytes.data()),
                            reinterpret_cast<unsigned char*>(bytes.data()) + bytes.size());
  };
  // Commit 1 (after the store's own first): alpha <f8 (64, 100) C in 13 blocks of overflow
  // pages; beta >i4 (37, 11, 3) F.
  Array alpha = db.Create("alpha", {64, 100}, "<f8", c_order).value();
  fill(alpha, 1);
  Array beta = db.Create("beta", {37, 11, 3}, ">i4", f_order).value();
  fill(beta, 2);
  db.Commit().ThrowIfError();
  // A reader that stays on this commit, so that the change log keeps the records of the
  // commits after it (each commit trims what no open snapshot needs).
  Options ro;
  ro.read_only = true;
  Database reader = Database::Open(path, ro).value();
  // Commit 2: gamma u1 in 150 blocks of which only the first 200 bytes are not zero (stored in
  // leaf pages); tmp, dropped later.
  Array gamma = db.Create("gamma", {kGammaBlocks * static_cast<int64_t>(kBlock)}, "u1", c_order).value();
  {
    View v = gamma.view().value();
    std::vector<unsigned char>& e = expect["gamma"];
    e.assign(static_cast<size_t>(v.nbytes()), 0);
    for (int b = 0; b < kGammaBlocks; ++b) {
      auto bytes = testing::Pattern(kGammaPayload, 100 + b);
      std::memcpy(v.data() + b * kBlock, bytes.data(), bytes.size());
      std::memcpy(e.data() + b * kBlock, bytes.data(), bytes.size());
    }
  }
  Array tmp = db.Create("tmp", {1000}, "<i8", c_order).value();
  fill(tmp, 3);
  db.Commit().ThrowIfError();
  Truth truth;
  truth.since = db.snapshot_commit();
  // Commit 3: change a few elements of alpha; rename beta to beta2.
  {
    View v = alpha.view().value();
    for (int64_t i = 0; i < 6400; i += 700) {
      const double x = -static_cast<double>(i);
      std::memcpy(v.data() + i * 8, &x, 8);
      std::memcpy(expect["alpha"].data() + i * 8, &x, 8);
    }
  }
  db.Rename("beta", "beta2").ThrowIfError();
  expect["beta2"] = std::move(expect["beta"]);
  expect.erase("beta");
  db.Commit().ThrowIfError();
  // Commit 4: shrink alpha to (50, 100) (its blocks past the end are released); a byte of gamma.
  db.Get("alpha").value().Resize({50, 100}).ThrowIfError();
  expect["alpha"].resize(50 * 100 * 8);
  {
    View v = db.Get("gamma").value().view().value();
    v.data()[7 * kBlock + 3] = std::byte{0x5a};
    expect["gamma"][7 * kBlock + 3] = 0x5a;
  }
  db.Commit().ThrowIfError();
  // Commit 5: drop tmp.
  db.Drop("tmp").ThrowIfError();
  expect.erase("tmp");
  db.Commit().ThrowIfError();

  // The truth, as a reader of the healthy database sees it; checked against what was written.
  const std::vector<std::string> names = db.Names().value();
  for (const std::string& name : names) {
    Array a = db.Get(name).value();
    View v = a.view().value();
    v.Load().ThrowIfError();
    const auto& e = expect.at(name);
    if (static_cast<size_t>(v.nbytes()) != e.size() || std::memcmp(v.data(), e.data(), e.size()) != 0) {
      Die("the healthy database does not read back what was written to " + name);
    }
  }
  std::map<std::string, uint64_t> name_ids;  // ids from the catalog, for the verifier
  {
    storage::LmdbOptions lo;
    auto store = storage::OpenLmdbStore(path, lo).value();
    auto snap = store->OpenSnapshot().value();
    snap->ForEachMeta("n/", [&](std::string_view k, std::string_view v) {
          name_ids[std::string(k.substr(2))] = std::strtoull(std::string(v).c_str(), nullptr, 16);
          return true;
        }).ThrowIfError();
  }
  for (const auto& [name, id] : name_ids) truth.ids.emplace_back(id, kBlock);
  ReadOutcome r = ReadEverything(path, &truth, -1);
  if (!r.read.ok() || !r.verify.ok()) Die("the healthy database does not verify: " + r.read.ToString() + " " + r.verify.ToString());
  truth.arrays = r.arrays;
  truth.changed = r.changed;
  if (truth.arrays.size() != 3 || truth.changed != "alpha,beta2,gamma") {
    Die("unexpected truth: " + Join(truth.arrays, "; ") + " changed: " + truth.changed);
  }
  return truth;
}

std::string EncodeTruth(const Truth& t) {
  std::ostringstream s;
  s << t.since << "\n" << t.changed << "\n" << t.ids.size() << "\n";
  for (const auto& [id, bs] : t.ids) s << id << " " << bs << "\n";
  for (const std::string& a : t.arrays) s << a << "\n";
  return s.str();
}

Truth DecodeTruth(const std::string& text) {
  std::istringstream s(text);
  Truth t;
  size_t n = 0;
  s >> t.since;
  s.ignore();
  std::getline(s, t.changed);
  s >> n;
  for (size_t i = 0; i < n; ++i) {
    uint64_t id, bs;
    s >> id >> bs;
    t.ids.emplace_back(id, bs);
  }
  s.ignore();
  for (std::string line; std::getline(s, line);) t.arrays.push_back(line);
  if (!s.eof() || t.arrays.empty()) Die("malformed truth from the builder");
  return t;
}

// ---- the pages of data.mdb ------------------------------------------------------------------

// LMDB 0.9's layout (storage/src/lmdb_check.cc describes it): page header u64 pgno, u16 pad,
// u16 flags (at 10), u16 lower, u16 upper (overflow: u32 page count at 12); the meta record at
// 16 of pages 0 and 1: ..., MDB_db free at 24, MDB_db main at 72 (48 bytes each: root at 40),
// u64 last_pg at 120, u64 txnid at 128.
constexpr size_t kMetaUsed = 16 + 136;  // the bytes of a meta page LMDB reads
constexpr uint16_t kBranch = 0x01, kLeaf = 0x02, kOverflow = 0x04;
constexpr uint16_t kBigData = 0x01, kSubData = 0x02;

enum Kind { kMetaPage, kBranchPage, kLeafPage, kOverflowHead, kOverflowData, kOlderTree, kFreePage, kKinds };
const char* const kKindNames[kKinds] = {"meta", "branch", "leaf", "overflow-head", "overflow-data", "older-state",
                                        "free"};

struct PageMap {
  size_t psize = 4096;
  uint64_t pages = 0;  // last_pg + 1 of the newest meta page
  std::vector<int> kind;
  std::vector<std::pair<uint16_t, uint16_t>> bounds;  // lower, upper of branch and leaf pages
};

class PageWalker {
 public:
  PageWalker(const std::vector<unsigned char>& file, PageMap& map, Kind branch, Kind leaf, Kind head, Kind data)
      : file_(file), map_(map), branch_(branch), leaf_(leaf), head_(head), data_(data) {}

  void Tree(uint64_t root, int depth = 0) {
    if (root == ~uint64_t{0}) return;
    if (root >= map_.pages || depth > 32) Die("the healthy database has a page out of range");
    if (map_.kind[root] != kFreePage) return;  // shared with the newer state's tree
    const size_t base = root * map_.psize;
    std::vector<unsigned char> p(file_.begin() + static_cast<long>(base), file_.begin() + static_cast<long>(base + map_.psize));
    const uint16_t flags = Get<uint16_t>(p, 10), lower = Get<uint16_t>(p, 12), upper = Get<uint16_t>(p, 14);
    if (!(flags & (kBranch | kLeaf))) Die("the healthy database has a tree page that is neither branch nor leaf");
    map_.kind[root] = (flags & kBranch) ? branch_ : leaf_;
    map_.bounds[root] = {lower, upper};
    for (size_t i = 0; i < (lower - 16u) / 2; ++i) {
      const size_t node = Get<uint16_t>(p, 16 + 2 * i);
      const uint16_t lo = Get<uint16_t>(p, node), hi = Get<uint16_t>(p, node + 2);
      const uint16_t nflags = Get<uint16_t>(p, node + 4), ksize = Get<uint16_t>(p, node + 6);
      if (flags & kBranch) {
        Tree(lo | uint64_t{hi} << 16 | uint64_t{nflags} << 32, depth + 1);
        continue;
      }
      const size_t data = node + 8 + ksize;
      if (nflags & kBigData) {
        const uint64_t first = Get<uint64_t>(p, data);
        const uint32_t count = Get<uint32_t>(file_, first * map_.psize + 12);
        if (!(Get<uint16_t>(file_, first * map_.psize + 10) & kOverflow)) Die("not an overflow page");
        if (first + count > map_.pages) Die("the healthy database has an overflow run out of range");
        for (uint64_t k = 0; k < count; ++k) {
          if (map_.kind[first + k] == kFreePage) map_.kind[first + k] = k == 0 ? head_ : data_;
        }
      } else if (nflags & kSubData) {
        Tree(Get<uint64_t>(p, data + 40), depth + 1);
      }
    }
  }

 private:
  const std::vector<unsigned char>& file_;
  PageMap& map_;
  Kind branch_, leaf_, head_, data_;
};

PageMap MapPages(const std::vector<unsigned char>& file) {
  PageMap map;
  map.psize = Get<uint32_t>(file, 16 + 24 + 0);  // the free DB record's pad is the page size
  if (map.psize != 4096) Die("expected 4 KiB pages, not " + std::to_string(map.psize));
  std::vector<unsigned char> m0(file.begin(), file.begin() + 4096), m1(file.begin() + 4096, file.begin() + 8192);
  const bool newest1 = Get<uint64_t>(m1, 16 + 128) > Get<uint64_t>(m0, 16 + 128);
  const auto& newest = newest1 ? m1 : m0;
  const auto& older = newest1 ? m0 : m1;
  map.pages = Get<uint64_t>(newest, 16 + 120) + 1;
  if (map.pages * map.psize > file.size()) Die("data.mdb is shorter than its pages");
  map.kind.assign(map.pages, kFreePage);
  map.bounds.assign(map.pages, {0, 0});
  map.kind[0] = map.kind[1] = kMetaPage;
  PageWalker now(file, map, kBranchPage, kLeafPage, kOverflowHead, kOverflowData);
  now.Tree(Get<uint64_t>(newest, 16 + 24 + 40));
  now.Tree(Get<uint64_t>(newest, 16 + 72 + 40));
  PageWalker before(file, map, kOlderTree, kOlderTree, kOlderTree, kOlderTree);
  before.Tree(Get<uint64_t>(older, 16 + 24 + 40));
  before.Tree(Get<uint64_t>(older, 16 + 72 + 40));
  return map;
}

// ---- cases ----------------------------------------------------------------------------------

// kIntact changes nothing: the harness's self-check uses it.
enum Pattern { kXorFF, kXor01, kPlus1, kMinus1, kMinus2, kPatterns, kIntact = kPatterns };
const char* const kPatternNames[kPatterns + 1] = {"xor-ff", "xor-01", "plus-1", "minus-1", "minus-2", "intact"};

unsigned char Apply(Pattern p, unsigned char b) {
  switch (p) {
    case kXorFF: return b ^ 0xff;
    case kXor01: return b ^ 0x01;
    case kPlus1: return static_cast<unsigned char>(b + 1);
    case kMinus1: return static_cast<unsigned char>(b - 1);
    case kMinus2: return static_cast<unsigned char>(b - 2);
    default: return b;
  }
}

struct Case {
  uint64_t offset;
  Pattern pattern;
};

// The short sweep (make test, ~560 cases) and the full one (make torture, ~49,000).
std::vector<Case> ChooseCases(const PageMap& map, const std::vector<unsigned char>& file, bool full, uint64_t seed,
                              int only_kind) {
  std::vector<Case> cases;
  std::mt19937_64 rng(seed);
  const size_t ps = map.psize;
  auto add = [&](uint64_t page, size_t byte, Pattern p) {
    const uint64_t off = page * ps + byte;
    if (Apply(p, file[off]) != file[off]) cases.push_back({off, p});
  };
  // n distinct bytes of [from, to) of a page (all of them when there are fewer), each with one
  // of `patterns`.
  auto sample = [&](uint64_t page, size_t from, size_t to, size_t n, std::initializer_list<Pattern> patterns) {
    if (to <= from) return;
    std::vector<size_t> bytes;
    if (to - from <= n) {
      for (size_t b = from; b < to; ++b) bytes.push_back(b);
    } else {
      std::set<size_t> chosen;
      while (chosen.size() < n) chosen.insert(from + rng() % (to - from));
      bytes.assign(chosen.begin(), chosen.end());
    }
    for (size_t b : bytes) add(page, b, *(patterns.begin() + rng() % patterns.size()));
  };
  constexpr size_t kTxnId = 16 + 128;  // the meta page's transaction id (8 bytes)
  int free_pages = 0;
  for (uint64_t page = 0; page < map.pages; ++page) {
    const int kind = map.kind[page];
    if (only_kind >= 0 && kind != only_kind) continue;
    const auto [lower, upper] = map.bounds[page];
    switch (kind) {
      case kMetaPage:
        // Every byte LMDB reads with xor 0xff; the transaction id with every pattern (full: every
        // byte LMDB reads with every pattern, and every byte of the rest of the page, never read).
        for (size_t b = 0; b < kMetaUsed; ++b) {
          for (int p = 0; p < kPatterns; ++p) {
            if (p == kXorFF || full || (b >= kTxnId && b < kTxnId + 8)) add(page, b, static_cast<Pattern>(p));
          }
        }
        if (full) {
          for (size_t b = kMetaUsed; b < ps; ++b) add(page, b, kXorFF);
        } else {
          sample(page, kMetaUsed, ps, 2, {kXorFF});
        }
        break;
      case kBranchPage:
      case kLeafPage:
        if (full) {
          // Every byte with xor 0xff; the header and the node pointers also with xor 0x01.
          for (size_t b = 0; b < ps; ++b) {
            add(page, b, kXorFF);
            if (b < lower) add(page, b, kXor01);
          }
        } else {
          sample(page, 0, lower, 4, {kXorFF, kXor01});
          sample(page, upper, ps, 8, {kXorFF, kXor01});
        }
        break;
      case kOverflowHead:
        // LMDB's page header (16 bytes) and the block header's fields (32), then the rest.
        if (full) {
          for (size_t b = 0; b < 48; ++b) {
            add(page, b, kXorFF);
            add(page, b, kXor01);
          }
          sample(page, 48, ps, 16, {kXorFF, kXor01});
        } else {
          sample(page, 0, 48, 3, {kXorFF, kXor01});
        }
        break;
      case kOverflowData:
        sample(page, 0, ps, full ? 8 : 1, {kXorFF, kXor01});
        break;
      case kOlderTree:
        sample(page, 0, ps, full ? 64 : 2, {kXorFF, kXor01});
        break;
      case kFreePage:
        if (full || free_pages++ % 2 == 0) sample(page, 0, ps, full ? 16 : 1, {kXorFF});
        break;
    }
  }
  return cases;
}

// ---- running one case -------------------------------------------------------------------------

enum Outcome { kOpenError, kReadError, kVerifyOnly, kReadBadVerifyCaught, kHarmless, kAsGood, kCrash, kHang, kWrote, kOutcomes };
const char* const kOutcomeNames[kOutcomes] = {"detected(open)", "detected(read)", "detected(verify)",
                                              "read-bad/verify", "harmless",      "AS-GOOD",
                                              "CRASH",           "HANG",          "WROTE"};
bool IsFailure(Outcome o) { return o >= kAsGood; }

struct Result1 {
  std::vector<Outcome> outcomes;  // usually one; WROTE can come with another
  std::string detail;
};

// The child of one case: reads, verifies, opens for writing; reports lines on `fd`:
//   P <phase>            before each phase (the last one names where a crash or hang was)
//   R <read code> <verify code> <equal 0/1> <at open 0/1> <message>
//   W <code> <message>   the writing open
// Faults the harness's self-check injects into a case's child, to see that each failure is seen.
enum class Fault { kNone, kCrash, kHang, kWrite, kLie };

// What differs between what was read and the truth, briefly.
std::string Difference(const ReadOutcome& r, const Truth& truth) {
  auto brief = [](const std::string& line) { return line.size() > 120 ? line.substr(0, 120) + "..." : line; };
  std::string out;
  for (const std::string& a : r.arrays) {
    if (std::find(truth.arrays.begin(), truth.arrays.end(), a) == truth.arrays.end()) out += "read '" + brief(a) + "'; ";
  }
  for (const std::string& a : truth.arrays) {
    if (std::find(r.arrays.begin(), r.arrays.end(), a) == r.arrays.end()) out += "not read '" + brief(a) + "'; ";
  }
  if (r.changed != truth.changed) out += "changed arrays '" + r.changed + "' (truth '" + truth.changed + "'); ";
  return out;
}

[[noreturn]] void CaseChild(const std::string& path, const Truth& truth, int fd, bool verbose, Fault fault) {
  auto line = [&](const std::string& s) {
    std::string t = s;
    std::replace(t.begin(), t.end(), '\n', ' ');
    t += "\n";
    WriteAll(fd, t.data(), t.size());
  };
  ReadOutcome r = ReadEverything(path, &truth, fd);
  if (fault == Fault::kCrash) std::abort();
  if (fault == Fault::kHang) pause();
  if (fault == Fault::kLie && !r.arrays.empty()) r.arrays[0] += " (a lie)";
  const bool equal = r.arrays == truth.arrays && r.changed == truth.changed;
  std::string msg = !r.read.ok() ? r.read.ToString() : !r.verify.ok() ? r.verify.ToString() : "";
  if (!equal && r.read.ok()) msg = Difference(r, truth) + (msg.empty() ? "" : "verify: " + msg);
  if (verbose) {
    std::fprintf(stderr, "reads: %s\nverify: %s\nread:\n  %s\n  changed: %s\ntruth:\n  %s\n  changed: %s\n",
                 r.read.ToString().c_str(), r.verify.ToString().c_str(), Join(r.arrays, "\n  ").c_str(),
                 r.changed.c_str(), Join(truth.arrays, "\n  ").c_str(), truth.changed.c_str());
  }
  // The case's directory differs from run to run: name it <db>.
  for (size_t at; (at = msg.find(path)) != std::string::npos;) msg.replace(at, path.size(), "<db>");
  line("R " + std::to_string(static_cast<int>(r.read.code())) + " " + std::to_string(static_cast<int>(r.verify.code())) +
       " " + (equal ? "1" : "0") + " " + (r.at_open ? "1" : "0") + " " + msg);
  auto now = [] { return std::to_string(std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count()); };
  line("P open-for-writing " + now());
  {
    auto db = Database::Open(path);
    if (verbose) std::fprintf(stderr, "writing open: %s\n", db.ok() ? "OK" : db.status().ToString().c_str());
    line("W " + std::to_string(static_cast<int>(db.ok() ? Code::kOk : db.status().code())) + " " +
         (db.ok() ? "" : db.status().ToString()));
  }
  if (fault == Fault::kWrite) {
    const int f = open((path + "/data.mdb").c_str(), O_WRONLY | O_CLOEXEC);
    if (f < 0) DieErrno("open data.mdb");
    PwriteAll(f, "x", 1, 4096 * 2 + 100);
    close(f);
  }
  line("P done " + now());
  _exit(0);
}

struct Runner {
  std::string dir;         // the case's database directory
  const std::vector<unsigned char>* image;  // data.mdb, used pages only
  off_t file_size = 0;     // data.mdb's size (the map: its tail is a hole)
  const Truth* truth;
  int timeout_s = 10;

  // Writes the damaged copy: the used bytes, then the size (the rest a hole); no lock file.
  void Prepare(const Case& c) const {
    const std::string data = dir + "/data.mdb";
    if (unlink((dir + "/lock.mdb").c_str()) != 0 && errno != ENOENT) DieErrno("unlink lock.mdb");
    // Same inode every time: the commit board's shared segment is named after it.
    const int fd = open(data.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) DieErrno("open " + data);
    PwriteAll(fd, image->data(), image->size(), 0);
    const unsigned char b = Apply(c.pattern, (*image)[c.offset]);
    PwriteAll(fd, &b, 1, static_cast<off_t>(c.offset));
    if (ftruncate(fd, file_size) != 0) DieErrno("ftruncate " + data);
    if (close(fd) != 0) DieErrno("close " + data);
  }

  // Whether data.mdb is still exactly what Prepare wrote; else what changed.
  std::optional<std::string> Changed(const Case& c) const {
    const std::string data = dir + "/data.mdb";
    const int fd = open(data.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) DieErrno("open " + data);
    std::optional<std::string> what;
    struct stat st;
    if (fstat(fd, &st) != 0) DieErrno("stat " + data);
    std::vector<unsigned char> now(image->size());
    if (st.st_size != file_size) {
      what = "its size changed from " + std::to_string(file_size) + " to " + std::to_string(st.st_size);
    } else if (!PreadAll(fd, now.data(), now.size(), 0)) {
      what = "it is shorter";
    } else {
      const bool damaged_byte_kept = now[c.offset] == Apply(c.pattern, (*image)[c.offset]);
      now[c.offset] = (*image)[c.offset];
      if (!damaged_byte_kept) {
        what = "the damaged byte itself changed";
      } else if (now != *image) {
        size_t i = 0;
        while (now[i] == (*image)[i]) ++i;
        what = "byte " + std::to_string(i) + " (page " + std::to_string(i / 4096) + ") changed";
      } else {
        const off_t next = lseek(fd, static_cast<off_t>(image->size()), SEEK_DATA);
        if (next >= 0 && next < file_size) {
          // Data in what was a hole: written, unless it is zeros.
          std::vector<unsigned char> tail(static_cast<size_t>(std::min<off_t>(file_size - next, 1 << 20)));
          if (PreadAll(fd, tail.data(), tail.size(), next) &&
              std::any_of(tail.begin(), tail.end(), [](unsigned char x) { return x != 0; })) {
            what = "bytes past the used pages were written (at " + std::to_string(next) + ")";
          }
        } else if (next < 0 && errno != ENXIO && errno != EINVAL) {
          DieErrno("lseek SEEK_DATA");
        }
      }
    }
    if (close(fd) != 0) DieErrno("close " + data);
    return what;
  }

  Result1 Run(const Case& c, bool verbose, Fault fault = Fault::kNone) const {
    Prepare(c);
    const auto [pid, from_child] = ForkWriter([&](int fd) { CaseChild(dir, *truth, fd, verbose, fault); });
    std::string text;
    bool hung = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) {
        hung = true;
        break;
      }
      pollfd p{from_child, POLLIN, 0};
      const int n = poll(&p, 1, static_cast<int>(left));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) DieErrno("poll");
      if (n == 0) continue;
      char buf[4096];
      const ssize_t got = read(from_child, buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) DieErrno("read from a case's child");
      if (got == 0) break;
      text.append(buf, static_cast<size_t>(got));
    }
    close(from_child);
    if (hung && kill(pid, SIGKILL) != 0) DieErrno("kill");
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) DieErrno("waitpid");
    }
    Result1 out;
    std::string last_phase = "start", rline, wline;
    std::istringstream lines(text);
    double last_time = 0;
    for (std::string l; std::getline(lines, l);) {
      if (l.starts_with("P ")) {
        // "P <phase> <time>"
        const size_t sp = l.rfind(' ');
        const double t = std::atof(l.c_str() + sp + 1);
        if (verbose && last_time > 0) std::fprintf(stderr, "  phase %s: %.1f ms\n", last_phase.c_str(), 1000 * (t - last_time));
        last_time = t;
        last_phase = l.substr(2, sp - 2);
      }
      if (l.starts_with("R ")) rline = l.substr(2);
      if (l.starts_with("W ")) wline = l.substr(2);
    }
    if (hung) {
      out.outcomes.push_back(kHang);
      out.detail = "no answer within " + std::to_string(timeout_s) + " s, in phase " + last_phase;
    } else if (WIFSIGNALED(status)) {
      out.outcomes.push_back(kCrash);
      out.detail = std::string("signal ") + strsignal(WTERMSIG(status)) + " in phase " + last_phase;
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || rline.empty() || wline.empty() || last_phase != "done") {
      out.outcomes.push_back(kCrash);
      out.detail = "exit status " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + " in phase " + last_phase;
    } else {
      std::istringstream r(rline);
      int read_code = 0, verify_code = 0, equal = 0, at_open = 0;
      r >> read_code >> verify_code >> equal >> at_open;
      std::string msg;
      std::getline(r, msg);
      out.detail = msg;
      if (read_code != 0) {
        out.outcomes.push_back(at_open ? kOpenError : kReadError);
      } else if (equal && verify_code != 0) {
        out.outcomes.push_back(kVerifyOnly);
      } else if (!equal && verify_code != 0) {
        out.outcomes.push_back(kReadBadVerifyCaught);
      } else if (equal) {
        out.outcomes.push_back(kHarmless);
      } else {
        out.outcomes.push_back(kAsGood);
      }
    }
    if (auto changed = Changed(c)) {
      out.outcomes.push_back(kWrote);
      out.detail += (out.detail.empty() ? "" : "; ") + std::string("data.mdb changed: ") + *changed +
                    (wline.empty() ? "" : " (writing open: " + wline + ")");
    }
    return out;
  }
};

struct Options1 {
  bool full = false, list = false;
  int jobs = 1, timeout = 10, only_kind = -1;
  std::optional<Case> one;
  std::string keep, save, from;
};

Options1 ParseArgs(int argc, char** argv) {
  Options1 o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--full") {
      o.full = true;
    } else if (a == "--list") {
      o.list = true;
    } else if (a == "--jobs") {
      o.jobs = std::max(1, std::atoi(value().c_str()));
    } else if (a == "--timeout") {
      o.timeout = std::max(1, std::atoi(value().c_str()));
    } else if (a == "--kind") {
      const std::string k = value();
      for (int j = 0; j < kKinds; ++j) {
        if (k == kKindNames[j]) o.only_kind = j;
      }
      if (o.only_kind < 0) Die("unknown page kind " + k);
    } else if (a == "--case") {
      const std::string v = value();
      const size_t colon = v.find(':');
      Case c{std::strtoull(v.c_str(), nullptr, 0), kXorFF};
      if (colon != std::string::npos) {
        const std::string p = v.substr(colon + 1);
        bool found = false;
        for (int j = 0; j < kPatterns; ++j) {
          if (p == kPatternNames[j]) c.pattern = static_cast<Pattern>(j), found = true;
        }
        if (!found) Die("unknown pattern " + p);
      }
      o.one = c;
    } else if (a == "--keep") {
      o.keep = value();
    } else if (a == "--save") {
      o.save = value();
    } else if (a == "--from") {
      o.from = value();
    } else {
      Die("unknown argument " + a + " (see the head of tests/damage_sweep.cc)");
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options1 opt = ParseArgs(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  testing::TempDir tmp;
  std::string tmpl = tmp / "template";

  // Build the database in a child, and receive its truth (or take both from --from).
  Truth truth;
  if (!opt.from.empty()) {
    tmpl = opt.from;
    off_t size = 0;
    const std::vector<unsigned char> text = ReadFile(tmpl + "/truth.txt", &size);
    truth = DecodeTruth(std::string(text.begin(), text.end()));
  } else {
    const auto [pid, out] = ForkWriter([&](int fd) {
      try {
        const std::string text = EncodeTruth(BuildDatabase(tmpl));
        WriteAll(fd, text.data(), text.size());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "damage_sweep: building the database: %s\n", e.what());
        _exit(3);
      }
    });
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = read(out, buf, sizeof buf)) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) DieErrno("read the truth");
      text.append(buf, static_cast<size_t>(n));
    }
    close(out);
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) DieErrno("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("building the database failed");
    truth = DecodeTruth(text);
  }
  // The template as a directory that --from takes: the array ids are random, so the layout of
  // data.mdb differs from one build to the next, and a case is replayed on the same template.
  auto save = [&](const std::string& dir) {
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(tmpl + "/data.mdb", dir + "/data.mdb", std::filesystem::copy_options::overwrite_existing);
    const std::string text = EncodeTruth(truth);
    const int fd = open((dir + "/truth.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) DieErrno("create " + dir + "/truth.txt");
    WriteAll(fd, text.data(), text.size());
    if (close(fd) != 0) DieErrno("close truth.txt");
  };
  if (!opt.save.empty()) save(opt.save);

  // data.mdb is as large as LMDB's map (64 MiB): only its used pages are read and copied, the
  // rest of each copy is a hole.
  off_t file_size = 0;
  std::vector<unsigned char> image = ReadFile(tmpl + "/data.mdb", &file_size, 8192);
  if (image.size() < 8192) Die("data.mdb has no meta pages");
  const uint64_t used = 4096 * (1 + std::max(Get<uint64_t>(image, 16 + 120), Get<uint64_t>(image, 4096 + 16 + 120)));
  image = ReadFile(tmpl + "/data.mdb", &file_size, used);
  const PageMap map = MapPages(image);
  image.resize(map.pages * map.psize);
  int per_kind[kKinds] = {};
  for (int k : map.kind) ++per_kind[k];
  std::printf("damage_sweep: %" PRIu64 " pages of %zu bytes in use:", map.pages, map.psize);
  for (int k = 0; k < kKinds; ++k) std::printf(" %d %s", per_kind[k], kKindNames[k]);
  std::printf("\n");
  for (const std::string& a : truth.arrays) std::printf("  truth: %s\n", a.c_str());
  if (opt.list) {
    for (uint64_t p = 0; p < map.pages; ++p) std::printf("page %" PRIu64 ": %s\n", p, kKindNames[map.kind[p]]);
    return 0;
  }

  if (opt.one) {
    const Case c = *opt.one;
    if (c.offset >= image.size()) Die("offset past the used pages (" + std::to_string(image.size()) + " bytes)");
    const std::string dir = opt.keep.empty() ? tmp / "case" : opt.keep;
    std::filesystem::create_directories(dir);
    Runner run{dir, &image, file_size, &truth, opt.timeout};
    const Result1 r = run.Run(c, /*verbose=*/true);
    std::printf("case %" PRIu64 " (page %" PRIu64 " %s, byte %" PRIu64 ", %s):", c.offset, c.offset / map.psize,
                kKindNames[map.kind[c.offset / map.psize]], c.offset % map.psize, kPatternNames[c.pattern]);
    bool failed = false;
    for (Outcome o : r.outcomes) {
      std::printf(" %s", kOutcomeNames[o]);
      failed |= IsFailure(o);
    }
    std::printf("\n  %s\n", r.detail.c_str());
    if (!opt.keep.empty()) run.Prepare(c);  // leave the damaged copy, as it was before the case ran
    return failed ? 1 : 0;
  }

  // The harness's self-check: an intact copy is harmless, and a child that crashes, hangs,
  // writes to data.mdb or reads something else than the truth is each seen as such.
  if (opt.only_kind < 0) {
    const std::string dir = tmp / "self-check";
    if (mkdir(dir.c_str(), 0755) != 0) DieErrno("mkdir " + dir);
    Runner run{dir, &image, file_size, &truth, 2};
    const Case intact{0, kIntact};
    const std::pair<Fault, std::vector<Outcome>> checks[] = {{Fault::kNone, {kHarmless}},
                                                              {Fault::kCrash, {kCrash}},
                                                              {Fault::kHang, {kHang}},
                                                              {Fault::kWrite, {kHarmless, kWrote}},
                                                              {Fault::kLie, {kAsGood}}};
    for (const auto& [fault, want] : checks) {
      const Result1 r = run.Run(intact, false, fault);
      if (r.outcomes != want) {
        Die("self-check: fault " + std::to_string(static_cast<int>(fault)) + " was classified as " +
            std::to_string(r.outcomes.empty() ? -1 : r.outcomes[0]) + " (" + r.detail + ")");
      }
    }
    std::printf("damage_sweep: self-check passed (an intact copy is harmless; a crash, a hang, a write and a wrong "
                "read are each seen)\n");
  }

  const uint64_t seed = testing::TestSeed("damage_sweep");
  const std::vector<Case> cases = ChooseCases(map, image, opt.full, seed, opt.only_kind);
  std::printf("damage_sweep: %zu cases (%s sweep), %d job(s), %d s limit per case\n", cases.size(),
              opt.full ? "full" : "short", opt.jobs, opt.timeout);
  std::fflush(stdout);

  // Cases run in `jobs` worker processes, each with its own directory; each worker reports one
  // line per case: "<case index> <outcome>[,<outcome>] <detail>".
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::pair<pid_t, int>> workers;
  for (int j = 0; j < opt.jobs; ++j) {
    workers.push_back(ForkWriter([&](int fd) {
      const std::string dir = tmp / ("job" + std::to_string(j));
      if (mkdir(dir.c_str(), 0755) != 0) DieErrno("mkdir " + dir);
      Runner run{dir, &image, file_size, &truth, opt.timeout};
      for (size_t i = static_cast<size_t>(j); i < cases.size(); i += static_cast<size_t>(opt.jobs)) {
        const Result1 r = run.Run(cases[i], false);
        std::string line = std::to_string(i) + " ";
        for (size_t k = 0; k < r.outcomes.size(); ++k) line += (k ? "," : "") + std::to_string(r.outcomes[k]);
        std::string detail = r.detail;
        std::replace(detail.begin(), detail.end(), '\n', ' ');
        line += " " + detail + "\n";
        WriteAll(fd, line.data(), line.size());
      }
    }));
  }

  uint64_t counts[kKinds][kOutcomes] = {};
  uint64_t done = 0, failures = 0;
  std::vector<std::string> failure_lines;
  std::map<std::string, uint64_t> messages;  // how often each kind of detection message came
  std::vector<std::string> buffers(workers.size());
  size_t open_pipes = workers.size();
  std::vector<bool> closed(workers.size(), false);
  while (open_pipes > 0) {
    std::vector<pollfd> p;
    std::vector<size_t> which;
    for (size_t w = 0; w < workers.size(); ++w) {
      if (!closed[w]) {
        p.push_back({workers[w].second, POLLIN, 0});
        which.push_back(w);
      }
    }
    if (poll(p.data(), p.size(), -1) < 0) {
      if (errno == EINTR) continue;
      DieErrno("poll");
    }
    for (size_t k = 0; k < p.size(); ++k) {
      if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const size_t w = which[k];
      char buf[8192];
      const ssize_t n = read(workers[w].second, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) DieErrno("read from a worker");
      if (n == 0) {
        closed[w] = true;
        --open_pipes;
        close(workers[w].second);
        continue;
      }
      buffers[w].append(buf, static_cast<size_t>(n));
      for (size_t nl; (nl = buffers[w].find('\n')) != std::string::npos;) {
        const std::string line = buffers[w].substr(0, nl);
        buffers[w].erase(0, nl + 1);
        std::istringstream s(line);
        size_t i = 0;
        std::string outs;
        s >> i >> outs;
        std::string detail;
        std::getline(s, detail);
        if (!detail.empty() && detail[0] == ' ') detail.erase(0, 1);
        const Case& c = cases.at(i);
        const uint64_t page = c.offset / map.psize;
        const int kind = map.kind[page];
        bool failed = false;
        std::string names;
        for (size_t from = 0; from <= outs.size();) {
          size_t comma = outs.find(',', from);
          if (comma == std::string::npos) comma = outs.size();
          const auto o = static_cast<Outcome>(std::atoi(outs.substr(from, comma - from).c_str()));
          ++counts[kind][o];
          failed |= IsFailure(o);
          names += (names.empty() ? "" : "+") + std::string(kOutcomeNames[o]);
          if (o == kOpenError || o == kReadError || o == kVerifyOnly || o == kReadBadVerifyCaught) {
            // Group messages by their text with numbers as '#', for the summary.
            std::string key;
            for (char ch : detail) {
              if (!std::isdigit(static_cast<unsigned char>(ch))) {
                key.push_back(ch);
              } else if (key.empty() || key.back() != '#') {
                key.push_back('#');
              }
            }
            if (key.size() > 110) key.resize(110);
            ++messages[std::string(kOutcomeNames[o]) + ": " + key];
          }
          from = comma + 1;
        }
        if (failed) {
          ++failures;
          char head[200];
          std::snprintf(head, sizeof head, "offset %" PRIu64 " (page %" PRIu64 " %s, byte %" PRIu64 ", %s): %s",
                        c.offset, page, kKindNames[kind], c.offset % map.psize, kPatternNames[c.pattern], names.c_str());
          failure_lines.push_back(std::string(head) + "\n      " + detail);
        }
        if (++done % 2000 == 0) {
          std::printf("  %" PRIu64 " of %zu cases, %" PRIu64 " failures, %.0f s\n", done, cases.size(), failures,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
          std::fflush(stdout);
        }
      }
    }
  }
  for (const auto& [pid, fd] : workers) {
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) DieErrno("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("a worker failed");
  }
  if (done != cases.size()) Die("only " + std::to_string(done) + " of " + std::to_string(cases.size()) + " cases reported");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::printf("\n%-14s %7s", "page kind", "cases");
  for (int o = 0; o < kOutcomes; ++o) std::printf(" %16s", kOutcomeNames[o]);
  std::printf("\n");
  uint64_t total[kOutcomes] = {}, all = 0;
  for (int k = 0; k < kKinds; ++k) {
    uint64_t n = 0;
    for (int o = 0; o < kOutcomes; ++o) n += o == kWrote ? 0 : counts[k][o];
    if (n == 0) continue;
    std::printf("%-14s %7" PRIu64, kKindNames[k], n);
    for (int o = 0; o < kOutcomes; ++o) {
      std::printf(" %16" PRIu64, counts[k][o]);
      total[o] += counts[k][o];
    }
    all += n;
    std::printf("\n");
  }
  std::printf("%-14s %7" PRIu64, "all", all);
  for (int o = 0; o < kOutcomes; ++o) std::printf(" %16" PRIu64, total[o]);
  std::printf("\n\nhow damage was reported (cases: message, numbers as #):\n");
  std::vector<std::pair<uint64_t, std::string>> by_count;
  for (const auto& [m, n] : messages) by_count.emplace_back(n, m);
  std::sort(by_count.rbegin(), by_count.rend());
  for (size_t i = 0; i < by_count.size() && i < 40; ++i) std::printf("  %6" PRIu64 "  %s\n", by_count[i].first, by_count[i].second.c_str());
  std::printf("\ndamage_sweep: %zu cases in %.0f s, %" PRIu64 " failures (seed %" PRIu64 ")\n", cases.size(), secs,
              failures, seed);
  for (size_t i = 0; i < failure_lines.size() && i < 20; ++i) std::printf("  FAILED %s\n", failure_lines[i].c_str());
  if (failures > 0) {
    std::string dir = opt.from;
    if (dir.empty()) {
      const char* base = std::getenv("TMPDIR");
      dir = std::string(base && *base ? base : "/tmp") + "/damage_sweep-" + std::to_string(getpid());
      save(dir);
    }
    std::printf("replay one with: damage_sweep --from %s --case OFFSET:PATTERN [--keep DIR]\n", dir.c_str());
    return 1;
  }
  return 0;
}
