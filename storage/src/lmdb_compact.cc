// lmdb_compact.cc: CompactLmdb (bigarray/storage/lmdb_space.h; docs/format.md, "Space").
//
// Why it is safe, step by step (the names are those passed to LmdbCompactOptions::before_step):
//
//   exclusion  Every process that has an LMDB environment open holds a shared fcntl lock on byte
//              0 of lock.mdb for as long as it does, and a process that opens one first tries
//              that byte exclusively, then waits (F_SETLKW) for a shared lock (mdb.c,
//              mdb_env_excl_lock). So taking byte 0 exclusively, without waiting, succeeds only
//              when no other process has the database open, and from then on every opener waits:
//              no reader, no writer, until the lock is released. Within this process a
//              reservation (ReserveLmdbPath) keeps OpenLmdbStore away: an environment of ours
//              would not conflict with our own lock, and closing one would release it.
//   lock       takes the lock, or refuses naming the processes that hold it (/proc/locks).
//   slots      punches every slot of blocks.dat that no block record names out of the file, and
//              cuts the file after the last slot in use (lmdb_slots.h, PunchUnusedSlots): with no
//              snapshot anywhere, a slot no record names is unused. data.mdb is not changed.
//   copy       mdb_env_copyfd2(MDB_CP_COMPACT) from an environment opened read-only without
//              the lock file (MDB_NOLOCK: we hold the only lock) into data.mdb.compacting: the
//              pages reachable from the newest commit, renumbered; the free list is dropped.
//   patch      The compacting copy labels its meta page as transaction 1. Commit ids are LMDB
//              transaction ids and must keep increasing (they are in block headers, the change
//              log, and in the hands of followers), and a process that waited for our lock reads
//              lock.mdb's last transaction id (mti_txnid) without reinitializing it, then uses
//              the meta page that id selects (id & 1). So both meta pages are rewritten to hold
//              the copy's root: the one id & 1 selects as the database's commit id T, the other
//              as T - 1. Pages carry no transaction id in LMDB 0.9, so nothing else changes.
//   sync       fsync of the copy.
//   verify     the structural check (lmdb_check.cc) of the copy, then LMDB opens it: the newest
//              commit is T, the last page where the copy ends, the same entries in every tree.
//   rename     rename(2) over data.mdb: atomic; before it the old file is the database (never
//              written to: it was opened read-only), after it the new one (complete and synced).
//   sync-dir   fsync of the directory, so that the rename survives a power loss.
//   reopen     LMDB opens the new file the ordinary way: still holding byte 0 exclusively, it
//              initializes lock.mdb afresh from the new file, then shares the lock (the waiting
//              openers proceed); closing it releases everything.
//
// A kill at any instant leaves data.mdb old or new, both whole, with the same content and
// commit id, and lock.mdb consistent with either (its mti_txnid is T or, after a writer was
// killed mid-commit, T - 1: both meta pages serve). A read-only open that opened the old file
// before waiting for the lock notices the replacement and opens again (lmdb_store.cc, Env::Open).
// A leftover data.mdb.compacting is ignored by opens and removed by the next compaction.
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "bigarray/storage/lmdb_space.h"
#include "lmdb_internal.h"
#include "lmdb_records.h"
#include "lmdb_slots.h"
#include "lmdb_status.h"

namespace bigarray::storage {
namespace {

using internal::LmdbStatus;

// LMDB 0.9's meta page (64-bit; lmdb_check.cc describes the same layout): a 16-byte page header
// (u64 pgno, u16 pad, u16 flags, ...), then the meta record.
constexpr size_t kPageHeader = 16;
constexpr size_t kFlagsAt = 10;                      // u16 page flags
constexpr uint16_t kMetaFlag = 0x08;                 // P_META
constexpr size_t kMagicAt = kPageHeader + 0;         // u32 0xBEEFC0DE
constexpr size_t kVersionAt = kPageHeader + 4;       // u32 data format version, 1
constexpr size_t kPageSizeAt = kPageHeader + 24;     // u32: the free DB record's pad is the page size
constexpr size_t kLastPageAt = kPageHeader + 120;    // u64 last page number
constexpr size_t kTxnIdAt = kPageHeader + 128;       // u64 transaction id
constexpr size_t kMetaBytes = 136;                   // sizeof(MDB_meta)
constexpr uint32_t kLmdbMagic = 0xBEEFC0DE;
constexpr uint32_t kLmdbDataVersion = 1;
constexpr uint64_t kMetaPages = 2;
static_assert(kTxnIdAt + 8 == kPageHeader + kMetaBytes);
// Room left on the file system beyond the copy itself (LMDB's write buffers, the directory).
constexpr uint64_t kSpaceMargin = 1ull << 20;

template <typename T>
T Load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
void Store(unsigned char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Close(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // close(2)'s result, for files whose data matters; -1 with errno set on failure.
  int Close() {
    const int fd = fd_;
    fd_ = -1;
    return fd >= 0 ? close(fd) : 0;
  }

 private:
  int fd_;
};

struct EnvCloser {
  MDB_env* env = nullptr;
  ~EnvCloser() {
    if (env) mdb_env_close(env);
  }
};

Status FullPread(int fd, unsigned char* buf, size_t n, off_t offset, const std::string& what) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = pread(fd, buf + done, n - done, offset + static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(errno, "read " + what);
    if (r == 0) return Corruption(what + " ends early");
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

Status FullPwrite(int fd, const unsigned char* buf, size_t n, off_t offset, const std::string& what) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = pwrite(fd, buf + done, n - done, offset + static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(errno, "write " + what);
    done += static_cast<size_t>(r);
  }
  return Status::Ok();
}

Status Fsync(int fd, const std::string& what) {
  while (fsync(fd) != 0) {
    if (errno != EINTR) return ErrnoStatus(errno, "fsync " + what);
  }
  return Status::Ok();
}

// Takes byte 0 of lock.mdb exclusively without waiting; *busy when another process holds it.
Status LockExclusively(int fd, const std::string& lock_file, bool* busy) {
  struct flock lk = {};
  lk.l_type = F_WRLCK;
  lk.l_whence = SEEK_SET;
  lk.l_start = 0;
  lk.l_len = 1;
  *busy = false;
  for (;;) {
    if (fcntl(fd, F_SETLK, &lk) == 0) return Status::Ok();
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EACCES) {
      *busy = true;
      return Status::Ok();
    }
    return ErrnoStatus(errno, "lock " + lock_file);
  }
}

// The processes that hold a lock on the file `st` describes, from /proc/locks ("1: POSIX
// ADVISORY READ 1234 08:01:5678 0 0"; waiters are marked "->" and skipped), then fcntl(F_GETLK)
// when /proc/locks names nobody. This process is left out.
std::vector<pid_t> LockHolders(int fd, const struct stat& st) {
  std::set<pid_t> pids;
  std::ifstream locks("/proc/locks");
  const std::string device = [&] {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%llu", major(st.st_dev), minor(st.st_dev),
                  static_cast<unsigned long long>(st.st_ino));
    return std::string(buf);
  }();
  for (std::string line; std::getline(locks, line);) {
    std::istringstream in(line);
    std::string id, kind, mode, access, where;
    long pid = 0;
    in >> id >> kind;
    if (kind == "->") continue;
    if (in >> mode >> access >> pid >> where && where == device && pid > 0 && pid != getpid()) {
      pids.insert(static_cast<pid_t>(pid));
    }
  }
  if (pids.empty()) {
    struct flock lk = {};
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    lk.l_start = 0;
    lk.l_len = 1;
    if (fcntl(fd, F_GETLK, &lk) == 0 && lk.l_type != F_UNLCK && lk.l_pid > 0) pids.insert(lk.l_pid);
  }
  return {pids.begin(), pids.end()};
}

std::string DefaultHolders(const std::vector<pid_t>& pids) {
  if (pids.empty()) return "another process (its pid is not visible here)";
  std::string s = pids.size() == 1 ? "process " : "processes ";
  for (size_t i = 0; i < pids.size(); ++i) s += (i ? ", " : "") + std::to_string(pids[i]);
  return s;
}

// Opens the LMDB file or directory `where` read-only without the lock file.
Status OpenReadOnly(const std::string& where, unsigned extra_flags, uint64_t map_bytes, EnvCloser* env) {
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_env_create(&env->env), "create an LMDB environment"));
  mdb_env_set_maxdbs(env->env, 4);
  mdb_env_set_mapsize(env->env, std::max<uint64_t>(map_bytes, 1ull << 20));
  const int rc = mdb_env_open(env->env, where.c_str(), MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS | extra_flags, 0644);
  if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH) {
    return InvalidArgument(where + " is not a bigarray database (data.mdb is not an LMDB file)");
  }
  return LmdbStatus(rc, "open " + where);
}

// What the compaction must preserve, read from the source and checked on the copy.
struct Contents {
  CommitId commit = 0;
  uint64_t meta_entries = 0, blocks_entries = 0, log_entries = 0;
  uint64_t tree_pages = 0;  // main + named trees
  std::string format_record;
};

Status ReadContents(MDB_env* env, const std::string& what, Contents* out) {
  MDB_txn* txn = nullptr;
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), "read " + what));
  struct Aborter {
    MDB_txn* t;
    ~Aborter() { mdb_txn_abort(t); }
  } aborter{txn};
  out->commit = mdb_txn_id(txn);
  MDB_stat st;
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_stat(txn, 1, &st), "measure the main tree of " + what));
  out->tree_pages = st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
  for (const char* name : {"meta", "blocks", "log"}) {
    MDB_dbi dbi;
    const int rc = mdb_dbi_open(txn, name, 0, &dbi);
    if (rc == MDB_NOTFOUND) {
      return InvalidArgument(what + " is not a bigarray database (no '" + name + "' database in it)");
    }
    BA_RETURN_IF_ERROR(LmdbStatus(rc, std::string("open the ") + name + " database of " + what));
    BA_RETURN_IF_ERROR(LmdbStatus(mdb_stat(txn, dbi, &st), std::string("measure the ") + name + " tree of " + what));
    out->tree_pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    (name[0] == 'm' ? out->meta_entries : name[0] == 'b' ? out->blocks_entries : out->log_entries) = st.ms_entries;
    if (name[0] == 'm') {
      static const char kFormatKey[] = "\0format";
      MDB_val k{sizeof kFormatKey - 1, const_cast<char*>(kFormatKey)}, v;
      const int grc = mdb_get(txn, dbi, &k, &v);
      if (grc == MDB_NOTFOUND) return InvalidArgument(what + " is an LMDB environment but not a bigarray database");
      BA_RETURN_IF_ERROR(LmdbStatus(grc, "read the format record of " + what));
      out->format_record.assign(static_cast<const char*>(v.mv_data), v.mv_size);
    }
  }
  return Status::Ok();
}

// The version in a format record: "bigarray" + u32 LE version, bare (version 1) or sealed
// (lmdb_records.h, version 2 and later).
Result<uint32_t> FormatVersion(std::string_view value, const std::string& path) {
  constexpr std::string_view kMagic = "bigarray";
  std::string_view body = value;
  if (!(body.size() == kMagic.size() + 4 && body.starts_with(kMagic))) {
    auto sealed = internal::OpenRecord(std::string_view("\0format", 7), value, "format");
    if (!sealed.ok()) return Corruption(path + ": the format record is damaged");
    body = *sealed;
  }
  if (body.size() != kMagic.size() + 4 || !body.starts_with(kMagic)) return Corruption(path + ": the format record is damaged");
  const auto* p = reinterpret_cast<const unsigned char*>(body.data()) + kMagic.size();
  return static_cast<uint32_t>(p[0] | p[1] << 8 | p[2] << 16 | uint32_t{p[3]} << 24);
}

// Gives the copy's meta pages the commit id `commit` (see "patch" above). The copy wrote page 0
// as an empty database of transaction 0 and page 1 as the database, transaction 1, ending at
// page `last_page`: anything else means LMDB's copy is not what this code knows, and nothing is
// changed.
Status PatchMeta(int fd, const std::string& temp, size_t page_size, CommitId commit, uint64_t last_page) {
  std::vector<unsigned char> pages(2 * page_size);
  BA_RETURN_IF_ERROR(FullPread(fd, pages.data(), pages.size(), 0, temp));
  const unsigned char* meta = pages.data() + page_size;
  if (Load<uint64_t>(meta) != 1 || !(Load<uint16_t>(meta + kFlagsAt) & kMetaFlag) ||
      Load<uint32_t>(meta + kMagicAt) != kLmdbMagic || Load<uint32_t>(meta + kVersionAt) != kLmdbDataVersion ||
      Load<uint32_t>(meta + kPageSizeAt) != page_size || Load<uint64_t>(meta + kTxnIdAt) != 1 ||
      Load<uint64_t>(meta + kLastPageAt) != last_page) {
    return Internal(temp + ": LMDB's compacting copy does not have the meta page this build expects "
                           "(LMDB 0.9, transaction 1, last page " + std::to_string(last_page) + ")");
  }
  std::vector<unsigned char> out(2 * page_size, 0);
  for (uint64_t slot = 0; slot < kMetaPages; ++slot) {
    unsigned char* p = out.data() + slot * page_size;
    Store<uint64_t>(p, slot);
    Store<uint16_t>(p + kFlagsAt, kMetaFlag);
    std::memcpy(p + kPageHeader, meta + kPageHeader, kMetaBytes);
    Store<uint64_t>(p + kTxnIdAt, slot == (commit & 1) ? commit : commit - 1);
  }
  return FullPwrite(fd, out.data(), out.size(), 0, temp);
}

// Checks the synced copy: structure, then what LMDB sees in it against `want`.
Status VerifyCopy(int fd, const std::string& temp, uint64_t page_size, uint64_t pages, const Contents& want) {
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat " + temp);
  if (static_cast<uint64_t>(st.st_size) != pages * page_size) {
    return Internal(temp + ": LMDB's compacting copy has " + std::to_string(st.st_size) + " bytes, " +
                    std::to_string(pages * page_size) + " were expected");
  }
  BA_RETURN_IF_ERROR(internal::CheckLmdbFile(fd, static_cast<uint64_t>(st.st_size)).WithContext(temp));
  EnvCloser env;
  BA_RETURN_IF_ERROR(OpenReadOnly(temp, MDB_NOSUBDIR, static_cast<uint64_t>(st.st_size), &env));
  MDB_envinfo info;
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_env_info(env.env, &info), "inspect " + temp));
  Contents got;
  BA_RETURN_IF_ERROR(ReadContents(env.env, temp, &got));
  if (info.me_last_txnid != want.commit || got.commit != want.commit || info.me_last_pgno + 1 != pages ||
      got.meta_entries != want.meta_entries || got.blocks_entries != want.blocks_entries ||
      got.log_entries != want.log_entries || got.tree_pages != want.tree_pages ||
      got.format_record != want.format_record) {
    return Internal(temp + ": the compacted copy differs from the database (commit " + std::to_string(got.commit) +
                    " vs " + std::to_string(want.commit) + ", " + std::to_string(got.blocks_entries) + " vs " +
                    std::to_string(want.blocks_entries) + " blocks, " + std::to_string(got.meta_entries) + " vs " +
                    std::to_string(want.meta_entries) + " records)");
  }
  return Status::Ok();
}

// The "slots" step (see the head comment).
Status PunchSlots(MDB_env* env, const std::string& path, LmdbCompactResult* result) {
  const std::string file = path + "/" + std::string(kSlotsFile);
  Fd slots(open(file.c_str(), O_RDWR | O_CLOEXEC));
  if (slots.get() < 0) return errno == ENOENT ? Status::Ok() : ErrnoStatus(errno, "open " + file);
  struct stat st;
  if (fstat(slots.get(), &st) != 0) return ErrnoStatus(errno, "stat " + file);
  if (!S_ISREG(st.st_mode)) return InvalidArgument(file + " is not a regular file");
  result->before_slot_allocated_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
  MDB_txn* txn = nullptr;
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), "read " + path));
  MDB_dbi blocks;
  int rc = mdb_dbi_open(txn, "blocks", 0, &blocks);
  Status status = rc == MDB_SUCCESS ? internal::PunchUnusedSlots(txn, blocks, slots.get(), file)
                                    : LmdbStatus(rc, "open the blocks database of " + path);
  mdb_txn_abort(txn);
  BA_RETURN_IF_ERROR(status);
  if (fstat(slots.get(), &st) != 0) return ErrnoStatus(errno, "stat " + file);
  result->after_slot_allocated_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
  return Status::Ok();
}

// The compaction proper, with lock.mdb's byte 0 held exclusively. `*replaced` once data.mdb is
// the new file.
Status CompactLocked(const std::string& path, const LmdbCompactOptions& o, LmdbCompactResult* result,
                     bool* replaced) {
  auto step = [&](std::string_view name) { return o.before_step ? o.before_step(name) : Status::Ok(); };
  const std::string data_file = path + "/data.mdb";
  const std::string temp = path + "/" + std::string(kCompactTempName);
  if (unlink(temp.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "remove " + temp + ", left by an earlier compaction");
  }
  struct stat before;
  Fd data(open(data_file.c_str(), O_RDONLY | O_CLOEXEC));
  if (data.get() < 0) return ErrnoStatus(errno, "open " + data_file);
  if (fstat(data.get(), &before) != 0) return ErrnoStatus(errno, "stat " + data_file);
  result->before_file_bytes = static_cast<uint64_t>(before.st_size);
  result->before_allocated_bytes = static_cast<uint64_t>(before.st_blocks) * 512;
  if (before.st_size < 2 * 4096) return InvalidArgument(path + " is not a bigarray database (data.mdb is not an LMDB file)");
  // LMDB checksums none of its pages and may crash on a damaged one: check before it reads.
  BA_RETURN_IF_ERROR(internal::CheckLmdbFile(data.get(), static_cast<uint64_t>(before.st_size)).WithContext(path));

  EnvCloser source;
  BA_RETURN_IF_ERROR(OpenReadOnly(path, 0, static_cast<uint64_t>(before.st_size), &source));
  MDB_stat est;
  MDB_envinfo info;
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_env_stat(source.env, &est), "inspect " + path));
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_env_info(source.env, &info), "inspect " + path));
  const uint64_t page_size = est.ms_psize;
  if ((static_cast<uint64_t>(info.me_last_pgno) + 1) * page_size > static_cast<uint64_t>(before.st_size)) {
    return Corruption(data_file + " is truncated: its pages reach past its " + std::to_string(before.st_size) + " bytes");
  }
  Contents want;
  BA_RETURN_IF_ERROR(ReadContents(source.env, path, &want));
  // Compaction copies LMDB's pages whatever the format inside; it refuses only newer formats,
  // whose rules it cannot know, and records that are not a bigarray format record at all.
  BA_ASSIGN_OR_RETURN(const uint32_t version, FormatVersion(want.format_record, path));
  if (version > kFormatVersion) {
    return Unsupported(path + " has format version " + std::to_string(version) + "; this build of bigarray " +
                       "compacts versions up to " + std::to_string(kFormatVersion));
  }
  result->commit = want.commit;
  const uint64_t pages = kMetaPages + want.tree_pages;
  BA_RETURN_IF_ERROR(step("slots"));
  if (version >= 3) BA_RETURN_IF_ERROR(PunchSlots(source.env, path, result));  // older ones have none

  struct statvfs fs;
  if (statvfs(path.c_str(), &fs) != 0) return ErrnoStatus(errno, "statvfs " + path);
  const uint64_t available = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  if (available < pages * page_size + kSpaceMargin) {
    return NoSpace("the compacted copy needs " + std::to_string(pages * page_size) + " bytes in " + path + ", and " +
                   std::to_string(available) + " are free there");
  }

  BA_RETURN_IF_ERROR(step("copy"));
  Fd out(open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, before.st_mode & 07777));
  if (out.get() < 0) return ErrnoStatus(errno, "create " + temp);
  // The new data.mdb keeps the old one's permissions (umask aside) and owner.
  if (fchmod(out.get(), before.st_mode & 07777) != 0) return ErrnoStatus(errno, "set the permissions of " + temp);
  if ((before.st_uid != geteuid() || before.st_gid != getegid()) && fchown(out.get(), before.st_uid, before.st_gid) != 0) {
    return ErrnoStatus(errno, "give " + temp + " the owner of data.mdb (uid " + std::to_string(before.st_uid) +
                                  ", gid " + std::to_string(before.st_gid) + "); run compact as that user");
  }
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_env_copyfd2(source.env, out.get(), MDB_CP_COMPACT),
                                "copy " + data_file + " into " + temp + " (LMDB's compacting copy)"));
  BA_RETURN_IF_ERROR(step("patch"));
  BA_RETURN_IF_ERROR(PatchMeta(out.get(), temp, page_size, want.commit, pages - 1));
  BA_RETURN_IF_ERROR(step("sync"));
  BA_RETURN_IF_ERROR(Fsync(out.get(), temp));
  BA_RETURN_IF_ERROR(step("verify"));
  BA_RETURN_IF_ERROR(VerifyCopy(out.get(), temp, page_size, pages, want));
  if (out.Close() != 0) return ErrnoStatus(errno, "close " + temp);
  mdb_env_close(source.env);  // read-only, without the lock file: releases nothing of our lock
  source.env = nullptr;
  data.Close();

  BA_RETURN_IF_ERROR(step("rename"));
  if (rename(temp.c_str(), data_file.c_str()) != 0) return ErrnoStatus(errno, "rename " + temp + " to " + data_file);
  *replaced = true;
  BA_RETURN_IF_ERROR(step("sync-dir"));
  Fd dir(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return ErrnoStatus(errno, "open the directory " + path);
  BA_RETURN_IF_ERROR(Fsync(dir.get(), "the directory " + path));

  BA_RETURN_IF_ERROR(step("reopen"));
  {
    // The ordinary open (with the lock file): as we hold byte 0, LMDB initializes lock.mdb from
    // the new file, then shares the lock, letting the processes that wait for it in.
    EnvCloser fresh;
    BA_RETURN_IF_ERROR(LmdbStatus(mdb_env_create(&fresh.env), "create an LMDB environment"));
    mdb_env_set_maxdbs(fresh.env, 4);
    mdb_env_set_maxreaders(fresh.env, LmdbOptions{}.max_readers);  // the reader table's size, as bigarray opens it
    BA_RETURN_IF_ERROR(LmdbStatus(mdb_env_open(fresh.env, path.c_str(), MDB_RDONLY | MDB_NOTLS, 0644),
                                  "open " + path + " after compacting it"));
    BA_RETURN_IF_ERROR(LmdbStatus(mdb_env_info(fresh.env, &info), "inspect " + path));
    if (info.me_last_txnid != want.commit) {
      return Internal(path + ": LMDB reads commit " + std::to_string(info.me_last_txnid) + " after compacting, not " +
                      std::to_string(want.commit));
    }
  }
  struct stat after;
  if (stat(data_file.c_str(), &after) != 0) return ErrnoStatus(errno, "stat " + data_file);
  result->after_file_bytes = static_cast<uint64_t>(after.st_size);
  result->after_allocated_bytes = static_cast<uint64_t>(after.st_blocks) * 512;
  return Status::Ok();
}

}  // namespace

Result<LmdbCompactResult> CompactLmdb(const std::string& path, const LmdbCompactOptions& o) {
  const std::string context = "compact " + path;
  const std::string data_file = path + "/data.mdb", lock_file = path + "/lock.mdb";
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return errno == ENOENT || errno == ENOTDIR ? NotFound("no bigarray database at " + path)
                                               : ErrnoStatus(errno, "stat " + path);
  }
  if (!S_ISDIR(st.st_mode)) return InvalidArgument(path + " is not a bigarray database (a database is a directory)");
  if (lstat(data_file.c_str(), &st) != 0) {
    return errno == ENOENT ? NotFound("no bigarray database at " + path + " (the directory has no data.mdb)")
                           : ErrnoStatus(errno, "stat " + data_file);
  }
  if (S_ISLNK(st.st_mode)) {
    return Unsupported(context + ": " + data_file + " is a symbolic link, which compacting would replace by a file; "
                       "move the file into the directory first");
  }
  if (!S_ISREG(st.st_mode)) return InvalidArgument(data_file + " is not a regular file");
  if (st.st_nlink > 1) {
    return Unsupported(context + ": " + data_file + " has " + std::to_string(st.st_nlink) +
                       " hard links, which would keep the old file; remove the others first");
  }

  BA_ASSIGN_OR_RETURN(std::unique_ptr<internal::LmdbPathReservation> reservation, internal::ReserveLmdbPath(path));
  if (o.before_step) BA_RETURN_IF_ERROR(o.before_step("lock").WithContext(context + " (nothing was changed)"));
  Fd lock(open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (lock.get() < 0) return ErrnoStatus(errno, context + ": open " + lock_file + " to lock it");
  bool busy = false;
  BA_RETURN_IF_ERROR(LockExclusively(lock.get(), lock_file, &busy).WithContext(context));
  if (busy) {
    struct stat lst;
    std::vector<pid_t> pids;
    if (fstat(lock.get(), &lst) == 0) pids = LockHolders(lock.get(), lst);
    lock.Close();
    reservation.reset();  // describe_holders may open the database
    const std::string who = o.describe_holders ? o.describe_holders(pids) : DefaultHolders(pids);
    return FailedPrecondition(context + ": the database is open in " + who +
                              "; close it there and run compact again (nothing was changed)");
  }
  LmdbCompactResult result;
  bool replaced = false;
  Status status = CompactLocked(path, o, &result, &replaced);
  if (!status.ok() && !replaced) {
    const std::string temp = path + "/" + std::string(kCompactTempName);
    (void)unlink(temp.c_str());  // best effort: the next compaction removes it too
    return status.WithContext(context + " (nothing was changed)");
  }
  if (!status.ok()) {
    return status.WithContext(context + " (data.mdb was replaced by its compacted copy, which holds the same data)");
  }
  // Closing our descriptor of lock.mdb releases whatever this process still holds on it.
  if (lock.Close() != 0) return ErrnoStatus(errno, context + ": close " + lock_file);
  return result;
}

}  // namespace bigarray::storage
