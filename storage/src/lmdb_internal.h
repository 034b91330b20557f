// lmdb_internal.h: what lmdb_store.cc lends to the other LMDB files of the storage layer
// (lmdb_space.cc measures an open environment; lmdb_compact.cc rewrites a closed one).
//
// Thread contract: every function may be called from any thread.
#pragma once

#include <lmdb.h>

#include <functional>
#include <memory>
#include <string>

#include "bigarray/storage/block_store.h"

namespace bigarray::storage::internal {

// The structural check of data.mdb (lmdb_check.cc): walks every B-tree of the newest meta page
// with pread; kCorruption when a page is damaged.
Status CheckLmdbFile(int fd, uint64_t file_size);

// A read transaction on the newest commit of an LMDB store, with the store's database handles.
struct LmdbReadView {
  MDB_env* env = nullptr;
  MDB_txn* txn = nullptr;
  MDB_dbi meta = 0, blocks = 0, log = 0;
};

// Runs `fn` on a read transaction of `store`'s environment, begun for the call and aborted
// after it, holding the locks that make LMDB calls on it safe (no remap meanwhile). `fn` must
// not open other transactions or stores. kInvalidArgument when `store` is not an LMDB store.
Status WithLmdbRead(BlockStore& store, const std::function<Status(const LmdbReadView&)>& fn);

// While a reservation lives, OpenLmdbStore of its directory in this process fails with
// kFailedPrecondition: compaction replaces data.mdb, which an environment of this process
// would not notice (and closing one would drop the compactor's lock on lock.mdb).
class LmdbPathReservation {
 public:
  virtual ~LmdbPathReservation() = default;
};
// Reserves the database directory `path`; kFailedPrecondition when this process has it open
// (or reserved) now, kNotFound when it does not exist.
Result<std::unique_ptr<LmdbPathReservation>> ReserveLmdbPath(const std::string& path);

}  // namespace bigarray::storage::internal
