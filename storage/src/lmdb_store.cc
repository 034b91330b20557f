// LmdbStore: the block store on LMDB, the embedded default (docs/format.md).
//
// Environment: MDB_NOTLS (snapshots are used by loader threads) | MDB_WRITEMAP (commits write
// straight into the file's pages) and, per commit, MDB_NOSYNC in relaxed mode. Three named
// databases: "meta", "blocks" and "log".
//
// Block payloads never pass through LMDB's memory map on our side: a commit reserves the value
// with MDB_RESERVE and pwritev()s header and payload at the value's file offset; a read looks the
// value up with mdb_get and preadv()s it. The page cache is the same one the map uses, so this
// is coherent, and it keeps LMDB's file pages out of this process's RSS (no page-table entries)
// and turns I/O errors into error codes instead of SIGBUS.
//
// Full disks: with MDB_WRITEMAP the file is sparse up to the map size and a write into a hole
// on a full disk would raise SIGBUS. Every commit therefore fallocate()s the pages it may append
// before it writes anything, and fails with kNoSpace, nothing written, when that fails.
//
// Locks (in this order):
//   Env::writer_mu   serializes write transactions within the process (LMDB's own writer lock
//                    serializes them across processes).
//   Env::map_mu      shared around every LMDB call that touches the map; exclusive to remap it
//                    (mdb_env_set_mapsize), which happens only with no write transaction open.
//                    Open read transactions survive a remap: they hold no pointers into it
//                    between calls, and payloads are read by file offset, not by pointer.
//   Snapshot::mu     LMDB calls on one read transaction (LMDB requires callers to serialize
//                    them); payload preadv runs outside it, so loads of different blocks
//                    proceed in parallel.
#include <dirent.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>

#include "bigarray/storage/block_store.h"
#include "change_log.h"
#include "checksum.h"
#include "block_delta.h"
#include "lmdb_internal.h"
#include "lmdb_records.h"
#include "lmdb_mounts.h"
#include "lmdb_slots.h"
#include "lmdb_status.h"

namespace bigarray::storage {
namespace {

using internal::LmdbStatus;

using internal::BlockHeader;
using internal::GetBE64;
using internal::GetLE64;
using internal::PutBE64;
using internal::PutLE64;
using internal::Tally;

constexpr size_t kReadPiece = 256 * 1024;  // read and hashed in pieces of this size (fits L2)
constexpr char kFormatKey[] = "\0format";  // value: "bigarray" + u32 LE version
constexpr char kLogFloorKey[] = "\0logfloor";  // value: u64 LE; log entries <= it were trimmed
constexpr char kCommitKey[] = "\0commit";  // value: internal::CommitRecord
constexpr std::string_view kFormatMagic = "bigarray";

std::string_view FormatKey() { return {kFormatKey, sizeof kFormatKey - 1}; }
std::string_view LogFloorKey() { return {kLogFloorKey, sizeof kLogFloorKey - 1}; }
std::string_view CommitKey() { return {kCommitKey, sizeof kCommitKey - 1}; }

struct BlockKey {
  unsigned char bytes[16];
  BlockKey(ArrayId a, BlockIndex i) {
    PutBE64(bytes, a);
    PutBE64(bytes + 8, i);
  }
  MDB_val val() { return MDB_val{sizeof bytes, bytes}; }
};

MDB_val StrVal(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view ValStr(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

std::string BlockName(ArrayId a, BlockIndex i) {
  return "array #" + std::to_string(a) + " block " + std::to_string(i);
}

constexpr size_t kPageHeader = 16;       // LMDB's page header: u64 pgno, u16 pad, u16 flags, ...
constexpr uint16_t kOverflowFlag = 0x04;  // P_OVERFLOW

// The file offset of the first overflow page of a value of at least half a page, computed from
// its address and the map's (`base`) without touching the map: a read through the map would
// fault in (and count in the process's RSS) up to 64 KiB of the file around it. The page's
// header is then read with the payload and checked (OverflowHeaderOk). nullopt: not
// page-aligned, so stored inline in a leaf page (or damaged): copy it through the pointer.
std::optional<off_t> OverflowPageOffset(const MDB_val& v, size_t page_size, uintptr_t base) {
  const auto addr = reinterpret_cast<uintptr_t>(v.mv_data);
  if (v.mv_size < page_size / 2 || addr < base + kPageHeader || (addr - kPageHeader - base) % page_size != 0) {
    return std::nullopt;
  }
  return static_cast<off_t>(addr - kPageHeader - base);
}

// The first page of a value of `value_bytes` at `offset`: its own number, P_OVERFLOW, and the
// run's page count (at byte 12), which LMDB trusts when it frees the run: a damaged count would
// make the commit that replaces the block free pages that other records still use.
bool OverflowHeaderOk(const unsigned char* header, off_t offset, size_t page_size, size_t value_bytes) {
  uint64_t pgno;
  uint16_t flags;
  uint32_t pages;
  std::memcpy(&pgno, header, 8);
  std::memcpy(&flags, header + 10, 2);
  std::memcpy(&pages, header + 12, 4);
  return pgno == static_cast<uint64_t>(offset) / page_size && (flags & kOverflowFlag) &&
         pages == (value_bytes + kPageHeader + page_size - 1) / page_size;
}

// Where a value's bytes live in data.mdb when LMDB stored it on overflow pages (every block of
// more than ~2 KiB): such a value starts right after the 16-byte header of its first page, whose
// first field is the page number and whose flags say P_OVERFLOW (LMDB's on-disk page layout).
// nullopt for a value stored inline in a leaf page: copy it through the pointer instead.
std::optional<off_t> OverflowOffset(const MDB_val& v, size_t page_size) {
  const auto addr = reinterpret_cast<uintptr_t>(v.mv_data);
  if (v.mv_size < page_size / 2 || (addr - kPageHeader) % page_size != 0) return std::nullopt;
  const auto* page = static_cast<const unsigned char*>(v.mv_data) - kPageHeader;
  uint64_t pgno;
  uint16_t flags;
  std::memcpy(&pgno, page, 8);
  std::memcpy(&flags, page + 10, 2);
  if (!(flags & kOverflowFlag)) return std::nullopt;
  return static_cast<off_t>(pgno * page_size + kPageHeader);
}

// Reads or writes exactly the iovecs' bytes at `offset`, retrying short transfers and EINTR.
Status FullIo(bool write, int fd, iovec* iov, int iovcnt, off_t offset, std::string_view what) {
  while (iovcnt > 0) {
    ssize_t n = write ? pwritev(fd, iov, iovcnt, offset) : preadv(fd, iov, iovcnt, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, what);
    }
    if (n == 0) return Corruption(std::string(what) + ": unexpected end of the file");
    offset += n;
    while (iovcnt > 0 && static_cast<size_t>(n) >= iov->iov_len) {
      n -= static_cast<ssize_t>(iov->iov_len);
      ++iov;
      --iovcnt;
    }
    if (iovcnt > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + n;
      iov->iov_len -= static_cast<size_t>(n);
    }
  }
  return Status::Ok();
}

// One LMDB environment, shared by every LmdbStore of this process on the same directory
// (LMDB forbids opening an environment twice in one process).
class Env {
 public:
  ~Env() {
    if (env_) mdb_env_close(env_);
    if (slots_fd_ >= 0) close(slots_fd_);
  }

  // `attempt`: how many times data.mdb was found replaced during this open (see the end of Open).
  static Result<std::shared_ptr<Env>> Open(const std::string& path, const LmdbOptions& options, int attempt = 0);

  // Remaps to at least `min_bytes` (0: adopt the size another process set). Takes map_mu
  // exclusively; the caller must hold writer_mu and no write transaction.
  Status Remap(uint64_t min_bytes);

  // Begins a transaction, adopting another process's map growth when LMDB asks to.
  Result<MDB_txn*> Begin(unsigned flags);
  // The error of every transaction once map_lost_ is set.
  Status MapLost() const;
  // map_mu_, shared, for a read or write through the map; MapLost() once the map is lost, so
  // that a transaction begun before (a snapshot a handle still holds) never reads through it.
  Result<std::shared_lock<std::shared_mutex>> ReadMap();

  MDB_env* env_ = nullptr;
  MDB_dbi meta_ = 0, blocks_ = 0, log_ = 0;
  int fd_ = -1;
  int slots_fd_ = -1;  // blocks.dat, the slots of large whole blocks (docs/format.md)
  size_t page_size_ = 4096;
  std::string path_;
  bool read_only_ = false;  // opened with MDB_RDONLY: no write transaction can begin

  std::mutex writer_mu_;
  std::shared_mutex map_mu_;
  std::atomic<uintptr_t> map_base_{0};  // the map's address once known; 0: not known
  // Set (under map_mu_ held exclusively) when LMDB failed to map data.mdb again while growing
  // the map: it unmaps the old map first and is left with none, so nothing may read through it
  // any more (ReadMap), transactions begun before included.
  std::atomic<bool> map_lost_{false};

  // The file offset of the first overflow page of `v`, found without reading the map (see
  // OverflowPageOffset); nullopt for a value stored inline. REQUIRES: map_mu_ held (shared).
  std::optional<off_t> PageOffset(const MDB_val& v);
};

std::optional<off_t> Env::PageOffset(const MDB_val& v) {
  // LMDB does not tell the map's address: it is learnt from the first overflow value read
  // through the map, and forgotten when the map moves (Remap, which holds map_mu_ exclusively).
  uintptr_t base = map_base_.load(std::memory_order_relaxed);
  if (base == 0) {
    if (auto offset = OverflowOffset(v, page_size_)) {
      base = reinterpret_cast<uintptr_t>(v.mv_data) - static_cast<uintptr_t>(*offset);
      map_base_.store(base, std::memory_order_relaxed);
    }
  }
  if (base == 0) return std::nullopt;
  return OverflowPageOffset(v, page_size_, base);
}

Result<MDB_txn*> Env::Begin(unsigned flags) {
  for (int attempt = 0;; ++attempt) {
    MDB_txn* txn = nullptr;
    int rc;
    {
      BA_ASSIGN_OR_RETURN(auto lock, ReadMap());  // a begin reads the meta pages through the map
      rc = mdb_txn_begin(env_, nullptr, flags, &txn);
    }
    if (rc == MDB_SUCCESS) return txn;
    if (rc != MDB_MAP_RESIZED || attempt > 3) return LmdbStatus(rc, "begin transaction on " + path_);
    // Another process grew the map beyond ours: adopt its size. A read-only begin may race
    // with our own commit, so take the writer lock as Remap requires.
    std::lock_guard w(writer_mu_);
    BA_RETURN_IF_ERROR(Remap(0));
  }
}

Result<std::shared_lock<std::shared_mutex>> Env::ReadMap() {
  std::shared_lock lock(map_mu_);
  if (map_lost_.load()) return MapLost();  // set under map_mu_ held exclusively (Remap)
  return lock;
}

Status Env::MapLost() const {
  return IOError("the map of " + path_ + "/data.mdb was lost when it could not be mapped again at a new size; "
                 "close the database and open it again (nothing committed is lost)");
}

// Whether the process may map `more` bytes besides what it maps now (RLIMIT_AS, ulimit -v). LMDB
// grows its map by unmapping it and mapping it again at the new size, so growing by `more`
// needs that much address space at once.
bool RoomToMap(uint64_t more) {
  if (more == 0) return true;
  void* p = mmap(nullptr, more, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return false;
  munmap(p, more);
  return true;
}

Status Env::Remap(uint64_t min_bytes) {
  std::unique_lock lock(map_mu_);
  if (map_lost_.load()) return MapLost();
  map_base_.store(0, std::memory_order_relaxed);  // the map may move
  MDB_envinfo info;
  mdb_env_info(env_, &info);
  struct stat st;
  if (fstat(fd_, &st) != 0) return ErrnoStatus(errno, "stat " + path_ + "/data.mdb");
  uint64_t size = std::max<uint64_t>(min_bytes, static_cast<uint64_t>(st.st_size));
  // A failed mdb_env_set_mapsize leaves LMDB without a map (it unmaps first): no transaction
  // may use the environment after it.
  auto set_size = [&](uint64_t bytes, const std::string& what) {
    const int rc = mdb_env_set_mapsize(env_, bytes);
    if (rc == MDB_SUCCESS) return Status::Ok();
    map_lost_ = true;
    return LmdbStatus(rc, what).WithContext(MapLost().message());
  };
  if (min_bytes == 0) {
    BA_RETURN_IF_ERROR(set_size(0, "adopt the map size of " + path_));  // the size in the meta page
    mdb_env_info(env_, &info);
  }
  if (size <= info.me_mapsize) return Status::Ok();
  constexpr uint64_t kAlign = 2ull << 20;
  size = (size + kAlign - 1) / kAlign * kAlign;
  // Refused here, the map stays as it is and usable: the commit that needed it fails alone.
  if (!RoomToMap(size - info.me_mapsize)) {
    return ResourceExhausted("cannot grow the map of " + path_ + "/data.mdb from " + std::to_string(info.me_mapsize) +
                             " to " + std::to_string(size) + " bytes: no address space for it (ulimit -v)");
  }
  return set_size(size, "grow the map of " + path_ + " to " + std::to_string(size) + " bytes");
}

}  // namespace
namespace internal {
Status CheckLmdbFile(int fd, uint64_t file_size);  // lmdb_check.cc
}  // namespace internal
namespace {

// Whether LMDB's main B-tree names "blocks" or "log", bigarray's other named databases: then a
// missing "meta" is damage, not another application's environment. Walks the main tree's
// entries in their order on disk, which finds them even when damage broke the key order.
bool NamesOurDatabases(MDB_txn* txn) {
  MDB_dbi main;
  MDB_cursor* cursor = nullptr;
  if (mdb_dbi_open(txn, nullptr, 0, &main) != MDB_SUCCESS || mdb_cursor_open(txn, main, &cursor) != MDB_SUCCESS) {
    return false;
  }
  bool ours = false;
  MDB_val key, val;
  for (int rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST); rc == MDB_SUCCESS && !ours;
       rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) {
    ours = ValStr(key) == "blocks" || ValStr(key) == "log";
  }
  mdb_cursor_close(cursor);
  return ours;
}

// Reads a sealed meta record; nullopt when absent. Caller holds the locks that make `txn` usable.
Result<std::optional<std::string>> GetSealed(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view what) {
  // No key longer than LMDB takes was ever stored (mdb_get would call it MDB_BAD_VALSIZE).
  if (key.size() > static_cast<size_t>(mdb_env_get_maxkeysize(mdb_txn_env(txn)))) return std::optional<std::string>();
  MDB_val k = StrVal(key), v;
  int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<std::string>();
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "read " + std::string(what));
  BA_ASSIGN_OR_RETURN(std::string_view body, internal::OpenRecord(key, ValStr(v), what));
  return std::optional<std::string>(body);
}

Result<Tally> GetTally(MDB_txn* txn, MDB_dbi dbi, const std::string& key) {
  BA_ASSIGN_OR_RETURN(auto body, GetSealed(txn, dbi, key, "tally"));
  if (!body) return Tally{};
  return Tally::Decode(*body, "tally");
}

// The commit record must name the transaction LMDB opened: otherwise LMDB chose a meta page
// that does not belong to the newest state (a damaged meta page), and reading on would
// silently return an older state, or pages that hold something else by now.
// A write transaction builds on the state before its own id.
// `newer`, when given, is set to whether the record names a later commit than the transaction's
// (see OpenSnapshot).
Status CheckCommitRecord(MDB_txn* txn, const Env& env, bool writing = false, bool* newer = nullptr) {
  BA_ASSIGN_OR_RETURN(auto body, GetSealed(txn, env.meta_, CommitKey(), "commit"));
  const CommitId opened = mdb_txn_id(txn) - (writing ? 1 : 0);
  if (!body) {
    return Corruption(env.path_ + "/data.mdb: the commit record is missing (LMDB opened state " +
                      std::to_string(opened) + "; its meta page or B-tree is damaged)");
  }
  BA_ASSIGN_OR_RETURN(internal::CommitRecord rec, internal::CommitRecord::Decode(*body));
  if (rec.commit != opened) {
    if (newer) *newer = rec.commit > opened;
    return Corruption(env.path_ + "/data.mdb: LMDB's meta page names commit " + std::to_string(opened) +
                      " but the state it leads to was written by commit " + std::to_string(rec.commit) +
                      ": a meta page is damaged (docs/reliability.md, \"Damaged meta pages\")");
  }
  return Status::Ok();
}

// The format record: "bigarray" + u32 LE version; sealed (lmdb_records.h) since version 2,
// bare in version 1.
std::string FormatRecord() {
  std::string body(kFormatMagic);
  for (int i = 0; i < 4; ++i) body.push_back(static_cast<char>(kFormatVersion >> (8 * i)));
  return internal::SealRecord(FormatKey(), body);
}

Result<uint32_t> FormatVersionOf(std::string_view value, const std::string& path) {
  std::string_view body = value;
  if (!(body.size() == kFormatMagic.size() + 4 && body.starts_with(kFormatMagic))) {
    Result<std::string_view> sealed = internal::OpenRecord(FormatKey(), value, "format");
    if (!sealed.ok() || sealed->size() != kFormatMagic.size() + 4 || !sealed->starts_with(kFormatMagic)) {
      return Corruption(path + ": the format record is damaged");
    }
    body = *sealed;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(body.data()) + kFormatMagic.size();
  const uint32_t version = p[0] | p[1] << 8 | p[2] << 16 | uint32_t{p[3]} << 24;
  if (version >= 2 && body.data() == value.data()) return Corruption(path + ": the format record is damaged");
  return version;
}

uint64_t UnixNanos() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Checks, without writing anything, that `path` holds a bigarray database we can read.
// `never_committed`: LMDB's files exist but no transaction was ever committed to them, i.e. a
// creation was interrupted (killed between creating the files and the first commit, which
// writes the whole initial structure at once): such a file holds nothing and may be initialized.
Status ProbeExisting(const std::string& path, bool* never_committed) {
  *never_committed = false;
  uint64_t file_size = 0;
  {
    // LMDB checksums none of its own pages: walk them with pread first, so that a damaged file
    // is an error here rather than a crash inside LMDB.
    const int fd = open((path + "/data.mdb").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, "open " + path + "/data.mdb");
    struct stat fst;
    Status st = fstat(fd, &fst) == 0 ? Status::Ok() : ErrnoStatus(errno, "stat " + path + "/data.mdb");
    if (st.ok() && fst.st_size < 2 * 4096) {
      st = InvalidArgument(path + " is not a bigarray database (data.mdb is not an LMDB file)");
    }
    if (st.ok()) st = internal::CheckLmdbFile(fd, static_cast<uint64_t>(fst.st_size)).WithContext(path);
    if (st.ok()) file_size = static_cast<uint64_t>(fst.st_size);
    close(fd);
    BA_RETURN_IF_ERROR(st);
  }
  MDB_env* env = nullptr;
  int rc = mdb_env_create(&env);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "create LMDB environment");
  mdb_env_set_maxdbs(env, 4);
  struct Closer {
    MDB_env* e;
    ~Closer() { mdb_env_close(e); }
  } closer{env};
  // Map the file's size (LMDB raises it to what the pages need), not the map size recorded in
  // the meta page: that one only sizes a writer's map.
  rc = mdb_env_set_mapsize(env, file_size);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "set the map size to probe " + path);
  rc = mdb_env_open(env, path.c_str(), MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0644);
  if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH) {
    return InvalidArgument(path + " is not a bigarray database (data.mdb is not an LMDB file)");
  }
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "open " + path);
  // A truncated data.mdb would make LMDB fault on pages past its end: check before any read.
  MDB_envinfo info;
  MDB_stat est;
  mdb_env_info(env, &info);
  mdb_env_stat(env, &est);
  struct stat st;
  if (stat((path + "/data.mdb").c_str(), &st) != 0) return ErrnoStatus(errno, "stat " + path);
  const uint64_t needed = (static_cast<uint64_t>(info.me_last_pgno) + 1) * est.ms_psize;
  if (static_cast<uint64_t>(st.st_size) < needed) {
    return Corruption(path + "/data.mdb is truncated: " + std::to_string(st.st_size) +
                      " bytes, but its pages reach " + std::to_string(needed));
  }
  if (info.me_last_txnid == 0 && est.ms_entries == 0) {
    *never_committed = true;
    return Status::Ok();
  }
  MDB_txn* txn = nullptr;
  rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "read " + path);
  MDB_dbi dbi;
  rc = mdb_dbi_open(txn, "meta", 0, &dbi);
  Status status;
  if (rc == MDB_NOTFOUND && NamesOurDatabases(txn)) {
    status = Corruption(path + ": its 'meta' database is missing (LMDB's main B-tree names 'blocks' or 'log' "
                               "but no longer 'meta': the file is damaged); nothing was written");
  } else if (rc == MDB_NOTFOUND) {
    status = InvalidArgument(path + " is an LMDB environment but not a bigarray database");
  } else if (rc != MDB_SUCCESS) {
    status = LmdbStatus(rc, "open the meta database of " + path);
  } else {
    MDB_val key = StrVal(FormatKey()), val;
    rc = mdb_get(txn, dbi, &key, &val);
    if (rc == MDB_NOTFOUND) {
      status = InvalidArgument(path + " is an LMDB environment but not a bigarray database");
    } else if (rc != MDB_SUCCESS) {
      status = LmdbStatus(rc, "read the format record of " + path);
    } else {
      Result<uint32_t> version = FormatVersionOf(ValStr(val), path);
      if (!version.ok()) {
        status = version.status();
      } else if (*version > kFormatVersion) {
        status = Unsupported(path + " has format version " + std::to_string(*version) +
                             "; this build of bigarray reads versions up to " +
                             std::to_string(kFormatVersion));
      } else if (*version < kFormatVersion) {
        status = FailedPrecondition(path + " has format version " + std::to_string(*version) +
                                    ", written by an older bigarray; this build reads version " +
                                    std::to_string(kFormatVersion) + ". Convert it with: bigarray upgrade " + path +
                                    " (docs/format.md, \"Upgrading\")");
      }
    }
  }
  mdb_txn_abort(txn);
  return status;
}

// Opens blocks.dat; creates it (and syncs the directory that names it) for a new database. An
// existing database without one is opened read-only only: reads of its slots say it is missing.
Status OpenSlotsFile(const std::string& path, bool read_only, bool create, int* fd) {
  const std::string file = path + "/" + std::string(kSlotsFile);
  *fd = open(file.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (*fd < 0 && errno == ENOENT && !read_only && !create) {
    return Corruption(file + " is missing: the blocks of more than 1 MiB are in it (restore it; a read-only "
                             "open reads the other blocks)");
  }
  if (*fd < 0 && errno == ENOENT && !read_only) {
    *fd = open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd >= 0) {
      const int dir = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      const bool synced = dir >= 0 && fsync(dir) == 0;
      const int err = errno;
      if (dir >= 0) close(dir);
      if (!synced) return ErrnoStatus(err, "sync " + path + " after creating " + file);
    }
  }
  if (*fd < 0) {
    // Read-only, a database that never stored a slot may have none: reads of a slot say so.
    if (errno == ENOENT && read_only) return Status::Ok();
    return ErrnoStatus(errno, "open " + file);
  }
  struct stat st;
  if (fstat(*fd, &st) != 0) return ErrnoStatus(errno, "stat " + file);
  if (!S_ISREG(st.st_mode)) return InvalidArgument(file + " is not a regular file: refusing to open it as a database");
  return Status::Ok();
}

// True when `path` holds no entry but "." and "..": the only directory we initialize.
bool DirectoryIsEmpty(const std::string& path) {
  DIR* d = opendir(path.c_str());
  if (!d) return false;
  bool empty = true;
  while (dirent* e = readdir(d)) {
    std::string_view name = e->d_name;
    if (name != "." && name != ".." && name != "lock.mdb") {
      empty = false;
      break;
    }
  }
  closedir(d);
  return empty;
}

Result<std::shared_ptr<Env>> Env::Open(const std::string& path, const LmdbOptions& options, int attempt) {
  struct stat st;
  bool exists = stat(path.c_str(), &st) == 0;
  if (!exists && errno != ENOENT && errno != ENOTDIR) return ErrnoStatus(errno, "open " + path);
  if (exists && !S_ISDIR(st.st_mode)) {
    return InvalidArgument(path + " is not a bigarray database (a database is a directory)");
  }
  const std::string data_file = path + "/data.mdb";
  const bool has_data = exists && stat(data_file.c_str(), &st) == 0;
  bool never_committed = false;  // has_data, but a creation was interrupted (ProbeExisting)
  // Opening a FIFO, a device or a directory as LMDB's files would hang or fail obscurely: say
  // what is wrong instead. (stat follows links: a link to a regular file is fine.)
  if (has_data && !S_ISREG(st.st_mode)) {
    return InvalidArgument(data_file + " is not a regular file: refusing to open it as a database");
  }
  if (exists && !has_data) {
    // A link to nothing: the database file is gone (LMDB would create a new one at its target).
    char target[4096];
    const ssize_t n = readlink(data_file.c_str(), target, sizeof target - 1);
    if (n >= 0) {
      return NotFound("no bigarray database at " + path + ": its data.mdb is a symbolic link to " +
                      std::string(target, static_cast<size_t>(n)) + ", which does not exist");
    }
  }
  if (exists) {
    const std::string lock_file = path + "/lock.mdb";
    struct stat lst;
    if (stat(lock_file.c_str(), &lst) == 0) {
      if (!S_ISREG(lst.st_mode)) {
        return InvalidArgument(lock_file + " is not a regular file (LMDB's lock file must be one; remove it)");
      }
    } else if (errno != ENOENT) {
      return ErrnoStatus(errno, "stat " + lock_file);
    } else if (lstat(lock_file.c_str(), &lst) == 0) {
      return InvalidArgument(lock_file + " is a symbolic link to nothing (remove it; LMDB creates its lock file)");
    }
  }
  if (!exists) {
    if (!options.create_if_missing || options.read_only) {
      return NotFound("no bigarray database at " + path);
    }
    if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, "create database directory " + path);
    }
  } else if (has_data) {
    BA_RETURN_IF_ERROR(ProbeExisting(path, &never_committed));
    if (never_committed && (!options.create_if_missing || options.read_only)) {
      return NotFound("no bigarray database at " + path + " (its creation was interrupted before the first commit)");
    }
  } else if (!options.create_if_missing || options.read_only) {
    return NotFound("no bigarray database at " + path + " (the directory has no data.mdb)");
  } else if (!DirectoryIsEmpty(path)) {
    return InvalidArgument(path + " is not a bigarray database (a non-empty directory without data.mdb)");
  }

  auto env = std::make_shared<Env>();
  env->path_ = path;
  env->read_only_ = options.read_only;
  int rc = mdb_env_create(&env->env_);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "create LMDB environment");
  mdb_env_set_maxdbs(env->env_, 4);
  mdb_env_set_maxreaders(env->env_, options.max_readers);
  uint64_t map = options.initial_map_bytes;
  if (has_data) map = std::max<uint64_t>(map, static_cast<uint64_t>(st.st_size));
  mdb_env_set_mapsize(env->env_, map);
  unsigned flags = MDB_NOTLS | (options.read_only ? MDB_RDONLY : MDB_WRITEMAP);
  // LMDB registers every reader in lock.mdb, so that no writer reuses the pages it reads. A
  // reader may skip that (MDB_NOLOCK) only where no writer can exist: on a read-only file
  // system. A read-only mount of a file system writable elsewhere, or a lock file this user
  // may not write, proves nothing about other writers (lmdb_mounts.h).
  const std::string why_lock = "LMDB must register this reader in " + path +
                               "/lock.mdb so that no writer reuses the pages it reads, and ";
  const std::string or_copy = "or copy the database elsewhere and read the copy";
  if (options.read_only) {
    BA_ASSIGN_OR_RETURN(const internal::ReadOnlyPlace place, internal::ReadOnlyPlaceOf(path));
    if (place == internal::ReadOnlyPlace::kReadOnlyFs) flags |= MDB_NOLOCK;
    if (place == internal::ReadOnlyPlace::kReadOnlyMountOnly) {
      return ErrnoStatus(EROFS, "open " + path + " read-only: " + why_lock + path +
                                    " is on a read-only mount of a file system that may be writable through another "
                                    "mount (a read-only bind mount or container volume), where a writer would not "
                                    "see this reader; mount it read-write (the handle stays read-only), " + or_copy);
    }
  }
  rc = mdb_env_open(env->env_, path.c_str(), flags, 0644);
  if (rc == EACCES && options.read_only) {
    return ErrnoStatus(rc, "open " + path + " read-only: " + why_lock +
                               "this user may not write it (or create it there); ask for write permission on " +
                               path + "/lock.mdb (on " + path + " when it has none yet), " + or_copy +
                               " (bigarray does not read without the lock: another user may be writing)");
  }
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "open " + path);
  mdb_env_get_fd(env->env_, &env->fd_);
  BA_RETURN_IF_ERROR(OpenSlotsFile(path, options.read_only, /*create=*/!has_data || never_committed, &env->slots_fd_));
  {
    // Compaction (lmdb_compact.cc) replaces data.mdb by a rename while it holds lock.mdb's lock
    // exclusively. A read-only open opens data.mdb before it waits for that lock, so it may have
    // opened the file that was replaced: then it opens again.
    struct stat opened, named;
    if (fstat(env->fd_, &opened) != 0) return ErrnoStatus(errno, "stat " + data_file);
    if (stat(data_file.c_str(), &named) != 0) return ErrnoStatus(errno, "stat " + data_file);
    if (opened.st_dev != named.st_dev || opened.st_ino != named.st_ino) {
      if (attempt >= 4) return IOError(data_file + " was replaced during each of 5 attempts to open it");
      env.reset();
      return Open(path, options, attempt + 1);
    }
  }
  MDB_stat est;
  mdb_env_stat(env->env_, &est);
  env->page_size_ = est.ms_psize;
  int reaped = 0;
  mdb_reader_check(env->env_, &reaped);

  // Open (or create) the named databases; initialize the format record of a new database. An
  // existing database must have them all: creating one there would commit an empty "blocks"
  // (say) over a damaged name in LMDB's main page, and every array would read as zeros for good.
  BA_ASSIGN_OR_RETURN(MDB_txn * txn, env->Begin(options.read_only ? MDB_RDONLY : 0));
  const unsigned create = options.read_only || (has_data && !never_committed) ? 0 : MDB_CREATE;
  Status status;
  struct {
    const char* name;
    MDB_dbi* dbi;
  } dbs[] = {{"meta", &env->meta_}, {"blocks", &env->blocks_}, {"log", &env->log_}};
  for (auto& d : dbs) {
    rc = mdb_dbi_open(txn, d.name, create, d.dbi);
    if (rc == MDB_NOTFOUND && has_data && !never_committed) {
      mdb_txn_abort(txn);
      return Corruption(path + ": its '" + d.name + "' database is missing (LMDB's main B-tree no longer " +
                        "names it: the file is damaged); nothing was written");
    }
    if (rc != MDB_SUCCESS) {
      mdb_txn_abort(txn);
      return LmdbStatus(rc, std::string("open the ") + d.name + " database of " + path);
    }
  }
  if (!options.read_only && (!has_data || never_committed)) {
    // A new database: the format record, the change log (floor 0, and this commit's record,
    // which lists nothing) and the commit record, in the first commit.
    const CommitId id = mdb_txn_id(txn);
    const std::string floor(8, '\0');
    unsigned char log_key[8];
    PutBE64(log_key, id);
    const std::string_view log_key_view(reinterpret_cast<const char*>(log_key), 8);
    const std::string log_record = internal::SealRecord(log_key_view, "");
    MDB_val lk{8, log_key}, lv = StrVal(log_record);
    if (rc = mdb_put(txn, env->log_, &lk, &lv, 0); rc != MDB_SUCCESS) {
      mdb_txn_abort(txn);
      return LmdbStatus(rc, "initialize " + path);
    }
    const std::pair<std::string_view, std::string> records[] = {
        {FormatKey(), FormatRecord()},
        {LogFloorKey(), internal::SealRecord(LogFloorKey(), floor)},
        {internal::SlotTableKey(), internal::SealRecord(internal::SlotTableKey(), internal::SlotTable{}.Encode())},
        {CommitKey(), internal::SealRecord(CommitKey(), internal::CommitRecord{id, UnixNanos()}.Encode())}};
    for (const auto& [key, value] : records) {
      MDB_val k = StrVal(key), v = StrVal(value);
      rc = mdb_put(txn, env->meta_, &k, &v, 0);
      if (rc != MDB_SUCCESS) {
        mdb_txn_abort(txn);
        return LmdbStatus(rc, "initialize " + path);
      }
    }
  } else if (Status check = CheckCommitRecord(txn, *env, !options.read_only); !check.ok()) {
    mdb_txn_abort(txn);
    return check;
  }
  // Commit even a read-only transaction: an aborted one would close the database handles.
  rc = mdb_txn_commit(txn);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "initialize " + path);
  return env;
}

// ---- records of the blocks database ----------------------------------------------------------

// A record of the blocks database found in a transaction, and where its value is.
struct RecordRef {
  std::string key;                   // 16 bytes: a whole block; 24 bytes: a delta
  size_t size = 0;                   // the value's bytes
  std::optional<off_t> page_offset;  // of its first overflow page; nullopt: inline_copy
  std::string inline_copy;

  BlockIndex index() const { return GetBE64(reinterpret_cast<const unsigned char*>(key.data()) + 8); }
  bool is_delta() const { return key.size() == 24; }
};

// Collects, in key order, the records of the blocks database from `start` on while `in_range`
// says the key belongs. Caller holds map_mu_ (shared) and serializes calls on `txn`.
Status CollectRecords(MDB_txn* txn, Env& env, const BlockKey& start,
                      const std::function<bool(const unsigned char* key)>& in_range, std::vector<RecordRef>* out,
                      std::string_view what) {
  MDB_cursor* cur;
  int rc = mdb_cursor_open(txn, env.blocks_, &cur);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, std::string(what));
  BlockKey first = start;
  MDB_val k = first.val(), v;
  Status status;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == MDB_SUCCESS; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    const auto* kb = static_cast<const unsigned char*>(k.mv_data);
    if (k.mv_size < 16) {
      status = Corruption(std::string(what) + ": a key of the blocks database is malformed (" +
                          std::to_string(k.mv_size) + " bytes)");
      break;
    }
    if (!in_range(kb)) break;
    if (k.mv_size != 16 && k.mv_size != 24) {
      status = Corruption(BlockName(GetBE64(kb), GetBE64(kb + 8)) + ": malformed record key (" +
                          std::to_string(k.mv_size) + " bytes)");
      break;
    }
    RecordRef r;
    r.key.assign(static_cast<const char*>(k.mv_data), k.mv_size);
    r.size = v.mv_size;
    r.page_offset = env.PageOffset(v);
    if (!r.page_offset) {
      // A value stored inside a leaf page is smaller than a page; a larger size is damage, and
      // copying it would read past the page.
      if (v.mv_size > env.page_size_) {
        status = Corruption(BlockName(GetBE64(kb), GetBE64(kb + 8)) + ": malformed value of " +
                            std::to_string(v.mv_size) + " bytes");
        break;
      }
      r.inline_copy.assign(static_cast<const char*>(v.mv_data), v.mv_size);
    }
    out->push_back(std::move(r));
  }
  mdb_cursor_close(cur);
  if (status.ok() && rc != MDB_SUCCESS && rc != MDB_NOTFOUND) status = LmdbStatus(rc, std::string(what));
  return status;
}

std::string RecordName(ArrayId a, const RecordRef& r) {
  std::string name = BlockName(a, r.index());
  if (r.is_delta()) {
    name += " (delta of commit " + std::to_string(GetBE64(reinterpret_cast<const unsigned char*>(r.key.data()) + 16)) + ")";
  }
  return name;
}

// Reads and decodes a record's header. The records' pages stay put while the transaction that
// found them is open.
Result<BlockHeader> ReadHeader(const Env& env, ArrayId a, const RecordRef& r) {
  const std::string what = RecordName(a, r);
  unsigned char header[internal::kSlotHeader] = {};
  size_t available = internal::kShortHeader;
  if (r.size < internal::kShortHeader) {
    return Corruption(what + ": stored value of " + std::to_string(r.size) + " bytes is too short for a header");
  }
  if (r.page_offset) {
    unsigned char page_header[kPageHeader];
    iovec iov[2] = {{page_header, sizeof page_header}, {header, internal::kShortHeader}};
    BA_RETURN_IF_ERROR(FullIo(false, env.fd_, iov, 2, *r.page_offset, "read the header of " + what));
    if (!OverflowHeaderOk(page_header, *r.page_offset, env.page_size_, r.size)) {
      return Corruption(what + ": the header of its first page in data.mdb is damaged");
    }
  } else {
    available = std::min(r.inline_copy.size(), sizeof header);
    std::memcpy(header, r.inline_copy.data(), available);
  }
  BA_ASSIGN_OR_RETURN(BlockHeader h, internal::DecodeBlockHeader(header, available, r.size, what));
  if (r.is_delta() && (h.kind != internal::kDelta ||
                       h.commit != GetBE64(reinterpret_cast<const unsigned char*>(r.key.data()) + 16))) {
    return Corruption(what + ": its header does not belong to its key");
  }
  if (!r.is_delta() && h.kind == internal::kDelta) return Corruption(what + ": its header does not belong to its key");
  return h;
}

// Where a record's payload lies in a file: a slot of blocks.dat, or the overflow pages of
// data.mdb after the header. nullopt: inside a leaf page (RecordRef::inline_copy).
struct FilePlace {
  int fd;
  off_t offset;
};
std::optional<FilePlace> PayloadPlace(const Env& env, const RecordRef& r, const BlockHeader& h) {
  if (h.slotted()) return FilePlace{env.slots_fd_, static_cast<off_t>(h.slot * internal::kSlotBytes)};
  if (r.page_offset) return FilePlace{env.fd_, *r.page_offset + static_cast<off_t>(kPageHeader + h.header_bytes)};
  return std::nullopt;
}

Status SlotsFileMissing(const Env& env, ArrayId a, const RecordRef& r) {
  return Corruption(RecordName(a, r) + ": its slot is in " + env.path_ + "/" + std::string(kSlotsFile) +
                    ", which is missing");
}

// Reads a record's payload into `out` (exactly its size), hashing each piece while it is in the
// CPU cache, and checks the checksum.
Status ReadPayload(const Env& env, ArrayId a, const RecordRef& r, const BlockHeader& h, std::span<std::byte> out) {
  internal::BlockHasher hasher(internal::PayloadSeed(a, r.index(), h));
  if (const std::optional<FilePlace> place = PayloadPlace(env, r, h)) {
    if (place->fd < 0) return SlotsFileMissing(env, a, r);
    for (size_t done = 0; done < out.size();) {
      const size_t n = std::min(out.size() - done, kReadPiece);
      iovec piece{out.data() + done, n};
      BA_RETURN_IF_ERROR(
          FullIo(false, place->fd, &piece, 1, place->offset + static_cast<off_t>(done), "read " + RecordName(a, r)));
      hasher.Update(out.subspan(done, n));
      done += n;
    }
  } else {
    std::memcpy(out.data(), r.inline_copy.data() + h.header_bytes, out.size());
    hasher.Update(out);
  }
  if (hasher.Digest() != h.checksum) {
    return Corruption(RecordName(a, r) + ": checksum mismatch (the data on disk is damaged)");
  }
  return Status::Ok();
}

// Reads bytes [offset, offset + out.size()) of a record's payload, unchecked (the caller checks
// the record's checksum elsewhere, or relies on readers to).
Status ReadPayloadRange(const Env& env, ArrayId a, const RecordRef& r, const BlockHeader& h, size_t offset,
                        std::span<std::byte> out) {
  if (const std::optional<FilePlace> place = PayloadPlace(env, r, h)) {
    if (place->fd < 0) return SlotsFileMissing(env, a, r);
    iovec piece{out.data(), out.size()};
    return FullIo(false, place->fd, &piece, 1, place->offset + static_cast<off_t>(offset), "read " + RecordName(a, r));
  }
  std::memcpy(out.data(), r.inline_copy.data() + h.header_bytes + offset, out.size());
  return Status::Ok();
}

constexpr size_t kMaxDeltas = 64;            // delta records per block before it is rewritten whole
constexpr size_t kMinDeltaBudget = 64 << 10;  // delta bytes a block may gather before a rewrite
constexpr size_t kDiffPiece = 64 << 10;       // compared in pieces of this size

// A block's stored records: the whole-block record (if any) first, then its deltas in order.
using Records = std::vector<std::pair<RecordRef, BlockHeader>>;

// The delta body that turns the block's stored records into `now`; nullopt when a whole-block
// record is the better write. Deltas gather until their bytes reach the whole-block payload's
// (at least kMinDeltaBudget): a block that grows by appends is then rewritten whole each time it
// doubles, so that appends write about three times what they append (docs/format.md).
Result<std::optional<std::string>> MakeDelta(const Env& env, ArrayId a, const Records& old, std::span<const std::byte> now) {
  if (old.empty()) return std::optional<std::string>();
  const bool has_base = !old[0].first.is_delta();
  const size_t base_len = has_base ? old[0].second.PayloadBytes(old[0].first.size) : 0;
  size_t gathered = 0, extent = base_len;
  std::vector<std::vector<std::byte>> deltas;
  for (size_t n = has_base ? 1 : 0; n < old.size(); ++n) {
    const auto& [r, h] = old[n];
    deltas.emplace_back(r.size - h.header_bytes);
    BA_RETURN_IF_ERROR(ReadPayload(env, a, r, h, deltas.back()));
    gathered += deltas.back().size();
    extent = std::max(extent, internal::DeltaExtent(deltas.back()));
  }
  const size_t threshold = std::max(base_len, kMinDeltaBudget);
  if (deltas.size() >= kMaxDeltas || gathered >= threshold) return std::optional<std::string>();
  // Nor a delta larger than the block's whole record would be: zeroing the tail of a block (a
  // shrinking resize) would store the zeros, where a whole rewrite stores less and frees the old
  // record, so that compaction gives the tail back (issue 15).
  internal::DeltaEncoder encoder(std::min(threshold - gathered, TrimmedSize(now)));
  const size_t n = std::max(extent, now.size());
  std::vector<std::byte> was(kDiffPiece), is(kDiffPiece);
  for (size_t at = 0; at < n; at += kDiffPiece) {
    const size_t len = std::min(kDiffPiece, n - at);
    std::span<std::byte> old_piece(was.data(), len), new_piece(is.data(), len);
    std::memset(old_piece.data(), 0, len);
    if (at < base_len) {
      BA_RETURN_IF_ERROR(ReadPayloadRange(env, a, old[0].first, old[0].second, at, old_piece.first(std::min(len, base_len - at))));
    }
    // Apply the deltas' runs that fall in this piece: over a scratch block window.
    for (size_t d = 0; d < deltas.size(); ++d) {
      const auto& body = deltas[d];
      for (size_t p = 0; p + 8 <= body.size();) {
        const auto* u = reinterpret_cast<const unsigned char*>(body.data() + p);
        const size_t off = u[0] | u[1] << 8 | u[2] << 16 | size_t{u[3]} << 24;
        const size_t l = u[4] | u[5] << 8 | u[6] << 16 | size_t{u[7]} << 24;
        p += 8;
        if (l > body.size() - p) break;
        const size_t lo = std::max(off, at), hi = std::min(off + l, at + len);
        if (lo < hi) std::memcpy(old_piece.data() + (lo - at), body.data() + p + (lo - off), hi - lo);
        p += l;
      }
    }
    std::memset(new_piece.data(), 0, len);
    if (at < now.size()) std::memcpy(new_piece.data(), now.data() + at, std::min(len, now.size() - at));
    if (!encoder.Add(at, old_piece, new_piece)) return std::optional<std::string>();
  }
  return std::optional<std::string>(encoder.Finish());
}

// ---- snapshots -------------------------------------------------------------------------------

class LmdbSnapshot final : public Snapshot {
 public:
  LmdbSnapshot(std::shared_ptr<Env> env, MDB_txn* txn)
      : env_(std::move(env)), txn_(txn), commit_(mdb_txn_id(txn)), pid_(getpid()) {}
  // In a forked child the transaction is the parent's: ending it would clear the parent's slot
  // of LMDB's reader table (shared through lock.mdb), and writers could then reuse the pages of
  // its snapshot, which its views may show (blocks mapped from the file). The child leaks it.
  ~LmdbSnapshot() override {
    if (getpid() == pid_) mdb_txn_abort(txn_);
  }

  CommitId commit_id() const override { return commit_; }
  Status ReadBlock(ArrayId a, BlockIndex i, std::span<std::byte> out) override;
  Result<std::optional<BlockFileRange>> MappableBlock(ArrayId a, BlockIndex i, size_t block_size) override;
  Status ForEachBlock(ArrayId a, const std::function<bool(const BlockInfo&)>& fn) override;
  Result<std::optional<std::string>> GetMeta(std::string_view key) override;
  Status ForEachMetaFrom(std::string_view prefix, std::string_view from,
                         const std::function<bool(std::string_view, std::string_view)>& fn) override;
  Result<ChangeSet> ChangesSince(CommitId from) override;
  Result<uint64_t> VerifyBlocks(ArrayId a, size_t block_size,
                                const std::function<void(BlockIndex, const Status&)>& damaged) override;
  Status VerifyRecords(const std::function<void(const Status&)>& damaged) override;

 private:
  // Every record of array `a` with its header, and whether they agree with the array's tally.
  // A record whose header is damaged fails the walk, or, with `damaged`, is reported there and
  // left out.
  struct Walked {
    std::vector<std::pair<RecordRef, BlockHeader>> records;
    Status tally;  // kCorruption naming the difference, or ok
  };
  Result<Walked> Walk(ArrayId a, const std::function<void(BlockIndex, const Status&)>* damaged = nullptr);
  // The records of block i: its whole-block record (if any) first, then its deltas.
  Result<std::vector<RecordRef>> BlockRecords(ArrayId a, BlockIndex i);

  const std::shared_ptr<Env> env_;
  MDB_txn* const txn_;
  const CommitId commit_;
  const pid_t pid_;  // the process whose transaction txn_ is
  std::mutex mu_;  // serializes LMDB calls on txn_
};

Result<std::vector<RecordRef>> LmdbSnapshot::BlockRecords(ArrayId a, BlockIndex i) {
  std::vector<RecordRef> records;
  BlockKey key(a, i);
  BA_ASSIGN_OR_RETURN(auto map_lock, env_->ReadMap());
  std::lock_guard lock(mu_);
  BA_RETURN_IF_ERROR(CollectRecords(
      txn_, *env_, key, [&](const unsigned char* k) { return std::memcmp(k, key.bytes, 16) == 0; }, &records,
      "look up " + BlockName(a, i)));
  return records;
}

Result<std::optional<BlockFileRange>> LmdbSnapshot::MappableBlock(ArrayId a, BlockIndex i, size_t block_size) {
  BA_ASSIGN_OR_RETURN(std::vector<RecordRef> records, BlockRecords(a, i));
  std::optional<BlockFileRange> range;
  if (records.empty()) return std::optional<BlockFileRange>(BlockFileRange{});  // never written, or deleted: zeros
  const RecordRef& r = records[0];
  if (records.size() != 1 || r.is_delta()) return range;  // deltas
  BA_ASSIGN_OR_RETURN(BlockHeader h, ReadHeader(*env_, a, r));
  const size_t payload = h.PayloadBytes(r.size);
  if (payload > block_size) {
    return Corruption(RecordName(a, r) + ": stored payload of " + std::to_string(payload) +
                      " bytes does not fit a block of " + std::to_string(block_size) + " bytes");
  }
  const std::optional<FilePlace> place = PayloadPlace(*env_, r, h);
  if (!place) return range;  // inside a page
  if (place->fd < 0) return SlotsFileMissing(*env_, a, r);
  const auto page = static_cast<off_t>(sysconf(_SC_PAGESIZE));
  if (place->offset % page != 0 || static_cast<off_t>(payload) % page != 0) return range;  // a short header
  // Pages past the end of the file would raise SIGBUS in whoever reads them: a damaged size.
  const std::string file = env_->path_ + "/" + std::string(h.slotted() ? kSlotsFile : "data.mdb");
  struct stat st;
  if (fstat(place->fd, &st) != 0) return ErrnoStatus(errno, "stat " + file);
  if (place->offset + static_cast<off_t>(payload) > st.st_size) {
    return Corruption(RecordName(a, r) + ": its payload of " + std::to_string(payload) + " bytes would end past the end of " +
                      file + " (" + std::to_string(st.st_size) + " bytes)");
  }
  return std::optional<BlockFileRange>(
      BlockFileRange{place->fd, place->offset, payload, h.checksum, internal::PayloadSeed(a, i, h), RecordName(a, r)});
}

Status LmdbSnapshot::ReadBlock(ArrayId a, BlockIndex i, std::span<std::byte> out) {
  BA_ASSIGN_OR_RETURN(std::vector<RecordRef> records, BlockRecords(a, i));
  size_t filled = 0;  // bytes of `out` written so far; the rest is zero-filled at the end
  std::vector<std::byte> delta;
  for (const RecordRef& r : records) {
    BA_ASSIGN_OR_RETURN(BlockHeader h, ReadHeader(*env_, a, r));
    const size_t payload = h.PayloadBytes(r.size);
    if (!r.is_delta()) {
      if (payload > out.size()) {
        return Corruption(RecordName(a, r) + ": stored payload of " + std::to_string(payload) +
                          " bytes does not fit a block of " + std::to_string(out.size()) + " bytes");
      }
      BA_RETURN_IF_ERROR(ReadPayload(*env_, a, r, h, out.first(payload)));
      filled = payload;
      continue;
    }
    if (filled < out.size()) {
      std::memset(out.data() + filled, 0, out.size() - filled);
      filled = out.size();
    }
    delta.resize(payload);
    BA_RETURN_IF_ERROR(ReadPayload(*env_, a, r, h, delta));
    BA_RETURN_IF_ERROR(internal::ApplyDelta(RecordName(a, r), delta, out));
  }
  if (filled < out.size()) std::memset(out.data() + filled, 0, out.size() - filled);
  return Status::Ok();
}

Result<LmdbSnapshot::Walked> LmdbSnapshot::Walk(ArrayId a, const std::function<void(BlockIndex, const Status&)>* damaged) {
  Walked w;
  std::vector<RecordRef> records;
  Tally expected;
  {
    BA_ASSIGN_OR_RETURN(auto map_lock, env_->ReadMap());
    std::lock_guard lock(mu_);
    BA_RETURN_IF_ERROR(CollectRecords(
        txn_, *env_, BlockKey(a, 0), [&](const unsigned char* k) { return GetBE64(k) == a; }, &records,
        "list the blocks of array #" + std::to_string(a)));
    BA_ASSIGN_OR_RETURN(expected, GetTally(txn_, env_->meta_, internal::ArrayTallyKey(a)));
  }
  // Headers are read with pread outside the locks (a read through the map would fault in 64 KiB
  // around each); the snapshot keeps these pages from being reused.
  Tally found;
  for (RecordRef& r : records) {
    Result<BlockHeader> header = ReadHeader(*env_, a, r);
    if (!header.ok() && damaged && header.status().code() == Code::kCorruption) {
      (*damaged)(r.index(), header.status());
      continue;
    }
    BA_ASSIGN_OR_RETURN(BlockHeader h, std::move(header));
    found.Add(r.key, h.checksum, h.PayloadBytes(r.size));
    w.records.emplace_back(std::move(r), h);
  }
  if (found != expected) {
    w.tally = Corruption("array #" + std::to_string(a) + ": its stored blocks do not match the record of what it stores (" +
                         std::to_string(found.records) + " records of " + std::to_string(found.bytes) + " bytes found, " +
                         std::to_string(expected.records) + " of " + std::to_string(expected.bytes) +
                         " recorded" + (found.records == expected.records ? ", digests differ" : "") +
                         "): a block record is missing, extra, moved or damaged");
  }
  return w;
}

Status LmdbSnapshot::ForEachBlock(ArrayId a, const std::function<bool(const BlockInfo&)>& fn) {
  BA_ASSIGN_OR_RETURN(Walked w, Walk(a));
  BA_RETURN_IF_ERROR(w.tally);
  std::vector<BlockInfo> blocks;
  for (const auto& [r, h] : w.records) {
    const uint64_t payload = h.PayloadBytes(r.size);
    if (!blocks.empty() && blocks.back().index == r.index()) {
      blocks.back().commit = std::max(blocks.back().commit, h.commit);
      blocks.back().stored_bytes += payload;
    } else {
      blocks.push_back(BlockInfo{r.index(), h.commit, payload});
    }
  }
  for (const BlockInfo& info : blocks) {
    if (!fn(info)) break;
  }
  return Status::Ok();
}

Result<uint64_t> LmdbSnapshot::VerifyBlocks(ArrayId a, size_t block_size,
                                            const std::function<void(BlockIndex, const Status&)>& damaged) {
  // Only damage is reported through `damaged`; any other failure (I/O, resources) ends the
  // walk as that error, so that it is never counted as a damaged block.
  Result<Walked> w = Walk(a, &damaged);
  if (!w.ok()) {
    if (w.status().code() != Code::kCorruption) return w.status();
    damaged(kNoBlock, w.status());
    return 0;
  }
  if (!w->tally.ok()) damaged(kNoBlock, w->tally);
  std::vector<std::byte> block(block_size);
  uint64_t checked = 0;
  for (size_t n = 0; n < w->records.size(); ++n) {
    const BlockIndex i = w->records[n].first.index();
    if (n > 0 && w->records[n - 1].first.index() == i) continue;  // read with its first record
    Status st = ReadBlock(a, i, block);
    if (st.code() != Code::kCorruption) BA_RETURN_IF_ERROR(st);
    if (!st.ok()) damaged(i, st);
    ++checked;
  }
  return checked;
}

Result<std::optional<std::string>> LmdbSnapshot::GetMeta(std::string_view key) {
  if (!key.empty() && key[0] == kReservedMetaPrefix) return InvalidArgument("metadata keys beginning with NUL belong to the store");
  BA_ASSIGN_OR_RETURN(auto map_lock, env_->ReadMap());
  std::lock_guard lock(mu_);
  return GetSealed(txn_, env_->meta_, key, "metadata");
}

Status LmdbSnapshot::ForEachMetaFrom(std::string_view prefix, std::string_view from,
                                     const std::function<bool(std::string_view, std::string_view)>& fn) {
  // Listing a whole class of keys ("n/") from its start: the records found must match the
  // class's tally, so that a record whose key was damaged into another class is noticed, not
  // silently missing; such a listing is read whole before `fn` sees any record. Any other is
  // read in batches, `fn` called between them without the locks, so that one that stops early
  // reads about what it listed. Batches start small and double (a caller that stops after one
  // record, as a listing of one level does at each sub-group, reads a few).
  size_t batch = 8;
  const std::string_view cls = internal::MetaClass(prefix);
  const bool whole_class = !prefix.empty() && cls.size() == prefix.size() && from <= prefix;
  // LMDB refuses to seek to a key longer than any it stores (MDB_BAD_VALSIZE): no key begins with
  // such a prefix, and a longer start is sought by its first max_key bytes.
  const size_t max_key = static_cast<size_t>(mdb_env_get_maxkeysize(mdb_txn_env(txn_)));
  if (prefix.size() > max_key) return Status::Ok();
  std::string next(std::max(prefix, from));
  for (;;) {
    std::vector<std::pair<std::string, std::string>> found;
    Tally expected, seen;
    bool more = false;
    {
      BA_ASSIGN_OR_RETURN(auto map_lock, env_->ReadMap());
      std::lock_guard lock(mu_);
      MDB_cursor* cur;
      int rc = mdb_cursor_open(txn_, env_->meta_, &cur);
      if (rc != MDB_SUCCESS) return LmdbStatus(rc, "list metadata");
      MDB_val k = StrVal(std::string_view(next).substr(0, max_key)), v;
      Status status;
      for (rc = mdb_cursor_get(cur, &k, &v, next.empty() ? MDB_FIRST : MDB_SET_RANGE); rc == MDB_SUCCESS;
           rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (ValStr(k) < next) continue;  // the one key that is `next` cut to max_key bytes
        if (!ValStr(k).starts_with(prefix)) break;
        if (ValStr(k)[0] == kReservedMetaPrefix) continue;  // the store's own records
        if (!whole_class && found.size() == batch) {
          more = true;
          break;
        }
        Result<std::string_view> body = internal::OpenRecord(ValStr(k), ValStr(v), "metadata");
        if (!body.ok()) {
          status = body.status();
          break;
        }
        seen.Add(ValStr(k), internal::SealedChecksum(ValStr(v)), body->size());
        found.emplace_back(ValStr(k), *body);
      }
      mdb_cursor_close(cur);
      if (status.ok() && rc != MDB_SUCCESS && rc != MDB_NOTFOUND) status = LmdbStatus(rc, "list metadata");
      BA_RETURN_IF_ERROR(status);
      if (whole_class) {
        BA_ASSIGN_OR_RETURN(expected, GetTally(txn_, env_->meta_, internal::ClassTallyKey(cls)));
      }
    }
    if (whole_class && seen != expected) {
      return Corruption("metadata records '" + std::string(prefix) +
                        "...' do not match the record of what exists (" + std::to_string(seen.records) +
                        " found, " + std::to_string(expected.records) +
                        " recorded): a record's key is damaged or a record is missing");
    }
    for (const auto& [k, v] : found) {
      if (!fn(k, v)) return Status::Ok();
    }
    if (!more) return Status::Ok();
    next = found.back().first + '\0';  // the least key after the batch's last
    batch = std::min<size_t>(batch * 2, 256);
  }
}

// Reads the change log of `txn` in (from, to] into `out`; `out.complete` is false when the log
// was trimmed past `from`. Every commit writes one record, so the records must be consecutive.
// Caller holds the locks that make `txn` usable.
Status ReadChanges(MDB_txn* txn, const Env& env, CommitId from, CommitId to, ChangeSet& out) {
  out.from = from;
  out.to = to;
  if (from >= to) return Status::Ok();
  BA_ASSIGN_OR_RETURN(auto floor_body, GetSealed(txn, env.meta_, LogFloorKey(), "change log floor"));
  if (!floor_body || floor_body->size() != 8) {
    return Corruption(env.path_ + "/data.mdb: the change log floor record is missing or malformed");
  }
  if (from < GetLE64(reinterpret_cast<const unsigned char*>(floor_body->data()))) {
    out.complete = false;
    return Status::Ok();
  }
  MDB_cursor* cur;
  int rc = mdb_cursor_open(txn, env.log_, &cur);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "read the change log");
  unsigned char start[8];
  PutBE64(start, from + 1);
  MDB_val k{8, start}, v;
  Status status;
  CommitId next = from + 1;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == MDB_SUCCESS;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8) {
      status = Corruption("change log: malformed key");
      break;
    }
    const CommitId id = GetBE64(static_cast<const unsigned char*>(k.mv_data));
    if (id > to) break;
    if (id != next) break;  // a gap: reported below
    Result<std::string_view> body = internal::OpenRecord(ValStr(k), ValStr(v), "change log");
    if (!body.ok()) {
      status = body.status();
      break;
    }
    status = internal::DecodeChanges(*body, out);
    if (!status.ok()) break;
    ++next;
  }
  mdb_cursor_close(cur);
  if (status.ok() && rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
    status = LmdbStatus(rc, "read the change log");
  }
  if (status.ok() && next != to + 1) {
    status = Corruption(env.path_ + "/data.mdb: the change log has no record of commit " + std::to_string(next) +
                        " (a log record is missing or its key is damaged)");
  }
  return status;
}

Result<ChangeSet> LmdbSnapshot::ChangesSince(CommitId from) {
  ChangeSet cs;
  BA_ASSIGN_OR_RETURN(auto map_lock, env_->ReadMap());
  std::lock_guard lock(mu_);
  BA_RETURN_IF_ERROR(ReadChanges(txn_, *env_, from, commit_, cs));
  return cs;
}

// The slots of blocks.dat against the records that use them: every slot a block record names
// lies inside the file and the slot table, and no slot is named twice, or named and free (or
// waiting to be): either would let a commit overwrite a block that is in use.
Status AuditSlots(MDB_txn* txn, Env& env, const std::function<void(const Status&)>& damaged) {
  const std::string file = env.path_ + "/" + std::string(kSlotsFile);
  internal::SlotTable table;
  Result<std::optional<std::string>> table_body = GetSealed(txn, env.meta_, internal::SlotTableKey(), "slot table");
  if (!table_body.ok() && table_body.status().code() != Code::kCorruption) return table_body.status();
  Result<internal::SlotTable> t =
      !table_body.ok() ? Result<internal::SlotTable>(table_body.status())
      : !*table_body   ? Result<internal::SlotTable>(Corruption(file + ": the slot table is missing"))
                       : internal::SlotTable::Decode(**table_body, file + ": the slot table");
  if (!t.ok()) {
    damaged(t.status());
    return Status::Ok();
  }
  table = std::move(*t);
  std::map<uint64_t, std::string> owner;  // slot -> what uses it
  for (uint64_t slot : table.free) owner[slot] = "the free slots";
  MDB_cursor* cur;
  int rc = mdb_cursor_open(txn, env.meta_, &cur);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "list the freed slots");
  std::string prefix(internal::FreedSlotsPrefix());
  MDB_val k = StrVal(prefix), v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == MDB_SUCCESS && ValStr(k).starts_with(prefix);
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    Result<std::string_view> body = internal::OpenRecord(ValStr(k), ValStr(v), "freed slots");
    Result<std::vector<uint64_t>> list = body.ok() ? internal::DecodeSlotList(*body, file + ": freed slots")
                                                    : Result<std::vector<uint64_t>>(body.status());
    if (!list.ok()) {
      damaged(list.status());
      continue;
    }
    for (uint64_t slot : *list) {
      if (!owner.emplace(slot, "the slots a commit freed").second || slot >= table.high_water) {
        damaged(Corruption(file + ": slot " + std::to_string(slot) + " is freed twice, or past the end of the slot table"));
      }
    }
  }
  mdb_cursor_close(cur);
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return LmdbStatus(rc, "list the freed slots");
  struct stat st {};
  if (env.slots_fd_ >= 0 && fstat(env.slots_fd_, &st) != 0) return ErrnoStatus(errno, "stat " + file);
  rc = mdb_cursor_open(txn, env.blocks_, &cur);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "list the block records");
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    // Slot records are small: LMDB keeps them inside leaf pages.
    if (k.mv_size != 16 || v.mv_size != internal::kSlotHeader) continue;
    const auto* kb = static_cast<const unsigned char*>(k.mv_data);
    const std::string what = BlockName(GetBE64(kb), GetBE64(kb + 8));
    Result<BlockHeader> h = internal::DecodeBlockHeader(static_cast<const unsigned char*>(v.mv_data), v.mv_size, v.mv_size, what);
    if (!h.ok() || !h->slotted()) continue;  // reported by the walk of its array
    auto [it, fresh] = owner.emplace(h->slot, what);
    if (!fresh) {
      damaged(Corruption(what + ": its slot " + std::to_string(h->slot) + " of " + file + " is also used by " + it->second));
    } else if (h->slot >= table.high_water) {
      damaged(Corruption(what + ": its slot " + std::to_string(h->slot) + " is past the end of the slot table (" +
                         std::to_string(table.high_water) + " slots)"));
    } else if (static_cast<uint64_t>(st.st_size) < h->slot * internal::kSlotBytes + h->length) {
      damaged(Corruption(what + ": its slot " + std::to_string(h->slot) + " ends past the end of " + file));
    }
  }
  mdb_cursor_close(cur);
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return LmdbStatus(rc, "list the block records");
  return Status::Ok();
}

Status LmdbSnapshot::VerifyRecords(const std::function<void(const Status&)>& damaged) {
  BA_ASSIGN_OR_RETURN(auto map_lock, env_->ReadMap());
  std::lock_guard lock(mu_);
  BA_RETURN_IF_ERROR(CheckCommitRecord(txn_, *env_));
  // Every metadata record against its checksum, and each class against its tally.
  std::map<std::string, Tally, std::less<>> seen;
  MDB_cursor* cur;
  int rc = mdb_cursor_open(txn_, env_->meta_, &cur);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "list metadata");
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    Result<std::string_view> body = internal::OpenRecord(ValStr(k), ValStr(v), "metadata");
    if (!body.ok()) damaged(body.status());
    // Counted with the checksum it carries: a record whose value alone is damaged is reported
    // once, above; the class's tally then tells only of keys that are missing, extra or moved.
    if (std::string_view cls = internal::MetaClass(ValStr(k)); !cls.empty()) {
      seen[std::string(cls)].Add(ValStr(k), internal::SealedChecksum(ValStr(v)), v.mv_size < 8 ? 0 : v.mv_size - 8);
    }
  }
  mdb_cursor_close(cur);
  if (rc != MDB_NOTFOUND) return LmdbStatus(rc, "list metadata");
  // Tallies of classes that have no record any more count as "seen nothing".
  std::string tally_prefix = internal::ClassTallyKey("");
  rc = mdb_cursor_open(txn_, env_->meta_, &cur);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "list metadata");
  k = StrVal(tally_prefix);
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == MDB_SUCCESS && ValStr(k).starts_with(tally_prefix);
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    seen.try_emplace(std::string(ValStr(k).substr(tally_prefix.size())));
  }
  mdb_cursor_close(cur);
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return LmdbStatus(rc, "list metadata");
  for (const auto& [cls, tally] : seen) {
    Result<Tally> expected = GetTally(txn_, env_->meta_, internal::ClassTallyKey(cls));
    if (!expected.ok()) {
      damaged(expected.status());
    } else if (*expected != tally) {
      damaged(Corruption("metadata records '" + cls + "...' do not match the record of what exists (" +
                         std::to_string(tally.records) + " found, " + std::to_string(expected->records) +
                         " recorded): a record's key is damaged or a record is missing"));
    }
  }
  BA_RETURN_IF_ERROR(AuditSlots(txn_, *env_, damaged));
  // The change log: every record readable, consecutive up to this commit.
  BA_ASSIGN_OR_RETURN(auto floor_body, GetSealed(txn_, env_->meta_, LogFloorKey(), "change log floor"));
  if (floor_body && floor_body->size() == 8) {
    ChangeSet cs;
    const CommitId floor = GetLE64(reinterpret_cast<const unsigned char*>(floor_body->data()));
    if (Status st = ReadChanges(txn_, *env_, floor, commit_, cs); !st.ok()) {
      if (st.code() != Code::kCorruption) return st;
      damaged(st);
    }
  } else {
    damaged(Corruption(env_->path_ + "/data.mdb: the change log floor record is missing or malformed"));
  }
  return Status::Ok();
}

// ---- the store -------------------------------------------------------------------------------

class LmdbStore final : public BlockStore {
 public:
  LmdbStore(std::shared_ptr<Env> env, LmdbOptions options)
      : env_(std::move(env)), options_(options) {}

  // LMDB (0.9) begins a read transaction by taking the newest commit's id, then the roots of the
  // meta page that id names (`me_metas[id & 1]`): a reader preempted in between while two more
  // commits land reads the roots of the later one, written over that meta page, under the older
  // id (a consistent state, its pages kept by the older id in the reader table). The commit
  // record then names a later commit than the transaction: begun again, it agrees. A damaged
  // meta page disagrees every time, and is reported.
  static constexpr int kSnapshotAttempts = 8;
  Result<std::shared_ptr<Snapshot>> OpenSnapshot() override {
    for (int attempt = 1;; ++attempt) {
      BA_ASSIGN_OR_RETURN(MDB_txn * txn, env_->Begin(MDB_RDONLY));
      auto snapshot = std::make_shared<LmdbSnapshot>(env_, txn);  // aborts txn when dropped
      BA_ASSIGN_OR_RETURN(auto map_lock, env_->ReadMap());
      bool newer = false;
      Status check = CheckCommitRecord(txn, *env_, /*writing=*/false, &newer);
      if (check.ok()) return std::shared_ptr<Snapshot>(std::move(snapshot));
      if (!newer || attempt == kSnapshotAttempts) return check;
    }
  }
  Result<CommitId> Commit(const WriteBatch& batch) override;
  // blocks.dat first: a record that reaches the disk must find its slot's bytes there.
  Status Sync() override {
    if (env_->slots_fd_ >= 0 && !env_->read_only_ && fdatasync(env_->slots_fd_) != 0) {
      return ErrnoStatus(errno, "sync " + env_->path_ + "/" + std::string(kSlotsFile));
    }
    BA_ASSIGN_OR_RETURN(auto map_lock, env_->ReadMap());
    return LmdbStatus(mdb_env_sync(env_->env_, 1), "sync " + env_->path_);
  }
  std::string Describe() const override { return env_->path_; }
  bool MapsBlocks() const override { return true; }

 private:
  // One attempt; kNoSpace with `*map_full` set asks the caller to grow the map and retry.
  // `need`: bytes the commit may append to data.mdb; `base_need`: of those, what it needs
  // whatever goes to blocks.dat (B-tree pages, metadata, the log).
  Result<CommitId> TryCommit(const WriteBatch& batch, uint64_t need, uint64_t base_need, bool* map_full);
  // The txn id of the oldest open read transaction of any process (or `fallback`).
  CommitId OldestReader(CommitId fallback);

 public:
  // Every open read transaction of any process: (pid, commit), after clearing the slots of
  // processes that died.
  Result<std::vector<std::pair<pid_t, CommitId>>> Readers();
  // internal::WithLmdbRead (lmdb_internal.h).
  Status WithRead(const std::function<Status(const internal::LmdbReadView&)>& fn) {
    BA_ASSIGN_OR_RETURN(MDB_txn * txn, env_->Begin(MDB_RDONLY));
    auto map_lock = env_->ReadMap();  // the map may be lost since the begin: end the transaction
    Status st = map_lock.ok() ? fn(internal::LmdbReadView{env_->env_, txn, env_->meta_, env_->blocks_, env_->log_})
                              : map_lock.status();
    mdb_txn_abort(txn);  // touches the reader table only, never the map
    return st;
  }

 private:

  std::shared_ptr<Env> env_;
  LmdbOptions options_;
};

namespace {
// The open read transactions of LMDB's reader table, as (pid, commit). mdb_reader_list's text
// lines ("pid thread txnid", txnid "-" for a free slot) are LMDB's only way to show them.
int ListReaderTable(MDB_env* env, std::vector<std::pair<pid_t, CommitId>>* out) {
  return mdb_reader_list(
      env,
      [](const char* msg, void* p) -> int {
        int pid;
        size_t tid;
        char txnid[32];
        if (std::sscanf(msg, "%d %zx %31s", &pid, &tid, txnid) == 3 && txnid[0] != '-') {
          static_cast<std::vector<std::pair<pid_t, CommitId>>*>(p)->emplace_back(
              pid, std::strtoull(txnid, nullptr, 10));
        }
        return 0;
      },
      out);
}
}  // namespace

CommitId LmdbStore::OldestReader(CommitId fallback) {
  std::vector<std::pair<pid_t, CommitId>> readers;
  // A table that cannot be listed may hide a reader: then no commit counts as unread.
  if (ListReaderTable(env_->env_, &readers) < 0) return 0;
  CommitId oldest = fallback;
  for (const auto& [pid, commit] : readers) oldest = std::min(oldest, commit);
  return oldest;
}

Result<std::vector<std::pair<pid_t, CommitId>>> LmdbStore::Readers() {
  int dead = 0;
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_reader_check(env_->env_, &dead), "check the reader table of " + env_->path_));
  std::vector<std::pair<pid_t, CommitId>> out;
  if (ListReaderTable(env_->env_, &out) < 0) return IOError("cannot list the reader table of " + env_->path_);
  return out;
}

Result<CommitId> LmdbStore::Commit(const WriteBatch& batch) {
  if (options_.read_only) return FailedPrecondition(env_->path_ + " was opened read-only");
  // Pages the commit may append: each payload rounded to pages, plus its header and a leaf and
  // branch page's worth of B-tree churn, plus the log record, metadata and a fixed margin. The
  // map must have room for all of it; disk space is reserved for the payloads one by one, as
  // those that go to slots of blocks.dat need none in data.mdb.
  const uint64_t ps = env_->page_size_;
  uint64_t base_need = 64 * ps + batch.PayloadBytes() / 64, payload_need = 0;
  for (const auto& p : batch.puts()) base_need += 2 * ps, payload_need += (p.size + internal::kLongHeader + ps - 1) / ps * ps;
  for (const auto& [k, v] : batch.meta()) base_need += 2 * ps + k.size() + (v ? v->size() : 0);
  base_need += batch.deletes().size() * 2 * ps;
  uint64_t need = base_need + payload_need;

  std::lock_guard writer(env_->writer_mu_);
  for (int attempt = 0; attempt < 6; ++attempt) {
    MDB_envinfo info;
    {
      BA_ASSIGN_OR_RETURN(auto map_lock, env_->ReadMap());  // mdb_env_info reads the meta pages
      mdb_env_info(env_->env_, &info);
    }
    const uint64_t used = (static_cast<uint64_t>(info.me_last_pgno) + 1) * ps;
    if (used + need > info.me_mapsize) {
      // Grow geometrically (at most 8 GiB a step) so that growth is rare.
      uint64_t grow = std::min<uint64_t>(info.me_mapsize, 8ull << 30);
      BA_RETURN_IF_ERROR(env_->Remap(std::max(used + need, info.me_mapsize + grow)));
    }
    bool map_full = false;
    Result<CommitId> r = TryCommit(batch, need, base_need, &map_full);
    if (r.ok() || !map_full) return r;
    BA_RETURN_IF_ERROR(env_->Remap(0));  // adopt a size another process set
    need *= 2, base_need *= 2;
  }
  return NoSpace("commit to " + env_->path_ + ": the map is still full after growing it");
}

Result<CommitId> LmdbStore::TryCommit(const WriteBatch& batch, uint64_t need, uint64_t base_need, bool* map_full) {
  // Lock order everywhere: map_mu_ (shared), then LMDB's writer lock (taken by the begin).
  BA_ASSIGN_OR_RETURN(auto map_lock, env_->ReadMap());
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(env_->env_, nullptr, 0, &txn); rc != MDB_SUCCESS) {
    if (rc == MDB_MAP_RESIZED) *map_full = true;  // another process grew the map: adopt, retry
    return LmdbStatus(rc, "begin a commit to " + env_->path_);
  }
  struct Aborter {
    MDB_txn* txn;
    ~Aborter() {
      if (txn) mdb_txn_abort(txn);
    }
  } aborter{txn};
  const CommitId id = mdb_txn_id(txn);
  auto fail = [&](int rc, std::string_view what) -> Status {
    if (rc == MDB_MAP_FULL) *map_full = true;
    return LmdbStatus(rc, std::string(what) + " (commit to " + env_->path_ + ")");
  };

  // Reserve the disk space the commit may append, so that no write into the sparse map can
  // hit a full disk (which would be SIGBUS, not an error code): what any commit needs now, and
  // each payload stored in data.mdb before it is stored (reserve_more).
  MDB_envinfo info;
  mdb_env_info(env_->env_, &info);
  const uint64_t end_used = (info.me_last_pgno + 1) * env_->page_size_;
  const uint64_t room = info.me_mapsize - std::min<uint64_t>(info.me_mapsize, end_used);
  uint64_t reserved = 0;  // bytes past end_used
  auto reserve_more = [&](uint64_t bytes) -> Status {
    const uint64_t add = std::min(bytes, room - std::min(room, reserved));
    if (add > 0 && fallocate(env_->fd_, 0, static_cast<off_t>(end_used + reserved), static_cast<off_t>(add)) != 0 &&
        errno != EOPNOTSUPP) {
      return ErrnoStatus(errno, "reserve " + std::to_string(add) + " bytes of disk for a commit to " + env_->path_);
    }
    reserved += add;
    return Status::Ok();
  };
  BA_RETURN_IF_ERROR(reserve_more(std::min(need, base_need)));

  // The state this commit builds on must be the one its records say (a damaged meta page).
  BA_RETURN_IF_ERROR(CheckCommitRecord(txn, *env_, /*writing=*/true));

  // Conflict check against everything committed after the batch's base.
  if (batch.base() + 1 < id) {
    ChangeSet cs;
    BA_RETURN_IF_ERROR(ReadChanges(txn, *env_, batch.base(), id - 1, cs));
    if (auto what = batch.FindConflict(cs)) {
      return ConflictError(*what);
    }
  }

  // Writes sealed store record `key` (nullopt: deletes it).
  auto put_sealed = [&](std::string_view key, const std::optional<std::string>& body) -> Status {
    MDB_val k = StrVal(key);
    int rc;
    if (body) {
      std::string sealed = internal::SealRecord(key, *body);
      MDB_val v = StrVal(sealed);
      rc = mdb_put(txn, env_->meta_, &k, &v, 0);
    } else {
      rc = mdb_del(txn, env_->meta_, &k, nullptr);
      if (rc == MDB_NOTFOUND) rc = MDB_SUCCESS;
    }
    return rc == MDB_SUCCESS ? Status::Ok() : fail(rc, "write metadata");
  };

  // No snapshot of any process reads a commit older than this one, nor is it older than the
  // latest commit: the slots freed by commits before it are free to reuse (as LMDB reuses its
  // free pages: the state before the latest commit, its fallback, keeps its blocks too).
  const CommitId floor = OldestReader(id - 1);
  internal::SlotLedger slots(txn, env_->meta_, env_->slots_fd_, env_->path_ + "/" + std::string(kSlotsFile), id, put_sealed);
  if (env_->slots_fd_ < 0) return NotFound(env_->path_ + "/" + std::string(kSlotsFile) + " is missing");
  BA_RETURN_IF_ERROR(slots.Reclaim(floor));

  // The tallies this commit changes, read on first use and written back at the end.
  std::map<std::string, Tally> tallies;
  auto tally = [&](const std::string& key) -> Result<Tally*> {
    auto it = tallies.find(key);
    if (it == tallies.end()) {
      BA_ASSIGN_OR_RETURN(Tally t, GetTally(txn, env_->meta_, key));
      it = tallies.emplace(key, t).first;
    }
    return &it->second;
  };

  // Deletes the records of array `a` whose keys `in_range` accepts, from `start` on.
  auto delete_records = [&](ArrayId a, const BlockKey& start, const std::function<bool(const unsigned char*)>& in_range) -> Status {
    std::vector<RecordRef> old;
    BA_RETURN_IF_ERROR(CollectRecords(txn, *env_, start, in_range, &old, "find the blocks to replace"));
    if (old.empty()) return Status::Ok();
    BA_ASSIGN_OR_RETURN(Tally * t, tally(internal::ArrayTallyKey(a)));
    for (const RecordRef& r : old) {
      BA_ASSIGN_OR_RETURN(BlockHeader h, ReadHeader(*env_, a, r));
      t->Remove(r.key, h.checksum, h.PayloadBytes(r.size));
      if (h.slotted()) BA_RETURN_IF_ERROR(slots.Free(h.slot));
      MDB_val k = StrVal(r.key);
      if (int rc = mdb_del(txn, env_->blocks_, &k, nullptr); rc != MDB_SUCCESS) return fail(rc, "delete " + RecordName(a, r));
    }
    return Status::Ok();
  };

  // Deleted ranges first, then puts: a batch may delete past a shrink and then store a block
  // there again (shrink, grow and write in one transaction).
  for (const BlockRange& r : batch.deletes()) {
    BA_RETURN_IF_ERROR(delete_records(r.array, BlockKey(r.array, r.first), [&](const unsigned char* k) {
      return GetBE64(k) == r.array && GetBE64(k + 8) < r.end;
    }));
  }
  // Stores a record of `kind` with `payload` under `key` (16 bytes: a whole block; 24: a delta)
  // and counts it in the array's tally.
  static const std::byte kZeros[internal::kLongHeader] = {};
  auto put_record = [&](ArrayId a, BlockIndex i, std::string_view key, uint32_t kind,
                        std::span<const std::byte> payload) -> Status {
    BlockHeader h;
    h.commit = id;
    h.header_bytes = static_cast<uint32_t>(internal::HeaderBytesFor(payload.size()));
    h.kind = kind;
    if (kind == internal::kWholeBlock && internal::SlotFor(payload.size())) {
      // A large whole block goes to a slot of blocks.dat (its record names the slot), zero-padded
      // to whole pages: a payload that ends inside a page (trimmed to the byte) maps as pages.
      static const std::byte kZeroPage[internal::kSlotPage] = {};
      h.kind = internal::kSlotted;
      h.header_bytes = internal::kSlotHeader;
      h.length = internal::SlotLength(payload.size());
      const std::span<const std::byte> pad(kZeroPage, h.length - payload.size());
      BA_ASSIGN_OR_RETURN(h.slot, slots.Allocate());
      iovec iov[2] = {{const_cast<std::byte*>(payload.data()), payload.size()},
                      {const_cast<std::byte*>(pad.data()), pad.size()}};
      BA_RETURN_IF_ERROR(FullIo(true, env_->slots_fd_, iov, 2, static_cast<off_t>(h.slot * internal::kSlotBytes),
                                "write " + BlockName(a, i) + " to slot " + std::to_string(h.slot) + " of " +
                                    env_->path_ + "/" + std::string(kSlotsFile)));
      internal::BlockHasher hasher(internal::PayloadSeed(a, i, h));
      hasher.Update(payload);
      hasher.Update(pad);
      h.checksum = hasher.Digest();
    } else {
      BA_RETURN_IF_ERROR(reserve_more(h.header_bytes + payload.size() + 2 * env_->page_size_));
      h.checksum = internal::BlockHasher::Of(internal::PayloadSeed(a, i, h), payload);
    }
    unsigned char header[internal::kSlotHeader];
    internal::EncodeBlockHeader(h, header);
    MDB_val k = StrVal(key);
    if (h.slotted()) {
      MDB_val v{internal::kSlotHeader, header};
      if (int rc = mdb_put(txn, env_->blocks_, &k, &v, 0); rc != MDB_SUCCESS) return fail(rc, "store " + BlockName(a, i));
      BA_ASSIGN_OR_RETURN(Tally * t, tally(internal::ArrayTallyKey(a)));
      t->Add(key, h.checksum, h.length);
      return Status::Ok();
    }
    MDB_val v{h.header_bytes + payload.size(), nullptr};
    int rc = mdb_put(txn, env_->blocks_, &k, &v, MDB_RESERVE);
    if (rc != MDB_SUCCESS) return fail(rc, "store " + BlockName(a, i));
    if (auto offset = OverflowOffset(v, env_->page_size_)) {
      iovec iov[3] = {{header, internal::kShortHeader},
                      {const_cast<std::byte*>(kZeros), h.header_bytes - internal::kShortHeader},
                      {const_cast<std::byte*>(payload.data()), payload.size()}};
      BA_RETURN_IF_ERROR(FullIo(true, env_->fd_, iov, 3, *offset, "write " + BlockName(a, i)));
    } else {
      std::memcpy(v.mv_data, header, internal::kShortHeader);
      std::memset(static_cast<char*>(v.mv_data) + internal::kShortHeader, 0, h.header_bytes - internal::kShortHeader);
      std::memcpy(static_cast<char*>(v.mv_data) + h.header_bytes, payload.data(), payload.size());
    }
    BA_ASSIGN_OR_RETURN(Tally * t, tally(internal::ArrayTallyKey(a)));
    t->Add(key, h.checksum, payload.size());
    return Status::Ok();
  };
  // In key order, whatever order the batch was filled in (the pager's writeout goes by its hash
  // table): slots are taken lowest first, so the blocks of an array written in one commit lie in
  // blocks.dat in block order, and a scan reads the file in order, which the kernel's read-ahead
  // follows. Stored in the writeout's order, a cold scan read blocks.dat at random: 1.3-1.9 GB/s
  // against 6-7.7 for a plain file (2026-12-04). Two puts of one block keep their order.
  std::vector<const WriteBatch::Put*> puts;
  puts.reserve(batch.puts().size());
  for (const auto& p : batch.puts()) puts.push_back(&p);
  std::stable_sort(puts.begin(), puts.end(), [](const WriteBatch::Put* x, const WriteBatch::Put* y) {
    return std::pair(x->array, x->index) < std::pair(y->array, y->index);
  });
  for (const WriteBatch::Put* put : puts) {
    const WriteBatch::Put& p = *put;
    const BlockKey key(p.array, p.index);
    std::vector<RecordRef> refs;
    BA_RETURN_IF_ERROR(CollectRecords(
        txn, *env_, key, [&](const unsigned char* k) { return std::memcmp(k, key.bytes, 16) == 0; }, &refs,
        "find the records of " + BlockName(p.array, p.index)));
    Records old;
    for (RecordRef& r : refs) {
      BA_ASSIGN_OR_RETURN(BlockHeader h, ReadHeader(*env_, p.array, r));
      old.emplace_back(std::move(r), h);
    }
    std::span<const std::byte> data;
    if (p.size > 0) {
      BA_ASSIGN_OR_RETURN(data, p.data());
      if (TrimmedSize(data) > p.size) return Internal(BlockName(p.array, p.index) + ": payload too long");
    }
    const size_t used = TrimmedSize(data);
    // A small change of a stored block: store the changed bytes as a delta record.
    if (used > 0) {
      BA_ASSIGN_OR_RETURN(std::optional<std::string> delta, MakeDelta(*env_, p.array, old, data));
      if (delta) {
        if (delta->empty()) continue;  // nothing changed
        unsigned char dkey[24];
        std::memcpy(dkey, key.bytes, 16);
        PutBE64(dkey + 16, id);
        BA_RETURN_IF_ERROR(put_record(p.array, p.index, std::string_view(reinterpret_cast<char*>(dkey), 24),
                                      internal::kDelta, std::as_bytes(std::span(*delta))));
        continue;
      }
    }
    // Otherwise the block is written whole, replacing its records.
    if (!old.empty()) {
      BA_ASSIGN_OR_RETURN(Tally * t, tally(internal::ArrayTallyKey(p.array)));
      for (const auto& [r, h] : old) {
        t->Remove(r.key, h.checksum, h.PayloadBytes(r.size));
        if (h.slotted()) BA_RETURN_IF_ERROR(slots.Free(h.slot));
        MDB_val k = StrVal(r.key);
        if (int rc = mdb_del(txn, env_->blocks_, &k, nullptr); rc != MDB_SUCCESS) return fail(rc, "replace " + RecordName(p.array, r));
      }
    }
    if (used == 0) continue;  // a block of zeros is not stored
    // Trailing zeros are not stored; a payload that gets the long header keeps whole pages, so
    // that it can be mapped from the file.
    size_t keep = used;
    if (keep >= internal::kLongPayload) keep = std::min(data.size(), (keep + env_->page_size_ - 1) / env_->page_size_ * env_->page_size_);
    BA_RETURN_IF_ERROR(put_record(p.array, p.index, std::string_view(reinterpret_cast<const char*>(key.bytes), 16),
                                  internal::kWholeBlock, data.first(keep)));
  }

  for (const auto& [key, value] : batch.meta()) {
    const std::string_view cls = internal::MetaClass(key);
    if (cls.empty()) return InvalidArgument("metadata key '" + key + "': keys that are empty or begin with NUL belong to the store");
    BA_ASSIGN_OR_RETURN(Tally * t, tally(internal::ClassTallyKey(cls)));
    MDB_val k = StrVal(key), old;
    int rc = mdb_get(txn, env_->meta_, &k, &old);
    if (rc == MDB_SUCCESS) {
      BA_ASSIGN_OR_RETURN(std::string_view body, internal::OpenRecord(key, ValStr(old), "metadata"));
      t->Remove(key, internal::SealedChecksum(ValStr(old)), body.size());
    } else if (rc != MDB_NOTFOUND) {
      return fail(rc, "read metadata");
    }
    BA_RETURN_IF_ERROR(put_sealed(key, value));
    if (value) t->Add(key, internal::SealedChecksum(internal::SealRecord(key, *value)), value->size());
  }
  for (const auto& [key, t] : tallies) {
    BA_RETURN_IF_ERROR(put_sealed(key, t.records == 0 ? std::nullopt : std::optional<std::string>(t.Encode())));
  }
  BA_RETURN_IF_ERROR(slots.Finish());

  // The change log: this commit's record, then trim what no open snapshot can ask for.
  unsigned char log_key[8];
  PutBE64(log_key, id);
  std::string record = internal::SealRecord(std::string_view(reinterpret_cast<char*>(log_key), 8),
                                            internal::EncodeChanges(batch));
  MDB_val k{8, log_key}, v = StrVal(record);
  int rc = mdb_put(txn, env_->log_, &k, &v, 0);
  if (rc != MDB_SUCCESS) return fail(rc, "write the change log");
  BA_ASSIGN_OR_RETURN(auto floor_body, GetSealed(txn, env_->meta_, LogFloorKey(), "change log floor"));
  if (!floor_body || floor_body->size() != 8) {
    return Corruption(env_->path_ + "/data.mdb: the change log floor record is missing or malformed");
  }
  const CommitId old_floor = GetLE64(reinterpret_cast<const unsigned char*>(floor_body->data()));
  if (floor > old_floor) {
    MDB_cursor* cur;
    rc = mdb_cursor_open(txn, env_->log_, &cur);
    if (rc != MDB_SUCCESS) return fail(rc, "trim the change log");
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) {
      if (GetBE64(static_cast<const unsigned char*>(k.mv_data)) > floor) break;
      rc = mdb_cursor_del(cur, 0);
      if (rc != MDB_SUCCESS) break;
    }
    mdb_cursor_close(cur);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return fail(rc, "trim the change log");
    std::string fb(8, '\0');
    PutLE64(reinterpret_cast<unsigned char*>(fb.data()), floor);
    BA_RETURN_IF_ERROR(put_sealed(LogFloorKey(), fb));
  }
  BA_RETURN_IF_ERROR(put_sealed(CommitKey(), internal::CommitRecord{id, UnixNanos()}.Encode()));

  // The payloads reach the disk before the commit that makes them used (durable mode): this
  // commit's, and those of relaxed commits before it, which this one makes durable too.
  if (options_.durable && fdatasync(env_->slots_fd_) != 0) {
    return ErrnoStatus(errno, "sync " + env_->path_ + "/" + std::string(kSlotsFile));
  }
  mdb_env_set_flags(env_->env_, MDB_NOSYNC, options_.durable ? 0 : 1);
  aborter.txn = nullptr;
  rc = mdb_txn_commit(txn);
  if (rc != MDB_SUCCESS) return fail(rc, "commit");
  return id;
}

// Environments open in this process, by directory identity (LMDB allows one per process).
// A forked child must not use its parent's environments (LMDB's rule), so the registry
// forgets them, without closing them, when it finds itself in a new process.
struct Registry {
  std::mutex mu;
  pid_t pid = getpid();
  std::map<std::pair<dev_t, ino_t>, std::weak_ptr<Env>> envs;
  std::set<std::pair<dev_t, ino_t>> reserved;  // being compacted by this process (ReserveLmdbPath)
};
Registry& TheRegistry() {
  static Registry* r = new Registry;  // never destroyed: stores may outlive static destruction
  return *r;
}

}  // namespace

Result<std::shared_ptr<BlockStore>> OpenLmdbStore(const std::string& path, const LmdbOptions& options) {
  Registry& reg = TheRegistry();
  std::lock_guard lock(reg.mu);
  if (reg.pid != getpid()) {
    for (auto& [key, weak] : reg.envs) {
      if (auto env = weak.lock()) new std::shared_ptr<Env>(env);  // leak: never close in a child
    }
    reg.envs.clear();
    reg.reserved.clear();
    reg.pid = getpid();
  }
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    if (reg.reserved.count({st.st_dev, st.st_ino})) {
      return FailedPrecondition(path + " is being compacted by this process; open it once the compaction is done");
    }
    auto it = reg.envs.find({st.st_dev, st.st_ino});
    if (it != reg.envs.end()) {
      if (auto env = it->second.lock()) {
        if (env->read_only_ && !options.read_only) {
          // LMDB allows one environment per database and process, and this one cannot write.
          return FailedPrecondition(path + " is open read-only in this process (a handle opened with read_only); "
                                    "close those handles before opening it for writing, or open the "
                                    "read-write handle first");
        }
        return std::shared_ptr<BlockStore>(std::make_shared<LmdbStore>(env, options));
      }
    }
  }
  BA_ASSIGN_OR_RETURN(std::shared_ptr<Env> env, Env::Open(path, options));
  if (stat(path.c_str(), &st) == 0) reg.envs[{st.st_dev, st.st_ino}] = env;
  return std::shared_ptr<BlockStore>(std::make_shared<LmdbStore>(env, options));
}

namespace internal {

Status WithLmdbRead(BlockStore& store, const std::function<Status(const LmdbReadView&)>& fn) {
  auto* lmdb = dynamic_cast<LmdbStore*>(&store);
  if (!lmdb) return InvalidArgument(store.Describe() + " is not an LMDB store");
  return lmdb->WithRead(fn);
}

Result<std::unique_ptr<LmdbPathReservation>> ReserveLmdbPath(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return errno == ENOENT ? NotFound("no bigarray database at " + path) : ErrnoStatus(errno, "stat " + path);
  }
  const std::pair<dev_t, ino_t> key{st.st_dev, st.st_ino};
  Registry& reg = TheRegistry();
  std::lock_guard lock(reg.mu);
  auto it = reg.envs.find(key);
  if (reg.pid == getpid() && it != reg.envs.end() && !it->second.expired()) {
    return FailedPrecondition(path + " is open in this process; close its handles first (and drop the arrays and "
                              "views of closed handles, which keep reading it)");
  }
  if (!reg.reserved.insert(key).second) return FailedPrecondition(path + " is already being compacted by this process");
  struct Reservation final : LmdbPathReservation {
    explicit Reservation(std::pair<dev_t, ino_t> k) : key(k) {}
    ~Reservation() override {
      Registry& r = TheRegistry();
      std::lock_guard l(r.mu);
      r.reserved.erase(key);
    }
    std::pair<dev_t, ino_t> key;
  };
  return std::unique_ptr<LmdbPathReservation>(std::make_unique<Reservation>(key));
}

}  // namespace internal

Result<std::vector<std::pair<pid_t, CommitId>>> ListLmdbReaders(const std::string& path) {
  LmdbOptions o;
  o.create_if_missing = false;
  o.read_only = true;
  BA_ASSIGN_OR_RETURN(auto store, OpenLmdbStore(path, o));
  return static_cast<LmdbStore&>(*store).Readers();
}

}  // namespace bigarray::storage
