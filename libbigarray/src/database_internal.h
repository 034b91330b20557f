// database_internal.h: opening a Database on a given block store. For tests that wrap the
// store to inject faults (tests/fault_injection_test.cc); not part of the public API.
#pragma once

#include <memory>
#include <string>

#include "bigarray/database.h"
#include "bigarray/storage/block_store.h"

namespace bigarray::internal {

// `name` is used in messages; `spill_dir` of the options must be set (or "/tmp" is used).
Result<Database> OpenDatabaseOnStore(std::shared_ptr<storage::BlockStore> store, const std::string& name,
                                     const Options& options);

}  // namespace bigarray::internal
