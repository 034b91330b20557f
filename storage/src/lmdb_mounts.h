// lmdb_mounts.h: whether a read-only open may skip LMDB's lock file (docs/api.md, "Read-only
// handles").
//
// LMDB registers each reader in lock.mdb so that no writer reuses the pages it reads; it skips
// the lock file when it cannot open it because the file system is read-only (EROFS). That is
// safe only if no process on this host can write the database. A read-only *mount* does not
// prove it: a bind mount or a container volume may be read-only while the same file system is
// writable through another mount, where a writer would not see this reader. Only a read-only
// *file system* (its superblock, as /proc/self/mountinfo reports it) does.
#pragma once

#include <string>

#include "bigarray/status.h"

namespace bigarray::storage::internal {

enum class ReadOnlyPlace {
  kWritable,          // a writable mount: LMDB's lock file is needed and used
  kReadOnlyFs,        // a read-only file system: no writer can exist here; no lock file needed
  kReadOnlyMountOnly, // a read-only mount of a file system that may be writable elsewhere
};

// Where the database directory `path` is. kReadOnlyMountOnly also when the file system's own
// state cannot be read (no /proc): nothing then proves that no writer exists.
Result<ReadOnlyPlace> ReadOnlyPlaceOf(const std::string& path);

}  // namespace bigarray::storage::internal
