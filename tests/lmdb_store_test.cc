// LMDB-specific behaviour of the block store: persistence, map growth, format checks,
// corruption detection, cross-process snapshots and change logs, and LMDB error translation.
#include <doctest/doctest.h>
#include <lmdb.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "bigarray/storage/block_store.h"
#include "lmdb_records.h"
#include "lmdb_status.h"
#include "test_util.h"

using namespace bigarray;
using namespace bigarray::storage;
using bigarray::testing::AllZero;
using bigarray::testing::InChild;
using bigarray::testing::Pattern;
using bigarray::testing::TempDir;

namespace {

constexpr size_t kBlock = 256 * 1024;

std::shared_ptr<BlockStore> Open(const std::string& path, LmdbOptions o = {}) {
  auto r = OpenLmdbStore(path, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return *r;
}

std::vector<char> Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

// Writes a raw LMDB environment at `path` with one named database "meta" holding `records`.
void WriteRawLmdb(const std::string& path, const std::vector<std::pair<std::string, std::string>>& records,
                  const char* dbname = "meta") {
  mkdir(path.c_str(), 0755);
  MDB_env* env;
  REQUIRE(mdb_env_create(&env) == 0);
  mdb_env_set_maxdbs(env, 4);
  REQUIRE(mdb_env_open(env, path.c_str(), 0, 0644) == 0);
  MDB_txn* txn;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(txn, dbname, MDB_CREATE, &dbi) == 0);
  for (const auto& [k, v] : records) {
    MDB_val key{k.size(), const_cast<char*>(k.data())}, val{v.size(), const_cast<char*>(v.data())};
    REQUIRE(mdb_put(txn, dbi, &key, &val, 0) == 0);
  }
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}

// The format record of `version`: sealed with a checksum since version 2, bare in version 1.
std::string FormatRecord(uint32_t version) {
  std::string body = "bigarray";
  for (int i = 0; i < 4; ++i) body.push_back(static_cast<char>(version >> (8 * i)));
  return version >= 2 ? internal::SealRecord(std::string("\0format", 7), body) : body;
}

}  // namespace

TEST_CASE("data and metadata survive close and reopen") {
  TempDir dir;
  auto data = Pattern(kBlock, 3);
  CommitId c;
  {
    auto store = Open(dir / "db");
    WriteBatch b(0);
    b.PutBlock(9, 4, data);
    b.PutMeta("name", "value");
    c = store->Commit(b).value();
  }
  auto store = Open(dir / "db");
  auto s = store->OpenSnapshot().value();
  CHECK(s->commit_id() == c);
  std::vector<std::byte> out(kBlock);
  REQUIRE(s->ReadBlock(9, 4, out).ok());
  CHECK(out == data);
  CHECK(*s->GetMeta("name").value() == "value");
}

TEST_CASE("two stores on one path in one process share the environment") {
  TempDir dir;
  auto a = Open(dir / "db");
  auto b = Open(dir / "db");  // LMDB alone would refuse a second open in one process
  WriteBatch w(0);
  w.PutMeta("k", "v");
  REQUIRE(a->Commit(w).ok());
  CHECK(*b->OpenSnapshot().value()->GetMeta("k").value() == "v");
}

TEST_CASE("S7: the map grows by itself, while snapshots stay open") {
  TempDir dir;
  LmdbOptions o;
  o.initial_map_bytes = 1 << 20;  // 1 MiB: the first commit already needs more
  auto store = Open(dir / "db", o);
  auto early = store->OpenSnapshot().value();
  CommitId c = early->commit_id();
  std::vector<std::vector<std::byte>> data;
  for (int i = 0; i < 48; ++i) data.push_back(Pattern(kBlock, i));  // 12 MiB
  for (int round = 0; round < 4; ++round) {
    WriteBatch b(c);
    for (int i = round * 12; i < (round + 1) * 12; ++i) b.PutBlock(1, i, data[i]);
    auto r = store->Commit(b);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    c = *r;
  }
  auto s = store->OpenSnapshot().value();
  std::vector<std::byte> out(kBlock);
  for (int i = 0; i < 48; ++i) {
    REQUIRE(s->ReadBlock(1, i, out).ok());
    CHECK(out == data[i]);
  }
  REQUIRE(early->ReadBlock(1, 0, out).ok());  // the old snapshot survived the remaps
  CHECK(AllZero(out));
  struct stat st;
  REQUIRE(stat((dir / "db/data.mdb").c_str(), &st) == 0);
  CHECK(st.st_size >= 12 << 20);
}

TEST_CASE("S8: something that is not a bigarray database is refused, untouched") {
  TempDir dir;
  SUBCASE("a regular file") {
    std::ofstream(dir / "file") << "hello";
    auto r = OpenLmdbStore(dir / "file", {});
    CHECK(r.status().code() == Code::kInvalidArgument);
    CHECK(r.status().message().find("not a bigarray database") != std::string::npos);
  }
  SUBCASE("a directory with other files") {
    mkdir((dir / "d").c_str(), 0755);
    std::ofstream(dir / "d/notes.txt") << "mine";
    auto r = OpenLmdbStore(dir / "d", {});
    CHECK(r.status().code() == Code::kInvalidArgument);
    struct stat st;
    CHECK(stat((dir / "d/data.mdb").c_str(), &st) != 0);  // nothing created
  }
  SUBCASE("a data.mdb that is not LMDB") {
    mkdir((dir / "d").c_str(), 0755);
    std::ofstream(dir / "d/data.mdb") << std::string(100000, 'x');
    auto before = Slurp(dir / "d/data.mdb");
    auto r = OpenLmdbStore(dir / "d", {});
    CHECK(r.status().code() == Code::kInvalidArgument);
    CHECK(Slurp(dir / "d/data.mdb") == before);
  }
  SUBCASE("an LMDB environment of another application") {
    WriteRawLmdb(dir / "d", {{"x", "y"}}, "theirs");
    auto before = Slurp(dir / "d/data.mdb");
    auto r = OpenLmdbStore(dir / "d", {});
    CHECK(r.status().code() == Code::kInvalidArgument);
    CHECK(r.status().message().find("not a bigarray database") != std::string::npos);
    CHECK(Slurp(dir / "d/data.mdb") == before);
  }
  SUBCASE("a newer format version") {
    WriteRawLmdb(dir / "d", {{std::string("\0format", 7), FormatRecord(kFormatVersion + 1)}});
    auto before = Slurp(dir / "d/data.mdb");
    auto r = OpenLmdbStore(dir / "d", {});
    CHECK(r.status().code() == Code::kUnsupported);
    CHECK(r.status().message().find("format version 3") != std::string::npos);
    CHECK(Slurp(dir / "d/data.mdb") == before);
  }
  SUBCASE("an older format version: refused, naming the way to convert it") {
    WriteRawLmdb(dir / "d", {{std::string("\0format", 7), FormatRecord(1)}});
    auto before = Slurp(dir / "d/data.mdb");
    for (bool read_only : {false, true}) {
      LmdbOptions o;
      o.read_only = read_only;
      auto r = OpenLmdbStore(dir / "d", o);
      CHECK(r.status().code() == Code::kFailedPrecondition);
      CHECK_MESSAGE(r.status().message().find("format version 1") != std::string::npos, r.status().ToString());
      CHECK(r.status().message().find("bigarray upgrade") != std::string::npos);
    }
    CHECK(Slurp(dir / "d/data.mdb") == before);
  }
  SUBCASE("a missing database without create") {
    LmdbOptions o;
    o.create_if_missing = false;
    CHECK(OpenLmdbStore(dir / "nope", o).status().code() == Code::kNotFound);
  }
}

TEST_CASE("S8: FIFOs, directories and dangling links in place of LMDB's files are refused, never hang") {
  // Regression: a FIFO as data.mdb or lock.mdb hung every command in open().
  TempDir dir;
  const std::string db = dir / "db";
  { Open(db)->Sync().ThrowIfError(); }
  SUBCASE("data.mdb a FIFO") {
    rename((db + "/data.mdb").c_str(), (dir / "saved").c_str());
    REQUIRE(mkfifo((db + "/data.mdb").c_str(), 0644) == 0);
    auto r = OpenLmdbStore(db, {});
    CHECK(r.status().code() == Code::kInvalidArgument);
    CHECK(r.status().message().find("data.mdb is not a regular file") != std::string::npos);
  }
  SUBCASE("lock.mdb a FIFO") {
    unlink((db + "/lock.mdb").c_str());
    REQUIRE(mkfifo((db + "/lock.mdb").c_str(), 0644) == 0);
    auto r = OpenLmdbStore(db, {});
    CHECK(r.status().code() == Code::kInvalidArgument);
    CHECK(r.status().message().find("lock.mdb is not a regular file") != std::string::npos);
  }
  SUBCASE("lock.mdb a directory") {
    unlink((db + "/lock.mdb").c_str());
    REQUIRE(mkdir((db + "/lock.mdb").c_str(), 0755) == 0);
    CHECK(OpenLmdbStore(db, {}).status().message().find("lock.mdb is not a regular file") != std::string::npos);
  }
  SUBCASE("data.mdb a dangling symbolic link") {
    // Regression: reported as "the directory has no data.mdb", and a writing open as "a
    // non-empty directory without data.mdb"; LMDB would have created the link's target.
    rename((db + "/data.mdb").c_str(), (dir / "moved").c_str());
    REQUIRE(symlink((dir / "gone").c_str(), (db + "/data.mdb").c_str()) == 0);
    for (bool read_only : {false, true}) {
      LmdbOptions o;
      o.read_only = read_only;
      auto r = OpenLmdbStore(db, o);
      CHECK(r.status().code() == Code::kNotFound);
      CHECK(r.status().message() == "no bigarray database at " + db + ": its data.mdb is a symbolic link to " +
                                        (dir / "gone") + ", which does not exist");
    }
    CHECK_FALSE(std::filesystem::exists(dir / "gone"));
  }
  SUBCASE("lock.mdb a dangling symbolic link") {
    unlink((db + "/lock.mdb").c_str());
    REQUIRE(symlink((dir / "nowhere").c_str(), (db + "/lock.mdb").c_str()) == 0);
    CHECK(OpenLmdbStore(db, {}).status().message().find("symbolic link to nothing") != std::string::npos);
  }
}

TEST_CASE("S8: a damaged sub-database name is corruption, and a writing open writes nothing") {
  // Regression: with a byte of the name "blocks" flipped in LMDB's main page, the next writing
  // open created a new, empty blocks database and committed it: every array read as zeros.
  TempDir dir;
  const std::string db = dir / "db";
  {
    auto store = Open(db);
    WriteBatch b(0);
    b.PutBlock(1, 0, Pattern(kBlock, 1));
    REQUIRE(store->Commit(b).ok());
  }
  auto bytes = Slurp(db + "/data.mdb");
  // The main B-tree's leaf names the three sub-databases; damage the first byte of "blocks" in
  // every copy of that page (older copies stay in the file as free pages).
  const std::string name = "blocks";
  int damaged_copies = 0;
  for (auto at = bytes.begin(); (at = std::search(at, bytes.end(), name.begin(), name.end())) != bytes.end(); ++at) {
    *at = 'c';
    ++damaged_copies;
  }
  REQUIRE(damaged_copies > 0);
  std::ofstream(db + "/data.mdb", std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  const auto damaged = Slurp(db + "/data.mdb");
  auto r = OpenLmdbStore(db, {});
  CHECK(r.status().code() == Code::kCorruption);
  CHECK(r.status().message().find("'blocks' database is missing") != std::string::npos);
  CHECK(Slurp(db + "/data.mdb") == damaged);  // nothing written
}

TEST_CASE("S8: a damaged name of 'meta' or 'log' is corruption, not 'not a bigarray database'") {
  // Regression: with "meta" damaged to "zeta" (the main B-tree's keys still in order), or "log"
  // to "zog" (out of order, so LMDB's binary search no longer found "meta"), an open said
  // "InvalidArgument: ... is an LMDB environment but not a bigarray database".
  TempDir dir;
  const std::string db = dir / "db";
  {
    auto store = Open(db);
    WriteBatch b(0);
    b.PutBlock(1, 0, Pattern(kBlock, 1));
    REQUIRE(store->Commit(b).ok());
  }
  const auto intact = Slurp(db + "/data.mdb");
  auto damage = [&](const std::string& name) {  // its first letter becomes 'z', in every copy
    auto bytes = intact;
    int copies = 0;
    for (auto at = bytes.begin(); (at = std::search(at, bytes.end(), name.begin(), name.end())) != bytes.end(); ++at) {
      *at = 'z';
      ++copies;
    }
    REQUIRE(copies > 0);
    std::ofstream(db + "/data.mdb", std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return bytes;
  };
  for (bool read_only : {false, true}) {
    LmdbOptions o;
    o.read_only = read_only;
    const auto meta = damage("meta");
    auto r = OpenLmdbStore(db, o);
    CHECK(r.status().code() == Code::kCorruption);
    CHECK_MESSAGE(r.status().message().find("its 'meta' database is missing") != std::string::npos, r.status().message());
    CHECK(Slurp(db + "/data.mdb") == meta);
    const auto log = damage("log");
    r = OpenLmdbStore(db, o);
    CHECK(r.status().code() == Code::kCorruption);
    CHECK_MESSAGE(r.status().message().find("data.mdb is damaged (main tree: page ") != std::string::npos, r.status().message());
    CHECK(r.status().message().find("keys out of order") != std::string::npos);
    CHECK(Slurp(db + "/data.mdb") == log);
  }
}

TEST_CASE("S6: a block key damaged out of order is corruption at open (it would have read as zeros)") {
  TempDir dir;
  const std::string db = dir / "db";
  {
    auto store = Open(db);
    WriteBatch b(0);
    for (BlockIndex i = 0; i < 3; ++i) b.PutBlock(7, i, Pattern(kBlock, static_cast<int>(i)));
    REQUIRE(store->Commit(b).ok());
  }
  // The key of block 1 (array 7, u64 BE each) becomes block 0xff..: after block 2, out of order.
  auto bytes = Slurp(db + "/data.mdb");
  unsigned char key[16] = {0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1};
  int copies = 0;
  for (auto at = bytes.begin(); (at = std::search(at, bytes.end(), key, key + 16)) != bytes.end(); ++at) {
    at[8] = static_cast<char>(0xff);
    ++copies;
  }
  REQUIRE(copies > 0);
  std::ofstream(db + "/data.mdb", std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  auto r = OpenLmdbStore(db, {});
  CHECK(r.status().code() == Code::kCorruption);
  CHECK_MESSAGE(r.status().message().find("database 'blocks' tree: page ") != std::string::npos, r.status().message());
  CHECK(r.status().message().find("keys out of order") != std::string::npos);
}

TEST_CASE("a creation killed before its first commit is completed by the next writing open") {
  // Regression (crash_test, seed 242791518): killed between creating LMDB's files and the
  // first commit, a new database was refused for good as "an LMDB environment but not a
  // bigarray database".
  TempDir dir;
  const std::string db = dir / "db";
  mkdir(db.c_str(), 0755);
  MDB_env* env;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_open(env, db.c_str(), 0, 0644) == 0);  // the files, and no transaction
  mdb_env_close(env);
  LmdbOptions no_create;
  no_create.create_if_missing = false;
  CHECK(OpenLmdbStore(db, no_create).status().code() == Code::kNotFound);
  auto store = Open(db);
  WriteBatch b(0);
  b.PutMeta("k", "v");
  REQUIRE(store->Commit(b).ok());
  CHECK(store->OpenSnapshot().value()->GetMeta("k").value() == "v");
}

TEST_CASE("S8: a truncated data.mdb is reported as corruption") {
  TempDir dir;
  {
    auto store = Open(dir / "db");
    WriteBatch b(0);
    for (int i = 0; i < 8; ++i) b.PutBlock(1, i, Pattern(kBlock, i));
    REQUIRE(store->Commit(b).ok());
  }
  REQUIRE(truncate((dir / "db/data.mdb").c_str(), 64 * 1024) == 0);
  auto r = OpenLmdbStore(dir / "db", {});
  CHECK(r.status().code() == Code::kCorruption);
  CHECK(r.status().message().find("truncated") != std::string::npos);
}

TEST_CASE("S8: a damaged map size in LMDB's meta page is corruption naming the field, not ENOMEM") {
  // Regression: a map size of 2^60 in the meta pages made every open fail with
  // "ResourceExhausted: open DB: Cannot allocate memory".
  TempDir dir;
  const std::string db = dir / "db";
  {
    auto store = Open(db);
    WriteBatch b(0);
    b.PutBlock(1, 0, Pattern(kBlock, 1));
    REQUIRE(store->Commit(b).ok());
  }
  // mm_mapsize: u64 at offset 16 of the meta, which follows the 16-byte header of pages 0 and 1.
  auto set_mapsize = [&](uint64_t v) {
    std::fstream f(db + "/data.mdb", std::ios::in | std::ios::out | std::ios::binary);
    for (off_t page : {off_t{0}, off_t{4096}}) {
      f.seekp(page + 32);
      f.write(reinterpret_cast<const char*>(&v), 8);
    }
  };
  set_mapsize(uint64_t{1} << 60);
  const auto damaged = Slurp(db + "/data.mdb");
  for (bool read_only : {false, true}) {
    LmdbOptions o;
    o.read_only = read_only;
    auto r = OpenLmdbStore(db, o);
    CHECK(r.status().code() == Code::kCorruption);
    const std::string m = r.status().message();
    const bool named = m.starts_with(db + ": data.mdb is damaged (meta page ") &&
                       m.find(": map size mm_mapsize 1152921504606846976 bytes, for a file of") != std::string::npos;
    CHECK_MESSAGE(named, m);
  }
  CHECK(Slurp(db + "/data.mdb") == damaged);  // nothing written
  // A map size larger than the file but one a process can map (as in a copy made by mdb_copy,
  // whose file holds only the pages in use) is no damage: the database opens and reads.
  set_mapsize(uint64_t{1} << 40);
  auto store = Open(db);
  std::vector<std::byte> out(kBlock);
  REQUIRE(store->OpenSnapshot().value()->ReadBlock(1, 0, out).ok());
  CHECK(out == Pattern(kBlock, 1));
}

// Stores blocks 2 and 3 of array 6 at `path` and returns the file offset of block 2's payload
// in data.mdb, for the tests to damage.
off_t StoreTwoBlocks(const std::string& path) {
  auto data = Pattern(kBlock, 77);
  {
    auto store = Open(path);
    WriteBatch b(0);
    b.PutBlock(6, 2, data);
    b.PutBlock(6, 3, Pattern(kBlock, 78));
    REQUIRE(store->Commit(b).ok());
  }
  auto file = Slurp(path + "/data.mdb");
  auto at = std::search(file.begin(), file.end(), reinterpret_cast<const char*>(data.data()),
                        reinterpret_cast<const char*>(data.data()) + 64);
  REQUIRE(at != file.end());
  return at - file.begin();
}

// Replaces the byte at `offset` of `path`/data.mdb by fn(old byte).
void DamageByte(const std::string& path, off_t offset, char (*fn)(char)) {
  std::fstream f(path + "/data.mdb", std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  const char old = static_cast<char>(f.get());
  f.seekp(offset);
  f.put(fn(old));
}

TEST_CASE("S6: a flipped byte in data.mdb is reported naming the array and block") {
  TempDir dir;
  const off_t payload = StoreTwoBlocks(dir / "db");
  DamageByte(dir / "db", payload + kBlock / 2, [](char c) { return static_cast<char>(c ^ 0x10); });
  auto store = Open(dir / "db");
  auto s = store->OpenSnapshot().value();
  std::vector<std::byte> out(kBlock);
  Status st = s->ReadBlock(6, 2, out);
  CHECK(st.code() == Code::kCorruption);
  CHECK(st.message().find("array #6 block 2") != std::string::npos);
  CHECK(st.message().find("checksum") != std::string::npos);
  CHECK(s->ReadBlock(6, 3, out).ok());  // the neighbour is intact
}

TEST_CASE("S6: a damaged header of a block's first page in data.mdb is reported naming the block") {
  TempDir dir;
  // The payload follows LMDB's 16-byte page header and bigarray's 4080-byte block header, so it
  // starts a page of data.mdb (and can be mapped from the file); clear the first page's flags
  // (at byte 10 of its header), which say "overflow page".
  const off_t payload = StoreTwoBlocks(dir / "db");
  REQUIRE(payload % 4096 == 0);
  const off_t flags = payload - 4096 + 10;
  DamageByte(dir / "db", flags, [](char) { return '\0'; });
  auto store = Open(dir / "db");
  auto s = store->OpenSnapshot().value();
  std::vector<std::byte> out(kBlock);
  SUBCASE("read after an intact block") { CHECK(s->ReadBlock(6, 3, out).ok()); }
  SUBCASE("read first") {}
  Status st = s->ReadBlock(6, 2, out);
  CHECK(st.code() == Code::kCorruption);
  CHECK_MESSAGE(st.message().find("array #6 block 2") != std::string::npos, st.ToString());
  CHECK(s->ReadBlock(6, 3, out).ok());
}

TEST_CASE("S3: a reader keeps its snapshot while another process commits") {
  TempDir dir;
  auto store = Open(dir / "db");
  WriteBatch b(0);
  b.PutBlock(1, 0, Pattern(kBlock, 1));
  CommitId c1 = store->Commit(b).value();
  auto snap = store->OpenSnapshot().value();

  int rc = InChild([&] {
    // A fresh process: the registry was inherited, so open by a new path spelling is not
    // needed; LMDB requires the child not to use the parent's environment, so reopen.
    auto child = OpenLmdbStore(dir / "db", {});
    if (!child.ok()) return 2;
    for (int i = 0; i < 3; ++i) {
      auto s = (*child)->OpenSnapshot();
      if (!s.ok()) return 3;
      WriteBatch w((*s)->commit_id());
      w.PutBlock(1, 0, Pattern(kBlock, 100 + i));
      w.PutBlock(1, 1 + i, Pattern(kBlock, 200 + i));
      if (!(*child)->Commit(w).ok()) return 4;
    }
    return 0;
  });
  REQUIRE(rc == 0);
  std::vector<std::byte> out(kBlock);
  REQUIRE(snap->ReadBlock(1, 0, out).ok());
  CHECK(out == Pattern(kBlock, 1));
  REQUIRE(snap->ReadBlock(1, 2, out).ok());
  CHECK(AllZero(out));

  auto now = store->OpenSnapshot().value();
  CHECK(now->commit_id() > c1);
  REQUIRE(now->ReadBlock(1, 0, out).ok());
  CHECK(out == Pattern(kBlock, 102));
  // S5 across processes: the log between the two snapshots names every changed block.
  ChangeSet cs = now->ChangesSince(snap->commit_id()).value();
  CHECK(cs.complete);
  for (int i = 0; i <= 3; ++i) CHECK(cs.BlockChanged(1, i));
  CHECK_FALSE(cs.BlockChanged(1, 4));
}

TEST_CASE("S4: a conflict between processes") {
  TempDir dir;
  auto store = Open(dir / "db");
  auto snap = store->OpenSnapshot().value();
  int rc = InChild([&] {
    auto child = OpenLmdbStore(dir / "db", {});
    if (!child.ok()) return 2;
    WriteBatch w((*child)->OpenSnapshot().value()->commit_id());
    w.PutBlock(3, 3, Pattern(kBlock, 1));
    return (*child)->Commit(w).ok() ? 0 : 3;
  });
  REQUIRE(rc == 0);
  WriteBatch mine(snap->commit_id());
  mine.PutBlock(3, 3, Pattern(kBlock, 2));
  CHECK(store->Commit(mine).status().code() == Code::kConflict);
  WriteBatch other(snap->commit_id());
  other.PutBlock(3, 4, Pattern(kBlock, 2));
  CHECK(store->Commit(other).ok());
}

TEST_CASE("relaxed mode commits and syncs") {
  TempDir dir;
  LmdbOptions o;
  o.durable = false;
  auto store = Open(dir / "db", o);
  WriteBatch b(0);
  b.PutBlock(1, 0, Pattern(kBlock, 5));
  REQUIRE(store->Commit(b).ok());
  CHECK(store->Sync().ok());
  std::vector<std::byte> out(kBlock);
  REQUIRE(store->OpenSnapshot().value()->ReadBlock(1, 0, out).ok());
  CHECK(out == Pattern(kBlock, 5));
}

TEST_CASE("read-only stores read and refuse to commit") {
  TempDir dir;
  { auto w = Open(dir / "db"); WriteBatch b(0); b.PutMeta("k", "v"); REQUIRE(w->Commit(b).ok()); }
  int rc = InChild([&] {  // a separate process, so the read-only environment is its own
    LmdbOptions o;
    o.read_only = true;
    auto r = OpenLmdbStore(dir / "db", o);
    if (!r.ok()) return 2;
    if (*(*r)->OpenSnapshot().value()->GetMeta("k").value() != "v") return 3;
    WriteBatch b(0);
    b.PutMeta("k", "w");
    return (*r)->Commit(b).status().code() == Code::kFailedPrecondition ? 0 : 4;
  });
  CHECK(rc == 0);
}

// Runs fn() in a child process with a private mount namespace (as `unshare -m` makes); returns
// its exit code, or -1 when this process may not make one (not root, or no CAP_SYS_ADMIN).
template <typename Fn>
int InMountNamespace(Fn fn) {
  return InChild([&] {
    if (unshare(CLONE_NEWNS) != 0) return 77;
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 78;
    return fn();
  });
}

TEST_CASE("read-only opens: a read-only file system needs no lock file; a read-only mount of a writable one, or a lock file this user may not write, is refused saying what to do") {
  TempDir dir;
  const std::string db = dir / "db";
  {
    auto w = Open(db);
    WriteBatch b(0);
    b.PutBlock(1, 0, Pattern(kBlock, 5));
    REQUIRE(w->Commit(b).ok());
  }
  LmdbOptions ro;
  ro.read_only = true;
  auto reads = [&](const std::string& path) {
    auto r = OpenLmdbStore(path, ro);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return false;
    }
    std::vector<std::byte> out(kBlock);
    return (*r)->OpenSnapshot().value()->ReadBlock(1, 0, out).ok() && out == Pattern(kBlock, 5);
  };
  SUBCASE("a read-only file system: read without LMDB's lock file") {
    // A tmpfs holding a copy without lock.mdb, remounted read-only (its superblock is).
    const int rc = InMountNamespace([&] {
      const std::string top = dir / "fs";
      if (mkdir(top.c_str(), 0755) != 0 || mount("none", top.c_str(), "tmpfs", 0, "size=80m") != 0) return 10;
      const std::string copy = top + "/db";
      std::error_code ec;
      std::filesystem::create_directory(copy, ec);
      std::filesystem::copy_file(db + "/data.mdb", copy + "/data.mdb", ec);
      if (ec) return 11;
      if (mount(nullptr, top.c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr) != 0) return 12;
      if (!reads(copy)) return 13;
      return std::filesystem::exists(copy + "/lock.mdb") ? 14 : 0;
    });
    if (rc == 77 || rc == 78) {
      MESSAGE("skipped: no private mount namespace here");
    } else {
      CHECK(rc == 0);
    }
  }
  SUBCASE("a read-only bind mount of a writable file system: refused") {
    // Regression: LMDB, seeing EROFS, read without registering in lock.mdb, while a writer
    // through the writable mount could reuse the pages it read.
    const int rc = InMountNamespace([&] {
      if (mount(db.c_str(), db.c_str(), nullptr, MS_BIND, nullptr) != 0 ||
          mount(nullptr, db.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
        return 10;
      }
      auto r = OpenLmdbStore(db, ro);
      if (r.ok()) return 11;
      const std::string m = r.status().message();
      const bool says = m.find("is on a read-only mount of a file system that may be writable through another mount") !=
                            std::string::npos &&
                        m.find("mount it read-write (the handle stays read-only), or copy the database") != std::string::npos;
      if (!says) std::fprintf(stderr, "%s\n", m.c_str());
      return r.status().code() != Code::kIOError ? 12 : says ? 0 : 13;
    });
    if (rc == 77 || rc == 78) {
      MESSAGE("skipped: no private mount namespace here");
    } else {
      CHECK(rc == 0);
    }
  }
  SUBCASE("a lock file this user may not write: refused") {
    if (getuid() != 0) return;  // needs another user than the database's owner
    REQUIRE(chmod(dir.path().c_str(), 0755) == 0);
    const int rc = InChild([&] {
      if (setgid(65534) != 0 || setuid(65534) != 0) return 10;
      auto r = OpenLmdbStore(db, ro);
      if (r.ok()) return 11;
      const std::string m = r.status().message();
      const bool says = m.find("this user may not write it (or create it there); ask for write permission on " + db +
                               "/lock.mdb") != std::string::npos &&
                        m.find("Permission denied") != std::string::npos;
      if (!says) std::fprintf(stderr, "%s\n", m.c_str());
      return says ? 0 : 12;
    });
    CHECK(rc == 0);
  }
}

TEST_CASE("LmdbStatus translates every LMDB code") {
  using internal::LmdbStatus;
  CHECK(LmdbStatus(MDB_SUCCESS, "x").ok());
  const std::pair<int, Code> cases[] = {
      {MDB_KEYEXIST, Code::kAlreadyExists},     {MDB_NOTFOUND, Code::kNotFound},
      {MDB_PAGE_NOTFOUND, Code::kCorruption},   {MDB_CORRUPTED, Code::kCorruption},
      {MDB_PANIC, Code::kCorruption},           {MDB_VERSION_MISMATCH, Code::kUnsupported},
      {MDB_INVALID, Code::kCorruption},         {MDB_MAP_FULL, Code::kNoSpace},
      {MDB_DBS_FULL, Code::kResourceExhausted}, {MDB_READERS_FULL, Code::kResourceExhausted},
      {MDB_TLS_FULL, Code::kResourceExhausted}, {MDB_TXN_FULL, Code::kResourceExhausted},
      {MDB_CURSOR_FULL, Code::kResourceExhausted}, {MDB_PAGE_FULL, Code::kResourceExhausted},
      {MDB_MAP_RESIZED, Code::kInternal},       {MDB_INCOMPATIBLE, Code::kCorruption},
      {MDB_BAD_RSLOT, Code::kInternal},         {MDB_BAD_TXN, Code::kInternal},
      {MDB_BAD_VALSIZE, Code::kInternal},       {MDB_BAD_DBI, Code::kCorruption},
      {ENOSPC, Code::kNoSpace},                 {EIO, Code::kIOError},
      {ENOMEM, Code::kResourceExhausted},       {EACCES, Code::kIOError},
  };
  for (const auto& c : cases) {
    const int rc = c.first;
    Status s = LmdbStatus(rc, "op on thing");
    CHECK_MESSAGE(s.code() == c.second, rc);
    CHECK(s.message().find("op on thing: ") == 0);
  }
  CHECK(LmdbStatus(MDB_READERS_FULL, "x").message().find("too many open transactions") !=
        std::string::npos);
}
