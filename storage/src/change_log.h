// change_log.h: the encoding of one commit's change-log record, shared by the stores.
//
// A record lists what one commit changed (docs/format.md, "log"):
//   repeated { u8 kind; kind 1: u64 array, u64 first, u64 end   (blocks [first, end))
//                       kind 2: u32 length, key bytes           (a metadata key) }
// All integers little-endian.
#pragma once

#include <string>
#include <string_view>

#include "bigarray/storage/block_store.h"

namespace bigarray::storage::internal {

// The record for `batch`: consecutive puts/deletes of one array coalesce into ranges.
std::string EncodeChanges(const WriteBatch& batch);

// Appends the record's entries to `out`. kCorruption when the record is malformed.
Status DecodeChanges(std::string_view record, ChangeSet& out);

}  // namespace bigarray::storage::internal
