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
// and key inside its page, key sizes, keys in ascending order within each page (as bytes, in
// every tree but the free list's, whose keys are integers), all leaves at the recorded depth (LMDB's cursor stack
// holds 32 levels), no page visited twice, overflow runs within the file, and the free list's
// page numbers (a write would allocate them). Cost: the branch and leaf pages, roughly one page
// per hundred blocks; payloads (overflow pages) are not read: their checksums cover them.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "bigarray/status.h"

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

template <typename T>
T Get(const std::vector<unsigned char>& p, size_t at) {
  T v;
  std::memcpy(&v, p.data() + at, sizeof v);
  return v;
}

struct Db {
  uint16_t flags = 0, depth = 0;
  uint64_t root = ~uint64_t{0};
};

Db ReadDb(const std::vector<unsigned char>& p, size_t at) {
  Db d;
  d.flags = Get<uint16_t>(p, at + 4);
  d.depth = Get<uint16_t>(p, at + 6);
  d.root = Get<uint64_t>(p, at + 40);
  return d;
}

class Walker {
 public:
  Walker(int fd, size_t psize, uint64_t pages) : fd_(fd), psize_(psize), pages_(pages) {}

  // Checks a whole tree; `free_list` checks the leaves' data as page lists.
  Status Tree(const Db& db, const char* name, bool free_list) {
    if (db.root == ~uint64_t{0}) return db.depth == 0 ? Status::Ok() : Bad(name, "an empty tree with a depth");
    if (db.depth == 0 || db.depth > kMaxDepth) return Bad(name, "depth " + std::to_string(db.depth));
    name_ = name;
    free_list_ = free_list;
    ordered_ = !(db.flags & (kReverseKey | kIntegerKey));
    return Page(db.root, 1, db.depth);
  }

 private:
  Status Bad(const std::string& where, const std::string& what) {
    return Corruption("data.mdb is damaged (" + where + ": " + what + ")");
  }
  Status Bad(const std::string& what) { return Bad(std::string(name_) + " tree", what); }

  Status Read(uint64_t pgno, std::vector<unsigned char>& page) {
    if (pgno < 2 || pgno >= pages_) return Bad("page " + std::to_string(pgno) + " is outside the file");
    page.resize(psize_);
    size_t done = 0;
    while (done < psize_) {
      ssize_t n = pread(fd_, page.data() + done, psize_ - done, static_cast<off_t>(pgno * psize_ + done));
      if (n <= 0) return n == 0 ? Bad("short read of page " + std::to_string(pgno)) : ErrnoStatus(errno, "read data.mdb");
      done += static_cast<size_t>(n);
    }
    if (Get<uint64_t>(page, 0) != pgno) return Bad("page " + std::to_string(pgno) + " has a wrong number");
    return Status::Ok();
  }

  Status Page(uint64_t pgno, int level, int depth) {
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
    std::string_view previous;
    for (size_t i = 0; i < keys; ++i) {
      const size_t node = Get<uint16_t>(p, kHeader + 2 * i);
      if (node < upper || node + kNode > psize_) return Bad(at + ": entry outside the page");
      const uint16_t lo = Get<uint16_t>(p, node), hi = Get<uint16_t>(p, node + 2);
      const uint16_t nflags = Get<uint16_t>(p, node + 4), ksize = Get<uint16_t>(p, node + 6);
      if (ksize > kMaxKeySize || node + kNode + ksize > psize_) return Bad(at + ": key outside the page");
      // LMDB finds keys by binary search: one out of order (a damaged byte of a key) would make
      // others unfindable, e.g. a named database reported missing, or a block read as zeros.
      // (Keys compare as bytes, then by length; a branch page's first key is not used.)
      const std::string_view key(reinterpret_cast<const char*>(p.data() + node + kNode), ksize);
      if (ordered_ && i > (branch ? 1u : 0u) && !(previous < key)) {
        return Bad(at + ": keys out of order (entry " + std::to_string(i) + ")");
      }
      previous = key;
      if (branch) {
        const uint64_t child = lo | uint64_t{hi} << 16 | uint64_t{nflags} << 32;
        BA_RETURN_IF_ERROR(Page(child, level + 1, depth));
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
        Walker sub(fd_, psize_, pages_);
        sub.seen_ = std::move(seen_);
        const std::string subname(reinterpret_cast<const char*>(p.data() + node + kNode), ksize);
        BA_RETURN_IF_ERROR(sub.Tree(ReadDb(p, data), ("database '" + subname + "'").c_str(), false));
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
  bool ordered_ = true;  // keys compare as bytes (LMDB's default order)
  std::unordered_set<uint64_t> seen_;
};

}  // namespace

// Checks the structure of data.mdb (open at `fd`, `file_size` bytes). kCorruption names what is
// damaged. Another process may commit meanwhile: a check that fails while the newest meta page
// changes under it is retried.
Status CheckLmdbFile(int fd, uint64_t file_size) {
  for (int attempt = 0;; ++attempt) {
    std::vector<unsigned char> metas(160, 0);
    // The page size is in the free DB's record of page 0's meta; read 2 pages of the smallest
    // plausible size first to find it.
    const ssize_t got = pread(fd, metas.data(), 160, 0);
    if (got < 0) return ErrnoStatus(errno, "read data.mdb");
    if (got != 160) return Corruption("data.mdb is damaged (no meta page)");
    if (Get<uint32_t>(metas, kHeader) != kMagic) {
      return InvalidArgument("not a bigarray database (data.mdb is not an LMDB file)");
    }
    const uint32_t psize = Get<uint32_t>(metas, kHeader + 24);
    if (psize < 512 || psize > 65536 || (psize & (psize - 1))) {
      return Corruption("data.mdb is damaged (page size " + std::to_string(psize) + ")");
    }
    uint64_t best_txn = 0;
    int best = -1;
    std::vector<unsigned char> meta[2];
    for (int m = 0; m < 2; ++m) {
      meta[m].resize(kHeader + 160);
      const ssize_t n = pread(fd, meta[m].data(), meta[m].size(), static_cast<off_t>(m) * psize);
      if (n < 0) return ErrnoStatus(errno, "read data.mdb");
      if (n != static_cast<ssize_t>(meta[m].size())) return Corruption("data.mdb is damaged (short meta page)");
      if (Get<uint32_t>(meta[m], kHeader) != kMagic || Get<uint32_t>(meta[m], kHeader + 4) != 1) continue;
      const uint64_t txn = Get<uint64_t>(meta[m], kHeader + 128);  // mm_txnid
      if (best < 0 || txn > best_txn) {
        best = m;
        best_txn = txn;
      }
    }
    if (best < 0) return Corruption("data.mdb is damaged (no valid meta page)");
    const std::vector<unsigned char>& mp = meta[best];
    // LMDB maps mm_mapsize bytes when it opens the file without being told a size, and every
    // commit keeps the largest size seen: a damaged value made every open fail with ENOMEM
    // ("Cannot allocate memory"), here and in any other LMDB program. A writer (bigarray opens
    // with MDB_WRITEMAP) sizes the file to its map, so the map exceeds the file only in a copy
    // made with mdb_copy, and never beyond what a process could map.
    const uint64_t mapsize = Get<uint64_t>(mp, kHeader + 16);  // mm_mapsize
    if (mapsize > file_size && mapsize > kMaxMapBytes) {
      return Corruption("data.mdb is damaged (meta page " + std::to_string(best) + ": map size mm_mapsize " +
                        std::to_string(mapsize) + " bytes, for a file of " + std::to_string(file_size) +
                        " bytes and beyond what a process can map)");
    }
    const uint64_t last = Get<uint64_t>(mp, kHeader + 120);  // mm_last_pg
    if (last < 1 || (last + 1) > file_size / psize) {
      return Corruption("data.mdb is truncated: its pages reach " + std::to_string((last + 1) * psize) +
                        " bytes, the file has " + std::to_string(file_size));
    }
    Walker w(fd, psize, last + 1);
    Status st = w.Tree(ReadDb(mp, kHeader + 24), "free-list", true);
    if (st.ok()) {
      Walker main(fd, psize, last + 1);
      st = main.Tree(ReadDb(mp, kHeader + 72), "main", false);
    }
    if (st.ok() || attempt >= 4) return st;
    // A writer may have reused pages of the meta we read: retry if a newer commit exists.
    std::vector<unsigned char> again(kHeader + 160);
    uint64_t newest = 0;
    for (int m = 0; m < 2; ++m) {
      if (pread(fd, again.data(), again.size(), static_cast<off_t>(m) * psize) == static_cast<ssize_t>(again.size()) &&
          Get<uint32_t>(again, kHeader) == kMagic) {
        newest = std::max(newest, Get<uint64_t>(again, kHeader + 128));
      }
    }
    if (newest == best_txn) return st;
  }
}

}  // namespace bigarray::storage::internal
