// Zero-copy reads through the Database (docs/pager.md, section 3b): clean blocks of an LMDB
// database are shown straight from data.mdb's page cache; writes, small payloads and deltas are
// copied; other handles' commits show at the boundary; damage is reported unless verification
// is off.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "bigarray/database.h"
#include "bigarray/storage/block_store.h"
#include "test_util.h"

using namespace bigarray;
using bigarray::testing::TempDir;

namespace {

constexpr uint64_t kBlock = 64 * 1024;
constexpr int64_t kPerBlock = kBlock / 8;

Database OpenDb(const std::string& path, bool map = true, bool verify = true) {
  Options o;
  o.cache_bytes = 64 * kBlock;
  o.map_reads = map;
  o.verify_reads = verify;
  auto r = Database::Open(path, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(*r);
}

// Element i of version v: every byte differs from one version to the next, so that a rewrite is
// stored whole (a small change would be stored as a delta, which is copied, not mapped).
uint64_t Value(int64_t i, int version) {
  uint64_t z = static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(version) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 31)) * 0x94D049BB133111EBull;
  return (z ^ (z >> 29)) | 0x0101010101010101ull;  // no zero byte: nothing is trimmed
}

// An array "x" of `blocks` blocks of doubles, element i = Value(i, version), committed.
void Write(const std::string& path, int64_t blocks, int version) {
  Database db = OpenDb(path);
  auto got = db.Get("x");
  Array a = got.ok() ? *got : db.Create("x", {blocks * kPerBlock}, "u8", ArrayOptions{Order::kC, kBlock}).value();
  auto v = a.view().value();
  auto d = v.Span<uint64_t>().value();
  for (int64_t i = 0; i < blocks * kPerBlock; ++i) d[static_cast<size_t>(i)] = Value(i, version);
  REQUIRE(db.Commit().ok());
}

// A fresh directory with a database whose array "x" was written by Write(blocks, version).
struct Written {
  Written(int64_t blocks, int version) { Write(path, blocks, version); }
  TempDir dir;
  const std::string path = dir / "db";
};

bool Shows(const View& v, int version, int64_t first = 0) {
  auto d = v.Span<uint64_t>().value();
  for (size_t i = 0; i < d.size(); ++i) {
    if (d[i] != Value(first + static_cast<int64_t>(i), version)) return false;
  }
  return true;
}

// The file offset of block `index` of array "x"'s payload in data.mdb.
off_t PayloadOffset(const std::string& path, uint64_t index) {
  auto store = storage::OpenLmdbStore(path, storage::LmdbOptions{}).value();
  auto snap = store->OpenSnapshot().value();
  const std::string id = snap->GetMeta("n/x").value().value();  // 16 hex digits (docs/format.md)
  auto r = snap->MappableBlock(std::stoull(id, nullptr, 16), index, kBlock).value();
  REQUIRE(r);
  REQUIRE(r->length > 0);
  return r->offset;
}

// Flips the bits `mask` of the byte at `at` of data.mdb.
void FlipBits(const std::string& path, off_t at, unsigned char mask) {
  const int fd = open((path + "/data.mdb").c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  unsigned char byte;
  REQUIRE(pread(fd, &byte, 1, at) == 1);
  byte ^= mask;
  REQUIRE(pwrite(fd, &byte, 1, at) == 1);
  close(fd);
}

}  // namespace

TEST_CASE("clean blocks of an LMDB database are mapped from the file; only written blocks use the cache") {
  const Written w(16, 1);
  const std::string& path = w.path;
  Database db = OpenDb(path);
  auto v = db.Get("x").value().view().value();
  CHECK(Shows(v, 1));
  CacheStats s = db.cache_stats();
  CHECK(s.loads == 0);
  CHECK(s.file_maps == 16);
  CHECK(s.file_mapped_bytes == 16 * kBlock);
  CHECK(s.dirty_blocks == 0);
  // A write copies its block into the cache; the others stay mapped.
  auto d = v.Span<uint64_t>().value();
  for (int64_t i = 0; i < kPerBlock; ++i) d[static_cast<size_t>(3 * kPerBlock + i)] = Value(i, 9);
  s = db.cache_stats();
  CHECK(s.loads == 1);
  CHECK(s.dirty_blocks == 1);
  CHECK(s.file_mapped_bytes == 15 * kBlock);
  REQUIRE(db.Commit().ok());
  Database other = OpenDb(path);
  auto got = other.Get("x").value().view().value().Span<uint64_t>().value();
  CHECK(got[3 * kPerBlock + 5] == Value(5, 9));
  CHECK(got[4 * kPerBlock] == Value(4 * kPerBlock, 1));
  CHECK(other.cache_stats().loads == 0);  // block 3 was stored whole again: mapped too
}

TEST_CASE("mapped blocks follow other handles' commits at the boundary, never in between") {
  const Written w(8, 1);
  const std::string& path = w.path;
  Database reader = OpenDb(path);
  auto v = reader.Get("x").value().view().value();
  for (int version = 2; version < 40; ++version) {
    REQUIRE(Shows(v, version - 1));  // maps (again) what the boundary dropped
    Write(path, 8, version);         // another handle rewrites every block: new pages of data.mdb
    REQUIRE(Shows(v, version - 1));  // this transaction's snapshot still shows the old ones
    reader.Abort();                  // the boundary: the changed blocks are dropped
  }
  CHECK(Shows(v, 39));
  CHECK(reader.cache_stats().loads == 0);
}

TEST_CASE("blocks the file cannot show are copied: small payloads and deltas") {
  TempDir dir;
  const std::string path = dir / "db";
  {
    Database db = OpenDb(path);
    Array a = db.Create("x", {4 * kPerBlock}, "u8", ArrayOptions{Order::kC, kBlock}).value();
    auto d = a.view().value().Span<uint64_t>().value();
    for (int64_t i = 0; i < 4 * kPerBlock; ++i) d[static_cast<size_t>(i)] = Value(i, 1);
    d[2 * kPerBlock + 1] = 1;  // block 2: 16 bytes, then zeros below, a short payload
    for (int64_t i = 2 * kPerBlock + 2; i < 3 * kPerBlock; ++i) d[static_cast<size_t>(i)] = 0;
    d[2 * kPerBlock] = 7;
    REQUIRE(db.Commit().ok());
    d[1 * kPerBlock + 9] = 42;  // block 1: a small change, stored as a delta
    REQUIRE(db.Commit().ok());
  }
  Database db = OpenDb(path);
  auto d = db.Get("x").value().view().value().Span<uint64_t>().value();
  CHECK(d[0] == Value(0, 1));
  CHECK(d[kPerBlock + 9] == 42);
  CHECK(d[kPerBlock + 10] == Value(kPerBlock + 10, 1));
  CHECK(d[2 * kPerBlock] == 7);
  CHECK(d[2 * kPerBlock + 1] == 1);
  CHECK(d[2 * kPerBlock + 2] == 0);
  CHECK(d[3 * kPerBlock] == Value(3 * kPerBlock, 1));
  const CacheStats s = db.cache_stats();
  CHECK(s.loads == 2);
  CHECK(s.file_maps == 2);
}

TEST_CASE("a damaged mapped block is an error naming it; with verify_reads off it is shown as stored") {
  const Written w(4, 1);
  const std::string& path = w.path;
  FlipBits(path, PayloadOffset(path, 2) + 100, 0x40);
  for (bool map : {true, false}) {
    CAPTURE(map);
    Database db = OpenDb(path, map);
    auto v = db.Get("x").value().view().value();
    const Status st = v.Load();
    CHECK(st.code() == Code::kCorruption);
    CHECK(st.message().find("array 'x' block 2") != std::string::npos);
    CHECK(st.message().find("checksum mismatch") != std::string::npos);
  }
  Database db = OpenDb(path, true, /*verify=*/false);
  auto v = db.Get("x").value().view().value();
  REQUIRE(v.Load().ok());
  auto d = v.Span<uint64_t>().value();
  CHECK(d[2 * kPerBlock + 12] != Value(2 * kPerBlock + 12, 1));  // byte 100 is in element 12
  CHECK(d[2 * kPerBlock + 13] == Value(2 * kPerBlock + 13, 1));
  CHECK(Shows(v.Index({Slice{0, 2 * kPerBlock, 1}}).value(), 1));
}

TEST_CASE("after Load, the kernel reads mapped views: write(2) sends the array's bytes") {
  const Written w(8, 3);
  const std::string& path = w.path;
  Database db = OpenDb(path);
  auto v = db.Get("x").value().view().value();
  const std::string out = w.dir / "out";
  const int fd = open(out.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  CHECK(write(fd, v.data(), 8 * kBlock) == -1);  // before Load: nothing mapped, EFAULT
  CHECK(errno == EFAULT);
  REQUIRE(v.Load().ok());
  CHECK(write(fd, v.data(), 8 * kBlock) == static_cast<ssize_t>(8 * kBlock));
  std::vector<uint64_t> back(8 * kPerBlock);
  REQUIRE(pread(fd, back.data(), 8 * kBlock, 0) == static_cast<ssize_t>(8 * kBlock));
  close(fd);
  for (int64_t i = 0; i < 8 * kPerBlock; ++i) REQUIRE(back[static_cast<size_t>(i)] == Value(i, 3));
  CHECK(db.cache_stats().loads == 0);
}

TEST_CASE("a mapped block larger than the check's read piece: damage in any piece is found, an intact block is mapped") {
  // Blocks of 1 MiB are payloads in data.mdb, checked through the populated mapping that views
  // then show (file_ranges.cc, MapChecked; by pread in pieces of 256 KiB where the SIGBUS guard is
  // not installed): damage anywhere must be found, in the last byte too.
  constexpr uint64_t kBig = 1 << 20;
  TempDir dir;
  const std::string path = dir / "db";
  {
    Database db = OpenDb(path);
    Array a = db.Create("x", {3 * static_cast<int64_t>(kBig) / 8}, "u8", ArrayOptions{Order::kC, kBig}).value();
    auto d = a.view().value().Span<uint64_t>().value();
    for (size_t i = 0; i < d.size(); ++i) d[i] = Value(static_cast<int64_t>(i), 5);
    REQUIRE(db.Commit().ok());
  }
  auto store = storage::OpenLmdbStore(path, storage::LmdbOptions{}).value();
  auto snap = store->OpenSnapshot().value();
  const uint64_t id = std::stoull(snap->GetMeta("n/x").value().value(), nullptr, 16);
  auto offset = [&](uint64_t block) {
    auto r = snap->MappableBlock(id, block, kBig).value();
    REQUIRE(r);
    REQUIRE(r->length == kBig);
    return r->offset;
  };
  for (const uint64_t at : {uint64_t{5}, uint64_t{(256u << 10) + 3}, kBig - 1}) {
    CAPTURE(at);
    const off_t where = offset(1) + static_cast<off_t>(at);
    FlipBits(path, where, 0x08);
    Database db = OpenDb(path);
    auto v = db.Get("x").value().view().value();
    const Status st = v.Load();
    CHECK(st.code() == Code::kCorruption);
    CHECK(st.message().find("array 'x' block 1") != std::string::npos);
    // The intact blocks were mapped, not copied.
    auto ends = v.Index({Slice{0, static_cast<int64_t>(kBig) / 8, 1}}).value();
    REQUIRE(ends.Load().ok());
    CHECK(Shows(ends, 5));
    CHECK(db.cache_stats().file_maps >= 1);
    CHECK(db.cache_stats().loads == 0);
    FlipBits(path, where, 0x08);  // repaired for the next case
  }
  Database db = OpenDb(path);
  auto v = db.Get("x").value().view().value();
  REQUIRE(v.Load().ok());
  CHECK(Shows(v, 5));
}

TEST_CASE("Array::Read reads blocks the handle has not loaded straight into the buffer; the others from the cache") {
  const Written w(8, 1);
  Database db = OpenDb(w.path);
  Array a = db.Get("x").value();
  std::vector<uint64_t> buf(static_cast<size_t>(8 * kPerBlock));
  auto out = View::Wrap(buf.data(), DType::Parse("u8").value(), {8 * kPerBlock}).value();
  // Whether elements [first, first + count) of the array, read into buf from element `base`
  // on, are expected(i).
  auto shows = [&](int64_t base, int64_t first, int64_t count, auto&& expected) {
    for (int64_t i = first; i < first + count; ++i) {
      if (buf[static_cast<size_t>(i - base)] != expected(i)) return false;
    }
    return true;
  };

  // Whole blocks never loaded: read from the store, no fault, nothing cached or mapped.
  REQUIRE(a.Read({Slice{0, 8 * kPerBlock, 1}}, out).ok());
  CHECK(shows(0, 0, 8 * kPerBlock, [](int64_t i) { return Value(i, 1); }));
  CacheStats s = db.cache_stats();
  CHECK(s.faults == 0);
  CHECK(s.loads == 0);
  CHECK(s.file_maps == 0);
  CHECK(s.resident_bytes == 0);

  // This transaction's writes are read back (block 2 dirty, through the cache), block 5 mapped
  // by a view meanwhile, and parts of blocks (start and end mid-block) copied from the cache.
  auto v = a.view().value().Span<uint64_t>().value();
  v[static_cast<size_t>(2 * kPerBlock + 7)] = 42;
  REQUIRE(v[static_cast<size_t>(5 * kPerBlock)] == Value(5 * kPerBlock, 1));
  std::fill(buf.begin(), buf.end(), 0);
  const int64_t from = kPerBlock / 2, to = 7 * kPerBlock + 3;
  auto part = View::Wrap(buf.data(), DType::Parse("u8").value(), {to - from}).value();
  REQUIRE(a.Read({Slice{from, to, 1}}, part).ok());
  CHECK(shows(from, from, to - from, [](int64_t i) { return i == 2 * kPerBlock + 7 ? uint64_t{42} : Value(i, 1); }));

  // Past a shrink of this transaction: zeros, as through a view.
  REQUIRE(a.Resize({4 * kPerBlock}).ok());
  REQUIRE(a.Resize({8 * kPerBlock}).ok());
  REQUIRE(a.Read({Slice{0, 8 * kPerBlock, 1}}, out).ok());
  CHECK(shows(0, 4 * kPerBlock, 4 * kPerBlock, [](int64_t) { return uint64_t{0}; }));
  CHECK(shows(0, 0, 2 * kPerBlock, [](int64_t i) { return Value(i, 1); }));
  db.Abort();

  // What it cannot take whole and in order goes through Assign: a strided buffer, broadcasting,
  // and a shape that does not broadcast (an error, nothing written).
  std::vector<uint64_t> every_other(static_cast<size_t>(2 * kPerBlock));
  auto strided = View::Wrap(every_other.data(), DType::Parse("u8").value(), {kPerBlock}, {16}).value();
  REQUIRE(a.Read({Slice{kPerBlock, 2 * kPerBlock, 1}}, strided).ok());
  CHECK(every_other[2] == Value(kPerBlock + 1, 1));
  uint64_t one = 0;
  auto scalar_out = View::Wrap(&one, DType::Parse("u8").value(), {}).value();
  CHECK(a.Read({Slice{0, 2, 1}}, scalar_out).code() == Code::kInvalidArgument);
  CHECK(one == 0);
}

TEST_CASE("Array::Read of a damaged block is an error naming it, and nothing is cached") {
  const Written w(4, 1);
  FlipBits(w.path, PayloadOffset(w.path, 2) + 100, 0x10);
  Database db = OpenDb(w.path);
  Array a = db.Get("x").value();
  std::vector<uint64_t> buf(static_cast<size_t>(4 * kPerBlock));
  auto out = View::Wrap(buf.data(), DType::Parse("u8").value(), {4 * kPerBlock}).value();
  Status st = a.Read({Slice{0, 4 * kPerBlock, 1}}, out);
  CHECK(st.code() == Code::kCorruption);
  CHECK_MESSAGE(st.message().find("array 'x' block 2: checksum mismatch") != std::string::npos, st.message());
  CHECK(db.cache_stats().resident_bytes == 0);
  // The intact blocks read fine.
  auto first = View::Wrap(buf.data(), DType::Parse("u8").value(), {2 * kPerBlock}).value();
  REQUIRE(a.Read({Slice{0, 2 * kPerBlock, 1}}, first).ok());
  CHECK(buf[static_cast<size_t>(kPerBlock + 1)] == Value(kPerBlock + 1, 1));
}
