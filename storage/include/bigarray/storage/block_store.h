// bigarray/storage/block_store.h: the block store interface (docs/architecture.md, docs/format.md).
//
// A BlockStore holds fixed-size blocks addressed by (array id, block index), small metadata
// records addressed by string keys, and a change log keyed by commit id. It knows nothing of
// pages, mappings or array shapes: callers pass the block size with every read.
//
// Semantics (docs/semantics.md, section Storage):
//   S1  a block never written, or deleted, reads as zeros; a stored payload may be shorter than
//       the block (trailing zeros trimmed) and reads are zero-filled to the caller's size.
//   S2  a WriteBatch commits atomically: all of it or none of it, across kill -9 (and power loss
//       in durable mode).
//   S3  a Snapshot sees one committed state for as long as it lives.
//   S4  every stored block records the commit that wrote it; Commit() refuses a batch with
//       kConflict, writing nothing, when a key it writes changed after the batch's base commit.
//   S5  Snapshot::ChangesSince() tells which keys changed between two commits.
//   S6  every block read is checked against its checksum; a mismatch is kCorruption.
//
// Thread contract: every method of BlockStore and Snapshot may be called from any thread,
// concurrently. Commits are serialized inside the store. A WriteBatch is a plain value used by
// one thread at a time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bigarray/status.h"

namespace bigarray::storage {

using ArrayId = uint64_t;
using BlockIndex = uint64_t;
using CommitId = uint64_t;  // strictly increasing; 0 is "before the first commit"

// Names no block: damage found by Snapshot::VerifyBlocks that no single block accounts for.
inline constexpr BlockIndex kNoBlock = ~BlockIndex{0};

// Meta keys that begin with this byte belong to the store itself (format record, log floor).
inline constexpr char kReservedMetaPrefix = '\0';

struct BlockInfo {
  BlockIndex index = 0;
  CommitId commit = 0;        // the commit that last wrote the block
  uint64_t stored_bytes = 0;  // payload length after trimming trailing zeros
};

// Blocks [first, end) of one array.
struct BlockRange {
  ArrayId array = 0;
  BlockIndex first = 0;
  BlockIndex end = 0;
  bool Contains(ArrayId a, BlockIndex i) const { return a == array && i >= first && i < end; }
};

// What changed in (from, to].
struct ChangeSet {
  CommitId from = 0;
  CommitId to = 0;
  // False when the change log no longer reaches back to `from` (trimmed): the caller must treat
  // every block and every key as changed.
  bool complete = true;
  std::vector<BlockRange> blocks;
  std::vector<std::string> meta_keys;

  bool BlockChanged(ArrayId a, BlockIndex i) const;
  bool MetaChanged(std::string_view key) const;
};

// The length of `data` without its trailing zero bytes (0 for an all-zero block).
size_t TrimmedSize(std::span<const std::byte> data) noexcept;

// A stored block's payload as a range of a file that a reader may map (mmap) instead of reading
// it: zero-copy reads (docs/pager.md, "Mapped blocks"). The range's bytes stay put as long as the
// snapshot that gave it lives; a caller that keeps them mapped longer must drop them before it
// releases that snapshot, unless a later snapshot it holds says the block did not change.
struct BlockFileRange {
  int fd = -1;           // the store's file (owned by the store); -1 when `length` is 0
  off_t offset = 0;      // a multiple of the page size
  size_t length = 0;     // payload bytes: a multiple of the page size, at most the block size;
                         // the rest of the block reads as zeros. 0: the block is all zeros
  uint64_t checksum = 0;  // what BlockRangeChecker compares: XXH3-64 of the bytes, seeded with `seed`
  uint64_t seed = 0;
  std::string what;      // names the record in messages ("array #3 block 7")
};

// Checks the bytes of a BlockFileRange against its checksum, as they arrive in pieces, in order
// (e.g. read with pread): kCorruption as Snapshot::ReadBlock reports it.
class BlockRangeChecker {
 public:
  explicit BlockRangeChecker(BlockFileRange range);
  ~BlockRangeChecker();
  BlockRangeChecker(const BlockRangeChecker&) = delete;
  BlockRangeChecker& operator=(const BlockRangeChecker&) = delete;
  void Update(std::span<const std::byte> piece) noexcept;
  Status Finish() const;  // the verdict on the pieces so far

 private:
  struct Hasher;
  BlockFileRange range_;
  std::unique_ptr<Hasher> hasher_;
};

// A set of block and metadata changes to commit atomically. Deleted ranges are applied before
// block puts, so a batch may delete a range and store some blocks of it again.
class WriteBatch {
 public:
  // Supplies a block's bytes during Commit. The store drops trailing zero bytes (a block of
  // zeros is deleted). It may be called more than once (a commit that must grow the
  // storage map is retried); the span stays valid until the next call of any DataFn of the
  // batch or the end of Commit.
  using DataFn = std::function<Result<std::span<const std::byte>>()>;

  struct Put {
    ArrayId array;
    BlockIndex index;
    size_t size;  // at most this many payload bytes (space estimates); 0 deletes the block
    DataFn data;
  };

  // Conflicts are checked against changes committed after `base` (the writer's snapshot).
  explicit WriteBatch(CommitId base = 0) : base_(base) {}

  CommitId base() const { return base_; }

  // Stores the payload `data` returns, of at most `max_size` bytes.
  void PutBlock(ArrayId array, BlockIndex index, size_t max_size, DataFn data);
  // Convenience: copies `data` (without its trailing zeros) into the batch.
  void PutBlock(ArrayId array, BlockIndex index, std::span<const std::byte> data);
  void DeleteBlock(ArrayId array, BlockIndex index);
  void DeleteBlocks(ArrayId array, BlockIndex first, BlockIndex end);  // [first, end)
  void PutMeta(std::string key, std::string value);
  void DeleteMeta(std::string key);
  // Adds `key` to the read set: the commit conflicts if it changed after base.
  void CheckMeta(std::string key);
  // Adds every key that begins with `prefix` to the read set, including keys the batch's
  // snapshot did not have: the commit conflicts if any of them was created, changed or deleted
  // after base (e.g. the array layer drops an array's attributes, listed from its snapshot, and
  // must not miss one another transaction added meanwhile).
  void CheckMetaPrefix(std::string prefix);

  const std::vector<Put>& puts() const { return puts_; }
  const std::vector<BlockRange>& deletes() const { return deletes_; }
  const std::vector<std::pair<std::string, std::optional<std::string>>>& meta() const { return meta_; }
  const std::vector<std::string>& checks() const { return checks_; }
  const std::vector<std::string>& prefix_checks() const { return prefix_checks_; }
  bool empty() const { return puts_.empty() && deletes_.empty() && meta_.empty(); }
  // Payload bytes this batch stores (an upper bound of what it adds to the store).
  uint64_t PayloadBytes() const;

  // Why this batch conflicts with `changes` ("array #A block I was changed by another
  // transaction after commit B"); nullopt when it does not.
  std::optional<std::string> FindConflict(const ChangeSet& changes) const;

 private:
  CommitId base_;
  std::vector<Put> puts_;
  std::vector<BlockRange> deletes_;
  std::vector<std::pair<std::string, std::optional<std::string>>> meta_;
  std::vector<std::string> checks_;
  std::vector<std::string> prefix_checks_;
};

// One committed state, held open. Destroying it releases the state.
class Snapshot {
 public:
  virtual ~Snapshot() = default;

  virtual CommitId commit_id() const = 0;

  // Fills `out` with the block's bytes: the stored payload, then zeros. kCorruption when the
  // checksum does not match or the payload is longer than `out`.
  virtual Status ReadBlock(ArrayId array, BlockIndex index, std::span<std::byte> out) = 0;

  // Where the block's bytes can be mapped from instead of read (BlockFileRange): checks what
  // locating it reads (the record's header, that the range lies within the file), but not the
  // payload. nullopt when the block cannot be shown that way (a store without a file, a payload
  // stored inside a page or as deltas): read it with ReadBlock.
  virtual Result<std::optional<BlockFileRange>> MappableBlock(ArrayId array, BlockIndex index, size_t block_size) {
    (void)array, (void)index, (void)block_size;
    return std::optional<BlockFileRange>();
  }

  // Stored blocks of `array` in index order, without reading payloads; `fn` returns false to stop.
  virtual Status ForEachBlock(ArrayId array, const std::function<bool(const BlockInfo&)>& fn) = 0;

  virtual Result<std::optional<std::string>> GetMeta(std::string_view key) = 0;
  // Metadata records whose key begins with `prefix`, in key order; `fn` returns false to stop.
  Status ForEachMeta(std::string_view prefix, const std::function<bool(std::string_view, std::string_view)>& fn) {
    return ForEachMetaFrom(prefix, prefix, fn);
  }
  // The same from the first key not below `from` (which begins with `prefix`). A store reads
  // in batches, so a listing that stops early reads about what it listed: a caller can list one
  // level of a hierarchy by stopping and starting again past each sub-tree. A store that keeps
  // tallies of classes of keys (LMDB: "n/", "a/", ...) checks the records found against the
  // class's tally only for a listing of the whole class (`prefix` a class, `from` <= `prefix`),
  // which it then reads whole before `fn` sees any record.
  virtual Status ForEachMetaFrom(std::string_view prefix, std::string_view from,
                                 const std::function<bool(std::string_view, std::string_view)>& fn) = 0;

  // Changes committed in (from, commit_id()].
  virtual Result<ChangeSet> ChangesSince(CommitId from) = 0;

  // Reads every stored block of `array` (blocks of `block_size` bytes) and checks it, and checks
  // that the blocks found are the ones the store recorded (none missing, extra or moved, where
  // the store keeps such a record). Calls `damaged` for each damaged block (kNoBlock: damage no
  // single block accounts for) and goes on; any other failure (I/O, resources) ends the walk
  // and is returned, so that it is never counted as damage. O(stored blocks).
  virtual Result<uint64_t> VerifyBlocks(ArrayId array, size_t block_size,
                              const std::function<void(BlockIndex, const Status&)>& damaged);

  // Checks every record of the store that is not a block (catalog, names, change log, commit
  // record) where the store can; `damaged` as above.
  virtual Status VerifyRecords(const std::function<void(const Status&)>& damaged) {
    (void)damaged;
    return Status::Ok();
  }
};

class BlockStore {
 public:
  virtual ~BlockStore() = default;

  // A snapshot of the latest committed state.
  virtual Result<std::shared_ptr<Snapshot>> OpenSnapshot() = 0;

  // Commits `batch` atomically and returns its commit id. kConflict (nothing written) when a
  // key the batch writes or checks changed after batch.base(). kNoSpace / kIOError leave the
  // last committed state intact.
  virtual Result<CommitId> Commit(const WriteBatch& batch) = 0;

  // Makes every earlier commit durable (a no-op in durable mode).
  virtual Status Sync() = 0;

  // A short description for messages, e.g. the path.
  virtual std::string Describe() const = 0;

  // Whether snapshots may answer MappableBlock with a range (a store kept in a local file).
  virtual bool MapsBlocks() const { return false; }

  // Waits until a commit newer than `after` exists, from any client of the store, and returns
  // the newest commit id, or nullopt when `timeout` passes first. Stores that can be shared
  // between hosts implement it with the server's own notifications (PostgreSQL: LISTEN/NOTIFY);
  // the default answers kUnsupported, and the caller then uses a host-local mechanism (the
  // Database's commit board).
  virtual Result<std::optional<CommitId>> WaitForCommit(CommitId after, std::chrono::nanoseconds timeout) {
    (void)after;
    (void)timeout;
    return Unsupported(Describe() + ": waiting for commits is done on this host, not by the store");
  }
};

// Forwards every call to another store. Tests subclass it and override one method to inject
// faults; snapshots are wrapped by WrapSnapshot so that reads can be intercepted as well.
class ForwardingSnapshot : public Snapshot {
 public:
  explicit ForwardingSnapshot(std::shared_ptr<Snapshot> base) : base_(std::move(base)) {}
  CommitId commit_id() const override { return base_->commit_id(); }
  Status ReadBlock(ArrayId a, BlockIndex i, std::span<std::byte> out) override {
    return base_->ReadBlock(a, i, out);
  }
  Status ForEachBlock(ArrayId a, const std::function<bool(const BlockInfo&)>& fn) override {
    return base_->ForEachBlock(a, fn);
  }
  Result<std::optional<std::string>> GetMeta(std::string_view key) override {
    return base_->GetMeta(key);
  }
  Status ForEachMetaFrom(std::string_view prefix, std::string_view from,
                         const std::function<bool(std::string_view, std::string_view)>& fn) override {
    return base_->ForEachMetaFrom(prefix, from, fn);
  }
  Result<ChangeSet> ChangesSince(CommitId from) override { return base_->ChangesSince(from); }
  Result<uint64_t> VerifyBlocks(ArrayId a, size_t block_size,
                                const std::function<void(BlockIndex, const Status&)>& damaged) override {
    return base_->VerifyBlocks(a, block_size, damaged);
  }
  Status VerifyRecords(const std::function<void(const Status&)>& damaged) override {
    return base_->VerifyRecords(damaged);
  }

 protected:
  std::shared_ptr<Snapshot> base_;
};

class ForwardingStore : public BlockStore {
 public:
  explicit ForwardingStore(std::shared_ptr<BlockStore> base) : base_(std::move(base)) {}
  Result<std::shared_ptr<Snapshot>> OpenSnapshot() override {
    BA_ASSIGN_OR_RETURN(auto snapshot, base_->OpenSnapshot());
    return WrapSnapshot(std::move(snapshot));
  }
  Result<CommitId> Commit(const WriteBatch& batch) override { return base_->Commit(batch); }
  Status Sync() override { return base_->Sync(); }
  std::string Describe() const override { return base_->Describe(); }
  Result<std::optional<CommitId>> WaitForCommit(CommitId after, std::chrono::nanoseconds timeout) override {
    return base_->WaitForCommit(after, timeout);
  }

 protected:
  virtual std::shared_ptr<Snapshot> WrapSnapshot(std::shared_ptr<Snapshot> s) { return s; }
  std::shared_ptr<BlockStore> base_;
};

// ---- implementations -------------------------------------------------------------------------

// In memory, for fast deterministic tests. Commits are copy-on-write; snapshots share state.
std::shared_ptr<BlockStore> NewMemoryStore();

struct LmdbOptions {
  // true: every commit is on disk when Commit returns (fsync). false ("relaxed"): a commit
  // survives a crash of the process but may be lost, whole, on power loss or OS crash; Sync()
  // makes earlier commits durable.
  bool durable = true;
  bool create_if_missing = true;
  bool read_only = false;
  uint64_t initial_map_bytes = 64ull << 20;  // the map then grows by itself (S7)
  unsigned max_readers = 510;                // open snapshots across all processes
};

// An LMDB environment in directory `path` (data.mdb, lock.mdb). Opening something that is not a
// bigarray database, or one of a newer format version, fails and changes nothing on disk.
Result<std::shared_ptr<BlockStore>> OpenLmdbStore(const std::string& path, const LmdbOptions& options);

struct UpgradeReport {
  uint32_t from_version = 0;  // the version found
  bool upgraded = false;      // false: it was already of kFormatVersion, nothing was done
  uint64_t records = 0;       // catalog records copied
  uint64_t blocks = 0;        // blocks copied (every one checked against its old checksum)
  uint64_t payload_bytes = 0;
  std::string backup;         // the old data.mdb, kept under this name
};

// Converts the LMDB database in `path` from an older format version to kFormatVersion, in place
// (docs/format.md, "Upgrading"). Refuses (kFailedPrecondition) while another process has it open,
// and makes processes that open it meanwhile wait. A damaged block stops it with kCorruption,
// nothing changed; killed at any moment, the database is the old or the new one. `progress` is
// called with (blocks copied, blocks in all).
Result<UpgradeReport> UpgradeLmdbStore(const std::string& path,
                                       const std::function<void(uint64_t, uint64_t)>& progress = {});

// The open read transactions of every process on the LMDB environment in `path`, from LMDB's
// reader table: (pid, commit id it reads). Slots of dead processes are cleared first
// (mdb_reader_check). Opens the environment read-only unless this process has it open.
Result<std::vector<std::pair<pid_t, CommitId>>> ListLmdbReaders(const std::string& path);

struct PostgresOptions {
  // true: Commit returns once the server has flushed the commit as its synchronous_commit setting
  // says (on by default). false ("relaxed"): commits run with synchronous_commit = off; a server
  // crash may lose the latest commits, whole; Sync() makes earlier commits durable.
  bool durable = true;
  bool create_if_missing = true;  // create the tables in an empty schema
  bool read_only = false;
  unsigned max_idle_connections = 4;  // idle connections this store keeps for reuse
  // Change-log retention, in commits: records that no open snapshot needs are trimmed, but the
  // latest `log_min_retention` are always kept; with `log_max_retention` > 0, records older than
  // that many commits are trimmed even if a snapshot still needs them (its ChangesSince is then
  // incomplete, and a commit based on it conflicts).
  uint64_t log_min_retention = 1024;
  uint64_t log_max_retention = 0;
};

// A database on a PostgreSQL server (docs/distributed.md). `uri` ("postgresql://...", or any
// libpq connection string) goes to libpq as is; the tables live in the first schema of the
// connection's search_path. Opening a schema that holds something else, or a newer format
// version, fails and changes nothing.
Result<std::shared_ptr<BlockStore>> OpenPostgresStore(const std::string& uri, const PostgresOptions& options);

// The format version of LMDB databases this build writes and reads (docs/format.md; older
// versions are converted by UpgradeLmdbStore).
inline constexpr uint32_t kFormatVersion = 3;

// The file of an LMDB database's directory that holds its large whole blocks, each in a slot of
// its own at a 2 MiB-aligned offset (docs/format.md, "blocks.dat"); the rest is in data.mdb.
inline constexpr std::string_view kSlotsFile = "blocks.dat";

}  // namespace bigarray::storage
