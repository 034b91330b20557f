// lmdb_status.h: the one place where LMDB return codes become Status values.
#pragma once

#include <string_view>

#include "bigarray/status.h"

namespace bigarray::storage::internal {

// Translates an LMDB (or errno) return code; `what` names the operation and its object,
// e.g. "read array #3 block 7". Returns Ok for MDB_SUCCESS.
Status LmdbStatus(int rc, std::string_view what);

}  // namespace bigarray::storage::internal
