// lmdb_upgrade.cc: converts an LMDB database of format version 1 or 2 to the current version,
// in place (docs/format.md, "Upgrading").
//
// Version 1 kept metadata records bare and block values as a 16-byte header (u64 checksum of the
// payload seeded with (array, index, commit), u64 commit) + payload. Version 2 had today's
// records but kept every block in data.mdb: version 3 keeps large whole blocks in slots of
// blocks.dat. The conversion:
//
//   1. takes LMDB's exclusive lock on lock.mdb (the lock LMDB itself takes to find out that it
//      is the only process on the environment), so that no process has the database open while
//      it runs and any that tries waits until it is done;
//   2. checks the file's structure (lmdb_check.cc) and reads it with MDB_RDONLY | MDB_NOLOCK,
//      verifying every block's version-1 checksum: damage stops the conversion, nothing changed;
//   3. writes the records into a new environment in DB/upgrade.tmp/ through the store itself
//      (which seals them, keeps the tallies and puts large blocks in slots), and syncs it;
//   4. keeps the old file as DB/data.mdb.format<N> (a hard link), renames the new blocks.dat
//      into DB (an older version has none, so its readers ignore it), then the new data.mdb over
//      the old one (atomic: this is the switch) and syncs the directory;
//   5. opens the new database once, still holding the lock, so that LMDB reinitializes lock.mdb
//      for it before any waiting process reads the old file's transaction id from it.
//
// Killed at any instant, the database is the old one (steps 1-3, or 4 before the rename) or the
// new one (after it); a later run clears what an interrupted one left.
#include <fcntl.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "bigarray/storage/block_store.h"
#include "block_delta.h"
#include "checksum.h"
#include "lmdb_records.h"
#include "lmdb_status.h"

namespace bigarray::storage {
namespace internal {
Status CheckLmdbFile(int fd, uint64_t file_size);  // lmdb_check.cc
}  // namespace internal

namespace {

using internal::LmdbStatus;

constexpr std::string_view kMagic = "bigarray";
constexpr uint64_t kBatchBytes = 256ull << 20;  // payload bytes per commit of the new database

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

// Holds LMDB's exclusive lock on lock.mdb (an fcntl write lock on its first byte, lmdb's
// mdb_env_excl_lock), failing when another process has the environment open.
Status LockExclusively(const std::string& path, Fd& lock) {
  const std::string lock_file = path + "/lock.mdb";
  lock.fd = open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock.fd < 0) return ErrnoStatus(errno, "open " + lock_file);
  struct flock l {};
  l.l_type = F_WRLCK;
  l.l_whence = SEEK_SET;
  l.l_start = 0;
  l.l_len = 1;
  if (fcntl(lock.fd, F_SETLK, &l) != 0) {
    if (errno == EAGAIN || errno == EACCES) {
      return FailedPrecondition("upgrade " + path + ": another process has the database open; close it first");
    }
    return ErrnoStatus(errno, "lock " + lock_file);
  }
  return Status::Ok();
}

Status SyncDirectory(const std::string& dir) {
  Fd d;
  d.fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d.fd < 0) return ErrnoStatus(errno, "open " + dir);
  if (fsync(d.fd) != 0) return ErrnoStatus(errno, "sync " + dir);
  return Status::Ok();
}

// The version in a format record, bare (version 1) or sealed (2 and later).
Result<uint32_t> VersionOf(const MDB_val& v, const std::string& path) {
  std::string_view value(static_cast<const char*>(v.mv_data), v.mv_size);
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

// The old environment, read-only and without its lock file (the caller holds the lock).
struct OldEnv {
  MDB_env* env = nullptr;
  MDB_txn* txn = nullptr;
  MDB_dbi meta = 0, blocks = 0;
  ~OldEnv() {
    if (txn) mdb_txn_abort(txn);
    if (env) mdb_env_close(env);
  }
};

Status OpenOld(const std::string& path, OldEnv& old, uint32_t* version) {
  {
    Fd f;
    const std::string data = path + "/data.mdb";
    f.fd = open(data.c_str(), O_RDONLY | O_CLOEXEC);
    if (f.fd < 0) return ErrnoStatus(errno, "open " + data);
    struct stat st;
    if (fstat(f.fd, &st) != 0) return ErrnoStatus(errno, "stat " + data);
    if (!S_ISREG(st.st_mode)) return InvalidArgument(data + " is not a regular file");
    BA_RETURN_IF_ERROR(internal::CheckLmdbFile(f.fd, static_cast<uint64_t>(st.st_size)).WithContext(path));
  }
  int rc = mdb_env_create(&old.env);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "create LMDB environment");
  mdb_env_set_maxdbs(old.env, 4);
  rc = mdb_env_open(old.env, path.c_str(), MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0644);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "open " + path);
  rc = mdb_txn_begin(old.env, nullptr, MDB_RDONLY, &old.txn);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "read " + path);
  rc = mdb_dbi_open(old.txn, "meta", 0, &old.meta);
  if (rc == MDB_NOTFOUND) return InvalidArgument(path + " is not a bigarray database");
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "open the meta database of " + path);
  MDB_val k{7, const_cast<char*>("\0format")}, v;
  rc = mdb_get(old.txn, old.meta, &k, &v);
  if (rc == MDB_NOTFOUND) return InvalidArgument(path + " is not a bigarray database");
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "read the format record of " + path);
  BA_ASSIGN_OR_RETURN(*version, VersionOf(v, path));
  if (*version >= kFormatVersion) return Status::Ok();
  rc = mdb_dbi_open(old.txn, "blocks", 0, &old.blocks);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "open the blocks database of " + path);
  return Status::Ok();
}

// Walks a database of the old environment in key order.
Status ForEach(OldEnv& old, MDB_dbi dbi, const std::function<Status(const MDB_val&, const MDB_val&)>& fn) {
  MDB_cursor* cur;
  int rc = mdb_cursor_open(old.txn, dbi, &cur);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "read");
  MDB_val k, v;
  Status st;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    st = fn(k, v);
    if (!st.ok()) break;
  }
  mdb_cursor_close(cur);
  if (st.ok() && rc != MDB_NOTFOUND) st = LmdbStatus(rc, "read");
  return st;
}

// A block of a version-2 database: its whole-block record (if any) and deltas, checked and
// applied, without trailing zeros. `records`: (key, value) in key order.
Result<std::vector<std::byte>> Version2Block(const std::string& path, ArrayId a, BlockIndex i,
                                             const std::vector<std::pair<MDB_val, MDB_val>>& records) {
  const std::string what = path + ": array #" + std::to_string(a) + " block " + std::to_string(i);
  std::vector<std::byte> block;
  for (const auto& [k, v] : records) {
    const auto* vb = static_cast<const unsigned char*>(v.mv_data);
    if (v.mv_size < internal::kShortHeader) return Corruption(what + ": a malformed record; nothing was converted");
    BA_ASSIGN_OR_RETURN(internal::BlockHeader h, internal::DecodeBlockHeader(vb, v.mv_size, v.mv_size, what));
    std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(vb + h.header_bytes), v.mv_size - h.header_bytes);
    const bool delta_of_its_key =
        k.mv_size == 24 && h.commit == internal::GetBE64(static_cast<const unsigned char*>(k.mv_data) + 16);
    if (h.slotted() || (k.mv_size == 16) != (h.kind == internal::kWholeBlock) ||
        (h.kind == internal::kDelta && !delta_of_its_key) ||
        internal::BlockHasher::Of(internal::PayloadSeed(a, i, h), payload) != h.checksum) {
      return Corruption(what + ": checksum mismatch (the data on disk is damaged); nothing was converted");
    }
    if (h.kind == internal::kWholeBlock) {
      block.assign(payload.begin(), payload.end());
      continue;
    }
    block.resize(std::max(block.size(), internal::DeltaExtent(payload)));
    BA_RETURN_IF_ERROR(internal::ApplyDelta(what, payload, block));
  }
  block.resize(TrimmedSize(block));
  return block;
}

// Copies every record of the version-1 or -2 environment into `store`.
Status Copy(OldEnv& old, BlockStore& store, const std::string& path, UpgradeReport& report,
            const std::function<void(uint64_t, uint64_t)>& progress) {
  MDB_stat bs;
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_stat(old.txn, old.blocks, &bs), "read " + path));
  const uint64_t total = bs.ms_entries;
  WriteBatch batch;
  uint64_t batch_bytes = 0;
  auto flush = [&]() -> Status {
    if (batch.empty()) return Status::Ok();
    BA_RETURN_IF_ERROR(store.Commit(batch).status());
    batch = WriteBatch();
    batch_bytes = 0;
    if (progress) progress(report.blocks, total);
    return Status::Ok();
  };
  BA_RETURN_IF_ERROR(ForEach(old, old.meta, [&](const MDB_val& k, const MDB_val& v) -> Status {
    std::string key(static_cast<const char*>(k.mv_data), k.mv_size);
    if (!key.empty() && key[0] == kReservedMetaPrefix) return Status::Ok();  // the old store's own
    std::string_view value(static_cast<const char*>(v.mv_data), v.mv_size);
    if (report.from_version >= 2) {
      Result<std::string_view> body = internal::OpenRecord(key, value, "metadata");
      if (!body.ok()) return body.status().WithContext(path + " (nothing was converted)");
      value = *body;
    }
    batch.PutMeta(std::move(key), std::string(value));
    ++report.records;
    return Status::Ok();
  }));
  auto put = [&](ArrayId a, BlockIndex i, std::span<const std::byte> payload) -> Status {
    batch.PutBlock(a, i, payload);
    ++report.blocks;
    report.payload_bytes += payload.size();
    batch_bytes += payload.size();
    return batch_bytes >= kBatchBytes ? flush() : Status::Ok();
  };
  if (report.from_version >= 2) {
    // The records of one block are adjacent: its whole-block record, then its deltas.
    std::vector<std::pair<MDB_val, MDB_val>> records;
    auto block_done = [&]() -> Status {
      if (records.empty()) return Status::Ok();
      const auto* kb = static_cast<const unsigned char*>(records[0].first.mv_data);
      const ArrayId a = internal::GetBE64(kb);
      const BlockIndex i = internal::GetBE64(kb + 8);
      BA_ASSIGN_OR_RETURN(std::vector<std::byte> block, Version2Block(path, a, i, records));
      records.clear();
      return block.empty() ? Status::Ok() : put(a, i, block);
    };
    BA_RETURN_IF_ERROR(ForEach(old, old.blocks, [&](const MDB_val& k, const MDB_val& v) -> Status {
      if (k.mv_size != 16 && k.mv_size != 24) return Corruption(path + ": a malformed block key; nothing was converted");
      Status done;
      if (!records.empty() && std::memcmp(records[0].first.mv_data, k.mv_data, 16) != 0) done = block_done();
      records.emplace_back(k, v);
      return done;
    }));
    BA_RETURN_IF_ERROR(block_done());
    BA_RETURN_IF_ERROR(flush());
    return store.Sync();
  }
  BA_RETURN_IF_ERROR(ForEach(old, old.blocks, [&](const MDB_val& k, const MDB_val& v) -> Status {
    if (k.mv_size != 16 || v.mv_size < 16) return Corruption(path + ": a malformed block record");
    const auto* kb = static_cast<const unsigned char*>(k.mv_data);
    const auto* vb = static_cast<const unsigned char*>(v.mv_data);
    const ArrayId a = internal::GetBE64(kb);
    const BlockIndex i = internal::GetBE64(kb + 8);
    std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(vb + 16), v.mv_size - 16);
    if (internal::BlockChecksum(a, i, internal::GetLE64(vb + 8), payload) != internal::GetLE64(vb)) {
      return Corruption(path + ": array #" + std::to_string(a) + " block " + std::to_string(i) +
                        ": checksum mismatch (the data on disk is damaged); nothing was converted");
    }
    return put(a, i, payload);
  }));
  BA_RETURN_IF_ERROR(flush());
  return store.Sync();
}

}  // namespace

Result<UpgradeReport> UpgradeLmdbStore(const std::string& path, const std::function<void(uint64_t, uint64_t)>& progress) {
  namespace fs = std::filesystem;
  UpgradeReport report;
  struct stat st;
  if (stat((path + "/data.mdb").c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound("no bigarray database at " + path);
    return ErrnoStatus(errno, "stat " + path + "/data.mdb");
  }
  Fd lock;
  BA_RETURN_IF_ERROR(LockExclusively(path, lock));
  const std::string tmp = path + "/upgrade.tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);  // what an interrupted run left
  if (ec) return ErrnoStatus(ec.value(), "remove " + tmp);
  {
    OldEnv old;
    BA_RETURN_IF_ERROR(OpenOld(path, old, &report.from_version));
    if (report.from_version == kFormatVersion) return report;  // nothing to do
    if (report.from_version > kFormatVersion) {
      return Unsupported(path + " has format version " + std::to_string(report.from_version) +
                         ", newer than this build of bigarray (" + std::to_string(kFormatVersion) + ")");
    }
    LmdbOptions o;
    o.durable = false;  // synced once at the end
    BA_ASSIGN_OR_RETURN(auto store, OpenLmdbStore(tmp, o));
    BA_RETURN_IF_ERROR(Copy(old, *store, path, report, progress));
  }
  report.backup = path + "/data.mdb.format" + std::to_string(report.from_version);
  if (unlink(report.backup.c_str()) != 0 && errno != ENOENT) return ErrnoStatus(errno, "remove " + report.backup);
  if (link((path + "/data.mdb").c_str(), report.backup.c_str()) != 0) {
    return ErrnoStatus(errno, "keep the old data.mdb as " + report.backup);
  }
  const std::string slots = "/" + std::string(kSlotsFile);
  if (rename((tmp + slots).c_str(), (path + slots).c_str()) != 0) return ErrnoStatus(errno, "move " + tmp + slots);
  if (rename((tmp + "/data.mdb").c_str(), (path + "/data.mdb").c_str()) != 0) {
    return ErrnoStatus(errno, "replace " + path + "/data.mdb");
  }
  BA_RETURN_IF_ERROR(SyncDirectory(path));
  fs::remove_all(tmp, ec);  // its lock file; a failure leaves a directory the next run clears
  report.upgraded = true;
  // Open the new database once while still holding the lock: LMDB, finding itself alone (the
  // lock is this process's), reinitializes lock.mdb for the new file before any process that
  // waited for the lock reads the old file's state from it.
  LmdbOptions o;
  o.create_if_missing = false;
  BA_RETURN_IF_ERROR(OpenLmdbStore(path, o).status().WithContext("open the upgraded database"));
  return report;
}

}  // namespace bigarray::storage
