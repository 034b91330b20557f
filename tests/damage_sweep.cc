// damage_sweep: every damaged copy of a small database is refused, or read correctly; never
// returned as good, never a crash, a hang, or a write (docs/reliability.md, "The damage sweep").
//
// A child process builds a small database through the public API (three arrays of different
// dtypes, orders and shapes in 4 KiB blocks, one of them with 30 blocks of small payloads that
// LMDB keeps inside leaf pages, so that the blocks B-tree has a branch page; `big`, in the
// default 2 MiB blocks, whose 3 blocks of more than 1 MiB each are in slots of blocks.dat, one of
// them rewritten (its old slot freed: the "\0freed/" record) and one with a delta record on top
// of its slot; a rename, a resize, a drop, five commits, so that both of LMDB's meta pages and
// the change log hold something) and records the truth: every array's name, dtype, order,
// shape, stored blocks and bytes, and which arrays changed since the second commit.
//
// The parent then classifies the pages of data.mdb (walking the trees of the newest meta page,
// then those of the older one; in the newest state it also locates the slot records, the
// 48-byte values of the blocks database that name a slot, and the "\0slots" and "\0freed/"
// records of the meta database) and the slots of blocks.dat (those the slot records name, and
// those freed), and, for each case, writes a copy of the database (data.mdb and blocks.dat)
// with one byte of one of them changed (xor 0xff, xor 0x01, +1, -1 or -2: the small changes hit
// transaction ids, counters and slot numbers) and forks a child that, within a time limit,
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
//   WROTE              data.mdb or blocks.dat changed (any of its bytes, its size, or, for
//                      data.mdb, data past its used pages)                          (failure)
// A case is counted under its kind: the kind of the page of data.mdb it damages ("meta",
// "branch", "leaf", "overflow-head", "overflow-data", "older-state", "free"), "slot-record" for
// the bytes of the slot records and of "\0slots" and "\0freed/" chosen explicitly (the sampled
// bytes of their leaf pages count as "leaf"), and, in blocks.dat, "slot-data" (a byte of a
// payload: must be detected by the read, by its checksum), "slot-tail" (a byte of a used slot
// past its payload's end: never read) or "slot-freed" (a byte of a slot freed by a commit that a
// snapshot may still see).
//
// Usage: damage_sweep [--full] [--jobs N] [--timeout S] [--kind K[,K...]]
//                     [--case [blocks.dat:]OFFSET[:PATTERN]] [--keep DIR] [--list] [--save DIR]
//                     [--from DIR]
//   default   the short sweep of `make test` (~630 cases): every byte of both meta pages that
//             LMDB reads, their transaction ids with every pattern, and a seeded sample of the
//             other pages: 12 bytes of each branch and leaf page, 3 of each overflow run's headers,
//             1 or 2 of the rest; 10 bytes of each slot record (always its location check and
//             its slot number, +1 and -1 too) and 3 of "\0slots" and of each "\0freed/"; in
//             blocks.dat 8 bytes of each used slot's payload (its first and last byte, 1 more of
//             its first and of its last page, 4 between), 3 past its end in the slot, 2 of each
//             freed slot ($BIGARRAY_SEED replays the sample)
//   --full    every byte of every structural page (meta, branch, leaf) with xor 0xff, the bytes
//             LMDB reads of the meta pages with every pattern, the page headers and node
//             pointers also with xor 0x01, every byte of the overflow runs' headers, and a sample
//             of the rest; every byte of the slot records and "\0slots"/"\0freed/" with every
//             pattern; in blocks.dat the first and last 16 bytes of each payload with xor 0xff
//             and xor 0x01 and 256 more of it, 32 past its end, 32 of each freed slot
//             (`make torture`, ~51,000 cases)
//   --kind    only the cases of these kinds; "blocks.dat" stands for the three kinds of blocks.dat
//   --case    one case, with the child's messages (blocks.dat:OFFSET damages blocks.dat);
//             --keep DIR leaves its damaged copy in DIR
//   --list    the page map and the slots only
//   --save    keeps the database built (data.mdb, blocks.dat, truth.txt) in DIR; --from sweeps
//             it instead of building one. Array ids are random, so each build lays data.mdb out
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

// FNV-1a over 64-bit words (little-endian), then the bytes of the tail: a hash of an array's
// bytes, 8 times faster than byte by byte (big has 6 MiB, hashed in every case).
uint64_t Fnv(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
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
// `big`: <u2 (3, 1 Mi) in the default 2 MiB blocks, one row a block. The payloads (trailing
// zeros trimmed, rounded up to 4 KiB) are more than 1 MiB: each goes to a slot of blocks.dat.
constexpr uint64_t kBigBlock = 2u << 20;
constexpr uint64_t kSlotBytes = 2u << 20;  // blocks.dat's slot (storage/src/lmdb_records.h)
constexpr size_t kSlotRecordBytes = 48;    // a slot record's value
constexpr size_t kBigBytes[3] = {(1u << 20) + 100, (3u << 20) / 2, 2u << 20};  // non-zero bytes of each block
constexpr size_t kBigRewritten = (1u << 20) + (20u << 10) + 7;                // block 1 in commit 4
constexpr size_t kBigDeltaAt = 5000;       // the byte of block 0 changed in commit 5 (a delta record)

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
    o.cache_bytes = 16 << 20;  // big's 3 blocks of 2 MiB fit, read by copy or mapped
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
  o.cache_bytes = 32 << 20;
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
  // big: 3 blocks in 3 slots of blocks.dat; block 2 fills its slot.
  Array big = db.Create("big", {3, static_cast<int64_t>(kBigBlock / 2)}, "<u2", ArrayOptions{}).value();
  if (big.block_size() != kBigBlock) Die("the default block size is no longer 2 MiB");
  auto big_block = [&](int b, size_t n, uint64_t tag) {
    View v = big.view().value();
    std::vector<unsigned char>& e = expect["big"];
    e.resize(static_cast<size_t>(v.nbytes()), 0);
    auto bytes = testing::Pattern(n, tag);
    std::memset(v.data() + b * kBigBlock, 0, kBigBlock);
    std::memcpy(v.data() + b * kBigBlock, bytes.data(), n);
    std::memset(e.data() + b * kBigBlock, 0, kBigBlock);
    std::memcpy(e.data() + b * kBigBlock, bytes.data(), n);
  };
  for (int b = 0; b < 3; ++b) big_block(b, kBigBytes[b], 200 + b);
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
  // Commit 4: shrink alpha to (50, 100) (its blocks past the end are released); a byte of gamma;
  // big's block 1 rewritten whole (too much changed for a delta): to a new slot, its old slot
  // freed ("\0freed/<this commit's id>"; the reader on commit 1 keeps it from being reused, so
  // it stays there, its old payload in place).
  db.Get("alpha").value().Resize({50, 100}).ThrowIfError();
  expect["alpha"].resize(50 * 100 * 8);
  {
    View v = db.Get("gamma").value().view().value();
    v.data()[7 * kBlock + 3] = std::byte{0x5a};
    expect["gamma"][7 * kBlock + 3] = 0x5a;
  }
  big_block(1, kBigRewritten, 210);
  db.Commit().ThrowIfError();
  // Commit 5: drop tmp; one byte of big's block 0 (a delta record over its slot: that block is
  // read by copy, the others are mapped from blocks.dat).
  db.Drop("tmp").ThrowIfError();
  expect.erase("tmp");
  {
    View v = big.view().value();
    const auto x = static_cast<unsigned char>(expect["big"][kBigDeltaAt] ^ 0x02);
    v.data()[kBigDeltaAt] = std::byte{x};
    expect["big"][kBigDeltaAt] = x;
  }
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
  for (const auto& [name, id] : name_ids) {
    truth.ids.emplace_back(id, name == "big" ? kBigBlock : kBlock);
  }
  ReadOutcome r = ReadEverything(path, &truth, -1);
  if (!r.read.ok() || !r.verify.ok()) Die("the healthy database does not verify: " + r.read.ToString() + " " + r.verify.ToString());
  truth.arrays = r.arrays;
  truth.changed = r.changed;
  if (truth.arrays.size() != 4 || truth.changed != "alpha,beta2,big,gamma") {
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

// The kinds of cases: the kinds of pages of data.mdb (a case's page), then the values of
// data.mdb about slots chosen explicitly, then the parts of blocks.dat.
enum Kind {
  kMetaPage, kBranchPage, kLeafPage, kOverflowHead, kOverflowData, kOlderTree, kFreePage,
  kSlotRecord, kSlotData, kSlotTail, kSlotFreed, kKinds
};
const char* const kKindNames[kKinds] = {"meta",        "branch",        "leaf",      "overflow-head",
                                        "overflow-data", "older-state", "free",      "slot-record",
                                        "slot-data",   "slot-tail",     "slot-freed"};
constexpr uint32_t kBlocksFileKinds = 1u << kSlotData | 1u << kSlotTail | 1u << kSlotFreed;

// A value of the newest state's trees that is about slots: a slot record (the blocks database)
// or "\0slots" / "\0freed/..." (the meta database).
struct SlotValue {
  uint64_t at = 0, size = 0;  // where the value lies in data.mdb
  std::string what;           // "slot record of slot 3", "\0slots", "\0freed/<commit>"
};
// A slot of blocks.dat: used (its payload's length) or freed by a commit.
struct Slot {
  uint64_t slot = 0, length = 0;
  bool freed = false;
};

struct PageMap {
  size_t psize = 4096;
  uint64_t pages = 0;  // last_pg + 1 of the newest meta page
  std::vector<int> kind;
  std::vector<std::pair<uint16_t, uint16_t>> bounds;  // lower, upper of branch and leaf pages
  std::vector<SlotValue> slot_values;  // in the newest state
  std::vector<Slot> slots;             // of blocks.dat, by the slot values
};

class PageWalker {
 public:
  // `collect`: note the slot values met (the newest state's walk).
  PageWalker(const std::vector<unsigned char>& file, PageMap& map, Kind branch, Kind leaf, Kind head, Kind data,
             bool collect = false)
      : file_(file), map_(map), branch_(branch), leaf_(leaf), head_(head), data_(data), collect_(collect) {}

  // `db`: the name of the named database the tree is ("" for LMDB's main and free-list trees).
  void Tree(uint64_t root, int depth = 0, const std::string& db = "") {
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
        Tree(lo | uint64_t{hi} << 16 | uint64_t{nflags} << 32, depth + 1, db);
        continue;
      }
      const size_t data = node + 8 + ksize;
      if (collect_ && !(nflags & (kBigData | kSubData))) {
        Value(base, p, node + 8, ksize, data, lo | uint64_t{hi} << 16, db);
      }
      if (nflags & kBigData) {
        const uint64_t first = Get<uint64_t>(p, data);
        const uint32_t count = Get<uint32_t>(file_, first * map_.psize + 12);
        if (!(Get<uint16_t>(file_, first * map_.psize + 10) & kOverflow)) Die("not an overflow page");
        if (first + count > map_.pages) Die("the healthy database has an overflow run out of range");
        for (uint64_t k = 0; k < count; ++k) {
          if (map_.kind[first + k] == kFreePage) map_.kind[first + k] = k == 0 ? head_ : data_;
        }
      } else if (nflags & kSubData) {
        const auto name = p.begin() + static_cast<long>(node + 8);
        Tree(Get<uint64_t>(p, data + 40), depth + 1, std::string(name, name + ksize));
      }
    }
  }

 private:
  // A value inside a leaf page (page at `base`, copied in `p`): notes it if it is about slots.
  void Value(size_t base, const std::vector<unsigned char>& p, size_t key, size_t ksize, size_t data, uint64_t dsize,
             const std::string& db) {
    if (data + dsize > p.size()) Die("the healthy database has a value past the end of its page");
    const std::string k(p.begin() + static_cast<long>(key), p.begin() + static_cast<long>(key + ksize));
    if (db == "blocks" && ksize == 16 && dsize == kSlotRecordBytes && Get<uint32_t>(p, data + 20) == 2) {
      // A slot record: kind 2; slot at 32, length at 40.
      const uint64_t slot = Get<uint64_t>(p, data + 32), length = Get<uint64_t>(p, data + 40);
      map_.slot_values.push_back({base + data, dsize, "slot record of slot " + std::to_string(slot)});
      map_.slots.push_back({slot, length, false});
    } else if (db == "meta" && (k == std::string("\0slots", 6) || k.starts_with(std::string("\0freed/", 7)))) {
      // A sealed record: u64 checksum, then u64 LE each (the high-water mark and the free slots,
      // or the slots that commit freed).
      std::string what = k[1] == 's' ? "\\0slots" : "\\0freed/";
      if (k[1] == 'f' && ksize == 15) {
        uint64_t commit = 0;
        for (size_t i = 7; i < 15; ++i) commit = commit << 8 | static_cast<unsigned char>(k[i]);
        what += std::to_string(commit);
        for (size_t at = 8; at + 8 <= dsize; at += 8) map_.slots.push_back({Get<uint64_t>(p, data + at), 0, true});
      }
      map_.slot_values.push_back({base + data, dsize, what});
    }
  }

  const std::vector<unsigned char>& file_;
  PageMap& map_;
  Kind branch_, leaf_, head_, data_;
  bool collect_;
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
  PageWalker now(file, map, kBranchPage, kLeafPage, kOverflowHead, kOverflowData, /*collect=*/true);
  now.Tree(Get<uint64_t>(newest, 16 + 24 + 40));
  now.Tree(Get<uint64_t>(newest, 16 + 72 + 40));
  PageWalker before(file, map, kOlderTree, kOlderTree, kOlderTree, kOlderTree);
  before.Tree(Get<uint64_t>(older, 16 + 24 + 40));
  before.Tree(Get<uint64_t>(older, 16 + 72 + 40));
  std::sort(map.slots.begin(), map.slots.end(), [](const Slot& a, const Slot& b) { return a.slot < b.slot; });
  return map;
}

// The slot of blocks.dat that holds byte `offset`, if the slot values name it.
const Slot* SlotAt(const PageMap& map, uint64_t offset) {
  for (const Slot& s : map.slots) {
    if (offset / kSlotBytes == s.slot) return &s;
  }
  return nullptr;
}

// The kind of a case of blocks.dat at `offset`; -1 for a byte outside the slots named.
int BlocksFileKind(const PageMap& map, uint64_t offset) {
  const Slot* s = SlotAt(map, offset);
  if (!s) return -1;
  if (s->freed) return kSlotFreed;
  return offset % kSlotBytes < s->length ? kSlotData : kSlotTail;
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

enum File { kDataFile, kBlocksFile };
const char* const kFileNames[2] = {"data.mdb", "blocks.dat"};

struct Case {
  uint64_t offset;
  Pattern pattern;
  File file = kDataFile;
  int kind = -1;  // what the tables count it as (Kind)
};

// The short sweep (make test, ~630 cases) and the full one (make torture, ~51,000). `kinds`: a
// bit mask of the kinds to choose.
std::vector<Case> ChooseCases(const PageMap& map, const std::vector<unsigned char>& file,
                              const std::vector<unsigned char>& blocks, bool full, uint64_t seed, uint32_t kinds) {
  std::vector<Case> cases;
  std::mt19937_64 rng(seed);
  const size_t ps = map.psize;
  auto add = [&](uint64_t page, size_t byte, Pattern p) {
    const uint64_t off = page * ps + byte;
    if (Apply(p, file[off]) != file[off]) cases.push_back({off, p, kDataFile, map.kind[page]});
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
    if (!(kinds >> kind & 1)) continue;
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

  // The values about slots, in the leaf pages of the newest state.
  auto add_value = [&](uint64_t off, Pattern p) {
    if (Apply(p, file[off]) != file[off]) cases.push_back({off, p, kDataFile, kSlotRecord});
  };
  if (kinds >> kSlotRecord & 1) {
    for (const SlotValue& v : map.slot_values) {
      if (full) {
        for (uint64_t b = 0; b < v.size; ++b) {
          for (int p = 0; p < kPatterns; ++p) add_value(v.at + b, static_cast<Pattern>(p));
        }
      } else if (v.size == kSlotRecordBytes) {
        // The location check (24..32) and the slot number (32..40: its low byte also +1 and -1,
        // which name the neighbouring slots), the length (+64 KiB), and 3 bytes of the rest of
        // the header (checksum, commit, header length, kind).
        for (const auto& [b, p] : std::initializer_list<std::pair<uint64_t, Pattern>>{
                 {24, kXorFF}, {31, kXor01}, {32, kXor01}, {32, kPlus1}, {32, kMinus1}, {39, kXorFF}, {42, kPlus1}}) {
          add_value(v.at + b, p);
        }
        for (int i = 0; i < 3; ++i) add_value(v.at + rng() % 24, rng() % 2 ? kXorFF : kXor01);
      } else {
        // "\0slots", "\0freed/...": a byte of the checksum, the first number's low byte +1 and -1.
        add_value(v.at + rng() % 8, kXorFF);
        if (v.size > 8) add_value(v.at + 8, kPlus1), add_value(v.at + 8, kMinus1);
      }
    }
  }

  // blocks.dat: the payloads of the used slots, their tails, the freed slots.
  auto add_blocks = [&](uint64_t off, Pattern p) {
    if (off >= blocks.size()) return;  // the last slot's tail is past the end of the file
    const int kind = BlocksFileKind(map, off);
    if (kind >= 0 && (kinds >> kind & 1) && Apply(p, blocks[off]) != blocks[off]) {
      cases.push_back({off, p, kBlocksFile, kind});
    }
  };
  // n distinct offsets of [from, to) (all of them when there are fewer).
  auto sample_blocks = [&](uint64_t from, uint64_t to, size_t n, std::initializer_list<Pattern> patterns) {
    to = std::min<uint64_t>(to, blocks.size());
    if (to <= from) return;
    std::set<uint64_t> chosen;
    if (to - from <= n) {
      for (uint64_t b = from; b < to; ++b) chosen.insert(b);
    } else {
      while (chosen.size() < n) chosen.insert(from + rng() % (to - from));
    }
    for (uint64_t b : chosen) add_blocks(b, *(patterns.begin() + rng() % patterns.size()));
  };
  for (const Slot& s : map.slots) {
    const uint64_t base = s.slot * kSlotBytes;
    if (s.freed) {
      sample_blocks(base, base + kSlotBytes, full ? 32 : 2, {kXorFF, kXor01});
      continue;
    }
    const uint64_t end = base + s.length, first = std::min(end, base + ps), last = std::max(base, end - ps);
    if (full) {
      for (uint64_t b = base; b < std::min(end, base + 16); ++b) add_blocks(b, kXorFF), add_blocks(b, kXor01);
      for (uint64_t b = std::max(base, end - 16); b < end; ++b) add_blocks(b, kXorFF), add_blocks(b, kXor01);
      sample_blocks(base + 16, end - 16, 256, {kXorFF, kXor01, kPlus1, kMinus1});
      sample_blocks(end, base + kSlotBytes, 32, {kXorFF, kXor01});
    } else {
      // Its first and last byte, 1 more of its first and of its last page, 4 between; the
      // first byte past its end and 2 more of the slot's tail.
      add_blocks(base, kXorFF);
      add_blocks(end - 1, kXor01);
      sample_blocks(base + 1, first, 1, {kXorFF, kXor01});
      sample_blocks(last, end - 1, 1, {kXorFF, kXor01});
      sample_blocks(first, last, 4, {kXorFF, kXor01, kPlus1, kMinus1});
      if (s.length < kSlotBytes) add_blocks(end, kXorFF);
      sample_blocks(end + 1, base + kSlotBytes, 2, {kXorFF, kXor01});
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
enum class Fault { kNone, kCrash, kHang, kWrite, kWriteBlocks, kLie };

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
  if (fault == Fault::kWriteBlocks) {
    // One byte of the first slot's payload, complemented.
    const int f = open((path + "/blocks.dat").c_str(), O_RDWR | O_CLOEXEC);
    unsigned char b = 0;
    if (f < 0 || !PreadAll(f, &b, 1, 100)) DieErrno("read blocks.dat");
    b = static_cast<unsigned char>(~b);
    PwriteAll(f, &b, 1, 100);
    close(f);
  }
  line("P done " + now());
  _exit(0);
}

// The bytes of blocks.dat as runs of non-zero pages, to write a copy without its holes.
std::vector<std::pair<uint64_t, uint64_t>> DataRuns(const std::vector<unsigned char>& file) {
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // offset, length
  static const unsigned char zeros[4096] = {};
  for (uint64_t at = 0; at < file.size(); at += 4096) {
    const uint64_t n = std::min<uint64_t>(4096, file.size() - at);
    if (std::memcmp(file.data() + at, zeros, n) == 0) continue;
    if (!runs.empty() && runs.back().first + runs.back().second == at) {
      runs.back().second += n;
    } else {
      runs.emplace_back(at, n);
    }
  }
  return runs;
}

struct Runner {
  std::string dir;         // the case's database directory
  const std::vector<unsigned char>* image;  // data.mdb, used pages only
  off_t file_size = 0;     // data.mdb's size (the map: its tail is a hole)
  const Truth* truth;
  int timeout_s = 10;
  const std::vector<unsigned char>* blocks = nullptr;  // blocks.dat, all of it
  const std::vector<std::pair<uint64_t, uint64_t>>* blocks_runs = nullptr;  // its non-zero pages
  // Whether the copy's blocks.dat is the template's: then a case writes only its byte, and
  // puts it back once Changed found nothing else changed (blocks.dat is some megabytes).
  bool blocks_intact = false;
  std::vector<unsigned char> piece_ = {};  // ChangedBlocks' buffer

  // Writes the damaged copy: the used bytes of data.mdb, then its size (the rest a hole), and
  // blocks.dat; no lock file.
  void Prepare(const Case& c) {
    const std::string data = dir + "/data.mdb";
    if (unlink((dir + "/lock.mdb").c_str()) != 0 && errno != ENOENT) DieErrno("unlink lock.mdb");
    // Same inode every time: the commit board's shared segment is named after it.
    const int fd = open(data.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) DieErrno("open " + data);
    PwriteAll(fd, image->data(), image->size(), 0);
    if (c.file == kDataFile) {
      const unsigned char b = Apply(c.pattern, (*image)[c.offset]);
      PwriteAll(fd, &b, 1, static_cast<off_t>(c.offset));
    }
    if (ftruncate(fd, file_size) != 0) DieErrno("ftruncate " + data);
    if (close(fd) != 0) DieErrno("close " + data);
    const std::string slots = dir + "/blocks.dat";
    const int bf = open(slots.c_str(), O_WRONLY | O_CREAT | (blocks_intact ? 0 : O_TRUNC) | O_CLOEXEC, 0644);
    if (bf < 0) DieErrno("open " + slots);
    if (!blocks_intact) {
      for (const auto& [at, n] : *blocks_runs) PwriteAll(bf, blocks->data() + at, n, static_cast<off_t>(at));
      if (ftruncate(bf, static_cast<off_t>(blocks->size())) != 0) DieErrno("ftruncate " + slots);
      blocks_intact = true;
    }
    if (c.file == kBlocksFile) {
      const unsigned char b = Apply(c.pattern, (*blocks)[c.offset]);
      PwriteAll(bf, &b, 1, static_cast<off_t>(c.offset));
      blocks_intact = false;  // until Changed puts the byte back
    }
    if (close(bf) != 0) DieErrno("close " + slots);
  }

  // Whether data.mdb and blocks.dat are still exactly what Prepare wrote; else what changed.
  std::optional<std::string> Changed(const Case& c) {
    std::string what;
    if (std::optional<std::string> d = ChangedData(c)) what = "data.mdb changed: " + *d;
    if (std::optional<std::string> b = ChangedBlocks(c)) {
      what += (what.empty() ? "" : "; ") + std::string("blocks.dat changed: ") + *b;
    }
    if (what.empty()) return std::nullopt;
    return what;
  }

  std::optional<std::string> ChangedData(const Case& c) const {
    const std::string data = dir + "/data.mdb";
    const int fd = open(data.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) DieErrno("open " + data);
    std::optional<std::string> what;
    struct stat st;
    if (fstat(fd, &st) != 0) DieErrno("stat " + data);
    std::vector<unsigned char> now(image->size());
    const bool here = c.file == kDataFile;
    if (st.st_size != file_size) {
      what = "its size changed from " + std::to_string(file_size) + " to " + std::to_string(st.st_size);
    } else if (!PreadAll(fd, now.data(), now.size(), 0)) {
      what = "it is shorter";
    } else {
      const bool damaged_byte_kept = !here || now[c.offset] == Apply(c.pattern, (*image)[c.offset]);
      if (here) now[c.offset] = (*image)[c.offset];
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

  // blocks.dat, all of it (its holes read as zeros, as they are in the template); puts the
  // damaged byte back when nothing else changed.
  std::optional<std::string> ChangedBlocks(const Case& c) {
    const std::string slots = dir + "/blocks.dat";
    const int fd = open(slots.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) DieErrno("open " + slots);
    std::optional<std::string> what;
    struct stat st;
    if (fstat(fd, &st) != 0) DieErrno("stat " + slots);
    const bool here = c.file == kBlocksFile;
    blocks_intact = false;
    if (st.st_size != static_cast<off_t>(blocks->size())) {
      what = "its size changed from " + std::to_string(blocks->size()) + " to " + std::to_string(st.st_size);
    } else {
      // In pieces, into a buffer kept from case to case (fresh memory costs a page fault a page).
      piece_.resize(256 << 10);
      for (uint64_t at = 0; at < blocks->size() && !what; at += piece_.size()) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(piece_.size(), blocks->size() - at));
        if (!PreadAll(fd, piece_.data(), n, static_cast<off_t>(at))) Die("short read of " + slots);
        if (here && c.offset >= at && c.offset < at + n) {
          unsigned char& b = piece_[c.offset - at];
          if (b != Apply(c.pattern, (*blocks)[c.offset])) what = "the damaged byte itself changed";
          b = (*blocks)[c.offset];
        }
        if (!what && std::memcmp(piece_.data(), blocks->data() + at, n) != 0) {
          size_t i = 0;
          while (piece_[i] == (*blocks)[at + i]) ++i;
          what = "byte " + std::to_string(at + i) + " (slot " + std::to_string((at + i) / kSlotBytes) + ") changed";
        }
      }
      if (!what) {
        if (here) PwriteAll(fd, blocks->data() + c.offset, 1, static_cast<off_t>(c.offset));
        blocks_intact = true;
      }
    }
    if (close(fd) != 0) DieErrno("close " + slots);
    return what;
  }

  Result1 Run(const Case& c, bool verbose, Fault fault = Fault::kNone) {
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
      out.detail += (out.detail.empty() ? "" : "; ") + *changed + (wline.empty() ? "" : " (writing open: " + wline + ")");
    }
    return out;
  }
};

constexpr uint32_t kAllKinds = (1u << kKinds) - 1;

struct Options1 {
  bool full = false, list = false;
  int jobs = 1, timeout = 10;
  uint32_t kinds = kAllKinds;  // a bit per Kind
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
      if (o.kinds == kAllKinds) o.kinds = 0;
      std::string list = value() + ",";
      for (size_t at; (at = list.find(',')) != std::string::npos; list.erase(0, at + 1)) {
        const std::string k = list.substr(0, at);
        uint32_t bits = k == "blocks.dat" ? kBlocksFileKinds : 0;
        for (int j = 0; j < kKinds; ++j) {
          if (k == kKindNames[j]) bits = 1u << j;
        }
        if (bits == 0) Die("unknown kind " + k);
        o.kinds |= bits;
      }
    } else if (a == "--case") {
      std::string v = value();
      Case c{0, kXorFF};
      if (v.starts_with("blocks.dat:")) {
        c.file = kBlocksFile;
        v.erase(0, 11);
      }
      c.offset = std::strtoull(v.c_str(), nullptr, 0);
      const size_t colon = v.find(':');
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
    for (const char* f : kFileNames) {
      std::filesystem::copy_file(tmpl + "/" + f, dir + "/" + f, std::filesystem::copy_options::overwrite_existing);
    }
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
  for (int k = 0; k < kSlotRecord; ++k) std::printf(" %d %s", per_kind[k], kKindNames[k]);
  std::printf("\n");
  // blocks.dat, all of it: some megabytes; each copy gets its non-zero pages (DataRuns).
  off_t blocks_size = 0;
  const std::vector<unsigned char> blocks = ReadFile(tmpl + "/blocks.dat", &blocks_size);
  const std::vector<std::pair<uint64_t, uint64_t>> blocks_runs = DataRuns(blocks);
  std::printf("damage_sweep: blocks.dat of %zu bytes:", blocks.size());
  for (const Slot& sl : map.slots) {
    if (sl.freed) {
      std::printf(" slot %" PRIu64 " freed;", sl.slot);
    } else {
      std::printf(" slot %" PRIu64 " used (%" PRIu64 " bytes);", sl.slot, sl.length);
    }
  }
  std::printf(" %zu values about slots in data.mdb:", map.slot_values.size());
  for (const SlotValue& v : map.slot_values) std::printf(" %s at %" PRIu64 ";", v.what.c_str(), v.at);
  std::printf("\n");
  {
    // The sweep covers slots only if the database has them: records of used slots, "\0slots"
    // and a "\0freed/" record.
    size_t used_slots = 0, freed_slots = 0, tables = 0, freed_records = 0;
    for (const Slot& sl : map.slots) ++(sl.freed ? freed_slots : used_slots);
    for (const SlotValue& v : map.slot_values) {
      tables += v.what == "\\0slots";
      freed_records += v.what.starts_with("\\0freed/");
    }
    if (used_slots < 2 || freed_slots < 1 || tables != 1 || freed_records < 1) {
      Die("the database has " + std::to_string(used_slots) + " used slots, " + std::to_string(freed_slots) +
          " freed, " + std::to_string(tables) + " slot tables and " + std::to_string(freed_records) +
          " records of freed slots: expected at least 2, 1, 1 and 1 (is the slot size still 2 MiB?)");
    }
    for (const Slot& sl : map.slots) {
      if (!sl.freed && (sl.length <= kSlotBytes / 2 || sl.length > kSlotBytes ||
                        sl.slot * kSlotBytes + sl.length > blocks.size())) {
        Die("slot " + std::to_string(sl.slot) + " holds " + std::to_string(sl.length) + " bytes, blocks.dat has " +
            std::to_string(blocks.size()));
      }
    }
  }
  for (const std::string& a : truth.arrays) std::printf("  truth: %s\n", a.c_str());
  if (opt.list) {
    for (uint64_t p = 0; p < map.pages; ++p) std::printf("page %" PRIu64 ": %s\n", p, kKindNames[map.kind[p]]);
    return 0;
  }
  // Where a case is, for the messages.
  auto where = [&](const Case& c) {
    char text[200];
    if (c.file == kBlocksFile) {
      std::snprintf(text, sizeof text, "blocks.dat offset %" PRIu64 " (slot %" PRIu64 " %s, byte %" PRIu64 ", %s)",
                    c.offset, c.offset / kSlotBytes, c.kind >= 0 ? kKindNames[c.kind] : "unnamed",
                    c.offset % kSlotBytes, kPatternNames[c.pattern]);
    } else {
      std::string in;
      for (const SlotValue& v : map.slot_values) {
        if (c.offset >= v.at && c.offset < v.at + v.size) in = " of " + v.what + " +" + std::to_string(c.offset - v.at);
      }
      std::snprintf(text, sizeof text, "offset %" PRIu64 " (page %" PRIu64 " %s, byte %" PRIu64 "%s, %s)", c.offset,
                    c.offset / map.psize, kKindNames[c.kind], c.offset % map.psize, in.c_str(),
                    kPatternNames[c.pattern]);
    }
    return std::string(text);
  };

  if (opt.one) {
    Case c = *opt.one;
    if (c.file == kBlocksFile) {
      if (c.offset >= blocks.size()) {
        Die("offset past the end of blocks.dat (" + std::to_string(blocks.size()) + " bytes)");
      }
      c.kind = BlocksFileKind(map, c.offset);
    } else {
      if (c.offset >= image.size()) Die("offset past the used pages (" + std::to_string(image.size()) + " bytes)");
      c.kind = map.kind[c.offset / map.psize];
    }
    const std::string dir = opt.keep.empty() ? tmp / "case" : opt.keep;
    std::filesystem::create_directories(dir);
    Runner run{dir, &image, file_size, &truth, opt.timeout, &blocks, &blocks_runs};
    const Result1 r = run.Run(c, /*verbose=*/true);
    std::printf("case %s:", where(c).c_str());
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
  if (opt.kinds == kAllKinds) {
    const std::string dir = tmp / "self-check";
    if (mkdir(dir.c_str(), 0755) != 0) DieErrno("mkdir " + dir);
    Runner run{dir, &image, file_size, &truth, 2, &blocks, &blocks_runs};
    const Case intact{0, kIntact};
    const std::pair<Fault, std::vector<Outcome>> checks[] = {{Fault::kNone, {kHarmless}},
                                                              {Fault::kCrash, {kCrash}},
                                                              {Fault::kHang, {kHang}},
                                                              {Fault::kWrite, {kHarmless, kWrote}},
                                                              {Fault::kWriteBlocks, {kHarmless, kWrote}},
                                                              {Fault::kNone, {kHarmless}},
                                                              {Fault::kLie, {kAsGood}}};
    for (const auto& [fault, want] : checks) {
      const Result1 r = run.Run(intact, false, fault);
      if (r.outcomes != want) {
        Die("self-check: fault " + std::to_string(static_cast<int>(fault)) + " was classified as " +
            std::to_string(r.outcomes.empty() ? -1 : r.outcomes[0]) + " (" + r.detail + ")");
      }
    }
    std::printf("damage_sweep: self-check passed (an intact copy is harmless; a crash, a hang, a write to data.mdb "
                "and to blocks.dat and a wrong read are each seen)\n");
  }

  const uint64_t seed = testing::TestSeed("damage_sweep");
  const std::vector<Case> cases = ChooseCases(map, image, blocks, opt.full, seed, opt.kinds);
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
      Runner run{dir, &image, file_size, &truth, opt.timeout, &blocks, &blocks_runs};
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
        const int kind = c.kind;
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
          failure_lines.push_back(where(c) + ": " + names + "\n      " + detail);
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

  std::printf("\n%-14s %7s", "kind", "cases");
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
    std::printf("replay one with: damage_sweep --from %s --case [blocks.dat:]OFFSET:PATTERN [--keep DIR]\n", dir.c_str());
    return 1;
  }
  return 0;
}
