// bigarray/database.h: databases, arrays and transactions (docs/api.md, docs/transactions.md).
//
// The ZODB model: a Database handle works in one transaction at a time. Its reads see the
// committed state as of the transaction's start (T3); Commit() makes every change to every array
// since the last boundary durable and visible at once (T2, T7); Abort() discards them (T1).
// Concurrency between handles and processes is optimistic: a commit that changes a block or an
// array's metadata that another transaction changed and committed first fails with
// Code::kConflict, writing nothing (T4, T5); the handle must then Abort() and may redo its work.
//
// Thread contract: a Database handle and its Arrays may be used from several threads for data
// access (reading and writing through views). Calls that change the catalog or the transaction
// (Create, Drop, Rename, Append, Resize, Commit, Abort) are serialized by the handle, and must not
// race with writes through views (such writes land on either side of the boundary). For
// independent transactions, open one handle per thread, like ZODB connections.
#pragma once

#include <spdlog/logger.h>

#include <chrono>
#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bigarray/attrs.h"
#include "bigarray/dtype.h"
#include "bigarray/handles.h"
#include "bigarray/space.h"
#include "bigarray/status.h"
#include "bigarray/view.h"

namespace bigarray {

class Database;
namespace internal {
class Session;
class ArrayState;
}  // namespace internal
namespace storage {
class BlockStore;
}

enum class Durability {
  kDurable,  // each commit is on disk when Commit returns (fsync)
  kRelaxed,  // a commit survives a crash of the process; an OS crash may lose the latest commits
};

struct Options {
  // RAM the page cache of this handle may use (clean and dirty pages). Dirty data beyond it is
  // spilled to a scratch file, so a transaction may be larger than RAM.
  uint64_t cache_bytes = 1ull << 30;
  Durability durability = Durability::kDurable;
  bool create_if_missing = true;
  // Opens the database for reading only (LMDB: MDB_RDONLY; it works on a read-only mount).
  // Create, Drop, Rename, Resize and Append fail with kFailedPrecondition; writes through views
  // change only this handle's cache, and a Commit with changes fails (nothing is written).
  bool read_only = false;
  // Blocks a sequential scan maps or loads ahead of the reader: at most a quarter of the cache.
  // Each thread's scan of an array is followed on its own; random access reads nothing ahead.
  unsigned readahead_blocks = 64;
  unsigned loader_threads = 4;
  // Allocate the cache's RAM up front, in the background, so that even the first loads copy
  // into warm memory (faster first scans) at the price of holding the whole budget at once.
  bool prefault_cache = false;
  // Clean blocks of an LMDB database are mapped read-only straight from the database file's
  // page cache into views (no copy, no RAM of the cache, shared by every process on the host);
  // the cache then holds only blocks being written and blocks the file cannot show (docs/pager.md,
  // section 3b). False: every block is copied into the cache.
  bool map_reads = true;
  // Each block is checked against its checksum the first time this handle maps or loads it
  // (semantics.md S6). False maps mapped blocks without reading them first, as numpy.memmap
  // does: faster first scans, and damage on disk shows up as wrong values instead of an error.
  // Copied blocks are always checked; `bigarray verify` always checks everything.
  bool verify_reads = true;
  // Where dirty pages beyond the cache go; empty: the database directory.
  std::string spill_dir;
  // Receives the library's log messages (map growth, spills, warnings); null: silent.
  std::shared_ptr<spdlog::logger> logger;
};

enum class Order : char { kC = 'C', kF = 'F' };

struct ArrayOptions {
  Order order = Order::kC;
  uint64_t block_size = 2ull << 20;  // bytes; a multiple of the OS page size
};

struct CacheStats {
  uint64_t faults = 0, loads = 0, readahead_loads = 0, evictions = 0, spills = 0;
  uint64_t resident_bytes = 0, dirty_blocks = 0;
  // Blocks mapped straight from the database file instead of loaded (Options::map_reads), and
  // the bytes of resident_bytes they account for (page cache shown in views, not cache RAM).
  uint64_t file_maps = 0, file_mapped_bytes = 0;
};

// A named array of one Database handle. Copies refer to the same array.
class Array {
 public:
  const std::string& name() const;
  const DType& dtype() const;
  Order order() const;
  uint64_t block_size() const;
  // As NumPy computes them, for the array's current shape in this transaction (A2).
  std::vector<int64_t> shape() const;
  std::vector<int64_t> strides() const;
  int ndim() const;
  int64_t size() const;
  int64_t itemsize() const;
  int64_t nbytes() const;
  Result<int64_t> len() const;

  // A view of the whole array. kResourceExhausted when the array does not fit the address
  // space: then index a part of it instead.
  Result<View> view() const;
  // A view of part of the array (basic indexing, as View::Index), mapping only what it covers:
  // a small view deep inside a huge array works.
  Result<View> Index(std::initializer_list<IndexItem> index) const {
    return Index(std::span<const IndexItem>(index.begin(), index.size()));
  }
  Result<View> Index(std::span<const IndexItem> index) const;

  // Copies the part of the array that `index` selects (as Index) into `out`, e.g. a View::Wrap of
  // the caller's buffer: the same as out.Assign(Index(index)) (broadcasting included), but when
  // `out` takes the part's bytes whole and in order (same dtype and shape, both C- or both
  // F-contiguous), each block the handle has not loaded is read straight from the store into
  // `out` and checked against its checksum, with no page fault and nothing cached: H5Dread's way,
  // for data read once. Blocks this transaction changed, and blocks already loaded or mapped,
  // are copied from the cache. Errors (damage, I/O) are returned.
  Status Read(std::span<const IndexItem> index, const View& out) const;
  Status Read(std::initializer_list<IndexItem> index, const View& out) const {
    return Read(std::span<const IndexItem>(index.begin(), index.size()), out);
  }

  // Extends the major axis (axis 0 in C order, the last in F order) by values.shape() along it;
  // every other extent must match, else kInvalidArgument and nothing changes. Cost is
  // proportional to the appended data (A6).
  Status Append(const View& values);
  // New shape, same rank or not, same element order (NumPy's ndarray.resize): the element data
  // is kept in flat order, new elements read as zeros, blocks past a smaller end are released at
  // commit. O(1) in the array's size (A7).
  Status Resize(std::vector<int64_t> shape);

  // Blocks stored for this array as of the transaction's snapshot.
  Result<uint64_t> BlocksStored() const;
  // Their indices, ascending (blocks not listed read as zeros in the snapshot). Reads the block
  // index only: O(stored blocks), whatever the array's size. Changes of this transaction are
  // not included.
  Result<std::vector<uint64_t>> StoredBlocks() const;
  // How many blocks are stored and their payload bytes, as of the transaction's snapshot, in one
  // pass over the block index: O(stored blocks).
  Result<ArraySpace> Stored() const;

  // Reads every stored block of the transaction's snapshot straight from the store (not through
  // the cache) and checks it against its checksum, and checks that the blocks found are the ones
  // the store recorded for the array (none missing, extra or moved). Calls `damaged` for each
  // damaged block (kNoBlockIndex: damage that no single block accounts for) and goes on; any
  // other failure (I/O, too many open files, memory) ends the check as that error, never counted
  // as damage. Returns the number of blocks checked. O(stored blocks), whatever the array's size.
  static constexpr uint64_t kNoBlockIndex = ~uint64_t{0};
  Result<uint64_t> Verify(const std::function<void(uint64_t block, const Status&)>& damaged) const;

  // The array's attributes (bigarray/attrs.h): they follow the array through Rename and go with
  // it at Drop.
  Attrs attrs() const;

 private:
  friend class Database;
  explicit Array(std::shared_ptr<internal::ArrayState> state) : state_(std::move(state)) {}
  std::shared_ptr<internal::ArrayState> state_;
};

namespace internal {
Result<Database> OpenDatabaseOnStore(std::shared_ptr<storage::BlockStore> store, const std::string& name,
                                     const Options& options);
}  // namespace internal

class Database {
 public:
  // Opens (or creates) the database at `path`, a directory holding an LMDB environment.
  // "memory:" opens a fresh in-memory database, private to this handle (for tests).
  static Result<Database> Open(const std::string& path, const Options& options = {});

  Database(Database&&) noexcept;
  Database& operator=(Database&&) noexcept;
  ~Database();  // aborts the open transaction

  Result<Array> Create(const std::string& name, std::vector<int64_t> shape, const DType& dtype,
                       const ArrayOptions& options = {});
  Result<Array> Create(const std::string& name, std::vector<int64_t> shape, std::string_view dtype,
                       const ArrayOptions& options = {});
  Result<Array> Get(const std::string& name);
  Result<bool> Contains(const std::string& name);
  Result<std::vector<std::string>> Names();
  // The names that begin with `prefix`, sorted. Costs O(names listed), not O(all names).
  Result<std::vector<std::string>> Names(std::string_view prefix);
  Status Drop(const std::string& name);
  Status Rename(const std::string& from, const std::string& to);

  // Groups (docs/api.md, "Groups"): '/' in names forms a hierarchy, as in HDF5 and zarr; a group
  // exists while a name lies below it. `group` is a name without leading or trailing '/'
  // ("runs/2026"; "" or "/" is the top level). List gives the entries one level below it, by
  // name relative to the group: arrays, and sub-groups (is_group), sorted by name (an array and
  // a group may share a name). It costs O(entries listed): the catalog is read past each
  // sub-group, not through it (plus the arrays this handle has opened).
  struct GroupEntry {
    std::string name;
    bool is_group = false;
    friend bool operator==(const GroupEntry&, const GroupEntry&) = default;
  };
  Result<std::vector<GroupEntry>> List(std::string_view group);
  // Whether a name lies below `group` (the top level: whether there is any array).
  Result<bool> GroupExists(std::string_view group);
  // Drops every array below `group` (and the group's attributes and its sub-groups'), in this
  // transaction; returns how many arrays. kNotFound when there is none and no attribute.
  Result<size_t> DropGroup(std::string_view group);

  // The database's attributes, and a group's ("" or "/": the database's).
  Attrs attrs();
  Attrs GroupAttrs(std::string_view group);

  // Commits the transaction: all or nothing (T2, T7). kConflict: another transaction committed
  // a change to the same block or array first; nothing was written and the transaction must be
  // aborted. kNoSpace, kIOError: nothing was written; the changes are still there, Commit may
  // be retried or the transaction aborted. Then a new transaction begins, seeing every commit.
  Status Commit();
  // Discards every change since the last boundary; a new transaction begins.
  void Abort();
  // Makes relaxed-mode commits durable.
  Status Sync();

  // The names of the arrays this transaction changed (data, shape, name, attributes; created
  // or dropped), and "<group>/" for a group whose attributes it changed, "/" for the database's,
  // sorted: what Commit would write and Abort would discard. Empty: nothing to commit. Lists
  // the dirty blocks the way Commit does (write-protecting them for a moment), so it must not
  // race with writes through views, like Commit.
  Result<std::vector<std::string>> ChangedArrays();

  // The commit this transaction reads.
  uint64_t snapshot_commit() const;

  // Checks every record of the database that is not a block (catalog, names, change log, commit
  // record) in the transaction's snapshot; calls `damaged` for each damaged one. Other failures
  // are returned. Array::Verify checks the blocks.
  Status VerifyRecords(const std::function<void(const Status&)>& damaged);

  // Following a growing dataset (docs/transactions.md): returns the id of the newest commit once
  // one newer than `after` exists, at once if there is one already, or nullopt when `timeout`
  // passes first. It sleeps (no polling) until a handle of any process on this host commits to
  // this database. It does not move the transaction: call Abort() (or Commit()) to read the new
  // commit. Safe to call from any thread, also while another thread uses the handle.
  // A signal handled by the process does not end the wait early.
  Result<std::optional<uint64_t>> WaitForCommit(
      uint64_t after, std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max()) const;
  // Names of the arrays (existing in this transaction's snapshot) whose blocks, shape, name or
  // attributes changed in commits (commit, snapshot_commit()]: e.g. what a follower's Abort()
  // brought.
  Result<std::vector<std::string>> ArraysChangedSince(uint64_t commit);
  CacheStats cache_stats() const;
  const std::string& path() const;

  // Disk space (bigarray/space.h, docs/format.md "Space"): the stored bytes of every array of
  // this transaction's snapshot, and for a local database the file's figures (allocated, free,
  // reclaimable by Compact) and the oldest snapshot open in any process. O(stored blocks) plus
  // a few pages of LMDB's own structures.
  Result<SpaceReport> Space();

 private:
  friend Result<Database> internal::OpenDatabaseOnStore(std::shared_ptr<storage::BlockStore>,
                                                        const std::string&, const Options&);
  explicit Database(std::shared_ptr<internal::Session> s) : session_(std::move(s)) {}
  // The entries one level below the name prefix `prefix` ("" or "g/"), sorted; when `limit` is
  // not 0, stops once it has found that many (which ones is then unspecified).
  Result<std::vector<GroupEntry>> ListLevel(const std::string& prefix, size_t limit);
  std::shared_ptr<internal::Session> session_;
};

}  // namespace bigarray
