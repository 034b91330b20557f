// Concurrent writers in separate processes (docs/reliability.md): disjoint blocks all commit and
// the result is exact; contended read-modify-write counters retry on Conflict and end equal to
// the number of successful commits (some serial order of them).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "bigarray/database.h"
#include "test_util.h"

using namespace bigarray;
using bigarray::testing::TempDir;

namespace {

constexpr uint64_t kBlock = 64 * 1024;
constexpr int64_t kPerBlock = kBlock / 8;

Options Opts() {
  Options o;
  o.cache_bytes = 16 * kBlock;
  return o;
}

}  // namespace

TEST_CASE("N processes x M commits on disjoint blocks: all commit, exact contents") {
  constexpr int kProcs = 4, kCommits = 10;
  TempDir dir;
  const std::string path = dir / "db";
  {
    auto db = Database::Open(path, Opts()).value();
    db.Create("x", {kProcs * 2 * kPerBlock}, "f8", ArrayOptions{Order::kC, kBlock}).value();
    db.Commit().ThrowIfError();
  }
  int bad = bigarray::testing::RunInChildren(kProcs, [&](int p) {
    auto db = Database::Open(path, Opts()).value();
    for (int c = 1; c <= kCommits; ++c) {
      auto part = db.Get("x").value().Index({Slice{p * 2 * kPerBlock, (p + 1) * 2 * kPerBlock, 1}}).value();
      part.Fill(p * 100 + c).ThrowIfError();
      if (!db.Commit().ok()) return 1;  // disjoint blocks never conflict
    }
    return 0;
  });
  CHECK(bad == 0);
  auto db = Database::Open(path, Opts()).value();
  auto d = db.Get("x").value().view().value().Span<double>().value();
  for (int p = 0; p < kProcs; ++p) {
    for (int64_t i = p * 2 * kPerBlock; i < (p + 1) * 2 * kPerBlock; ++i) REQUIRE(d[i] == p * 100 + kCommits);
  }
}

TEST_CASE("contended read-modify-write: losers retry; the total equals the successful commits") {
  constexpr int kProcs = 4, kIncrements = 25;
  TempDir dir;
  const std::string path = dir / "db";
  {
    auto db = Database::Open(path, Opts()).value();
    db.Create("counter", {2}, "i8").value();
    db.Commit().ThrowIfError();
  }
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  int bad = bigarray::testing::RunInChildren(kProcs, [&](int) {
    close(fds[0]);
    auto db = Database::Open(path, Opts()).value();
    int64_t conflicts = 0;
    for (int n = 0; n < kIncrements;) {
      auto v = db.Get("counter").value().view().value();
      v.at<int64_t>(0) += 1;
      Status st = db.Commit();
      if (st.ok()) {
        ++n;
      } else if (st.code() == Code::kConflict) {
        ++conflicts;
        db.Abort();
      } else {
        return 1;
      }
    }
    if (write(fds[1], &conflicts, sizeof conflicts) != sizeof conflicts) return 2;
    return 0;
  });
  close(fds[1]);
  int64_t conflicts = 0, c;
  while (read(fds[0], &c, sizeof c) == sizeof c) conflicts += c;
  close(fds[0]);
  CHECK(bad == 0);
  auto db = Database::Open(path, Opts()).value();
  CHECK(db.Get("counter").value().view().value().at<int64_t>(0) == kProcs * kIncrements);
  MESSAGE("concurrency_test: " << kProcs * kIncrements << " increments committed, " << conflicts
                               << " conflicts retried");
}

TEST_CASE("two processes writing disjoint halves while reading the whole array never conflict") {
  // Regression: reads racing read-ahead (or each other) made the blocks they read dirty, so
  // each process stored the other's half too and got Conflict on blocks it never wrote.
  constexpr int kBlocks = 64, kCommits = 12;
  constexpr int64_t kHalf = kBlocks / 2 * kPerBlock;
  TempDir dir;
  const std::string path = dir / "db";
  {
    auto db = Database::Open(path, Opts()).value();
    db.Create("x", {2 * kHalf}, "f8", ArrayOptions{Order::kC, kBlock}).value().view().value().Fill(1).ThrowIfError();
    db.Commit().ThrowIfError();
  }
  int bad = bigarray::testing::RunInChildren(2, [&](int p) {
    auto db = Database::Open(path, Opts()).value();
    for (int c = 1; c <= kCommits; ++c) {
      const View view = db.Get("x").value().view().value();
      auto all = view.Span<double>().value();
      std::vector<std::thread> readers;
      std::atomic<bool> sane{true};
      for (int t = 0; t < 2; ++t) {
        readers.emplace_back([&, t] {
          for (size_t i = static_cast<size_t>(t); i < all.size(); i += kPerBlock / 4) {
            if (all[i] <= 0) sane = false;
          }
        });
      }
      for (auto& t : readers) t.join();
      if (!sane) return 2;
      db.Get("x").value().Index({Slice{p * kHalf, (p + 1) * kHalf, 1}}).value().Fill(p * 100 + c).ThrowIfError();
      Status st = db.Commit();
      if (!st.ok()) {
        std::fprintf(stderr, "process %d commit %d: %s\n", p, c, st.ToString().c_str());
        return 1;
      }
    }
    return 0;
  });
  CHECK(bad == 0);
  auto db = Database::Open(path, Opts()).value();
  auto d = db.Get("x").value().view().value().Span<double>().value();
  for (int p = 0; p < 2; ++p) {
    for (int64_t i = p * kHalf; i < (p + 1) * kHalf; ++i) REQUIRE(d[i] == p * 100 + kCommits);
  }
}
