// format_test: format version 2 of the LMDB store (docs/format.md): damage to a record is
// detected where docs/reliability.md says it is, and version-1 databases are converted by
// UpgradeLmdbStore.
#include <doctest/doctest.h>
#include <lmdb.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <thread>

#include "bigarray/storage/block_store.h"
#include "checksum.h"
#include "lmdb_records.h"
#include "raw_lmdb.h"
#include "test_util.h"

using namespace bigarray;
using namespace bigarray::storage;
using bigarray::testing::Pattern;
using bigarray::testing::TempDir;

namespace {

constexpr size_t kBlock = 64 * 1024;

std::shared_ptr<BlockStore> Open(const std::string& path, LmdbOptions o = {}) {
  auto r = OpenLmdbStore(path, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return *r;
}

std::vector<char> Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

// Changes records of named database `db` in place, as damage on disk would: `fn(key, value)`
// gets writable pointers into data.mdb (LMDB's map with MDB_WRITEMAP, inside a read
// transaction that never commits) and returns true once it changed something.
void Damage(const std::string& path, const char* db,
            const std::function<bool(MDB_val& key, MDB_val& value)>& fn) {
  bool done = false;
  bigarray::testing::WithWritableMap(path, [&](MDB_txn* txn) {
    bigarray::testing::ForEachRecord(txn, db, [&](MDB_val& k, MDB_val& v) { return !(done = fn(k, v)); });
  });
  REQUIRE(done);
}

std::string_view Str(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

void Commit(BlockStore& s, WriteBatch& b) {
  auto r = s.Commit(b);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
}

// The txn id in LMDB meta page `page` (0 or 1) of data.mdb: u64 at byte 144 of the page.
constexpr off_t kTxnidOffset = 16 + 4 + 4 + 8 + 8 + 2 * 48 + 8;
uint64_t MetaTxnid(const std::string& path, int page) {
  auto f = Slurp(path + "/data.mdb");
  uint64_t v;
  std::memcpy(&v, f.data() + page * 4096 + kTxnidOffset, 8);
  return v;
}
void SetMetaTxnid(const std::string& path, int page, uint64_t txnid) {
  std::fstream f(path + "/data.mdb", std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(page * 4096 + kTxnidOffset);
  f.write(reinterpret_cast<const char*>(&txnid), 8);
}

}  // namespace

TEST_CASE("a damaged catalog value is corruption naming the record, never parsed") {
  TempDir dir;
  {
    auto s = Open(dir / "db");
    WriteBatch b;
    b.PutMeta("a/1", "dtype=<c16;shape=200000");
    Commit(*s, b);
  }
  Damage(dir / "db", "meta", [](MDB_val& k, MDB_val& v) {
    if (Str(k) != "a/1") return false;
    // "<c16" -> ">c16": a plausible value, exactly what the attack found used as is.
    auto* p = static_cast<char*>(v.mv_data);
    *std::find(p, p + v.mv_size, '<') = '>';
    return true;
  });
  auto snap = Open(dir / "db")->OpenSnapshot().value();
  auto r = snap->GetMeta("a/1");
  CHECK(r.status().code() == Code::kCorruption);
  CHECK_MESSAGE(r.status().message().find("'a/1'") != std::string::npos, r.status().ToString());
  int damaged = 0;
  REQUIRE(snap->VerifyRecords([&](const Status& st) {
    CHECK(st.code() == Code::kCorruption);
    ++damaged;
  }).ok());
  CHECK(damaged >= 1);
}

TEST_CASE("a catalog key damaged into another class: listing the class says so, never omits it") {
  TempDir dir;
  {
    auto s = Open(dir / "db");
    WriteBatch b;
    b.PutMeta("n/x", "0000000000000001");
    b.PutMeta("n/y", "0000000000000002");
    Commit(*s, b);
  }
  {
    auto snap = Open(dir / "db")->OpenSnapshot().value();
    int n = 0;
    REQUIRE(snap->ForEachMeta("n/", [&](std::string_view, std::string_view) { return ++n, true; }).ok());
    CHECK(n == 2);
  }
  Damage(dir / "db", "meta", [](MDB_val& k, MDB_val&) {
    if (Str(k) != "n/x") return false;
    static_cast<char*>(k.mv_data)[0] = 'm';  // "m/x": still in key order
    return true;
  });
  auto snap = Open(dir / "db")->OpenSnapshot().value();
  Status st = snap->ForEachMeta("n/", [](std::string_view, std::string_view) { return true; });
  CHECK(st.code() == Code::kCorruption);
  CHECK_MESSAGE(st.message().find("'n/...'") != std::string::npos, st.ToString());
  int damaged = 0;
  REQUIRE(snap->VerifyRecords([&](const Status&) { ++damaged; }).ok());
  CHECK(damaged >= 1);  // the record under "m/x" fails its checksum, the class its tally
}

TEST_CASE("a block record under a damaged key: its read fails, the array's walk and verify say so") {
  TempDir dir;
  {
    auto s = Open(dir / "db");
    WriteBatch b;
    b.PutBlock(6, 2, Pattern(kBlock, 2));
    b.PutBlock(6, 3, Pattern(kBlock, 3));
    Commit(*s, b);
  }
  Damage(dir / "db", "blocks", [](MDB_val& k, MDB_val&) {
    auto* p = static_cast<unsigned char*>(k.mv_data);
    if (k.mv_size != 16 || p[15] != 3) return false;
    p[15] = 5;  // block 3 now claims to be block 5 (and block 3 reads as zeros)
    return true;
  });
  auto snap = Open(dir / "db")->OpenSnapshot().value();
  std::vector<std::byte> out(kBlock);
  CHECK(snap->ReadBlock(6, 5, out).code() == Code::kCorruption);  // the checksum is seeded with the key
  CHECK(snap->ForEachBlock(6, [](const BlockInfo&) { return true; }).code() == Code::kCorruption);
  std::vector<BlockIndex> damaged;
  auto checked = snap->VerifyBlocks(6, kBlock, [&](BlockIndex i, const Status& st) {
    CHECK(st.code() == Code::kCorruption);
    damaged.push_back(i);
  });
  REQUIRE(checked.ok());
  CHECK(std::find(damaged.begin(), damaged.end(), BlockIndex{5}) != damaged.end());
  CHECK(std::find(damaged.begin(), damaged.end(), kNoBlock) != damaged.end());  // the tally
}

TEST_CASE("a block missing from the array's records (its key damaged to another array) is found by verify") {
  TempDir dir;
  {
    auto s = Open(dir / "db");
    WriteBatch b;
    b.PutBlock(6, 0, Pattern(kBlock, 1));
    b.PutBlock(6, 1, Pattern(kBlock, 2));
    Commit(*s, b);
  }
  Damage(dir / "db", "blocks", [](MDB_val& k, MDB_val&) {
    auto* p = static_cast<unsigned char*>(k.mv_data);
    if (k.mv_size != 16 || p[15] != 1) return false;
    p[7] = 7;  // array 6 block 1 -> array 7 block 1: array 6 lost a block
    return true;
  });
  auto snap = Open(dir / "db")->OpenSnapshot().value();
  int damaged = 0;
  REQUIRE(snap->VerifyBlocks(6, kBlock, [&](BlockIndex i, const Status&) {
    CHECK(i == kNoBlock);
    ++damaged;
  }).ok());
  CHECK(damaged == 1);
}

TEST_CASE("a raised txnid in the older meta page: no silent rollback, the database is reported damaged") {
  TempDir dir;
  {
    auto s = Open(dir / "db");
    for (int i = 0; i < 3; ++i) {
      WriteBatch b(s->OpenSnapshot().value()->commit_id());
      b.PutBlock(1, 0, Pattern(kBlock, i));
      Commit(*s, b);
    }
  }
  const uint64_t t0 = MetaTxnid(dir / "db", 0), t1 = MetaTxnid(dir / "db", 1);
  const int older = t0 < t1 ? 0 : 1;
  SetMetaTxnid(dir / "db", older, std::max(t0, t1) + 2);  // LMDB now opens the older state
  for (bool read_only : {false, true}) {
    LmdbOptions o;
    o.read_only = read_only;
    auto r = OpenLmdbStore(dir / "db", o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::kCorruption);
    CHECK_MESSAGE(r.status().message().find("meta page") != std::string::npos, r.status().ToString());
  }
}

TEST_CASE("metadata keys of the store cannot be written or read by callers") {
  TempDir dir;
  auto s = Open(dir / "db");
  WriteBatch b;
  b.PutMeta(std::string("\0commit", 7), "x");
  CHECK(s->Commit(b).status().code() == Code::kInvalidArgument);
  CHECK(s->OpenSnapshot().value()->GetMeta(std::string("\0commit", 7)).status().code() == Code::kInvalidArgument);
}

// ---- upgrading from version 1 ----------------------------------------------------------------

namespace {

// Writes a version-1 database at `path` as bigarray 0.1 did: a bare format record, bare catalog
// records, block values of a 16-byte header (checksum, commit) + payload.
void WriteVersion1(const std::string& path, const std::vector<std::pair<std::string, std::string>>& meta,
                   const std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::vector<std::byte>>>& blocks) {
  bigarray::testing::WriteRawEnvironment(path, 64 << 20, [&](const bigarray::testing::RawDbs& d) {
    auto put = [&](MDB_dbi dbi, std::string_view k, std::string_view v) {
      MDB_val key{k.size(), const_cast<char*>(k.data())}, val{v.size(), const_cast<char*>(v.data())};
      REQUIRE(mdb_put(d.txn, dbi, &key, &val, 0) == 0);
    };
    std::string format = "bigarray";
    format += std::string("\1\0\0\0", 4);
    put(d.meta, std::string_view("\0format", 7), format);
    for (const auto& [k, v] : meta) put(d.meta, k, v);
    const uint64_t commit = mdb_txn_id(d.txn);
    for (const auto& [key, payload] : blocks) {
      unsigned char kb[16], hb[16];
      internal::PutBE64(kb, key.first);
      internal::PutBE64(kb + 8, key.second);
      internal::PutLE64(hb, internal::BlockChecksum(key.first, key.second, commit, payload));
      internal::PutLE64(hb + 8, commit);
      std::string value(reinterpret_cast<char*>(hb), 16);
      value.append(reinterpret_cast<const char*>(payload.data()), payload.size());
      put(d.blocks, std::string_view(reinterpret_cast<char*>(kb), 16), value);
    }
  });
}

const std::vector<std::pair<std::string, std::string>> kMeta = {
    {"n/x", "0000000000000001"}, {"a/0000000000000001", "dtype=<f8;order=C;block_size=65536;shape=20000"}};

std::vector<std::byte> Short(size_t n) {
  auto v = Pattern(kBlock, 9);
  v.resize(n);
  return v;
}

}  // namespace

TEST_CASE("upgrade: a version-1 database is refused until converted, then reads the same") {
  TempDir dir;
  const std::string db = dir / "db";
  WriteVersion1(db, kMeta, {{{1, 0}, Pattern(kBlock, 1)}, {{1, 1}, Short(100)}, {{1, 2}, Short(5000)}});
  CHECK(OpenLmdbStore(db, {}).status().code() == Code::kFailedPrecondition);

  std::vector<uint64_t> progress;
  auto r = UpgradeLmdbStore(db, [&](uint64_t done, uint64_t) { progress.push_back(done); });
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->upgraded);
  CHECK(r->from_version == 1);
  CHECK(r->blocks == 3);
  CHECK(r->records == 2);
  CHECK(r->payload_bytes == kBlock + 100 + 5000);
  CHECK(r->backup == db + "/data.mdb.format1");
  CHECK(!progress.empty());
  struct stat st;
  CHECK(stat(r->backup.c_str(), &st) == 0);
  CHECK(stat((db + "/upgrade.tmp").c_str(), &st) != 0);

  auto snap = Open(db)->OpenSnapshot().value();
  for (const auto& [k, v] : kMeta) CHECK(*snap->GetMeta(k).value() == v);
  std::vector<std::byte> out(kBlock);
  REQUIRE(snap->ReadBlock(1, 0, out).ok());
  CHECK(out == Pattern(kBlock, 1));
  REQUIRE(snap->ReadBlock(1, 2, out).ok());
  auto want = Short(5000);
  want.resize(kBlock);
  CHECK(out == want);
  int damaged = 0;
  CHECK(snap->VerifyBlocks(1, kBlock, [&](BlockIndex, const Status&) { ++damaged; }).value() == 3);
  REQUIRE(snap->VerifyRecords([&](const Status&) { ++damaged; }).ok());
  CHECK(damaged == 0);

  auto again = UpgradeLmdbStore(db);  // already converted
  REQUIRE(again.ok());
  CHECK_FALSE(again->upgraded);
}

TEST_CASE("upgrade: a damaged version-1 block stops it with nothing changed") {
  TempDir dir;
  const std::string db = dir / "db";
  WriteVersion1(db, kMeta, {{{1, 0}, Pattern(kBlock, 1)}});
  Damage(db, "blocks", [](MDB_val&, MDB_val& v) {
    static_cast<unsigned char*>(v.mv_data)[100] ^= 1;
    return true;
  });
  const auto before = Slurp(db + "/data.mdb");
  auto r = UpgradeLmdbStore(db);
  CHECK(r.status().code() == Code::kCorruption);
  CHECK_MESSAGE(r.status().message().find("array #1 block 0") != std::string::npos, r.status().ToString());
  CHECK(Slurp(db + "/data.mdb") == before);
}

TEST_CASE("upgrade: refused while another process has the database open") {
  TempDir dir;
  const std::string db = dir / "db";
  WriteVersion1(db, kMeta, {{{1, 0}, Pattern(kBlock, 1)}});
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  const pid_t child = fork();
  if (child == 0) {  // an old program holding the environment open
    MDB_env* env;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 4);
    if (mdb_env_open(env, db.c_str(), MDB_RDONLY, 0644) != 0) _exit(1);
    char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(2);
    pause();
    _exit(0);
  }
  char c;
  REQUIRE(read(ready[0], &c, 1) == 1);
  auto r = UpgradeLmdbStore(db);
  CHECK(r.status().code() == Code::kFailedPrecondition);
  CHECK_MESSAGE(r.status().message().find("another process") != std::string::npos, r.status().ToString());
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  close(ready[0]);
  close(ready[1]);
  CHECK(UpgradeLmdbStore(db).ok());
}

TEST_CASE("upgrade: killed at random moments, the database is the old or the new one, and a rerun completes it") {
  const uint64_t seed = bigarray::testing::TestSeed("format_test upgrade kills");
  std::mt19937_64 rng(seed);
  TempDir dir;
  const std::string db = dir / "db";
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::vector<std::byte>>> blocks;
  for (uint64_t i = 0; i < 64; ++i) blocks.push_back({{1, i}, Pattern(kBlock, i)});
  WriteVersion1(db, kMeta, blocks);
  // How long an uninterrupted conversion of the same database takes here: the kills fall
  // within 1.5 times that.
  WriteVersion1(dir / "timed", kMeta, blocks);
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(UpgradeLmdbStore(dir / "timed").ok());
  const auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
  int old_seen = 0, new_seen = 0;
  double window = 1.5;  // widens while the kills only ever find the old database
  for (int k = 0; k < 24; ++k, window *= 1.2) {
    const pid_t child = fork();
    if (child == 0) {
      auto r = UpgradeLmdbStore(db);
      if (!r.ok()) std::fprintf(stderr, "child: %s\n", r.status().ToString().c_str());
      _exit(r.ok() ? 0 : 1);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % static_cast<uint64_t>(took.count() * window + 1)));
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    auto store = OpenLmdbStore(db, {});
    if (!store.ok()) {
      CHECK_MESSAGE(store.status().code() == Code::kFailedPrecondition, store.status().ToString());  // still version 1
      ++old_seen;
      continue;
    }
    ++new_seen;
    auto snap = (*store)->OpenSnapshot().value();
    std::vector<std::byte> out(kBlock);
    for (uint64_t i = 0; i < 64; ++i) {
      REQUIRE(snap->ReadBlock(1, i, out).ok());
      CHECK(out == Pattern(kBlock, i));
    }
    break;  // converted: the next kills would only find version 2
  }
  MESSAGE("upgrade kills: " << old_seen << " left the old database, " << new_seen << " the new one");
  auto r = UpgradeLmdbStore(db);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  auto snap = Open(db)->OpenSnapshot().value();
  CHECK(snap->VerifyBlocks(1, kBlock, [](BlockIndex, const Status& st) { FAIL(st.ToString()); }).value() == 64);
}

// ---- delta records ---------------------------------------------------------------------------

namespace {
// (whole-block records, delta records) of array `a` in data.mdb.
std::pair<int, int> CountRecords(const std::string& path, ArrayId a) {
  int whole = 0, deltas = 0;
  bigarray::testing::WithReadTxn(path, false, [&](MDB_txn* txn) {
    bigarray::testing::ForEachRecord(txn, "blocks", [&](MDB_val& k, MDB_val&) {
      if (internal::GetBE64(static_cast<unsigned char*>(k.mv_data)) == a) (k.mv_size == 16 ? whole : deltas)++;
      return true;
    });
  });
  return {whole, deltas};
}
}  // namespace

TEST_CASE("a small change of a stored block is stored as a delta; deltas fold into the block as they grow") {
  TempDir dir;
  const std::string db = dir / "db";
  auto s = Open(db);
  auto block = Pattern(kBlock, 1);
  {
    WriteBatch b;
    b.PutBlock(1, 0, block);
    Commit(*s, b);
  }
  CHECK(CountRecords(db, 1) == std::pair{1, 0});
  std::mt19937_64 rng(5);
  int max_deltas = 0;
  for (int i = 0; i < 200; ++i) {
    for (int k = 0; k < 8; ++k) block[rng() % kBlock] = static_cast<std::byte>(rng());
    WriteBatch b(s->OpenSnapshot().value()->commit_id());
    b.PutBlock(1, 0, block);
    Commit(*s, b);
    const auto [whole, deltas] = CountRecords(db, 1);
    CHECK(whole == 1);
    max_deltas = std::max(max_deltas, deltas);
    std::vector<std::byte> out(kBlock);
    REQUIRE(s->OpenSnapshot().value()->ReadBlock(1, 0, out).ok());
    REQUIRE(out == block);
  }
  CHECK(max_deltas > 1);    // small changes were deltas
  CHECK(max_deltas <= 64);  // and folded before reads had too many to apply
  // A whole rewrite replaces the deltas.
  block = Pattern(kBlock, 2);
  WriteBatch b(s->OpenSnapshot().value()->commit_id());
  b.PutBlock(1, 0, block);
  Commit(*s, b);
  CHECK(CountRecords(db, 1) == std::pair{1, 0});
}

TEST_CASE("a damaged delta record is corruption naming the block, never applied") {
  TempDir dir;
  const std::string db = dir / "db";
  {
    auto s = Open(db);
    auto block = Pattern(kBlock, 1);
    WriteBatch b;
    b.PutBlock(1, 0, block);
    Commit(*s, b);
    block[100] = std::byte{0};
    WriteBatch c(s->OpenSnapshot().value()->commit_id());
    c.PutBlock(1, 0, block);
    Commit(*s, c);
  }
  REQUIRE(CountRecords(db, 1) == std::pair{1, 1});
  Damage(db, "blocks", [](MDB_val& k, MDB_val& v) {
    if (k.mv_size != 24) return false;
    static_cast<unsigned char*>(v.mv_data)[v.mv_size - 1] ^= 0x40;  // the changed byte
    return true;
  });
  auto snap = Open(db)->OpenSnapshot().value();
  std::vector<std::byte> out(kBlock);
  Status st = snap->ReadBlock(1, 0, out);
  CHECK(st.code() == Code::kCorruption);
  CHECK_MESSAGE(st.message().find("array #1 block 0 (delta") != std::string::npos, st.ToString());
}

TEST_CASE("verify reports only damage as damage: a read that fails for resources ends it as that error") {
  TempDir dir;
  auto s = Open(dir / "db");
  WriteBatch b;
  b.PutBlock(1, 0, Pattern(kBlock, 1));
  b.PutBlock(1, 1, Pattern(kBlock, 2));
  Commit(*s, b);
  struct Failing : ForwardingSnapshot {
    using ForwardingSnapshot::ForwardingSnapshot;
    Status ReadBlock(ArrayId, BlockIndex, std::span<std::byte>) override {
      return ResourceExhausted("too many open files");
    }
  } snap(s->OpenSnapshot().value());
  int damaged = 0;
  auto r = snap.Snapshot::VerifyBlocks(1, kBlock, [&](BlockIndex, const Status&) { ++damaged; });
  CHECK(r.status().code() == Code::kResourceExhausted);
  CHECK(damaged == 0);
}

TEST_CASE("verify takes the time of the stored blocks: a 2^62-byte array with two blocks") {
  TempDir dir;
  auto s = Open(dir / "db");
  WriteBatch b;
  const BlockIndex last = (uint64_t{1} << 62) / kBlock - 1;
  b.PutBlock(1, 0, Pattern(kBlock, 1));
  b.PutBlock(1, last, Pattern(kBlock, 2));
  Commit(*s, b);
  int damaged = 0;
  auto r = s->OpenSnapshot().value()->VerifyBlocks(1, kBlock, [&](BlockIndex, const Status&) { ++damaged; });
  REQUIRE(r.ok());
  CHECK(*r == 2);
  CHECK(damaged == 0);
}
