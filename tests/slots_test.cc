// slots_test: blocks.dat, the slots of large whole blocks (docs/format.md, "blocks.dat"): where
// blocks go, when a freed slot is reused and its disk space given back, damage to a slot or to a
// record naming one, and the conversion of version-2 databases.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "bigarray/storage/block_store.h"
#include "bigarray/storage/lmdb_space.h"
#include "checksum.h"
#include "lmdb_records.h"
#include "raw_lmdb.h"
#include "test_util.h"

using namespace bigarray;
using namespace bigarray::storage;
using bigarray::testing::Pattern;
using bigarray::testing::TempDir;

namespace {

constexpr size_t kBlock = 2u << 20;
constexpr uint64_t kSlot = internal::kSlotBytes;

std::shared_ptr<BlockStore> Open(const std::string& path, LmdbOptions o = {}) {
  auto r = OpenLmdbStore(path, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return *r;
}

// A batch on the latest commit.
WriteBatch Batch(BlockStore& s) { return WriteBatch(s.OpenSnapshot().value()->commit_id()); }

CommitId Put(BlockStore& s, ArrayId a, BlockIndex i, const std::vector<std::byte>& data) {
  WriteBatch b = Batch(s);
  b.PutBlock(a, i, data);
  auto r = s.Commit(b);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return *r;
}

void Drop(BlockStore& s, ArrayId a) {
  WriteBatch b = Batch(s);
  b.DeleteBlocks(a, 0, 1000);
  auto r = s.Commit(b);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
}

// A database at `db` whose array 1 has `n` blocks, block i holding Pattern(kBlock, i + 1) in slot i
// (one commit each), closed again.
void StoreBlocks(const std::string& db, BlockIndex n) {
  auto store = Open(db);
  for (BlockIndex i = 0; i < n; ++i) Put(*store, 1, i, Pattern(kBlock, i + 1));
}

// Any commit: lets the store reclaim what no snapshot reads any more.
void Touch(BlockStore& s) {
  WriteBatch b = Batch(s);
  b.PutMeta("n/touch", std::to_string(rand()));
  REQUIRE(s.Commit(b).ok());
}

std::vector<std::byte> Read(Snapshot& snap, ArrayId a, BlockIndex i) {
  std::vector<std::byte> out(kBlock);
  Status st = snap.ReadBlock(a, i, out);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  return out;
}

// The slot a block lives in: its mappable range must be in blocks.dat.
uint64_t SlotOf(Snapshot& snap, ArrayId a, BlockIndex i, const std::string& db) {
  auto r = snap.MappableBlock(a, i, kBlock);
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  struct stat in_file, named;
  REQUIRE(fstat((*r)->fd, &in_file) == 0);
  REQUIRE(stat((db + "/blocks.dat").c_str(), &named) == 0);
  REQUIRE(in_file.st_ino == named.st_ino);
  REQUIRE((*r)->offset % static_cast<off_t>(kSlot) == 0);
  return static_cast<uint64_t>((*r)->offset) / kSlot;
}

struct stat StatOf(const std::string& path) {
  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);
  return st;
}

// Flips one byte of blocks.dat at `offset`.
void FlipSlotByte(const std::string& db, off_t offset) {
  const int fd = open((db + "/blocks.dat").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  unsigned char c;
  REQUIRE(pread(fd, &c, 1, offset) == 1);
  c ^= 0x10;
  REQUIRE(pwrite(fd, &c, 1, offset) == 1);
  close(fd);
}

// Finds `key` in named database `db` and hands `fn` its key and value inside data.mdb's pages,
// writable in place (WithWritableMap).
void EditInPlace(const std::string& path, const char* db, std::string_view key,
                 const std::function<void(MDB_val& key, MDB_val& value)>& fn) {
  bigarray::testing::WithWritableMap(path, [&](MDB_txn* txn) {
    MDB_dbi dbi;
    REQUIRE(mdb_dbi_open(txn, db, 0, &dbi) == 0);
    MDB_cursor* cur;
    REQUIRE(mdb_cursor_open(txn, dbi, &cur) == 0);
    MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
    REQUIRE(mdb_cursor_get(cur, &k, &v, MDB_SET_KEY) == 0);  // k: the key inside its leaf page
    fn(k, v);
    mdb_cursor_close(cur);
  });
}

// The record of block (a, i): its key and value.
void EditRecord(const std::string& db, ArrayId a, BlockIndex i, const std::function<void(MDB_val& key, MDB_val& value)>& fn) {
  unsigned char kb[16];
  internal::PutBE64(kb, a);
  internal::PutBE64(kb + 8, i);
  EditInPlace(db, "blocks", std::string_view(reinterpret_cast<char*>(kb), 16), fn);
}
void EditRecord(const std::string& db, ArrayId a, BlockIndex i, const std::function<void(MDB_val&)>& fn) {
  EditRecord(db, a, i, [&](MDB_val&, MDB_val& v) { fn(v); });
}

}  // namespace

TEST_CASE("a large whole block goes to a 2 MiB-aligned slot of blocks.dat; a small one stays in data.mdb") {
  TempDir dir;
  const std::string db = dir / "db";
  auto store = Open(db);
  Put(*store, 1, 0, Pattern(kBlock, 1));
  auto half = Pattern(kBlock / 2, 2);  // not more than half a slot: data.mdb
  Put(*store, 1, 1, half);
  auto snap = store->OpenSnapshot().value();
  CHECK(SlotOf(*snap, 1, 0, db) == 0);
  auto r = snap->MappableBlock(1, 1, kBlock);
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  struct stat in_file;
  REQUIRE(fstat((*r)->fd, &in_file) == 0);
  CHECK(in_file.st_ino == StatOf(db + "/data.mdb").st_ino);
  CHECK(Read(*snap, 1, 0) == Pattern(kBlock, 1));
  half.resize(kBlock);
  CHECK(Read(*snap, 1, 1) == half);
  CHECK(StatOf(db + "/blocks.dat").st_size == static_cast<off_t>(kSlot));
  // The mapped slot shows the block's bytes.
  void* m = mmap(nullptr, kBlock, PROT_READ, MAP_SHARED, (*snap->MappableBlock(1, 0, kBlock))->fd, 0);
  REQUIRE(m != MAP_FAILED);
  CHECK(std::memcmp(m, Pattern(kBlock, 1).data(), kBlock) == 0);
  munmap(m, kBlock);
  std::vector<BlockInfo> infos;
  REQUIRE(snap->ForEachBlock(1, [&](const BlockInfo& b) { infos.push_back(b); return true; }).ok());
  REQUIRE(infos.size() == 2);
  CHECK(infos[0].stored_bytes == kBlock);
  int damaged = 0;
  CHECK(snap->VerifyBlocks(1, kBlock, [&](BlockIndex, const Status&) { ++damaged; }).value() == 2);
  REQUIRE(snap->VerifyRecords([&](const Status& s) { ++damaged; MESSAGE(s.ToString()); }).ok());
  CHECK(damaged == 0);
}

TEST_CASE("the blocks of one commit take slots in block order, whatever order they were put in") {
  // So that a scan of an array written in one commit reads blocks.dat in order (the pager hands
  // its dirty blocks over in the order of a hash table).
  TempDir dir;
  const std::string db = dir / "db";
  auto store = Open(db);
  WriteBatch b = Batch(*store);
  for (BlockIndex i : {3, 1, 4, 0, 2}) b.PutBlock(2, i, Pattern(kBlock, i + 1));
  b.PutBlock(1, 7, Pattern(kBlock, 9));  // an array of a lower id, put last
  REQUIRE(store->Commit(b).ok());
  auto snap = store->OpenSnapshot().value();
  CHECK(SlotOf(*snap, 1, 7, db) == 0);
  for (BlockIndex i = 0; i < 5; ++i) {
    CHECK(SlotOf(*snap, 2, i, db) == i + 1);
    CHECK(Read(*snap, 2, i) == Pattern(kBlock, i + 1));
  }
}

TEST_CASE("a freed slot is reused only when no snapshot can read it; then its space goes back") {
  TempDir dir;
  const std::string db = dir / "db";
  auto store = Open(db);
  Put(*store, 1, 0, Pattern(kBlock, 1));  // slot 0
  auto old = store->OpenSnapshot().value();
  Put(*store, 1, 0, Pattern(kBlock, 2));  // slot 1; slot 0 freed, but `old` reads it
  Touch(*store);
  Put(*store, 2, 0, Pattern(kBlock, 3));
  {
    auto now = store->OpenSnapshot().value();
    CHECK(SlotOf(*now, 1, 0, db) == 1);
    CHECK(SlotOf(*now, 2, 0, db) == 2);  // not slot 0
  }
  // The old snapshot still reads, and maps, the old bytes.
  CHECK(Read(*old, 1, 0) == Pattern(kBlock, 1));
  CHECK(SlotOf(*old, 1, 0, db) == 0);
  const blkcnt_t before = StatOf(db + "/blocks.dat").st_blocks;
  old.reset();
  Touch(*store);  // reclaims slot 0: punched out of the file
  CHECK(StatOf(db + "/blocks.dat").st_blocks <= before - static_cast<blkcnt_t>(kSlot / 512));
  Put(*store, 3, 0, Pattern(kBlock, 4));
  auto now = store->OpenSnapshot().value();
  CHECK(SlotOf(*now, 3, 0, db) == 0);  // the lowest free slot
  CHECK(Read(*now, 1, 0) == Pattern(kBlock, 2));
  CHECK(Read(*now, 2, 0) == Pattern(kBlock, 3));
  CHECK(Read(*now, 3, 0) == Pattern(kBlock, 4));
  int damaged = 0;
  REQUIRE(now->VerifyRecords([&](const Status& s) { ++damaged; MESSAGE(s.ToString()); }).ok());
  CHECK(damaged == 0);
}

TEST_CASE("a slot freed by the latest commit is kept while that commit is the latest (LMDB's fallback state)") {
  TempDir dir;
  const std::string db = dir / "db";
  auto store = Open(db);
  Put(*store, 1, 0, Pattern(kBlock, 1));  // slot 0
  Put(*store, 1, 0, Pattern(kBlock, 2));  // slot 1; slot 0 freed by the latest commit
  Put(*store, 2, 0, Pattern(kBlock, 3));  // no snapshot open, but the state before holds slot 0
  auto snap = store->OpenSnapshot().value();
  CHECK(SlotOf(*snap, 2, 0, db) == 2);
  snap.reset();
  Put(*store, 3, 0, Pattern(kBlock, 4));  // now it is free
  snap = store->OpenSnapshot().value();
  CHECK(SlotOf(*snap, 3, 0, db) == 0);
}

TEST_CASE("a payload that ends inside a page goes to its slot zero-padded, and reads back") {
  TempDir dir;
  const std::string db = dir / "db";
  auto store = Open(db);
  auto odd = Pattern(1500001, 5);  // PutBlock(span) trims to the byte
  Put(*store, 1, 0, odd);
  auto snap = store->OpenSnapshot().value();
  odd.resize(kBlock);
  CHECK(Read(*snap, 1, 0) == odd);
  CHECK(SlotOf(*snap, 1, 0, db) == 0);
  auto r = snap->MappableBlock(1, 0, kBlock);
  REQUIRE(r.ok());
  CHECK((*r)->length == 1503232);  // 367 pages
  int damaged = 0;
  CHECK(snap->VerifyBlocks(1, kBlock, [&](BlockIndex, const Status&) { ++damaged; }).value() == 1);
  CHECK(damaged == 0);
}

TEST_CASE("a missing slot table is corruption at the next commit, never an empty table") {
  TempDir dir;
  const std::string db = dir / "db";
  StoreBlocks(db, 3);
  // The table's key damaged: LMDB no longer finds it.
  EditInPlace(db, "meta", std::string_view("\0slots", 6), [](MDB_val& k, MDB_val&) { static_cast<char*>(k.mv_data)[5] = 'z'; });
  auto store = Open(db);
  WriteBatch b = Batch(*store);
  b.PutBlock(2, 0, Pattern(kBlock, 9));
  Status st = store->Commit(b).status();
  CHECK(st.code() == Code::kCorruption);
  CHECK_MESSAGE(st.message().find("slot table is missing") != std::string::npos, st.ToString());
  auto snap = store->OpenSnapshot().value();
  for (BlockIndex i = 0; i < 3; ++i) CHECK(Read(*snap, 1, i) == Pattern(kBlock, i + 1));  // nothing overwritten, nothing cut
  std::vector<std::string> found;
  REQUIRE(snap->VerifyRecords([&](const Status& s) { found.push_back(s.message()); }).ok());
  REQUIRE_FALSE(found.empty());
  CHECK_MESSAGE(std::any_of(found.begin(), found.end(), [](const std::string& m) { return m.find("slot table is missing") != std::string::npos; }), found[0]);
}

TEST_CASE("compaction punches no slot when a block record cannot be decoded (a damaged value size)") {
  TempDir dir;
  const std::string db = dir / "db";
  StoreBlocks(db, 3);
  // The size in the leaf node of block 1's slot record: 48 -> 49 (LMDB's node header: u16 lo,
  // u16 hi of the data size, u16 flags, u16 key size, then the key).
  auto set_size = [&](uint16_t size) {
    EditRecord(db, 1, 1, [&](MDB_val& k, MDB_val&) { std::memcpy(static_cast<char*>(k.mv_data) - 8, &size, 2); });
  };
  set_size(49);
  auto r = CompactLmdb(db);
  CHECK_FALSE(r.ok());
  set_size(48);  // repaired: the block is all there
  auto store = Open(db);
  auto snap = store->OpenSnapshot().value();
  for (BlockIndex i = 0; i < 3; ++i) CHECK(Read(*snap, 1, i) == Pattern(kBlock, i + 1));
}

TEST_CASE("dropping every block gives blocks.dat back to the file system, without a compaction") {
  TempDir dir;
  const std::string db = dir / "db";
  auto store = Open(db);
  for (BlockIndex i = 0; i < 8; ++i) Put(*store, 1, i, Pattern(kBlock, i));
  Put(*store, 2, 0, Pattern(kBlock, 9));  // slot 8, the last
  CHECK(StatOf(db + "/blocks.dat").st_size == static_cast<off_t>(9 * kSlot));
  Drop(*store, 1);
  Touch(*store);
  Touch(*store);
  // Slots 0-7 are holes now; slot 8 is still used, so the file keeps its length.
  CHECK(StatOf(db + "/blocks.dat").st_size == static_cast<off_t>(9 * kSlot));
  CHECK(StatOf(db + "/blocks.dat").st_blocks <= static_cast<blkcnt_t>(2 * kSlot / 512));
  Drop(*store, 2);
  Touch(*store);
  Touch(*store);
  CHECK(StatOf(db + "/blocks.dat").st_size == 0);
  auto snap = store->OpenSnapshot().value();
  CHECK(Read(*snap, 2, 0) == std::vector<std::byte>(kBlock));
}

TEST_CASE("a damaged byte of a slot is corruption naming the block; verify finds it") {
  TempDir dir;
  const std::string db = dir / "db";
  StoreBlocks(db, 2);  // slots 0 and 1
  FlipSlotByte(db, static_cast<off_t>(kSlot + 12345));
  auto store = Open(db);
  auto snap = store->OpenSnapshot().value();
  std::vector<std::byte> out(kBlock);
  Status st = snap->ReadBlock(1, 1, out);
  CHECK(st.code() == Code::kCorruption);
  CHECK_MESSAGE(st.message().find("block 1") != std::string::npos, st.ToString());
  CHECK(Read(*snap, 1, 0) == Pattern(kBlock, 1));
  std::vector<BlockIndex> damaged;
  CHECK(snap->VerifyBlocks(1, kBlock, [&](BlockIndex i, const Status&) { damaged.push_back(i); }).value() == 2);
  CHECK(damaged == std::vector<BlockIndex>{1});
}

TEST_CASE("a damaged slot number in a record is corruption, never a read or a free of another slot") {
  TempDir dir;
  const std::string db = dir / "db";
  StoreBlocks(db, 2);  // slots 0 and 1
  EditRecord(db, 1, 1, [](MDB_val& v) {
    REQUIRE(v.mv_size == internal::kSlotHeader);
    static_cast<char*>(v.mv_data)[32] = 0;  // slot 1 -> slot 0
  });
  auto store = Open(db);
  {
    auto snap = store->OpenSnapshot().value();
    std::vector<std::byte> out(kBlock);
    Status st = snap->ReadBlock(1, 1, out);
    CHECK(st.code() == Code::kCorruption);
    CHECK_MESSAGE(st.message().find("damaged slot record") != std::string::npos, st.ToString());
  }
  // Rewriting the block would free the slot its record names: refused, and slot 0 keeps block 0.
  WriteBatch b = Batch(*store);
  b.PutBlock(1, 1, Pattern(kBlock, 3));
  CHECK(store->Commit(b).status().code() == Code::kCorruption);
  Touch(*store);
  Put(*store, 2, 0, Pattern(kBlock, 4));
  auto snap = store->OpenSnapshot().value();
  CHECK(Read(*snap, 1, 0) == Pattern(kBlock, 1));
  CHECK(SlotOf(*snap, 2, 0, db) == 2);
}

TEST_CASE("a slot past the end of a cut blocks.dat is corruption when mapped, also once a snapshot knows the file's size") {
  TempDir dir;
  const std::string db = dir / "db";
  StoreBlocks(db, 3);  // slots 0, 1 and 2
  auto store = Open(db);
  auto snap = store->OpenSnapshot().value();
  auto first = snap->MappableBlock(1, 0, kBlock);  // the snapshot looks at the file's size
  REQUIRE_MESSAGE(first.ok(), first.status().ToString());
  REQUIRE(*first);
  CHECK((*first)->offset == 0);
  // The file cut after slot 1 (damage, or another program): block 2 would map pages past its
  // end, whose reading raises SIGBUS. The snapshot's known size is stale; it must look again.
  REQUIRE(truncate((dir / "db/blocks.dat").c_str(), static_cast<off_t>(2 * kSlot)) == 0);
  auto second = snap->MappableBlock(1, 1, kBlock);
  REQUIRE_MESSAGE(second.ok(), second.status().ToString());
  CHECK((*second)->offset == static_cast<off_t>(kSlot));
  auto third = snap->MappableBlock(1, 2, kBlock);
  CHECK(third.status().code() == Code::kCorruption);
  CHECK_MESSAGE(third.status().message().find("past the end of") != std::string::npos, third.status().ToString());
  // A new snapshot of a new handle finds the same.
  auto again = Open(db)->OpenSnapshot().value()->MappableBlock(1, 2, kBlock);
  CHECK(again.status().code() == Code::kCorruption);
}

TEST_CASE("verify finds two records naming one slot") {
  TempDir dir;
  const std::string db = dir / "db";
  StoreBlocks(db, 2);  // slots 0 and 1
  // Block 1's record replaced by block 0's (a record copied under another key): both name slot 0.
  std::string copy;
  EditRecord(db, 1, 0, [&](MDB_val& v) { copy.assign(static_cast<char*>(v.mv_data), v.mv_size); });
  EditRecord(db, 1, 1, [&](MDB_val& v) {
    REQUIRE(v.mv_size == copy.size());
    std::memcpy(v.mv_data, copy.data(), copy.size());
  });
  auto store = Open(db);
  auto snap = store->OpenSnapshot().value();
  std::vector<std::string> found;
  REQUIRE(snap->VerifyRecords([&](const Status& s) { found.push_back(s.message()); }).ok());
  REQUIRE(found.size() == 1);
  CHECK_MESSAGE(found[0].find("its slot 0") != std::string::npos, found[0]);
  CHECK(found[0].find("also used by array #1 block 0") != std::string::npos);
}

TEST_CASE("blocks.dat missing: reads and commits say so") {
  TempDir dir;
  const std::string db = dir / "db";
  StoreBlocks(db, 1);
  REQUIRE(unlink((db + "/blocks.dat").c_str()) == 0);
  // A writable open refuses (a commit would start a new, empty blocks.dat under the records).
  auto w = OpenLmdbStore(db, {});
  CHECK(w.status().code() == Code::kCorruption);
  CHECK_MESSAGE(w.status().message().find("blocks.dat is missing") != std::string::npos, w.status().ToString());
  struct stat none;
  CHECK(stat((db + "/blocks.dat").c_str(), &none) != 0);
  LmdbOptions ro;
  ro.read_only = true;
  auto store = Open(db, ro);
  auto snap = store->OpenSnapshot().value();
  std::vector<std::byte> out(kBlock);
  Status st = snap->ReadBlock(1, 0, out);
  CHECK(st.code() == Code::kCorruption);
  CHECK_MESSAGE(st.message().find("blocks.dat, which is missing") != std::string::npos, st.ToString());
}

namespace {

// Writes a version-2 database as bigarray 0.1 (format 2) did: sealed metadata, every block in
// data.mdb (a long header before a payload of 2 KiB or more), deltas under 24-byte keys.
struct V2Record {
  ArrayId a;
  BlockIndex i;
  uint32_t kind;  // internal::kWholeBlock or kDelta
  std::vector<std::byte> payload;
};
void WriteVersion2(const std::string& path, const std::vector<std::pair<std::string, std::string>>& meta,
                   const std::vector<V2Record>& records) {
  bigarray::testing::WriteRawEnvironment(path, 256 << 20, [&](const bigarray::testing::RawDbs& d) {
    auto put = [&](MDB_dbi dbi, std::string_view k, std::string_view v) {
      MDB_val key{k.size(), const_cast<char*>(k.data())}, val{v.size(), const_cast<char*>(v.data())};
      REQUIRE(mdb_put(d.txn, dbi, &key, &val, 0) == 0);
    };
    const std::string format_key("\0format", 7);
    put(d.meta, format_key, internal::SealRecord(format_key, std::string("bigarray") + std::string("\2\0\0\0", 4)));
    for (const auto& [k, v] : meta) put(d.meta, k, internal::SealRecord(k, v));
    const CommitId commit = mdb_txn_id(d.txn);
    for (const V2Record& r : records) {
      unsigned char kb[24];
      internal::PutBE64(kb, r.a);
      internal::PutBE64(kb + 8, r.i);
      internal::PutBE64(kb + 16, commit);
      internal::BlockHeader h;
      h.commit = commit;
      h.kind = r.kind;
      h.header_bytes = static_cast<uint32_t>(internal::HeaderBytesFor(r.payload.size()));
      h.checksum = internal::BlockHasher::Of(internal::PayloadSeed(r.a, r.i, h), r.payload);
      unsigned char header[internal::kSlotHeader];
      internal::EncodeBlockHeader(h, header);
      std::string value(reinterpret_cast<char*>(header), internal::kShortHeader);
      value.resize(h.header_bytes);
      value.append(reinterpret_cast<const char*>(r.payload.data()), r.payload.size());
      put(d.blocks, std::string_view(reinterpret_cast<char*>(kb), r.kind == internal::kDelta ? 24 : 16), value);
    }
  });
}

// `n` bytes of a pattern whose bytes from `nonzero` on are zeros.
std::vector<std::byte> Ending(size_t n, size_t nonzero) {
  auto v = Pattern(n, 7);
  std::fill(v.begin() + static_cast<std::ptrdiff_t>(nonzero), v.end(), std::byte{0});
  v[nonzero - 1] = std::byte{1};
  return v;
}

std::vector<std::byte> Delta(uint32_t offset, std::string_view bytes) {
  std::vector<std::byte> d(8 + bytes.size());
  for (int k = 0; k < 4; ++k) {
    d[k] = static_cast<std::byte>(offset >> (8 * k));
    d[4 + k] = static_cast<std::byte>(bytes.size() >> (8 * k));
  }
  std::memcpy(d.data() + 8, bytes.data(), bytes.size());
  return d;
}

}  // namespace

TEST_CASE("upgrade: a version-2 database is refused until converted; then its large blocks are in slots") {
  TempDir dir;
  const std::string db = dir / "db";
  const std::vector<std::pair<std::string, std::string>> meta = {
      {"n/x", "0000000000000001"}, {"a/0000000000000001", "dtype=<f8;order=C;block_size=2097152;shape=1000000"}};
  auto small = Pattern(5000, 3);
  WriteVersion2(db, meta,
                {{1, 0, internal::kWholeBlock, Pattern(kBlock, 1)},
                 {1, 0, internal::kDelta, Delta(10, "hello")},
                 {1, 1, internal::kWholeBlock, small},
                 {1, 2, internal::kDelta, Delta(kBlock - 3, "end")},
                 {1, 3, internal::kWholeBlock, Ending(1503232, 1500001)}});
  CHECK(OpenLmdbStore(db, {}).status().code() == Code::kFailedPrecondition);
  auto r = UpgradeLmdbStore(db);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->upgraded);
  CHECK(r->from_version == 2);
  CHECK(r->blocks == 4);
  CHECK(r->records == 2);
  CHECK(r->backup == db + "/data.mdb.format2");

  auto store = Open(db);
  auto snap = store->OpenSnapshot().value();
  for (const auto& [k, v] : meta) CHECK(*snap->GetMeta(k).value() == v);
  auto want0 = Pattern(kBlock, 1);
  std::memcpy(want0.data() + 10, "hello", 5);
  CHECK(Read(*snap, 1, 0) == want0);
  CHECK(SlotOf(*snap, 1, 0, db) == 0);
  small.resize(kBlock);
  CHECK(Read(*snap, 1, 1) == small);
  std::vector<std::byte> want2(kBlock);
  std::memcpy(want2.data() + kBlock - 3, "end", 3);
  CHECK(Read(*snap, 1, 2) == want2);
  CHECK(SlotOf(*snap, 1, 2, db) == 1);  // its payload is the whole block (a page multiple)
  auto want3 = Ending(1503232, 1500001);  // the conversion trims it to the byte: padded in its slot
  want3.resize(kBlock);
  CHECK(Read(*snap, 1, 3) == want3);
  CHECK(SlotOf(*snap, 1, 3, db) == 2);
  int damaged = 0;
  CHECK(snap->VerifyBlocks(1, kBlock, [&](BlockIndex, const Status&) { ++damaged; }).value() == 4);
  REQUIRE(snap->VerifyRecords([&](const Status&) { ++damaged; }).ok());
  CHECK(damaged == 0);
}

TEST_CASE("upgrade: a damaged version-2 block stops it with nothing changed") {
  TempDir dir;
  const std::string db = dir / "db";
  auto bad = Pattern(kBlock, 1);
  WriteVersion2(db, {{"n/x", "0000000000000001"}}, {{1, 0, internal::kWholeBlock, bad}});
  // Damage the payload: one byte changed, the checksum kept.
  EditRecord(db, 1, 0, [](MDB_val& v) { static_cast<char*>(v.mv_data)[internal::kLongHeader + 100] ^= 1; });
  const auto before = StatOf(db + "/data.mdb");
  auto r = UpgradeLmdbStore(db);
  CHECK(r.status().code() == Code::kCorruption);
  CHECK_MESSAGE(r.status().message().find("nothing was converted") != std::string::npos, r.status().ToString());
  CHECK(StatOf(db + "/data.mdb").st_ino == before.st_ino);
  CHECK(OpenLmdbStore(db, {}).status().code() == Code::kFailedPrecondition);  // still version 2
}
