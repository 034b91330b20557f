#include "lmdb_status.h"

#include <lmdb.h>

#include <string>

namespace bigarray::storage::internal {

Status LmdbStatus(int rc, std::string_view what) {
  if (rc == MDB_SUCCESS) return Status::Ok();
  std::string m(what);
  m += ": ";
  m += mdb_strerror(rc);
  switch (rc) {
    case MDB_NOTFOUND:
      return NotFound(std::move(m));
    case MDB_KEYEXIST:
      return AlreadyExists(std::move(m));
    case MDB_MAP_FULL:
      return NoSpace(std::move(m) + " (the map could not grow)");
    case MDB_READERS_FULL:
      return ResourceExhausted(std::move(m) +
                               " (too many open transactions on this database; close some handles)");
    case MDB_TXN_FULL:
    case MDB_CURSOR_FULL:
    case MDB_PAGE_FULL:
    case MDB_TLS_FULL:
    case MDB_DBS_FULL:
      return ResourceExhausted(std::move(m));
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_PANIC:
    case MDB_INVALID:
    case MDB_BAD_DBI:
    case MDB_INCOMPATIBLE:
      return Corruption(std::move(m));
    case MDB_VERSION_MISMATCH:
      return Unsupported(std::move(m));
    case MDB_MAP_RESIZED:
    case MDB_BAD_RSLOT:
    case MDB_BAD_TXN:
    case MDB_BAD_VALSIZE:
      return Internal(std::move(m));
    default:
      break;
  }
  return ErrnoStatus(rc, what);
}

}  // namespace bigarray::storage::internal
