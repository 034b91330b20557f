// Resource edges (docs/reliability.md): a disk that fills during commit, a cache smaller than one
// block, a reader table that runs out. Clear errors, nothing lost.
#include <doctest/doctest.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>

#include "bigarray/database.h"
#include "bigarray/storage/block_store.h"
#include "test_util.h"

using namespace bigarray;
using bigarray::testing::TempDir;

namespace {
constexpr uint64_t kBlock = 64 * 1024;
}

TEST_CASE("a disk that fills during commit: NoSpace, the last commit intact, abort works") {
  TempDir dir;
  bigarray::testing::SmallTmpfs fs(dir.path(), "6m");
  if (!fs.ok()) {
    // Not root or no mount permission here: fault_injection_test covers ENOSPC by injection.
    MESSAGE("resource_test: " << fs.why() << "; skipped");
    return;
  }
  const std::string path = fs.path() + "/db";
  Options o;
  o.cache_bytes = 256 * kBlock;  // no spill: the disk fills in the commit itself
  {
    auto db = Database::Open(path, o).value();
    auto a = db.Create("x", {16 * 8192}, "f8", ArrayOptions{Order::kC, kBlock}).value();  // 1 MiB
    REQUIRE(a.view().value().Fill(1).ok());
    REQUIRE(db.Commit().ok());
    REQUIRE(a.Resize({128 * 8192}).ok());  // 8 MiB on a 6 MiB disk
    REQUIRE(a.view().value().Fill(2).ok());
    Status st = db.Commit();
    CHECK(st.code() == Code::kNoSpace);
    CHECK(st.message().find(path) != std::string::npos);
    INFO(st.ToString());
    Status again = db.Commit();  // a storage error is not sticky: retrying fails the same way
    CHECK(again.code() == Code::kNoSpace);
    db.Abort();
    auto v = a.view().value();
    CHECK(v.size() == 16 * 8192);
    CHECK(v.at<double>(16 * 8192 - 1) == 1);
    v.at<double>(0) = 3;  // small changes still fit
    CHECK(db.Commit().ok());
  }
  auto db = Database::Open(path, o).value();
  auto v = db.Get("x").value().view().value();
  REQUIRE(v.Load().ok());
  CHECK(v.size() == 16 * 8192);
  CHECK(v.at<double>(0) == 3);
  CHECK(v.at<double>(1) == 1);
}

TEST_CASE("a disk that fills while a commit writes slots of blocks.dat: NoSpace, nothing lost, the space reused") {
  TempDir dir;
  bigarray::testing::SmallTmpfs fs(dir.path(), "7m");
  if (!fs.ok()) {
    MESSAGE("resource_test: " << fs.why() << "; skipped");
    return;
  }
  const std::string path = fs.path() + "/db";
  constexpr int64_t kRows = 262144;  // f8: one full block of 2 MiB, in a slot
  Options o;
  o.cache_bytes = 64 << 20;
  {
    auto db = Database::Open(path, o).value();
    auto a = db.Create("x", {kRows}, "f8").value();
    REQUIRE(a.view().value().Fill(1).ok());
    REQUIRE(db.Commit().ok());
    REQUIRE(a.Resize({4 * kRows}).ok());  // 4 slots: 8 MiB on a 7 MiB disk
    REQUIRE(a.view().value().Fill(2).ok());
    Status st = db.Commit();
    CHECK(st.code() == Code::kNoSpace);
    CHECK_MESSAGE(st.message().find("blocks.dat") != std::string::npos, st.ToString());
    db.Abort();
    auto v = a.view().value();
    REQUIRE(v.Load().ok());
    CHECK(v.size() == kRows);
    CHECK(v.at<double>(kRows - 1) == 1);
    // The slots the failed commit wrote are free still: a commit that needs two of them fits.
    REQUIRE(a.Resize({2 * kRows}).ok());
    REQUIRE(a.view().value().Fill(3).ok());
    Status fits = db.Commit();
    REQUIRE_MESSAGE(fits.ok(), fits.ToString());
  }
  auto db = Database::Open(path, o).value();
  auto v = db.Get("x").value().view().value();
  REQUIRE(v.Load().ok());
  CHECK(v.size() == 2 * kRows);
  CHECK(v.at<double>(0) == 3);
  CHECK(v.at<double>(2 * kRows - 1) == 3);
  std::vector<std::string> damaged;
  REQUIRE(db.VerifyRecords([&](const Status& s) { damaged.push_back(s.ToString()); }).ok());
  CHECK(damaged.empty());
}

TEST_CASE("a cache budget smaller than one block still works (at least 8 blocks are used)") {
  TempDir dir;
  Options o;
  o.cache_bytes = 1000;
  auto db = Database::Open(dir / "db", o).value();
  auto a = db.Create("x", {40 * 8192}, "f8", ArrayOptions{Order::kC, kBlock}).value();
  auto d = a.view().value().Span<double>().value();
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<double>(i);
  CHECK(db.cache_stats().resident_bytes <= 8 * kBlock);
  REQUIRE(db.Commit().ok());
  for (size_t i = 0; i < d.size(); i += 4099) REQUIRE(d[i] == static_cast<double>(i));
}

TEST_CASE("too many open transactions for the reader table: a clear error, the rest unharmed") {
  TempDir dir;
  storage::LmdbOptions lo;
  lo.max_readers = 8;
  auto store = storage::OpenLmdbStore(dir / "db", lo).value();
  std::vector<std::shared_ptr<storage::Snapshot>> open;
  Status st;
  for (int i = 0; i < 64; ++i) {
    auto s = store->OpenSnapshot();
    if (!s.ok()) {
      st = s.status();
      break;
    }
    open.push_back(*s);
  }
  CHECK(st.code() == Code::kResourceExhausted);
  CHECK(st.message().find("too many open transactions") != std::string::npos);
  CHECK(open.size() >= 6);
  std::vector<std::byte> out(4096);
  CHECK(open.front()->ReadBlock(1, 1, out).ok());
  open.pop_back();
  CHECK(store->OpenSnapshot().ok());  // a slot freed is usable again
}

TEST_CASE("no address space to grow the map (ulimit -v): the commit fails with a clear error, the store goes on") {
#ifdef BIGARRAY_TEST_UNDER_SANITIZER
  MESSAGE("not under a sanitizer: its shadow memory takes most of the address space a limit counts");
#else
  // LMDB grows its map by unmapping it and mapping it again; without room for the new size it
  // was left with no map, and the next transaction crashed the process (SIGSEGV in
  // mdb_txn_begin). In a child, as the limit is the whole process's.
  TempDir dir;
  const int exit_code = testing::InChild([&] {
    int failed = 0;
    {
      auto store = storage::OpenLmdbStore(dir / "db", {}).value();  // a map of 64 MiB
      storage::WriteBatch first(store->OpenSnapshot().value()->commit_id());
      first.PutBlock(1, 0, testing::Pattern(kBlock, 1));
      const auto committed = store->Commit(first);
      failed |= !committed.ok();
      const storage::CommitId id = committed.ok() ? *committed : 0;
      storage::WriteBatch big(id);  // 96 MiB: more than the map holds
      const auto bytes = testing::Pattern(1 << 20, 2);
      for (int i = 0; i < 96; ++i) big.PutBlock(2, static_cast<uint64_t>(i), bytes);
      uint64_t vm_kb = 0;
      std::ifstream status("/proc/self/status");
      for (std::string line; std::getline(status, line);) {
        if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stoull(line.substr(7));
      }
      const rlimit limit{(vm_kb << 10) + (32u << 20), RLIM_INFINITY};
      failed |= (vm_kb == 0 || setrlimit(RLIMIT_AS, &limit) != 0) << 1;
      auto refused = store->Commit(big);
      failed |= (refused.ok() || refused.status().code() != Code::kResourceExhausted ||
                 refused.status().message().find("ulimit -v") == std::string::npos) << 2;
      // The store goes on: the last commit reads back, and a small commit lands.
      auto s = store->OpenSnapshot();
      std::vector<std::byte> out(kBlock);
      failed |= (!s.ok() || (*s)->commit_id() != id || !(*s)->ReadBlock(1, 0, out).ok() ||
                 out != testing::Pattern(kBlock, 1)) << 3;
      storage::WriteBatch second(id);
      second.PutBlock(1, 1, testing::Pattern(kBlock, 3));
      auto landed = store->Commit(second);
      failed |= (!landed.ok() || *landed != id + 1) << 4;
    }
    return failed;
  });
  INFO("exit code " << exit_code << " (bits of failed steps, or 128 + a signal)");
  CHECK(exit_code == 0);
#endif
}
