// Database, Array and transactions: semantics.md T1-T8 and A1, A2, A4-A7, with several handles
// in one process and in separate processes. (Indexing and assignment: view_test.cc.)
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>
#include <utility>

#include "bigarray/database.h"
#include "bigarray/storage/block_store.h"
#include "catalog_util.h"
#include "test_util.h"

using namespace bigarray;
using bigarray::testing::InChild;
using bigarray::testing::TempDir;

namespace {

constexpr uint64_t kBlock = 64 * 1024;

Options SmallCache(uint64_t blocks = 64) {
  Options o;
  o.cache_bytes = blocks * kBlock;
  return o;
}

ArrayOptions Blocks(Order order = Order::kC) { return ArrayOptions{order, kBlock}; }

Database OpenDb(const std::string& path, Options o = SmallCache()) {
  auto r = Database::Open(path, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(*r);
}

std::span<double> Doubles(const View& v) { return v.Span<double>().value(); }

}  // namespace

TEST_CASE("A1: dtypes by NumPy type strings") {
  CHECK(DType::Parse("f8").value().str() == "<f8");
  CHECK(DType::Parse("<f8").value() == DType::Of<double>());
  CHECK(DType::Parse(">i4").value().str() == ">i4");
  CHECK_FALSE(DType::Parse(">i4").value().native());
  CHECK(DType::Parse("u1").value().str() == "|u1");
  CHECK(DType::Parse("b1").value().str() == "|b1");
  CHECK(DType::Parse("?").value() == DType::Of<bool>());
  CHECK(DType::Parse("c16").value() == DType::Of<std::complex<double>>());
  CHECK(DType::Parse("c8").value().itemsize() == 8);
  CHECK(DType::Parse("f2").value().itemsize() == 2);
  for (const char* bad : {"O", "|O", "U10", "S5", "V8", "M8", "f3", "i16", "x4", "", "<"}) {
    auto r = DType::Parse(bad);
    CHECK_MESSAGE(r.status().code() == Code::kInvalidArgument, bad);
  }
  CHECK(DType::Parse("O").status().message().find("object") != std::string::npos);
  // Values convert in either byte order.
  std::byte buf[8];
  DType be = DType::Parse(">i4").value();
  be.FromDouble(258, buf);
  CHECK(buf[0] == std::byte{0});
  CHECK(buf[3] == std::byte{2});
  CHECK(be.ToDouble(buf) == 258);
  DType half = DType::Parse("<f2").value();
  half.FromDouble(1.5, buf);
  CHECK(half.ToDouble(buf) == 1.5);
  half.FromDouble(-0.25, buf);
  CHECK(half.ToDouble(buf) == -0.25);
}

TEST_CASE("A2: shape, strides, sizes as NumPy computes them; object dtypes refused") {
  auto db = OpenDb("memory:");
  auto c = db.Create("c", {7, 5, 3}, "f8", Blocks()).value();
  CHECK(c.shape() == std::vector<int64_t>{7, 5, 3});
  CHECK(c.strides() == std::vector<int64_t>{120, 24, 8});
  CHECK(c.ndim() == 3);
  CHECK(c.size() == 105);
  CHECK(c.itemsize() == 8);
  CHECK(c.nbytes() == 840);
  CHECK(c.len().value() == 7);
  auto f = db.Create("f", {7, 5, 3}, "i2", Blocks(Order::kF)).value();
  CHECK(f.strides() == std::vector<int64_t>{2, 14, 70});
  auto z = db.Create("z", {0, 3}, "f8", Blocks()).value();
  CHECK(z.strides() == std::vector<int64_t>{24, 8});
  CHECK(z.size() == 0);
  CHECK(z.len().value() == 0);
  CHECK(z.view().value().size() == 0);
  auto s = db.Create("scalar", {}, "f8", Blocks()).value();
  CHECK(s.size() == 1);
  CHECK(s.len().status().code() == Code::kInvalidArgument);
  s.view().value().at<double>() = 4.5;
  CHECK(s.view().value().at<double>() == 4.5);
  CHECK(db.Create("o", {3}, "O").status().code() == Code::kInvalidArgument);
  CHECK(db.Create("neg", {3, -1}, "f8").status().code() == Code::kInvalidArgument);
  CHECK(db.Create("huge", {int64_t{1} << 40, int64_t{1} << 40}, "f8").status().code() ==
        Code::kInvalidArgument);
  CHECK(db.Create("rank", std::vector<int64_t>(33, 1), "f8").status().code() == Code::kInvalidArgument);
  CHECK(db.Create("bs", {3}, "f8", ArrayOptions{Order::kC, 1000}).status().code() ==
        Code::kInvalidArgument);
}

TEST_CASE("T1: a new array reads as zeros; writes then abort read as zeros again") {
  auto db = OpenDb("memory:");
  auto a = db.Create("a", {100000}, "f8", Blocks()).value();
  auto v = a.view().value();
  auto d = Doubles(v);
  for (size_t i = 0; i < d.size(); i += 997) CHECK(d[i] == 0.0);
  REQUIRE(db.Commit().ok());
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<double>(i);
  CHECK(d[99999] == 99999.0);
  db.Abort();
  for (size_t i = 0; i < d.size(); i += 101) REQUIRE(d[i] == 0.0);
}

TEST_CASE("T2: commit, close, reopen: data and shape exactly as committed") {
  TempDir dir;
  {
    auto db = OpenDb(dir / "db");
    auto a = db.Create("x", {300, 50}, "f8", Blocks()).value();
    auto d = Doubles(a.view().value());
    for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<double>(i) * 0.5;
    auto b = db.Create("y", {10}, ">i4", Blocks(Order::kF)).value();
    REQUIRE(b.view().value().Fill(-7).ok());
    REQUIRE(db.Commit().ok());
  }
  auto db = OpenDb(dir / "db");
  CHECK(db.Names().value() == std::vector<std::string>{"x", "y"});
  auto a = db.Get("x").value();
  CHECK(a.shape() == std::vector<int64_t>{300, 50});
  auto d = Doubles(a.view().value());
  for (size_t i = 0; i < d.size(); ++i) REQUIRE(d[i] == static_cast<double>(i) * 0.5);
  auto b = db.Get("y").value();
  CHECK(b.dtype().str() == ">i4");
  CHECK(b.order() == Order::kF);
  CHECK(b.dtype().ToDouble(b.view().value().data() + 36) == -7);
}

TEST_CASE("T3: a transaction keeps reading its snapshot, even through eviction; then moves on") {
  TempDir dir;
  auto writer = OpenDb(dir / "db");
  auto w = writer.Create("a", {64 * 8192}, "f8", Blocks()).value();  // 64 blocks
  REQUIRE(Doubles(w.view().value())[0] == 0);
  for (auto& x : Doubles(w.view().value())) x = 1.0;
  REQUIRE(writer.Commit().ok());

  auto reader = OpenDb(dir / "db", SmallCache(8));  // 8 blocks: a full scan evicts
  auto r = reader.Get("a").value();
  auto rv = Doubles(r.view().value());
  CHECK(rv[0] == 1.0);

  for (auto& x : Doubles(w.view().value())) x = 2.0;
  REQUIRE(writer.Commit().ok());

  double sum = 0;
  for (double x : rv) sum += x;  // evicts and reloads: still the old snapshot
  CHECK(sum == 64 * 8192 * 1.0);
  CHECK(reader.cache_stats().evictions > 0);
  reader.Abort();  // boundary: the new snapshot
  sum = 0;
  for (double x : rv) sum += x;
  CHECK(sum == 64 * 8192 * 2.0);
}

TEST_CASE("T4: conflict: the first commit wins; the second writes nothing; abort sees the winner") {
  TempDir dir;
  auto a = OpenDb(dir / "db");
  REQUIRE(a.Create("x", {4 * 8192}, "f8", Blocks()).ok());
  REQUIRE(a.Commit().ok());
  auto b = OpenDb(dir / "db");
  auto xa = Doubles(a.Get("x").value().view().value());
  auto xb = Doubles(b.Get("x").value().view().value());
  xa[10] = 1.0;
  xb[11] = 2.0;  // same block
  xb[3 * 8192] = 3.0;
  REQUIRE(a.Commit().ok());
  Status st = b.Commit();
  CHECK(st.code() == Code::kConflict);
  CHECK(st.message().find("array 'x' block 0") != std::string::npos);
  CHECK(b.Commit().code() == Code::kFailedPrecondition);  // sticky until abort
  b.Abort();
  CHECK(xb[10] == 1.0);
  CHECK(xb[11] == 0.0);
  CHECK(xb[3 * 8192] == 0.0);  // nothing of the loser was written
  xb[11] = 2.0;
  REQUIRE(b.Commit().ok());
  a.Abort();
  CHECK(xa[11] == 2.0);
  CHECK(xa[10] == 1.0);
}

TEST_CASE("T5: concurrent appends conflict; the loser's shape rolls back to the winner's") {
  TempDir dir;
  auto a = OpenDb(dir / "db");
  REQUIRE(a.Create("g", {4, 3}, "i8", Blocks()).ok());
  REQUIRE(a.Commit().ok());
  auto b = OpenDb(dir / "db");
  auto ga = a.Get("g").value(), gb = b.Get("g").value();
  int64_t rows[6] = {1, 2, 3, 4, 5, 6};
  auto two = View::Wrap(rows, DType::Of<int64_t>(), {2, 3}).value();
  auto one = View::Wrap(rows, DType::Of<int64_t>(), {1, 3}).value();
  REQUIRE(ga.Append(two).ok());
  REQUIRE(gb.Append(one).ok());
  CHECK(gb.shape() == std::vector<int64_t>{5, 3});
  REQUIRE(a.Commit().ok());
  CHECK(b.Commit().code() == Code::kConflict);
  b.Abort();
  CHECK(gb.shape() == std::vector<int64_t>{6, 3});
  CHECK(gb.view().value().at<int64_t>(5, 2) == 6);
  REQUIRE(gb.Resize({2, 3}).ok());
  REQUIRE(ga.Resize({8, 3}).ok());
  REQUIRE(b.Commit().ok());
  CHECK(a.Commit().code() == Code::kConflict);
  a.Abort();
  CHECK(ga.shape() == std::vector<int64_t>{2, 3});
}

TEST_CASE("T6: two handles that modify different blocks of one array both commit") {
  TempDir dir;
  auto a = OpenDb(dir / "db");
  REQUIRE(a.Create("x", {8 * 8192}, "f8", Blocks()).ok());
  REQUIRE(a.Commit().ok());
  auto b = OpenDb(dir / "db");
  Doubles(a.Get("x").value().view().value())[5] = 5;
  Doubles(b.Get("x").value().view().value())[7 * 8192 + 5] = 7;
  REQUIRE(a.Commit().ok());
  REQUIRE(b.Commit().ok());
  auto c = OpenDb(dir / "db");
  auto x = Doubles(c.Get("x").value().view().value());
  CHECK(x[5] == 5);
  CHECK(x[7 * 8192 + 5] == 7);
}

TEST_CASE("T6 across processes: workers write disjoint parts of one array") {
  TempDir dir;
  {
    auto db = OpenDb(dir / "db");
    REQUIRE(db.Create("x", {4 * 8192}, "f8", Blocks()).ok());
    REQUIRE(db.Commit().ok());
  }
  std::vector<pid_t> pids;
  for (int w = 0; w < 4; ++w) {
    pid_t pid = fork();
    if (pid == 0) {
      auto db = Database::Open(dir / "db", SmallCache());
      if (!db.ok()) _exit(2);
      auto x = db->Get("x");
      if (!x.ok()) _exit(3);
      auto part = x->Index({Slice{w * 8192, (w + 1) * 8192, 1}});
      if (!part.ok() || !part->Fill(w + 1).ok()) _exit(4);
      _exit(db->Commit().ok() ? 0 : 5);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  auto db = OpenDb(dir / "db");
  auto x = Doubles(db.Get("x").value().view().value());
  for (int w = 0; w < 4; ++w) {
    CHECK(x[w * 8192] == w + 1);
    CHECK(x[(w + 1) * 8192 - 1] == w + 1);
  }
}

TEST_CASE("T3/T4 across processes: isolation from, and conflict with, another process") {
  TempDir dir;
  auto db = OpenDb(dir / "db");
  REQUIRE(db.Create("x", {8192}, "f8", Blocks()).ok());
  REQUIRE(db.Commit().ok());
  auto x = Doubles(db.Get("x").value().view().value());
  CHECK(x[0] == 0);
  x[1] = 11;  // our uncommitted change of block 0
  int rc = InChild([&] {
    auto other = Database::Open(dir / "db", SmallCache());
    if (!other.ok()) return 2;
    Doubles(other->Get("x").value().view().value())[0] = 42;
    return other->Commit().ok() ? 0 : 3;
  });
  REQUIRE(rc == 0);
  CHECK(x[0] == 0);  // isolation: our snapshot
  CHECK(db.Commit().code() == Code::kConflict);
  db.Abort();
  CHECK(x[0] == 42);
  CHECK(x[1] == 0);
}

TEST_CASE("T7: one commit covers every array changed: all of them or none") {
  TempDir dir;
  auto a = OpenDb(dir / "db");
  REQUIRE(a.Create("p", {8192}, "f8", Blocks()).ok());
  REQUIRE(a.Create("q", {8192}, "f8", Blocks()).ok());
  REQUIRE(a.Commit().ok());
  auto b = OpenDb(dir / "db");
  Doubles(b.Get("p").value().view().value())[0] = 1;
  Doubles(b.Get("q").value().view().value())[0] = 1;
  REQUIRE(b.Create("r", {10}, "f8", Blocks()).ok());
  Doubles(a.Get("q").value().view().value())[1] = 2;  // conflicts with b on q only
  REQUIRE(a.Commit().ok());
  CHECK(b.Commit().code() == Code::kConflict);
  auto c = OpenDb(dir / "db");
  CHECK(Doubles(c.Get("p").value().view().value())[0] == 0);  // p not written either
  CHECK_FALSE(c.Contains("r").value());
  b.Abort();
  Doubles(b.Get("p").value().view().value())[0] = 1;
  Doubles(b.Get("q").value().view().value())[0] = 1;
  REQUIRE(b.Commit().ok());
  c.Abort();
  CHECK(Doubles(c.Get("p").value().view().value())[0] == 1);
  CHECK(Doubles(c.Get("q").value().view().value())[0] == 1);
  CHECK(Doubles(c.Get("q").value().view().value())[1] == 2);
}

TEST_CASE("T8: a transaction larger than the cache commits") {
  TempDir dir;
  const int64_t n = 100 * 8192;  // 100 blocks through an 8-block cache
  {
    auto db = OpenDb(dir / "db", SmallCache(8));
    auto a = db.Create("big", {n}, "f8", Blocks()).value();
    auto d = Doubles(a.view().value());
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<double>(i);
    CHECK(db.cache_stats().spills > 0);
    CHECK(db.cache_stats().resident_bytes <= 8 * kBlock);
    REQUIRE(db.Commit().ok());
    CHECK(db.cache_stats().dirty_blocks == 0);
  }
  auto db = OpenDb(dir / "db", SmallCache(8));
  auto d = Doubles(db.Get("big").value().view().value());
  for (int64_t i = 0; i < n; ++i) REQUIRE(d[i] == static_cast<double>(i));
}

TEST_CASE("a disk too full to spill to: Fill, Assign, Append and Resize return kNoSpace before writing; the process lives") {
  // Regression (issue 13): an Append or Fill larger than the cache on a full disk ended the
  // process with SIGBUS ("a dirty page ... could not be spilled") inside a page fault. The
  // full disk is simulated with RLIMIT_FSIZE (writes past it fail with EFBIG, SIGXFSZ ignored).
  TempDir dir;
  const int64_t n = 64 * 8192;  // 64 blocks through an 8-block cache
  int rc = InChild([&] {
    Options o = SmallCache(8);
    o.spill_dir = dir / "spill";
    if (mkdir(o.spill_dir.c_str(), 0755) != 0) return 10;
    auto opened = Database::Open(dir / "db", o);
    if (!opened.ok()) return 11;
    Database db = std::move(*opened);
    auto x = db.Create("x", {n}, "f8", Blocks()).value();
    if (!db.Commit().ok()) return 12;
    struct rlimit was;
    if (getrlimit(RLIMIT_FSIZE, &was) != 0) return 13;
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit full{1 << 20, was.rlim_max};
    if (setrlimit(RLIMIT_FSIZE, &full) != 0) return 14;
    auto no_space = [&](const Status& st) {
      const bool says = st.code() == Code::kNoSpace && st.message().find("scratch space") != std::string::npos;
      if (!says) std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return says;
    };
    if (!no_space(x.view().value().Fill(1.0))) return 15;
    std::vector<double> values(static_cast<size_t>(n), 2.0);
    const View src = View::Wrap(values.data(), DType::Of<double>(), {n}).value();
    if (!no_space(x.view().value().Assign(src))) return 16;
    if (!no_space(x.Append(src))) return 17;
    if (x.shape() != std::vector<int64_t>{n} || db.cache_stats().dirty_blocks != 0) return 18;
    // What fits in the cache needs no scratch space, full disk or not.
    if (!x.Index({Slice{0, 2 * 8192, 1}}).value().Fill(3.0).ok()) return 19;
    if (!x.Resize({n - 100}).ok()) return 20;
    // With room again, the whole write spills, and commits.
    if (setrlimit(RLIMIT_FSIZE, &was) != 0) return 21;
    if (!x.Append(View::Wrap(values.data(), DType::Of<double>(), {100}).value()).ok()) return 22;
    if (!x.view().value().Fill(4.0).ok() || db.cache_stats().spills == 0) return 23;
    if (!db.Commit().ok()) return 24;
    const auto d = Doubles(x.view().value());
    return d[0] == 4.0 && d[static_cast<size_t>(n) - 1] == 4.0 ? 0 : 25;
  });
  CHECK(rc == 0);
}

TEST_CASE("A4: views of a huge array touch nothing; an array beyond the address space is indexed in parts") {
  auto db = OpenDb("memory:");
  const int64_t n = bigarray::testing::kHugeBytes / 8;  // 1 TiB (less under TSan)
  auto tib = db.Create("tib", {n}, "f8").value();
  auto v = tib.view().value();
  auto part = v.Index({Slice{n / 2, std::nullopt, 1 << 20}}).value();
  CHECK(db.cache_stats().loads == 0);
  CHECK(part.shape()[0] == n / 2 / (1 << 20));

  auto huge = db.Create("huge", {int64_t{1} << 60}, "u1").value();  // 1 EiB: no address space holds it
  auto whole = huge.view();
  CHECK(whole.status().code() == Code::kResourceExhausted);
  CHECK(whole.status().message().find("index a part") != std::string::npos);
  auto deep = huge.Index({Slice{(int64_t{1} << 59) + 5, (int64_t{1} << 59) + 10, 1}}).value();
  deep.at<uint8_t>(0) = 42;
  CHECK(deep.at<uint8_t>(0) == 42);
  CHECK(deep.at<uint8_t>(1) == 0);
  REQUIRE(db.Commit().ok());
  CHECK(huge.Index({int64_t{1} << 59, Slice{}}).status().code() == Code::kOutOfRange);  // 1-d
  auto again = huge.Index({Slice{(int64_t{1} << 59) + 5, (int64_t{1} << 59) + 6, 1}}).value();
  CHECK(again.at<uint8_t>(0) == 42);
}

TEST_CASE("A5: views outlive their handles and survive commit, abort, append and resize") {
  TempDir dir;
  View v;
  {
    auto db = OpenDb(dir / "db");
    auto a = db.Create("a", {4, 8192}, "f8", Blocks()).value();
    v = a.view().value();
    Doubles(v)[0] = 1;
    REQUIRE(db.Commit().ok());
    Doubles(v)[0] = 2;  // uncommitted
    db.Abort();
    CHECK(Doubles(v)[0] == 1);  // committed content after abort

    double row[8192];
    std::fill(std::begin(row), std::end(row), 9.0);
    REQUIRE(a.Append(View::Wrap(row, DType::Of<double>(), {1, 8192}).value()).ok());
    CHECK(v.shape() == std::vector<int64_t>{4, 8192});  // the old view keeps its shape
    CHECK(v.Index({int64_t{4}}).status().code() == Code::kOutOfRange);
    auto nv = a.view().value();
    CHECK(nv.at<double>(4, 100) == 9.0);
    nv.at<double>(0, 1) = 5;
    CHECK(v.at<double>(0, 1) == 5);  // coherent
    REQUIRE(db.Commit().ok());
  }  // database and array handles gone
  CHECK(v.at<double>(0, 1) == 5);
  CHECK(v.at<double>(0, 0) == 1);
}

TEST_CASE("A6: append extends the major axis in C and F order; mismatches change nothing") {
  auto db = OpenDb("memory:");
  auto c = db.Create("c", {2, 3}, "i4", Blocks()).value();
  int32_t rows[6] = {1, 2, 3, 4, 5, 6};
  REQUIRE(c.Append(View::Wrap(rows, DType::Of<int32_t>(), {2, 3}).value()).ok());
  CHECK(c.shape() == std::vector<int64_t>{4, 3});
  CHECK(c.view().value().at<int32_t>(3, 2) == 6);
  CHECK(c.view().value().at<int32_t>(1, 2) == 0);
  CHECK(c.Append(View::Wrap(rows, DType::Of<int32_t>(), {3, 2}).value()).code() == Code::kInvalidArgument);
  CHECK(c.Append(View::Wrap(rows, DType::Of<int32_t>(), {6}).value()).code() == Code::kInvalidArgument);
  float f[3] = {1, 2, 3};
  CHECK(c.Append(View::Wrap(f, DType::Of<float>(), {1, 3}).value()).code() == Code::kInvalidArgument);
  CHECK(c.shape() == std::vector<int64_t>{4, 3});

  auto fo = db.Create("f", {3, 2}, "i4", Blocks(Order::kF)).value();
  // F order: the last axis grows; values given as a (3, 2) block of columns.
  REQUIRE(fo.Append(View::Wrap(rows, DType::Of<int32_t>(), {3, 2}).value()).ok());
  CHECK(fo.shape() == std::vector<int64_t>{3, 4});
  CHECK(fo.view().value().at<int32_t>(0, 2) == 1);
  CHECK(fo.view().value().at<int32_t>(2, 3) == 6);
  CHECK(fo.view().value().at<int32_t>(2, 1) == 0);
  REQUIRE(db.Commit().ok());

  // Cost proportional to the appended data: appending to a large array loads nothing of it.
  auto big = db.Create("big", {int64_t{1} << 30, 2}, "f8").value();  // 16 GiB, never written
  const auto loads = db.cache_stats().loads;
  double two[4] = {1, 2, 3, 4};
  REQUIRE(big.Append(View::Wrap(two, DType::Of<double>(), {2, 2}).value()).ok());
  CHECK(db.cache_stats().loads - loads <= 2);
  CHECK(big.Index({int64_t{-1}, int64_t{1}}).value().at<double>() == 4);
}

TEST_CASE("StoredBlocks lists the committed blocks of an array, reading only the block index") {
  TempDir dir;
  auto db = OpenDb(dir / "db");
  const int64_t per_block = static_cast<int64_t>(kBlock / 8);
  auto a = db.Create("a", {int64_t{1} << 40}, "f8", Blocks()).value();  // 8 TiB, sparse
  a.Index({per_block * 5}).value().at<double>() = 1;
  a.Index({per_block * 3 + 7}).value().at<double>() = 2;
  CHECK(a.StoredBlocks().value().empty());  // changes of the open transaction are not listed
  REQUIRE(db.Commit().ok());
  CHECK(a.StoredBlocks().value() == std::vector<uint64_t>{3, 5});
  CHECK(a.BlocksStored().value() == 2);
}

TEST_CASE("ChangedArrays names what a commit would write: data, shape, name, created, dropped") {
  TempDir dir;
  auto db = OpenDb(dir / "db");
  auto a = db.Create("a", {100000}, "f8", Blocks()).value();
  db.Create("b", {10}, "i4", Blocks()).value();
  db.Create("c", {10}, "i4", Blocks()).value();
  CHECK(db.ChangedArrays().value() == std::vector<std::string>{"a", "b", "c"});
  REQUIRE(db.Commit().ok());
  CHECK(db.ChangedArrays().value().empty());
  CHECK(a.Index({int64_t{5}}).value().at<double>() == 0);  // reading changes nothing
  CHECK(db.ChangedArrays().value().empty());
  a.Index({int64_t{50000}}).value().at<double>() = 1;
  CHECK(db.ChangedArrays().value() == std::vector<std::string>{"a"});
  CHECK(db.ChangedArrays().value() == std::vector<std::string>{"a"});  // the blocks stay dirty
  REQUIRE(db.Rename("b", "b2").ok());
  REQUIRE(db.Drop("c").ok());
  CHECK(db.ChangedArrays().value() == std::vector<std::string>{"a", "b2", "c"});
  REQUIRE(db.Commit().ok());
  CHECK(db.Get("a").value().Index({int64_t{50000}}).value().at<double>() == 1);  // committed in full
  REQUIRE(db.Get("b2").value().Resize({20}).ok());
  CHECK(db.ChangedArrays().value() == std::vector<std::string>{"b2"});
  db.Abort();
  CHECK(db.ChangedArrays().value().empty());
}

TEST_CASE("a read-only handle refuses changes with a clear error; writes through views cannot commit") {
  TempDir dir;
  {
    auto db = OpenDb(dir / "db");
    db.Create("a", {1000}, "f8", Blocks()).value().Index({int64_t{3}}).value().at<double>() = 7;
    REQUIRE(db.Commit().ok());
  }
  Options o = SmallCache();
  o.read_only = true;
  auto db = OpenDb(dir / "db", o);
  auto a = db.Get("a").value();
  CHECK(a.Index({int64_t{3}}).value().at<double>() == 7);
  auto created = db.Create("b", {3}, "f8");
  REQUIRE(!created.ok());
  CHECK(created.status().code() == Code::kFailedPrecondition);
  CHECK(created.status().message().find("create array 'b': " + (dir / "db") + " was opened read-only") !=
        std::string::npos);
  CHECK(db.Drop("a").code() == Code::kFailedPrecondition);
  CHECK(db.Rename("a", "z").code() == Code::kFailedPrecondition);
  CHECK(a.Resize({5}).code() == Code::kFailedPrecondition);
  double one = 1;
  CHECK(a.Append(View::Wrap(&one, DType::Of<double>(), {1}).value()).code() == Code::kFailedPrecondition);
  CHECK(db.Commit().ok());  // nothing changed: a boundary
  a.Index({int64_t{3}}).value().at<double>() = 8;
  Status st = db.Commit();
  CHECK(st.code() == Code::kFailedPrecondition);
  CHECK(st.message().find("read-only") != std::string::npos);
  db.Abort();
  CHECK(a.Index({int64_t{3}}).value().at<double>() == 7);
  // A read-only open never creates a database.
  CHECK(Database::Open(dir / "missing", o).status().code() == Code::kNotFound);
}

TEST_CASE("A7: resize is metadata only; shrinking releases blocks; growing again reads zeros") {
  TempDir dir;
  auto db = OpenDb(dir / "db");
  auto a = db.Create("a", {10 * 8192 + 100}, "f8", Blocks()).value();
  for (auto& x : Doubles(a.view().value())) x = 3;
  REQUIRE(db.Commit().ok());
  CHECK(a.BlocksStored().value() == 11);
  REQUIRE(a.Resize({2 * 8192 + 10}).ok());  // into the middle of block 2
  REQUIRE(a.Resize({10 * 8192}).ok());      // grow again in the same transaction
  auto d = Doubles(a.view().value());
  CHECK(d[2 * 8192 + 9] == 3);
  CHECK(d[2 * 8192 + 10] == 0);  // NumPy's semantics: zeros, not the old data
  CHECK(d[5 * 8192] == 0);
  REQUIRE(db.Commit().ok());
  CHECK(a.BlocksStored().value() == 3);
  REQUIRE(a.Resize({1}).ok());
  REQUIRE(db.Commit().ok());
  CHECK(a.BlocksStored().value() == 1);
  REQUIRE(a.Resize({10 * 8192}).ok());
  REQUIRE(db.Commit().ok());
  d = Doubles(a.view().value());
  CHECK(d[0] == 3);
  CHECK(d[1] == 0);
  CHECK(d[2 * 8192 + 9] == 0);
  // Resize of a huge array is O(1): nothing loads.
  auto big = db.Create("big", {int64_t{1} << 37}, "f8").value();
  REQUIRE(db.Commit().ok());
  const auto loads = db.cache_stats().loads;
  REQUIRE(big.Resize({int64_t{1} << 38}).ok());
  REQUIRE(big.Resize({int64_t{1} << 36}).ok());  // shrinks on a block boundary
  CHECK(db.cache_stats().loads == loads);
  // Resize then abort restores the committed shape.
  db.Abort();
  CHECK(big.shape() == std::vector<int64_t>{int64_t{1} << 37});
}

TEST_CASE("catalog: create, list, rename, drop are transactional") {
  TempDir dir;
  auto db = OpenDb(dir / "db");
  REQUIRE(db.Create("a", {3}, "f8").ok());
  REQUIRE(db.Create("b", {3}, "f8").ok());
  CHECK(db.Create("a", {3}, "f8").status().code() == Code::kAlreadyExists);
  CHECK(db.Create("", {3}, "f8").status().code() == Code::kInvalidArgument);
  REQUIRE(db.Commit().ok());
  REQUIRE(db.Rename("a", "c").ok());
  CHECK(db.Names().value() == std::vector<std::string>{"b", "c"});
  CHECK(db.Get("a").status().code() == Code::kNotFound);
  db.Abort();
  CHECK(db.Names().value() == std::vector<std::string>{"a", "b"});
  REQUIRE(db.Rename("a", "c").ok());
  REQUIRE(db.Drop("b").ok());
  CHECK(db.Rename("c", "c").ok());
  REQUIRE(db.Commit().ok());
  auto other = OpenDb(dir / "db");
  CHECK(other.Names().value() == std::vector<std::string>{"c"});
  auto created = db.Create("tmp", {3}, "f8").value();
  db.Abort();
  CHECK(created.view().status().code() == Code::kNotFound);
  CHECK_FALSE(db.Contains("tmp").value());
  // Dropping an array releases its blocks.
  auto x = db.Create("x", {8192 * 3}, "f8", Blocks()).value();
  REQUIRE(x.view().value().Fill(1).ok());
  REQUIRE(db.Commit().ok());
  CHECK(x.BlocksStored().value() == 3);
  REQUIRE(db.Drop("x").ok());
  REQUIRE(db.Commit().ok());
  auto y = db.Create("x", {8192 * 3}, "f8", Blocks()).value();
  CHECK(Doubles(y.view().value())[0] == 0);
  CHECK(y.BlocksStored().value() == 0);
}

TEST_CASE("array names are 1 to 255 bytes of UTF-8 without NUL; an older name that is not UTF-8 still works") {
  // Regression: names with invalid UTF-8 were accepted and then broke JSON output and Python's
  // str (issue 13); a NUL was refused with the raw NUL in the message.
  TempDir dir;
  auto db = OpenDb(dir / "db");
  auto refused = [&](const std::string& name, const std::string& why) {
    auto r = db.Create(name, {3}, "f8");
    CHECK_MESSAGE(r.status().code() == Code::kInvalidArgument, name);
    CHECK_MESSAGE(r.status().message().find(why) != std::string::npos, r.status().message());
    CHECK(r.status().message().find('\0') == std::string::npos);
  };
  refused("", "must be 1 to 255 bytes, not 0");
  refused(std::string(256, 'n'), "must be 1 to 255 bytes, not 256");
  refused(std::string("a\0b", 3), "'a\\x00b': contains a NUL byte (at byte 1)");
  refused("\xff\xfe", "'\\xff\\xfe': is not valid UTF-8 (at byte 0)");
  refused("ok\xc3", "is not valid UTF-8 (at byte 2)");           // truncated sequence
  refused("\xc0\xaf", "is not valid UTF-8");                     // overlong '/'
  refused("\xed\xa0\x80", "is not valid UTF-8");                 // a UTF-16 surrogate
  refused("\xf4\x90\x80\x80", "is not valid UTF-8");             // past U+10FFFF
  for (const std::string& ok : std::vector<std::string>{"temp\xc3\xa9rature", "\xf0\x9f\x8c\xa1", "tab\there", std::string(255, 'n')}) {
    CHECK_MESSAGE(db.Create(ok, {3}, "f8").ok(), ok);
  }
  REQUIRE(db.Create("x", {3}, "f8").ok());
  CHECK(db.Rename("x", "\xff").code() == Code::kInvalidArgument);
  Doubles(db.Get("x").value().view().value())[1] = 7;
  REQUIRE(db.Commit().ok());
  db = OpenDb(dir / "other");  // release the environment before changing it below
  // A database written before the rule may hold such a name: it is listed, read and renamed.
  bigarray::testing::RenameInCatalog(dir / "db", "x", "old\xff");
  auto old = OpenDb(dir / "db");
  const auto names = old.Names().value();
  CHECK(std::find(names.begin(), names.end(), "old\xff") != names.end());
  CHECK(Doubles(old.Get("old\xff").value().view().value())[1] == 7);
  REQUIRE(old.Rename("old\xff", "fixed").ok());
  REQUIRE(old.Commit().ok());
  CHECK(Doubles(old.Get("fixed").value().view().value())[1] == 7);
}

TEST_CASE("a path with a NUL byte is refused, not cut short at the NUL") {
  // Regression: Open("dir/x\0y") opened (and created) dir/x.
  TempDir dir;
  const std::string bad = dir / std::string("x\0y", 3);
  auto r = Database::Open(bad);
  CHECK(r.status().code() == Code::kInvalidArgument);
  CHECK(r.status().message().find("embedded null byte (at byte") != std::string::npos);
  Options o;
  o.spill_dir = bad;
  CHECK(Database::Open(dir / "db", o).status().code() == Code::kInvalidArgument);
  CHECK(ListHandles(bad).status().code() == Code::kInvalidArgument);
  CHECK(std::filesystem::is_empty(dir.path()));
}

TEST_CASE("changes by another handle reach this one at its next boundary") {
  TempDir dir;
  auto a = OpenDb(dir / "db");
  REQUIRE(a.Create("x", {4 * 8192}, "f8", Blocks()).ok());
  REQUIRE(a.Commit().ok());
  auto b = OpenDb(dir / "db");
  auto xb = b.Get("x").value();
  auto vb = Doubles(xb.view().value());
  CHECK(vb[0] == 0);
  auto xa = a.Get("x").value();
  Doubles(xa.view().value())[0] = 1;
  REQUIRE(xa.Resize({5 * 8192}).ok());
  REQUIRE(a.Rename("x", "y").ok());
  REQUIRE(a.Commit().ok());
  CHECK(vb[0] == 0);
  REQUIRE(b.Commit().ok());  // an empty commit is a boundary too
  CHECK(vb[0] == 1);
  CHECK(xb.shape() == std::vector<int64_t>{5 * 8192});
  CHECK(xb.name() == "y");
}

// A store that runs hooks inside a transaction boundary and fails chosen reads once, to put
// other writers, readers and errors into the windows of Commit and Abort.
class HookStore final : public storage::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  std::function<void()> after_commit;     // runs once, right after the next commit lands
  std::function<void()> before_snapshot;  // runs once, as the next snapshot is opened
  bool fail_open = false;                 // the next OpenSnapshot fails
  // The next this-many reads of array records ("a/...") or scans of names ("n/") fail.
  std::shared_ptr<int> fail_records = std::make_shared<int>(0);
  std::shared_ptr<int> fail_names = std::make_shared<int>(0);
  std::shared_ptr<int> fail_reads = std::make_shared<int>(0);  // block reads

  Result<storage::CommitId> Commit(const storage::WriteBatch& batch) override {
    auto r = base_->Commit(batch);
    if (r.ok() && after_commit) std::exchange(after_commit, nullptr)();
    return r;
  }
  Result<std::shared_ptr<storage::Snapshot>> OpenSnapshot() override {
    if (before_snapshot) std::exchange(before_snapshot, nullptr)();
    if (std::exchange(fail_open, false)) return IOError("injected: open a snapshot");
    return ForwardingStore::OpenSnapshot();
  }

 private:
  class Snap final : public storage::ForwardingSnapshot {
   public:
    Snap(std::shared_ptr<storage::Snapshot> base, std::shared_ptr<int> records, std::shared_ptr<int> names,
         std::shared_ptr<int> reads)
        : ForwardingSnapshot(std::move(base)), records_(std::move(records)), names_(std::move(names)),
          reads_(std::move(reads)) {}
    Status ReadBlock(storage::ArrayId a, storage::BlockIndex i, std::span<std::byte> out) override {
      if (*reads_ > 0 && (*reads_)-- > 0) return IOError("injected: read a block");
      return base_->ReadBlock(a, i, out);
    }
    Result<std::optional<std::string>> GetMeta(std::string_view key) override {
      if (key.starts_with("a/") && *records_ > 0 && (*records_)-- > 0) return IOError("injected: read a record");
      return base_->GetMeta(key);
    }
    Status ForEachMetaFrom(std::string_view prefix, std::string_view from,
                           const std::function<bool(std::string_view, std::string_view)>& fn) override {
      if (prefix == "n/" && *names_ > 0 && (*names_)-- > 0) return IOError("injected: list names");
      return base_->ForEachMetaFrom(prefix, from, fn);
    }

   private:
    std::shared_ptr<int> records_, names_, reads_;
  };
  std::shared_ptr<storage::Snapshot> WrapSnapshot(std::shared_ptr<storage::Snapshot> s) override {
    return std::make_shared<Snap>(std::move(s), fail_records, fail_names, fail_reads);
  }
};

TEST_CASE("a block this handle committed and another changed before its next snapshot is reread") {
  auto base = storage::NewMemoryStore();
  auto store = std::make_shared<HookStore>(base);
  auto a = internal::OpenDatabaseOnStore(store, "a", SmallCache()).value();
  auto b = internal::OpenDatabaseOnStore(base, "b", SmallCache()).value();
  REQUIRE(a.Create("counter", {1}, "i8").ok());
  REQUIRE(a.Commit().ok());
  auto counter = [](Database& db) -> int64_t& {
    return db.Get("counter").value().view().value().Span<int64_t>().value()[0];
  };

  counter(a) += 1;
  store->after_commit = [&] {
    b.Abort();  // b moves to a's commit and increments on top of it
    CHECK(counter(b) == 1);
    counter(b) += 1;
    REQUIRE(b.Commit().ok());
  };
  REQUIRE(a.Commit().ok());
  CHECK(counter(a) == 2);  // not a's own cached 1

  // And so the next increment builds on b's: nothing is lost.
  counter(a) += 1;
  REQUIRE(a.Commit().ok());
  b.Abort();
  CHECK(counter(b) == 3);
}

TEST_CASE("a block of a commit read while the commit ends shows the committed bytes, then and later") {
  auto base = storage::NewMemoryStore();
  auto store = std::make_shared<HookStore>(base);
  auto a = internal::OpenDatabaseOnStore(store, "a", SmallCache(8)).value();
  const int64_t per = kBlock / 8;
  REQUIRE(a.Create("x", {32 * per}, "f8", Blocks()).ok());
  REQUIRE(a.Commit().ok());
  auto d = Doubles(a.Get("x").value().view().value());
  for (int64_t i = 0; i < 32 * per; ++i) d[i] = 1;  // 32 blocks through an 8-block cache: spills
  REQUIRE(a.cache_stats().spills > 0);
  // Another thread reads a spilled block while Commit opens the next snapshot. The read waits
  // for the commit to end (the hook gives it 200 ms to finish early, with the wrong bytes).
  std::thread reader;
  std::atomic<double> seen{-1};
  store->before_snapshot = [&] {
    reader = std::thread([&] { seen = d[0]; });
    for (int i = 0; i < 200 && seen == -1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  REQUIRE(a.Commit().ok());
  reader.join();
  CHECK(seen == 1);
  CHECK(d[0] == 1);
  d[1] = 2;  // a later write to the same block keeps the committed d[0]
  REQUIRE(a.Commit().ok());
  auto b = internal::OpenDatabaseOnStore(base, "b", SmallCache()).value();
  auto w = Doubles(b.Get("x").value().view().value());
  CHECK(w[0] == 1);
  CHECK(w[1] == 2);
}

TEST_CASE("a boundary that cannot read what changed applies none of it; the next applies all") {
  auto base = storage::NewMemoryStore();
  auto store = std::make_shared<HookStore>(base);
  auto a = internal::OpenDatabaseOnStore(store, "a", SmallCache()).value();
  auto b = internal::OpenDatabaseOnStore(base, "b", SmallCache()).value();
  const int64_t per = kBlock / 8;
  REQUIRE(a.Create("x", {per}, "f8", Blocks()).ok());
  REQUIRE(a.Create("y", {per}, "f8", Blocks()).ok());
  REQUIRE(a.Commit().ok());
  auto ax = Doubles(a.Get("x").value().view().value());
  auto ay = Doubles(a.Get("y").value().view().value());
  CHECK(ax[0] + ay[0] == 0);  // both cached
  b.Abort();
  for (const char* n : {"x", "y"}) {
    auto arr = b.Get(n).value();
    REQUIRE(arr.Resize({2 * per}).ok());
    Doubles(arr.view().value())[0] = 1;
  }
  REQUIRE(b.Rename("x", "x2").ok());
  REQUIRE(b.Create("x", {5}, "f8").ok());  // a new array takes the name
  REQUIRE(b.Commit().ok());

  SUBCASE("an array record") { *store->fail_records = 1; }
  SUBCASE("the names") { *store->fail_names = 1; }
  a.Abort();  // fails: a keeps its old snapshot, consistently
  CHECK(ax[0] + ay[0] == 0);
  CHECK(a.Get("x").value().shape() == std::vector<int64_t>{per});
  a.Abort();  // succeeds: everything b did
  CHECK(ax[0] == 1);
  CHECK(ay[0] == 1);
  CHECK(a.Get("x2").value().shape() == std::vector<int64_t>{2 * per});
  CHECK(a.Get("y").value().shape() == std::vector<int64_t>{2 * per});
  CHECK(a.Get("x").value().shape() == std::vector<int64_t>{5});
  REQUIRE(a.Rename("x", "z").ok());  // renames b's new array, not the old one
  Doubles(a.Get("y").value().view().value())[1] = 7;
  REQUIRE(a.Commit().ok());
  auto c = internal::OpenDatabaseOnStore(base, "c", SmallCache()).value();
  CHECK(c.Names().value() == std::vector<std::string>{"x2", "y", "z"});
  CHECK(c.Get("z").value().shape() == std::vector<int64_t>{5});
  auto cy = Doubles(c.Get("y").value().view().value());
  CHECK(cy[0] == 1);
  CHECK(cy[1] == 7);
}

TEST_CASE("a commit that lands but cannot open the next snapshot succeeds; commits wait for Abort") {
  auto base = storage::NewMemoryStore();
  auto store = std::make_shared<HookStore>(base);
  auto a = internal::OpenDatabaseOnStore(store, "a", SmallCache()).value();
  REQUIRE(a.Create("x", {1}, "i8").ok());
  REQUIRE(a.Commit().ok());
  auto value = [](Database& db) { return db.Get("x").value().view().value().Span<int64_t>().value()[0]; };
  a.Get("x").value().view().value().Span<int64_t>().value()[0] = 1;
  store->fail_open = true;
  CHECK(a.Commit().ok());  // it landed: a retry loop must not apply it twice
  auto b = internal::OpenDatabaseOnStore(base, "b", SmallCache()).value();
  CHECK(value(b) == 1);
  Status st = a.Commit();
  CHECK(st.code() == Code::kFailedPrecondition);
  CHECK_MESSAGE(st.message().find("landed, but the next transaction could not begin") != std::string::npos, st.ToString());
  CHECK_MESSAGE(st.message().find("injected: open a snapshot") != std::string::npos, st.ToString());
  store->fail_open = true;
  a.Abort();  // fails again: still stale, commits still refused
  CHECK(a.Commit().code() == Code::kFailedPrecondition);
  a.Abort();
  CHECK(value(a) == 1);
  a.Get("x").value().view().value().Span<int64_t>().value()[0] += 1;
  REQUIRE(a.Commit().ok());
  b.Abort();
  CHECK(value(b) == 2);
}

TEST_CASE("writes through views of an array dropped meanwhile are refused at commit, not lost silently") {
  TempDir dir;
  auto a = OpenDb(dir / "db");
  REQUIRE(a.Create("x", {8192}, "f8", Blocks()).ok());
  REQUIRE(a.Create("y", {8192}, "f8", Blocks()).ok());
  REQUIRE(a.Commit().ok());
  auto vx = a.Get("x").value().view().value();
  SUBCASE("dropped by another handle") {
    auto b = OpenDb(dir / "db");
    REQUIRE(b.Drop("x").ok());
    REQUIRE(b.Commit().ok());
    a.Abort();  // a's next transaction: x is gone
  }
  SUBCASE("dropped by this handle") {
    REQUIRE(a.Drop("x").ok());
    REQUIRE(a.Commit().ok());
  }
  Doubles(vx)[0] = 5;
  Doubles(a.Get("y").value().view().value())[0] = 6;
  Status st = a.Commit();
  CHECK(st.code() == Code::kFailedPrecondition);
  CHECK_MESSAGE(st.message().find("an array that no longer exists (array 'x' when its views were taken") != std::string::npos, st.ToString());
  CHECK(a.Commit().code() == Code::kFailedPrecondition);  // until Abort
  a.Abort();
  CHECK(Doubles(a.Get("y").value().view().value())[0] == 0);
  Doubles(a.Get("y").value().view().value())[0] = 7;
  REQUIRE(a.Commit().ok());
}

TEST_CASE("a shrink that fails to load its new last block changes nothing, and its commit deletes nothing") {
  auto base = storage::NewMemoryStore();
  auto store = std::make_shared<HookStore>(base);
  const int64_t per = kBlock / 8;
  {
    auto w = internal::OpenDatabaseOnStore(base, "w", SmallCache()).value();
    auto x = w.Create("x", {4 * per}, "f8", Blocks()).value();
    for (double& d : Doubles(x.view().value())) d = 1;
    REQUIRE(w.Commit().ok());
  }
  auto a = internal::OpenDatabaseOnStore(store, "a", SmallCache()).value();
  auto x = a.Get("x").value();
  *store->fail_reads = 1;
  Status st = x.Resize({2 * per + per / 2});
  CHECK(st.code() == Code::kIOError);
  CHECK(x.shape() == std::vector<int64_t>{4 * per});
  CHECK(Doubles(x.view().value())[3 * per] == 1);
  REQUIRE(a.Commit().ok());
  auto c = internal::OpenDatabaseOnStore(base, "c", SmallCache()).value();
  auto cx = c.Get("x").value();
  CHECK(cx.shape() == std::vector<int64_t>{4 * per});
  CHECK(Doubles(cx.view().value())[3 * per] == 1);
}

TEST_CASE("many threads write parts of one array through one handle; one commit stores all") {
  TempDir dir;
  auto db = OpenDb(dir / "db", SmallCache(16));
  auto a = db.Create("a", {64, 8192}, "f8", Blocks()).value();
  auto v = a.view().value();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int64_t r = t; r < 64; r += 4) REQUIRE(v.Index({r}).value().Fill(r + 1).ok());
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE(db.Commit().ok());
  auto other = OpenDb(dir / "db");
  auto w = other.Get("a").value().view().value();
  for (int64_t r = 0; r < 64; ++r) {
    CHECK(w.at<double>(r, 0) == r + 1);
    CHECK(w.at<double>(r, 8191) == r + 1);
  }
}

TEST_CASE("Array::Read on several threads while others fault the same blocks in: the same bytes") {
  TempDir dir;
  {
    auto db = OpenDb(dir / "db");
    auto a = db.Create("a", {64, 8192}, "f8", Blocks()).value();  // 8 rows a block, 64 blocks
    auto v = a.view().value();
    for (int64_t r = 0; r < 64; ++r) REQUIRE(v.Index({r}).value().Fill(r + 1).ok());
    REQUIRE(db.Commit().ok());
  }
  auto db = OpenDb(dir / "db", SmallCache(16));  // room for a quarter: evictions meanwhile
  auto a = db.Get("a").value();
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<double> buf(8 * 8192);
      auto out = View::Wrap(buf.data(), DType::Of<double>(), {8, 8192}).value();
      for (int round = 0; round < 3; ++round) {
        for (int64_t b = (t + round) % 8; b < 8; ++b) {
          const int64_t r = b * 8;
          if (t % 2 == 0) {
            if (!a.Read({Slice{r, r + 8, 1}}, out).ok()) ++wrong;
          } else {
            if (!out.Assign(a.Index({Slice{r, r + 8, 1}}).value()).ok()) ++wrong;
          }
          for (int64_t i = 0; i < 8; ++i) {
            if (buf[static_cast<size_t>(i * 8192 + 77)] != static_cast<double>(r + i + 1)) ++wrong;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(wrong == 0);
}

TEST_CASE("two handles on one path in one process, and errors for a bad path") {
  TempDir dir;
  auto a = OpenDb(dir / "db");
  auto b = OpenDb(dir / "db");
  REQUIRE(a.Create("x", {3}, "f8").ok());
  REQUIRE(a.Commit().ok());
  b.Abort();
  CHECK(b.Contains("x").value());
  Options o;
  o.create_if_missing = false;
  CHECK(Database::Open(dir / "nothing", o).status().code() == Code::kNotFound);
}

TEST_CASE("a view used in a forked child fails clearly instead of hanging") {
  auto db = OpenDb("memory:");
  auto v = db.Create("x", {8192}, "f8", Blocks()).value().view().value();
  auto child = bigarray::testing::RunCapturingStderr([&] {
    volatile double x = Doubles(v)[5];  // no loader threads here
    (void)x;
  });
  CHECK(WIFSIGNALED(child.status));
  CHECK(child.err.find("before fork()") != std::string::npos);
}

TEST_CASE("drop and re-create a name in one transaction keeps the name (any array ids)") {
  // Regression: catalog changes were written in the order of the arrays' random ids, so the
  // old array's name deletion could land after the new array's name insertion.
  TempDir dir;
  auto db = OpenDb(dir / "db");
  REQUIRE(db.Create("x", {3}, "f8").ok());
  REQUIRE(db.Commit().ok());
  for (int i = 0; i < 30; ++i) {
    REQUIRE(db.Drop("x").ok());
    auto x = db.Create("x", {4 + i}, "f8").value();
    REQUIRE(x.view().value().Fill(i).ok());
    REQUIRE(db.Commit().ok());
    auto other = OpenDb(dir / "db");
    REQUIRE(other.Contains("x").value());
    auto v = other.Get("x").value().view().value();
    CHECK(v.size() == 4 + i);
    CHECK(v.at<double>(0) == i);
  }
}

TEST_CASE("catalog records are parsed strictly: a damaged number is corruption, never a prefix of it") {
  auto store = storage::NewMemoryStore();
  {
    auto db = internal::OpenDatabaseOnStore(store, "mem", SmallCache()).value();
    db.Create("x", {200000}, "<f8").value();
    REQUIRE(db.Commit().ok());
  }
  std::string key;
  REQUIRE(store->OpenSnapshot().value()->ForEachMeta("a/", [&](std::string_view k, std::string_view) {
    key = std::string(k);
    return false;
  }).ok());
  const std::string bad_records[] = {
      "dtype=<f8;order=C;block_size=2097152;shape=2:0000",  // std::stoll read 2
      "dtype=<f8;order=C;block_size=2097152x;shape=200000",
      "dtype=<f8;order=C;block_size=2097152;shape=-5",
      "dtype=<f8;order=C;block_size=2097152;shape=200000,",
      "dtype=<f8;order=C;block_size= 2097152;shape=200000",
  };
  for (const std::string& record : bad_records) {
    CAPTURE(record);
    storage::WriteBatch b(store->OpenSnapshot().value()->commit_id());
    b.PutMeta(key, record);
    REQUIRE(store->Commit(b).ok());
    auto db = internal::OpenDatabaseOnStore(store, "mem", SmallCache()).value();
    auto a = db.Get("x");
    CHECK(a.status().code() == Code::kCorruption);
    CHECK_MESSAGE(a.status().message().find("malformed array record") != std::string::npos, a.status().ToString());
  }
}

TEST_CASE("a damaged name record is corruption for names(), not a silently missing array") {
  auto store = storage::NewMemoryStore();
  {
    auto db = internal::OpenDatabaseOnStore(store, "mem", SmallCache()).value();
    db.Create("x", {10}, "<f8").value();
    REQUIRE(db.Commit().ok());
  }
  storage::WriteBatch b(store->OpenSnapshot().value()->commit_id());
  b.PutMeta("n/x", "00000000000000:1");
  REQUIRE(store->Commit(b).ok());
  auto db = internal::OpenDatabaseOnStore(store, "mem", SmallCache()).value();
  CHECK(db.Names().status().code() == Code::kCorruption);
  CHECK(db.Get("x").status().code() == Code::kCorruption);
}
