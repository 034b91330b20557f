// lmdb_check.cc: a structural check of data.mdb before LMDB touches it (docs/format.md).
//
// LMDB checksums nothing of its own: a flipped byte in a branch or leaf page can make its cursor
// code read or write outside the map and crash the process. Opening a damaged database must
// fail with an error instead (semantics.md S8), so before an environment is opened we walk every
// B-tree of the newest meta page with pread() — never through a mapping, so the check itself
// cannot fault — and check each page against LMDB's on-disk layout (lmdb.h 0.9, 64-bit):
//
//   page header (16 bytes): u64 pgno, u16 pad, u16 flags, u16 lower, u16 upper
//                           (overflow pages: u32 page count at offset 12)
//   meta (at offset 16 of pages 0 and 1): u32 magic 0xBEEFC0DE, u32 version 1, u64 address,
//        u64 mapsize, MDB_db free, MDB_db main, u64 last_pg, u64 txnid
//   MDB_db (48 bytes): u32 pad (the page size, in the free DB's record), u16 flags, u16 depth,
//        u64 branch, leaf, overflow pages, u64 entries, u64 root
//   node (8 + key + data): u16 lo, u16 hi, u16 flags, u16 ksize; branch: child pgno =
//        lo | hi << 16 | flags << 32; leaf: data size = lo | hi << 16; F_BIGDATA: data is the
//        u64 pgno of an overflow run; F_SUBDATA: data is an MDB_db (a named database)
//
// Checked: page numbers within the file, each page's own number, flags, lower/upper, every node
// and key inside its page, key sizes, keys in order (LMDB's order for each database: bytes,
// bytes from the end, or integers, as its flags choose; the free list's keys are integers) and
// each inside the range its parent gives its page (LMDB descends into the child whose range
// holds a key: a damaged separator would send lookups to the wrong leaf, where records are not
// found, while walks in key order still find them), no LMDB flags on bigarray's databases (they
// choose the key order), all leaves at the recorded depth (LMDB's cursor stack holds 32 levels),
// no page visited twice, overflow runs within the file, the free list's page numbers (a write
// would allocate them), and a map size that a process can map. Cost: the branch and leaf pages,
// roughly one page per hundred blocks; payloads (overflow pages) are not read: their checksums
// cover them.
//
// The meta pages (docs/reliability.md, "Damaged meta pages"). LMDB writes commit T to meta page
// T & 1 and opens the page with the larger transaction id; readers then use page (that id & 1).
// A healthy file has T on page T & 1 and, on the other page, T - 1 (whose state stays intact:
// LMDB reuses no page the previous commit needs), or 0 with empty trees (a new environment, or a
// compacted copy), or the same trees as page T (bigarray's compaction writes both). Checked:
// both pages valid with one page size; the larger id on the page its parity names; no tie but
// 0 = 0 (a creation killed before its first commit); and the commit record ("\0commit" in the
// "meta" database, sealed: lmdb_records.h) of both states. The newest state's record must name
// its page's transaction id (a raised id). The other state's record must be older than the newest
// transaction: a byte that LOWERS the newest page's id (T to T - 2, say) makes LMDB open the
// previous state, whose commit record matches its own id, so without this the rollback would
// be silent. Cost: a few page reads (two root-to-leaf paths).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "bigarray/status.h"
#include "lmdb_records.h"

namespace bigarray::storage::internal {
namespace {

constexpr uint32_t kMagic = 0xBEEFC0DE;
constexpr uint16_t kBranch = 0x01, kLeaf = 0x02, kOverflow = 0x04, kMeta = 0x08;
constexpr uint16_t kBigData = 0x01, kSubData = 0x02, kDupData = 0x04;
constexpr uint16_t kReverseKey = 0x02, kIntegerKey = 0x08;  // MDB_db flags: other key orders
constexpr int kMaxDepth = 32;           // LMDB's CURSOR_STACK
constexpr uint16_t kMaxKeySize = 511;   // LMDB's default maxkeysize
constexpr size_t kHeader = 16, kNode = 8, kDbRecord = 48;
// The largest map a 64-bit Linux process can make with 4-level page tables (128 TiB of user
// address space): no LMDB wrote a larger mm_mapsize for a file smaller than that.
constexpr uint64_t kMaxMapBytes = uint64_t{1} << 47;
constexpr size_t kMetaBytes = 136;      // sizeof(MDB_meta)
constexpr uint64_t kNoPage = ~uint64_t{0};  // P_INVALID: the root of an empty tree
constexpr char kDocs[] = "docs/reliability.md, \"Damaged meta pages\"";

template <typename T>
T Get(const std::vector<unsigned char>& p, size_t at) {
  T v;
  std::memcpy(&v, p.data() + at, sizeof v);
  return v;
}

struct Db {
  uint16_t flags = 0, depth = 0;
  uint64_t root = kNoPage;
};

Db ReadDb(const std::vector<unsigned char>& p, size_t at) {
  Db d;
  d.flags = Get<uint16_t>(p, at + 4);
  d.depth = Get<uint16_t>(p, at + 6);
  d.root = Get<uint64_t>(p, at + 40);
  return d;
}

Status Damaged(const std::string& where, const std::string& what) {
  return Corruption("data.mdb is damaged (" + where + ": " + what + ")");
}

// Reads page `pgno` of `pages` with pread and checks its own number; `where` names the tree.
Status ReadPage(int fd, size_t psize, uint64_t pages, uint64_t pgno, std::vector<unsigned char>& page,
                const std::string& where) {
  if (pgno < 2 || pgno >= pages) return Damaged(where, "page " + std::to_string(pgno) + " is outside the file");
  page.resize(psize);
  size_t done = 0;
  while (done < psize) {
    ssize_t n = pread(fd, page.data() + done, psize - done, static_cast<off_t>(pgno * psize + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n == 0 ? Damaged(where, "short read of page " + std::to_string(pgno)) : ErrnoStatus(errno, "read data.mdb");
    done += static_cast<size_t>(n);
  }
  if (Get<uint64_t>(page, 0) != pgno) return Damaged(where, "page " + std::to_string(pgno) + " has a wrong number");
  return Status::Ok();
}

// LMDB's order of the keys of a database (mdb_default_cmp): bytes, then length; bytes from the
// end with MDB_REVERSEKEY; native unsigned integers of 4 or 8 bytes with MDB_INTEGERKEY (and in
// the free list, whose keys are transaction ids). nullopt: keys an integer order cannot compare.

std::optional<int> CompareKeys(uint16_t db_flags, std::string_view a, std::string_view b) {
  if (db_flags & kIntegerKey) {
    if (a.size() != b.size() || (a.size() != 4 && a.size() != 8)) return std::nullopt;
    uint64_t x = 0, y = 0;
    if (a.size() == 4) {
      uint32_t x4, y4;
      std::memcpy(&x4, a.data(), 4);
      std::memcpy(&y4, b.data(), 4);
      x = x4;
      y = y4;
    } else {
      std::memcpy(&x, a.data(), 8);
      std::memcpy(&y, b.data(), 8);
    }
    return x < y ? -1 : x > y ? 1 : 0;
  }
  const size_t n = std::min(a.size(), b.size());
  int c = 0;
  if (db_flags & kReverseKey) {
    for (size_t i = 1; i <= n && c == 0; ++i) {
      c = static_cast<int>(static_cast<unsigned char>(a[a.size() - i])) - static_cast<unsigned char>(b[b.size() - i]);
    }
  } else if (n > 0) {
    c = std::memcmp(a.data(), b.data(), n);
  }
  if (c != 0) return c < 0 ? -1 : 1;
  return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
}

// The named databases of a bigarray database, which it creates with no LMDB flags.
bool IsBigarrayDatabase(std::string_view name) { return name == "meta" || name == "blocks" || name == "log"; }

class Walker {
 public:
  Walker(int fd, size_t psize, uint64_t pages) : fd_(fd), psize_(psize), pages_(pages) {}

  // Checks a whole tree; `free_list` checks the leaves' data as page lists.
  Status Tree(const Db& db, const char* name, bool free_list) {
    if (db.root == ~uint64_t{0}) return db.depth == 0 ? Status::Ok() : Bad(name, "an empty tree with a depth");
    if (db.depth == 0 || db.depth > kMaxDepth) return Bad(name, "depth " + std::to_string(db.depth));
    name_ = name;
    free_list_ = free_list;
    key_flags_ = free_list ? kIntegerKey : db.flags;
    return Page(db.root, 1, db.depth, std::nullopt, std::nullopt);
  }

  // Whether the main tree named one of bigarray's databases.
  bool names_bigarray_database() const { return names_bigarray_database_; }

 private:
  Status Bad(const std::string& where, const std::string& what) {
    return Corruption("data.mdb is damaged (" + where + ": " + what + ")");
  }
  Status Bad(const std::string& what) { return Bad(std::string(name_) + " tree", what); }

  Status Read(uint64_t pgno, std::vector<unsigned char>& page) {
    return ReadPage(fd_, psize_, pages_, pgno, page, std::string(name_) + " tree");
  }

  // Checks page `pgno` at `level` of a tree of `depth` levels, whose keys must lie in
  // [low, high) (nullopt: unbounded): LMDB finds a key by descending into the child whose range
  // holds it, so a key outside its page's range, or keys out of order, would make lookups miss
  // records that a walk in key order still finds (a block would read as zeros).
  Status Page(uint64_t pgno, int level, int depth, const std::optional<std::string>& low,
              const std::optional<std::string>& high) {
    if (!seen_.insert(pgno).second) return Bad("page " + std::to_string(pgno) + " is referenced twice");
    std::vector<unsigned char> p;
    BA_RETURN_IF_ERROR(Read(pgno, p));
    const uint16_t flags = Get<uint16_t>(p, 10), lower = Get<uint16_t>(p, 12), upper = Get<uint16_t>(p, 14);
    const bool branch = flags & kBranch, leaf = flags & kLeaf;
    const std::string at = "page " + std::to_string(pgno);
    if (branch == leaf || (flags & (kOverflow | kMeta))) return Bad(at + ": bad flags");
    if (leaf != (level == depth)) return Bad(at + ": not at the recorded depth");
    if (lower < kHeader || upper > psize_ || lower > upper || (lower - kHeader) % 2) return Bad(at + ": bad bounds");
    const size_t keys = (lower - kHeader) / 2;
    if (keys == 0) return Bad(at + ": no entries");
    // The nodes' keys, checked in order and against the page's range. A branch page's first key
    // is not used (its child holds everything below the second key).
    std::vector<std::string_view> key(keys);
    std::vector<size_t> nodes(keys);
    for (size_t i = 0; i < keys; ++i) {
      const size_t node = Get<uint16_t>(p, kHeader + 2 * i);
      if (node < upper || node + kNode > psize_) return Bad(at + ": entry outside the page");
      const uint16_t ksize = Get<uint16_t>(p, node + 6);
      if (ksize > kMaxKeySize || node + kNode + ksize > psize_) return Bad(at + ": key outside the page");
      nodes[i] = node;
      key[i] = std::string_view(reinterpret_cast<const char*>(p.data() + node + kNode), ksize);
      if (branch && i == 0) continue;
      auto order = [&](std::string_view a, std::string_view b) -> Result<int> {
        const std::optional<int> c = CompareKeys(key_flags_, a, b);
        if (!c) return Bad(at + ": an integer key of " + std::to_string(a.size()) + " bytes");
        return *c;
      };
      if (low) {
        BA_ASSIGN_OR_RETURN(int c, order(key[i], *low));
        if (c < 0) return Bad(at + ": a key below the range its parent gives the page");
      }
      if (high) {
        BA_ASSIGN_OR_RETURN(int c, order(key[i], *high));
        if (c >= 0) return Bad(at + ": a key above the range its parent gives the page");
      }
      if (i > (branch ? 1u : 0u)) {
        BA_ASSIGN_OR_RETURN(int c, order(key[i], key[i - 1]));
        if (c <= 0) return Bad(at + ": keys out of order");
      }
    }
    for (size_t i = 0; i < keys; ++i) {
      const size_t node = nodes[i];
      const uint16_t lo = Get<uint16_t>(p, node), hi = Get<uint16_t>(p, node + 2);
      const uint16_t nflags = Get<uint16_t>(p, node + 4), ksize = Get<uint16_t>(p, node + 6);
      if (branch) {
        const uint64_t child = lo | uint64_t{hi} << 16 | uint64_t{nflags} << 32;
        const std::optional<std::string> child_low = i == 0 ? low : std::optional<std::string>(key[i]);
        const std::optional<std::string> child_high = i + 1 == keys ? high : std::optional<std::string>(key[i + 1]);
        BA_RETURN_IF_ERROR(Page(child, level + 1, depth, child_low, child_high));
        continue;
      }
      if (nflags & kDupData) return Bad(at + ": duplicate-sorted data (not used by bigarray)");
      const size_t data = node + kNode + ksize;
      const uint64_t dsize = lo | uint64_t{hi} << 16;
      if (nflags & kBigData) {
        if (data + 8 > psize_) return Bad(at + ": overflow reference outside the page");
        const uint64_t first = Get<uint64_t>(p, data);
        const uint64_t span = (dsize + kHeader + psize_ - 1) / psize_;
        if (first < 2 || first >= pages_ || span > pages_ - first) return Bad(at + ": overflow run outside the file");
        if (free_list_) {  // a long free list: check its page numbers too
          std::vector<unsigned char> run;
          BA_RETURN_IF_ERROR(Read(first, run));
          std::vector<unsigned char> ids(dsize);
          const ssize_t n = dsize > 0 ? pread(fd_, ids.data(), dsize, static_cast<off_t>(first * psize_ + kHeader)) : 0;
          if (n < 0) return ErrnoStatus(errno, "read data.mdb");
          if (n != static_cast<ssize_t>(dsize)) return Bad(at + ": short free list");
          BA_RETURN_IF_ERROR(FreeList(ids, 0, dsize, at));
        }
        continue;
      }
      if (data + dsize > psize_) return Bad(at + ": data outside the page");
      if (nflags & kSubData) {
        if (dsize != kDbRecord) return Bad(at + ": a named database record of " + std::to_string(dsize) + " bytes");
        const std::string subname(key[i]);
        const Db sub_db = ReadDb(p, data);
        if (IsBigarrayDatabase(subname)) {
          names_bigarray_database_ = true;
          // LMDB orders a database's keys by its flags: damaged flags would misdirect lookups.
          if (sub_db.flags != 0) {
            return Bad(at + ": the record of database '" + subname + "' has LMDB flags " + std::to_string(sub_db.flags) +
                       " (bigarray creates it with none)");
          }
        }
        Walker sub(fd_, psize_, pages_);
        sub.seen_ = std::move(seen_);
        BA_RETURN_IF_ERROR(sub.Tree(sub_db, ("database '" + subname + "'").c_str(), false));
        seen_ = std::move(sub.seen_);
        name_ = "main";
      } else if (free_list_) {
        BA_RETURN_IF_ERROR(FreeList(p, data, dsize, at));
      }
    }
    return Status::Ok();
  }

  // A free-list record: u64 count, then that many page numbers, each inside the file.
  Status FreeList(const std::vector<unsigned char>& p, size_t at, uint64_t size, const std::string& where) {
    if (size < 8 || size % 8) return Bad(where + ": malformed free list");
    const uint64_t n = Get<uint64_t>(p, at);
    if (n != size / 8 - 1) return Bad(where + ": free list count does not match its size");
    for (uint64_t i = 1; i <= n; ++i) {
      const uint64_t pg = Get<uint64_t>(p, at + 8 * i);
      if (pg < 2 || pg >= pages_) return Bad(where + ": free page " + std::to_string(pg) + " outside the file");
    }
    return Status::Ok();
  }

  int fd_;
  size_t psize_;
  uint64_t pages_;  // pages in use: last_pg + 1
  const char* name_ = "";
  bool free_list_ = false;
  uint16_t key_flags_ = 0;  // the flags that choose the key order
  bool names_bigarray_database_ = false;
  std::unordered_set<uint64_t> seen_;
};

// Looks `key` up in the B-tree `db` (in the key order its flags choose, as LMDB does), reading
// each page on the way with pread and checking it. nullopt: no such key. The value must be
// stored in the leaf (not on overflow pages); `flags` receives the node's flags.
Result<std::optional<std::vector<unsigned char>>> Lookup(int fd, size_t psize, uint64_t pages, const Db& db,
                                                         std::string_view key, uint16_t* flags,
                                                         const std::string& where) {
  if (db.root == kNoPage) return std::optional<std::vector<unsigned char>>();
  if (db.depth == 0 || db.depth > kMaxDepth) return Damaged(where, "depth " + std::to_string(db.depth));
  auto compare = [&](const unsigned char* k, size_t n) {
    return CompareKeys(db.flags, std::string_view(reinterpret_cast<const char*>(k), n), key);
  };
  std::vector<unsigned char> p;
  uint64_t pgno = db.root;
  for (int level = 1;; ++level) {
    BA_RETURN_IF_ERROR(ReadPage(fd, psize, pages, pgno, p, where));
    const uint16_t pflags = Get<uint16_t>(p, 10), lower = Get<uint16_t>(p, 12), upper = Get<uint16_t>(p, 14);
    const bool branch = pflags & kBranch, leaf = pflags & kLeaf;
    const std::string at = "page " + std::to_string(pgno);
    if (branch == leaf || (pflags & (kOverflow | kMeta))) return Damaged(where, at + ": bad flags");
    if (leaf != (level == db.depth)) return Damaged(where, at + ": not at the recorded depth");
    if (lower < kHeader || upper > psize || lower > upper || (lower - kHeader) % 2 || lower == kHeader) {
      return Damaged(where, at + ": bad bounds");
    }
    const size_t keys = (lower - kHeader) / 2;
    std::optional<uint64_t> child;
    for (size_t i = 0; i < keys; ++i) {
      const size_t node = Get<uint16_t>(p, kHeader + 2 * i);
      if (node < upper || node + kNode > psize) return Damaged(where, at + ": entry outside the page");
      const uint16_t lo = Get<uint16_t>(p, node), hi = Get<uint16_t>(p, node + 2);
      const uint16_t nflags = Get<uint16_t>(p, node + 4), ksize = Get<uint16_t>(p, node + 6);
      if (ksize > kMaxKeySize || node + kNode + ksize > psize) return Damaged(where, at + ": key outside the page");
      if (branch && i == 0) {  // the first entry's key is implicitly the lowest
        child = lo | uint64_t{hi} << 16 | uint64_t{nflags} << 32;
        continue;
      }
      const std::optional<int> order = compare(p.data() + node + kNode, ksize);
      if (!order) return Damaged(where, at + ": a key that its database's order cannot compare");
      const int c = *order;
      if (branch) {
        // The child whose range holds the key: the last entry whose key is not greater.
        if (c > 0) break;
        child = lo | uint64_t{hi} << 16 | uint64_t{nflags} << 32;
        continue;
      }
      if (c != 0) continue;
      const uint64_t dsize = lo | uint64_t{hi} << 16;
      if (nflags & kBigData) return Damaged(where, at + ": an unexpectedly large value");
      if (node + kNode + ksize + dsize > psize) return Damaged(where, at + ": data outside the page");
      *flags = nflags;
      const auto* data = p.data() + node + kNode + ksize;
      return std::optional<std::vector<unsigned char>>(std::vector<unsigned char>(data, data + dsize));
    }
    if (leaf) return std::optional<std::vector<unsigned char>>();
    pgno = *child;
  }
}

// The commit id in the commit record of the state whose main tree is `main`: nullopt when the
// state has none (not a bigarray database, or one of version 1); an error when a page on the way
// is damaged or the record does not match its checksum.
Result<std::optional<uint64_t>> CommitOfState(int fd, size_t psize, uint64_t pages, const Db& main,
                                              const std::string& where) {
  uint16_t flags = 0;
  BA_ASSIGN_OR_RETURN(auto meta_db, Lookup(fd, psize, pages, main, "meta", &flags, where + ", main tree"));
  if (!meta_db) return std::optional<uint64_t>();
  if (!(flags & kSubData) || meta_db->size() != kDbRecord) return Damaged(where, "the 'meta' database's record is malformed");
  static constexpr char kCommitKey[] = "\0commit";
  const std::string_view key(kCommitKey, sizeof kCommitKey - 1);
  BA_ASSIGN_OR_RETURN(auto sealed, Lookup(fd, psize, pages, ReadDb(*meta_db, 0), key, &flags, where + ", 'meta' tree"));
  if (!sealed) return std::optional<uint64_t>();
  const std::string_view value(reinterpret_cast<const char*>(sealed->data()), sealed->size());
  Result<std::string_view> body = OpenRecord(key, value, "commit");
  if (!body.ok()) return Damaged(where, body.status().message());
  BA_ASSIGN_OR_RETURN(CommitRecord rec, CommitRecord::Decode(*body));
  return std::optional<uint64_t>(rec.commit);
}

// What a meta page says (kHeader + kMetaBytes bytes read from it).
struct MetaPage {
  bool lmdb = false;  // P_META, LMDB's magic and data version: LMDB refuses the file otherwise
  uint32_t psize = 0;
  uint64_t mapsize = 0, last = 0, txnid = 0;
  Db free, main;
};

MetaPage ParseMeta(const std::vector<unsigned char>& m) {
  MetaPage mp;
  mp.lmdb = (Get<uint16_t>(m, 10) & kMeta) && Get<uint32_t>(m, kHeader) == kMagic && Get<uint32_t>(m, kHeader + 4) == 1;
  mp.psize = Get<uint32_t>(m, kHeader + 24);  // the free DB record's pad
  mp.mapsize = Get<uint64_t>(m, kHeader + 16);
  mp.free = ReadDb(m, kHeader + 24);
  mp.main = ReadDb(m, kHeader + 72);
  mp.last = Get<uint64_t>(m, kHeader + 120);
  mp.txnid = Get<uint64_t>(m, kHeader + 128);
  return mp;
}

Status ReadMeta(int fd, off_t at, std::vector<unsigned char>& m) {
  m.assign(kHeader + kMetaBytes, 0);
  ssize_t n;
  do {
    n = pread(fd, m.data(), m.size(), at);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, "read data.mdb");
  if (static_cast<size_t>(n) != m.size()) return Corruption("data.mdb is damaged (short meta page)");
  return Status::Ok();
}

std::string MetaName(int m) { return "meta page " + std::to_string(m); }

// Both meta records as they are now (page 1 found at page 0's page size, or 4 KiB), for
// CheckLmdbFile's retry; empty when they cannot be read.
std::string MetaBytes(int fd) {
  std::vector<unsigned char> m0, m1;
  if (!ReadMeta(fd, 0, m0).ok()) return {};
  const MetaPage p0 = ParseMeta(m0);
  const uint32_t psize = p0.lmdb ? p0.psize : 4096;
  if (psize < 512 || psize > 65536 || !ReadMeta(fd, psize, m1).ok()) return {};
  return std::string(m0.begin(), m0.end()) + std::string(m1.begin(), m1.end());
}

// Checks the meta pages and walks the trees of the newest one.
Status CheckOnce(int fd, uint64_t file_size) {
  std::vector<unsigned char> raw[2];
  BA_RETURN_IF_ERROR(ReadMeta(fd, 0, raw[0]));
  MetaPage meta[2];
  meta[0] = ParseMeta(raw[0]);
  // The page size is in page 0's meta; LMDB's default (4 KiB) finds page 1 when page 0 is damaged.
  const uint32_t psize = meta[0].lmdb ? meta[0].psize : 4096;
  if (psize < 512 || psize > 65536 || (psize & (psize - 1))) {
    return Corruption("data.mdb is damaged (page size " + std::to_string(psize) + ")");
  }
  if (file_size >= 2ull * psize) {
    BA_RETURN_IF_ERROR(ReadMeta(fd, static_cast<off_t>(psize), raw[1]));
    meta[1] = ParseMeta(raw[1]);
  }
  if (!meta[0].lmdb && !meta[1].lmdb) return InvalidArgument("not a bigarray database (data.mdb is not an LMDB file)");
  for (int m = 0; m < 2; ++m) {
    if (!meta[m].lmdb) {
      return Corruption("data.mdb is damaged (" + MetaName(m) + " is not a valid LMDB meta page, " + MetaName(1 - m) +
                        " is; " + kDocs + ")");
    }
  }
  if (meta[1].psize != psize) {
    return Corruption("data.mdb is damaged (the meta pages disagree on the page size: " + std::to_string(psize) +
                      " and " + std::to_string(meta[1].psize) + ")");
  }
  // LMDB opens the larger transaction id M, and its readers read page M & 1.
  const uint64_t m_txn = std::max(meta[0].txnid, meta[1].txnid);
  const int newest = static_cast<int>(m_txn & 1), older = 1 - newest;
  const MetaPage& mp = meta[newest];
  const MetaPage& op = meta[older];
  if (meta[0].txnid == meta[1].txnid && m_txn != 0) {
    return Corruption("data.mdb is damaged (both meta pages name transaction " + std::to_string(m_txn) +
                      ": one of them is damaged; " + kDocs + ")");
  }
  if (mp.txnid != m_txn) {
    return Corruption("data.mdb is damaged (" + MetaName(older) + " names transaction " + std::to_string(m_txn) +
                      ", which belongs on " + MetaName(newest) + ": " + MetaName(older) + " is damaged; " + kDocs + ")");
  }
  // LMDB maps mm_mapsize bytes when it opens the file without being told a size, and every
  // commit keeps the largest size seen: a damaged value made every open fail with ENOMEM
  // ("Cannot allocate memory"), here and in any other LMDB program. A writer (bigarray opens
  // with MDB_WRITEMAP) sizes the file to its map, so the map exceeds the file only in a copy
  // made with mdb_copy, and never beyond what a process could map.
  if (mp.mapsize > file_size && mp.mapsize > kMaxMapBytes) {
    return Corruption("data.mdb is damaged (" + MetaName(newest) + ": map size mm_mapsize " + std::to_string(mp.mapsize) +
                      " bytes, for a file of " + std::to_string(file_size) + " bytes and beyond what a process can map)");
  }
  const uint64_t last = mp.last;
  if (last < 1 || (last + 1) > file_size / psize) {
    return Corruption("data.mdb is truncated: its pages reach " + std::to_string((last + 1) * psize) +
                      " bytes, the file has " + std::to_string(file_size));
  }
  Walker w(fd, psize, last + 1);
  BA_RETURN_IF_ERROR(w.Tree(mp.free, "free-list", true));
  Walker main(fd, psize, last + 1);
  BA_RETURN_IF_ERROR(main.Tree(mp.main, "main", false));
  if (main.names_bigarray_database() && mp.main.flags != 0) {
    // LMDB orders the main tree by these flags, and refuses named databases under some.
    return Corruption("data.mdb is damaged (" + MetaName(newest) + ": the main database has LMDB flags " +
                      std::to_string(mp.main.flags) + "; bigarray creates it with none)");
  }

  // The newest state's commit record names its transaction (else its id was raised by damage).
  BA_ASSIGN_OR_RETURN(std::optional<uint64_t> newest_commit, CommitOfState(fd, psize, last + 1, mp.main, MetaName(newest)));
  if (newest_commit && *newest_commit != m_txn) {
    return Corruption("data.mdb is damaged (" + MetaName(newest) + " names transaction " + std::to_string(m_txn) +
                      " but leads to the state of commit " + std::to_string(*newest_commit) + ": " + MetaName(newest) +
                      " is damaged; " + kDocs + ")");
  }
  // The older page: a new environment's (or a compacted copy's) empty state, the same state as
  // the newest page (bigarray's compaction), or a state older than the newest transaction.
  if (op.txnid == 0 && op.main.root == kNoPage && op.free.root == kNoPage) return Status::Ok();
  if (op.main.root == mp.main.root && op.free.root == mp.free.root) return Status::Ok();
  // Its pages may reach past the newest state's last page (when it is the newest state, its
  // id lowered): bound them by the file only.
  const uint64_t op_pages = std::min(op.last, file_size / psize - 1) + 1;
  Result<std::optional<uint64_t>> older_commit = CommitOfState(fd, psize, op_pages, op.main, MetaName(older));
  if (older_commit.ok() && *older_commit && **older_commit >= m_txn) {
    // Exactly what a writer killed in the instant it wrote the meta page leaves too (LMDB writes
    // the trees' roots, then the id): the two cannot be told apart, and a silent rollback of an
    // acknowledged commit is the worse error.
    const bool killed_writer_too = op.txnid + 1 == m_txn && **older_commit == m_txn + 1;
    return Corruption("data.mdb is damaged (" + MetaName(older) + " names transaction " + std::to_string(op.txnid) +
                      " but leads to the state of commit " + std::to_string(**older_commit) + ", newer than the " +
                      std::to_string(m_txn) + " of " + MetaName(newest) + ": " + MetaName(older) +
                      " is damaged" + (killed_writer_too ? " (or a writer was killed in the instant it wrote it)" : "") +
                      ", and LMDB would open the older state; " + kDocs + ")");
  }
  if (!older_commit.ok() && older_commit.status().code() != Code::kCorruption) return older_commit.status();
  // LMDB never gives pages back (mm_last_pg only grows), so an older state reaching past the
  // newest one's last page was written after it: the older page's id was lowered.
  if (!older_commit.ok() && (op.txnid + 1 != m_txn || op.last > mp.last)) {
    // Two anomalies (an unexpected id or page count, a damaged state): whether that state was
    // the newest cannot be told.
    const std::string anomaly = op.txnid + 1 != m_txn ? "names transaction " + std::to_string(op.txnid) + ", not " + std::to_string(m_txn - 1)
                                                      : "reaches page " + std::to_string(op.last) + ", past the " + std::to_string(mp.last) +
                                                            " of " + MetaName(newest) + " (whose id it may be)";
    return Corruption("data.mdb is damaged (" + MetaName(older) + " " + anomaly + ", and its state cannot be read: " +
                      older_commit.status().message() + "; " + kDocs + ")");
  }
  return Status::Ok();
}

}  // namespace

// Checks the structure of data.mdb (open at `fd`, `file_size` bytes). kCorruption names what is
// damaged. Another process may commit meanwhile, and LMDB updates a meta page in place (its
// trees, then its transaction id): a check that fails while the meta pages change under it is
// retried.
Status CheckLmdbFile(int fd, uint64_t file_size) {
  for (int attempt = 0;; ++attempt) {
    const std::string before = MetaBytes(fd);
    Status st = CheckOnce(fd, file_size);
    if (st.ok() || attempt >= 4 || st.code() != Code::kCorruption) return st;
    // A writer still writing a meta page finishes within microseconds.
    usleep(1000);
    if (MetaBytes(fd) == before) return st;
  }
}

}  // namespace bigarray::storage::internal
