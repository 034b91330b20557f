// catalog_util.h: changing a database's catalog below the library, to build databases that the
// library no longer creates (names written before a rule existed).
#pragma once

#include <doctest/doctest.h>

#include <string>

#include "bigarray/storage/block_store.h"

namespace bigarray::testing {

// Renames array `from` to `to` in the LMDB database at `path` by rewriting its catalog entry
// ("n/<name>" -> id, docs/format.md) directly, bypassing the library's checks on names.
inline void RenameInCatalog(const std::string& path, const std::string& from, const std::string& to) {
  auto store = storage::OpenLmdbStore(path, {});
  REQUIRE_MESSAGE(store.ok(), store.status().ToString());
  auto snap = (*store)->OpenSnapshot();
  REQUIRE(snap.ok());
  auto id = (*snap)->GetMeta("n/" + from);
  REQUIRE(id.ok());
  REQUIRE(id->has_value());
  storage::WriteBatch batch((*snap)->commit_id());
  batch.DeleteMeta("n/" + from);
  batch.PutMeta("n/" + to, **id);
  REQUIRE((*store)->Commit(batch).ok());
}

}  // namespace bigarray::testing
