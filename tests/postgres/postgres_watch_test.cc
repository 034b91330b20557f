// Following a growing dataset on the PostgreSQL backend (docs/distributed.md): WaitForCommit
// through LISTEN/NOTIFY, so that followers on any host wake on a commit; a follower process
// sees every appended value in order, a wait times out when nothing is committed, and a
// follower killed while waiting delays nobody.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "bigarray/database.h"
#include "pg_test_util.h"
#include "test_util.h"

using namespace bigarray;
using namespace std::chrono_literals;
using bigarray::testing::PgSchema;

namespace {

Options Relaxed() {
  Options o;
  o.cache_bytes = 8 << 20;
  o.durability = Durability::kRelaxed;
  o.loader_threads = 1;
  return o;
}

void AppendOne(Database& db, int64_t v) {
  auto one = View::Wrap(&v, DType::Of<int64_t>(), {1}).value();
  db.Get("x").value().Append(one).ThrowIfError();
  db.Commit().ThrowIfError();
}

int64_t SinceUs(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("PostgreSQL: WaitForCommit returns at once for an older commit and times out otherwise") {
  PgSchema schema;
  auto db = Database::Open(schema.uri(), Relaxed()).value();
  db.Create("x", {0}, "i8", ArrayOptions{Order::kC, 4096}).value();
  db.Commit().ThrowIfError();
  const uint64_t first = db.snapshot_commit();
  CHECK(db.WaitForCommit(0, 5s).value() == std::optional<uint64_t>(first));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(db.WaitForCommit(first, 200ms).value().has_value());
  CHECK(SinceUs(t0) >= 200'000);
  CHECK(SinceUs(t0) < 5'000'000);
}

TEST_CASE("PostgreSQL: a follower process sees every append in order; another handle's commit wakes a waiter") {
  constexpr int kAppends = 100;
  PgSchema schema;
  const std::string uri = schema.uri();
  uint64_t first = 0;
  {
    auto db = Database::Open(uri, Relaxed()).value();
    db.Create("x", {0}, "i8", ArrayOptions{Order::kC, 4096}).value();
    db.Commit().ThrowIfError();
    first = db.snapshot_commit();
  }
  const pid_t follower = fork();
  REQUIRE(follower >= 0);
  if (follower == 0) {
    int rc = 1;
    try {
      auto db = Database::Open(uri, Relaxed()).value();
      uint64_t after = first;
      int64_t len = 0;
      while (len < kAppends) {
        auto c = db.WaitForCommit(after, 20s).value();
        if (!c) _exit(2);
        db.Abort();
        after = db.snapshot_commit();
        auto d = db.Get("x").value().view().value().Span<const int64_t>().value();
        if (static_cast<int64_t>(d.size()) < len) _exit(3);
        for (size_t i = 0; i < d.size(); ++i) {
          if (d[i] != static_cast<int64_t>(i)) _exit(4);
        }
        len = static_cast<int64_t>(d.size());
      }
      rc = 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "follower: %s\n", e.what());
    }
    _exit(rc);
  }
  // A waiter killed in the middle of its wait holds nothing that others need.
  const pid_t victim = fork();
  REQUIRE(victim >= 0);
  if (victim == 0) {
    auto db = Database::Open(uri, Relaxed()).value();
    (void)db.WaitForCommit(db.snapshot_commit(), 60s);
    _exit(0);
  }
  std::this_thread::sleep_for(200ms);
  REQUIRE(kill(victim, SIGKILL) == 0);
  REQUIRE(waitpid(victim, nullptr, 0) == victim);
  {
    auto db = Database::Open(uri, Relaxed()).value();
    for (int i = 0; i < kAppends; ++i) AppendOne(db, i);
  }
  int status = 0;
  REQUIRE(waitpid(follower, &status, 0) == follower);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  // Commit-to-wakeup across two handles of this process (one connection each way).
  auto waiter = Database::Open(uri, Relaxed()).value();
  auto producer = Database::Open(uri, Relaxed()).value();
  std::vector<int64_t> us;
  for (int i = 0; i < 20; ++i) {
    const uint64_t after = waiter.snapshot_commit();
    std::chrono::steady_clock::time_point t0;
    std::thread t([&] {
      std::this_thread::sleep_for(20ms);
      t0 = std::chrono::steady_clock::now();
      AppendOne(producer, kAppends + i);
    });
    auto c = waiter.WaitForCommit(after, 10s).value();
    const auto woke = std::chrono::steady_clock::now();
    t.join();  // t0 is read after the join: no race with its writer
    REQUIRE(c.has_value());
    us.push_back(std::chrono::duration_cast<std::chrono::microseconds>(woke - t0).count());
    waiter.Abort();
  }
  std::sort(us.begin(), us.end());
  MESSAGE("PostgreSQL commit start to wakeup: p50 " << us[us.size() / 2] << " us, max " << us.back() << " us");
  CHECK(us[us.size() / 2] < 1'000'000);
}
