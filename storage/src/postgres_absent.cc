// postgres_absent.cc: OpenPostgresStore of a build without the PostgreSQL backend
// (-DBIGARRAY_POSTGRES=OFF, the default when libpq is not found). Every URI is refused with an
// error that says so. The URI is not repeated: it may hold a password.
#include "bigarray/storage/block_store.h"

namespace bigarray::storage {

Result<std::shared_ptr<BlockStore>> OpenPostgresStore(const std::string&, const PostgresOptions&) {
  return Unsupported(
      "cannot open a PostgreSQL database: this bigarray was built without PostgreSQL support "
      "(configure with -DBIGARRAY_POSTGRES=ON, which needs libpq)");
}

}  // namespace bigarray::storage
