// raw_lmdb.h: LMDB environments written or damaged behind bigarray's back, for the tests of the
// on-disk format (format_test, slots_test, cli_test): databases as older versions wrote them, and bytes
// changed in place as damage on disk would change them.
#pragma once

#include <doctest/doctest.h>
#include <lmdb.h>
#include <sys/stat.h>

#include <functional>
#include <string>

namespace bigarray::testing {

struct RawDbs {
  MDB_txn* txn;
  MDB_dbi meta, blocks, log;
};

// Creates an environment at `path` with bigarray's three named databases and commits one
// transaction in which `fill` writes what it likes.
inline void WriteRawEnvironment(const std::string& path, size_t map_bytes, const std::function<void(const RawDbs&)>& fill) {
  mkdir(path.c_str(), 0755);
  MDB_env* env;
  REQUIRE(mdb_env_create(&env) == 0);
  mdb_env_set_maxdbs(env, 4);
  mdb_env_set_mapsize(env, map_bytes);
  REQUIRE(mdb_env_open(env, path.c_str(), 0, 0644) == 0);
  RawDbs dbs{};
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &dbs.txn) == 0);
  REQUIRE(mdb_dbi_open(dbs.txn, "meta", MDB_CREATE, &dbs.meta) == 0);
  REQUIRE(mdb_dbi_open(dbs.txn, "blocks", MDB_CREATE, &dbs.blocks) == 0);
  REQUIRE(mdb_dbi_open(dbs.txn, "log", MDB_CREATE, &dbs.log) == 0);
  fill(dbs);
  REQUIRE(mdb_txn_commit(dbs.txn) == 0);
  mdb_env_close(env);
}

// Runs `fn` on a read transaction of the environment at `path`, opened read-only, or with
// `writable_map` opened with MDB_WRITEMAP: the pointers LMDB returns point into data.mdb, and
// what `fn` writes through them changes the file in place, as damage would (no commit, no new
// transaction id).
inline void WithReadTxn(const std::string& path, bool writable_map, const std::function<void(MDB_txn*)>& fn) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  mdb_env_set_maxdbs(env, 4);
  REQUIRE(mdb_env_open(env, path.c_str(), MDB_NOTLS | (writable_map ? MDB_WRITEMAP : MDB_RDONLY), 0644) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0);
  fn(txn);
  mdb_txn_abort(txn);
  mdb_env_close(env);
}

inline void WithWritableMap(const std::string& path, const std::function<void(MDB_txn*)>& fn) {
  WithReadTxn(path, true, fn);
}

// Calls `fn(key, value)` on each record of named database `db`, in key order, until it returns
// false.
inline void ForEachRecord(MDB_txn* txn, const char* db, const std::function<bool(MDB_val& key, MDB_val& value)>& fn) {
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(txn, db, 0, &dbi) == 0);
  MDB_cursor* cur = nullptr;
  REQUIRE(mdb_cursor_open(txn, dbi, &cur) == 0);
  MDB_val k, v;
  for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && fn(k, v); rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
  }
  mdb_cursor_close(cur);
}

}  // namespace bigarray::testing
