// Following a growing dataset (docs/transactions.md): Database::WaitForCommit across threads and
// processes, the shared commit board (libbigarray/src/commit_board.h) under SIGKILL at random
// moments, and the registry of live handles (ListHandles).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "bigarray/database.h"
#include "bigarray/handles.h"
#include "commit_board.h"
#include "test_util.h"

using namespace bigarray;
using namespace std::chrono_literals;
using bigarray::testing::Eventually;
using bigarray::testing::TempDir;

namespace {

Options Relaxed() {
  Options o;
  o.cache_bytes = 8 << 20;
  o.durability = Durability::kRelaxed;  // a process crash loses nothing; 1,000 commits stay fast
  o.loader_threads = 1;
  return o;
}

constexpr uint64_t kBlock = 4096;

// Creates "x" (int64, shape {0}) and commits; returns the commit.
uint64_t CreateSeries(const std::string& path) {
  auto db = Database::Open(path, Relaxed()).value();
  db.Create("x", {0}, "i8", ArrayOptions{Order::kC, kBlock}).value();
  db.Commit().ThrowIfError();
  return db.snapshot_commit();
}

// Appends the value `v` to "x" and commits.
void AppendOne(Database& db, int64_t v) {
  int64_t value = v;
  auto one = View::Wrap(&value, DType::Of<int64_t>(), {1}).value();
  db.Get("x").value().Append(one).ThrowIfError();
  db.Commit().ThrowIfError();
}

// Removes the board of a test database from /dev/shm at the end of the test (boards live until
// reboot otherwise: docs/transactions.md).
struct BoardCleanup {
  std::string data_file;
  ~BoardCleanup() {
    auto name = internal::CommitBoard::BoardName(data_file);
    if (name.ok()) shm_unlink(("/" + *name).c_str());
  }
};

// A database holding the series CreateSeries makes, in a temporary directory, whose commit
// board is removed at the end.
struct SeriesDb {
  TempDir dir;
  const std::string path = dir / "db";
  BoardCleanup cleanup;  // destroyed before dir
  const uint64_t first = CreateSeries(path);
  SeriesDb() { cleanup.data_file = path + "/data.mdb"; }
};

bool HasPid(const std::vector<HandleInfo>& hs, pid_t pid) {
  for (const auto& h : hs) {
    if (h.pid == pid) return true;
  }
  return false;
}

int64_t ElapsedUs(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

TEST_CASE("WaitForCommit: at once when a newer commit exists, nullopt on timeout") {
  SeriesDb series;
  const std::string& path = series.path;
  const uint64_t first = series.first;
  auto db = Database::Open(path, Relaxed()).value();
  CHECK(db.snapshot_commit() == first);
  // A commit exists after 0: returned without waiting.
  auto r = db.WaitForCommit(0, 10s).value();
  REQUIRE(r.has_value());
  CHECK(*r == first);
  // Nothing newer: the timeout, waited out and not much more.
  const auto t0 = std::chrono::steady_clock::now();
  auto none = db.WaitForCommit(first, 150ms).value();
  const int64_t us = ElapsedUs(t0);
  CHECK_FALSE(none.has_value());
  CHECK(us >= 150'000);
  CHECK(us < 2'000'000);
  // A zero timeout is a check.
  CHECK_FALSE(db.WaitForCommit(first, 0ns).value().has_value());
}

TEST_CASE("WaitForCommit wakes when another handle of this process commits; ArraysChangedSince names it") {
  SeriesDb series;
  const std::string& path = series.path;
  const uint64_t first = series.first;
  auto follower = Database::Open(path, Relaxed()).value();
  std::atomic<bool> waiting{false};
  std::optional<uint64_t> seen;
  int64_t waited_us = 0;
  std::thread t([&] {
    waiting = true;
    const auto t0 = std::chrono::steady_clock::now();
    seen = follower.WaitForCommit(first, 20s).value();
    waited_us = ElapsedUs(t0);
  });
  while (!waiting) std::this_thread::yield();
  std::this_thread::sleep_for(50ms);
  auto producer = Database::Open(path, Relaxed()).value();
  AppendOne(producer, 7);
  t.join();
  REQUIRE(seen.has_value());
  CHECK(*seen == producer.snapshot_commit());
  CHECK(waited_us < 10'000'000);  // woken, not timed out
  follower.Abort();                // the boundary: now it reads the new commit
  CHECK(follower.snapshot_commit() == *seen);
  CHECK(follower.Get("x").value().shape() == std::vector<int64_t>{1});
  CHECK(follower.ArraysChangedSince(first).value() == std::vector<std::string>{"x"});
  CHECK(follower.ArraysChangedSince(*seen).value().empty());
}

TEST_CASE("1 producer x 1,000 appends, 3 follower processes: each sees every value in order and the last commit") {
  constexpr int kAppends = 1000, kFollowers = 3;
  SeriesDb series;
  const std::string& path = series.path;
  const uint64_t first = series.first;
  // Followers first (they also work when they start late: the store is checked before sleeping).
  std::vector<pid_t> followers;
  for (int f = 0; f < kFollowers; ++f) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int rc = 1;
      try {
        auto db = Database::Open(path, Relaxed()).value();
        uint64_t after = first;
        int64_t len = 0, wakeups = 0;
        while (len < kAppends) {
          auto c = db.WaitForCommit(after, 20s).value();
          if (!c) {
            std::fprintf(stderr, "follower %d: no commit after %llu within 20 s (len %lld)\n", f,
                         static_cast<unsigned long long>(after), static_cast<long long>(len));
            _exit(2);
          }
          ++wakeups;
          db.Abort();
          if (db.snapshot_commit() < *c) _exit(3);  // the boundary reaches at least the commit seen
          after = db.snapshot_commit();
          auto x = db.Get("x").value();
          auto d = x.view().value().Span<const int64_t>().value();
          if (static_cast<int64_t>(d.size()) < len) _exit(4);  // never goes back
          for (int64_t i = 0; i < static_cast<int64_t>(d.size()); ++i) {
            if (d[static_cast<size_t>(i)] != i) _exit(5);  // every commit's value, in order
          }
          len = static_cast<int64_t>(d.size());
        }
        rc = len == kAppends && wakeups >= 1 ? 0 : 6;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "follower %d: %s\n", f, e.what());
      }
      _exit(rc);
    }
    followers.push_back(pid);
  }
  const auto t0 = std::chrono::steady_clock::now();
  {
    auto db = Database::Open(path, Relaxed()).value();
    for (int i = 0; i < kAppends; ++i) AppendOne(db, i);
  }
  const int64_t produce_us = ElapsedUs(t0);
  for (pid_t pid : followers) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  MESSAGE("1,000 appends took " << produce_us / 1000 << " ms; all followers done after " << ElapsedUs(t0) / 1000
                                << " ms");
  // Every follower's handle is gone from the registry.
  auto report = ListHandles(path).value();
  for (pid_t pid : followers) CHECK_FALSE(HasPid(report.handles, pid));
}

TEST_CASE("a follower SIGKILLed while waiting does not delay the others, and leaves the registry") {
  SeriesDb series;
  const std::string& path = series.path;
  const uint64_t first = series.first;
  // A pipe per waiter tells the parent how long its wait took after the commit.
  auto spawn_waiter = [&](int fd) {
    const pid_t pid = fork();
    if (pid != 0) return pid;
    auto db = Database::Open(path, Relaxed()).value();
    auto c = db.WaitForCommit(first, 20s).value();
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    if (fd >= 0 && write(fd, &now, sizeof now) != sizeof now) _exit(2);
    _exit(c ? 0 : 1);
  };
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const pid_t victim = spawn_waiter(-1);
  const pid_t survivor = spawn_waiter(fds[1]);
  REQUIRE(victim > 0);
  REQUIRE(survivor > 0);
  close(fds[1]);
  // Both are registered (they are waiting, or about to).
  CHECK(Eventually([&] {
    auto hs = ListHandles(path).value().handles;
    return HasPid(hs, victim) && HasPid(hs, survivor);
  }));
  std::this_thread::sleep_for(50ms);
  REQUIRE(kill(victim, SIGKILL) == 0);
  int status = 0;
  REQUIRE(waitpid(victim, &status, 0) == victim);
  CHECK(WIFSIGNALED(status));
  // Its slot is detected dead: gone from the list, not left stale.
  CHECK_FALSE(HasPid(ListHandles(path).value().handles, victim));
  const auto committed = std::chrono::steady_clock::now().time_since_epoch().count();
  {
    auto db = Database::Open(path, Relaxed()).value();
    AppendOne(db, 0);
  }
  std::remove_const_t<decltype(committed)> woke = 0;
  REQUIRE(read(fds[0], &woke, sizeof woke) == sizeof woke);
  close(fds[0]);
  REQUIRE(waitpid(survivor, &status, 0) == survivor);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const double ms = static_cast<double>(woke - committed) / 1e6;
  MESSAGE("the surviving follower woke " << ms << " ms after the commit began");
  CHECK(ms < 1000);  // woken by the commit, not by its 20 s timeout
}

TEST_CASE("a producer SIGKILLed at random moments mid-commit: waiters time out, the registry is clean") {
  const uint64_t seed = bigarray::testing::TestSeed("producer SIGKILL");
  std::mt19937_64 rng(seed);
  TempDir dir;
  const std::string path = dir / "db";
  BoardCleanup cleanup_board;
  CreateSeries(path);
  cleanup_board.data_file = path + "/data.mdb";
  for (int round = 0; round < 6; ++round) {
    const pid_t producer = fork();
    REQUIRE(producer >= 0);
    if (producer == 0) {
      auto db = Database::Open(path, Relaxed()).value();
      for (int64_t i = 0;; ++i) AppendOne(db, i);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(2000 + rng() % 40000));
    REQUIRE(kill(producer, SIGKILL) == 0);
    int status = 0;
    REQUIRE(waitpid(producer, &status, 0) == producer);
    REQUIRE(WIFSIGNALED(status));
    // The database is intact and readable; nothing newer comes, so a waiter times out.
    auto db = Database::Open(path, Relaxed()).value();
    const uint64_t latest = db.snapshot_commit();
    auto x = db.Get("x").value();
    auto d = x.view().value().Span<const int64_t>().value();
    for (size_t i = 0; i < d.size(); ++i) REQUIRE(d[i] == static_cast<int64_t>(i));
    const auto t0 = std::chrono::steady_clock::now();
    auto r = db.WaitForCommit(latest, 100ms).value();
    CHECK_FALSE(r.has_value());
    CHECK(ElapsedUs(t0) >= 100'000);
    CHECK_FALSE(HasPid(ListHandles(path).value().handles, producer));
    // The next round appends from where this one stopped: start the series over.
    x.Resize({0}).ThrowIfError();
    db.Commit().ThrowIfError();
  }
}

TEST_CASE("the registry: pid, process name, snapshot and since, cache figures; LMDB's reader table agrees") {
  SeriesDb series;
  const std::string& path = series.path;
  const uint64_t first = series.first;
  auto db = Database::Open(path, Relaxed()).value();
  auto report = ListHandles(path).value();
  const HandleInfo* me = nullptr;
  for (const auto& h : report.handles) {
    if (h.pid == getpid()) me = &h;
  }
  REQUIRE(me != nullptr);
  CHECK(me->snapshot_commit == first);
  CHECK(me->process == "watch_test");
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  CHECK(me->since_ns <= now_ns);
  CHECK(me->since_ns > now_ns - int64_t{60} * 1'000'000'000);
  // LMDB's reader table lists this process reading the same commit.
  REQUIRE(report.readers_complete);
  bool reader = false;
  for (const auto& r : report.readers) reader |= r.pid == getpid() && r.snapshot_commit == first;
  CHECK(reader);

  // Dirty bytes and the new snapshot show after the next boundary.
  AppendOne(db, 1);  // commits: a boundary
  auto x = db.Get("x").value();
  x.view().value().Fill(5).ThrowIfError();
  db.Commit().ThrowIfError();  // W1: the written block stays resident
  auto mine_now = [&] {
    report = ListHandles(path).value();
    for (const auto& h : report.handles) {
      if (h.pid == getpid()) return h;
    }
    FAIL("this process's handle is not listed");
    return HandleInfo{};
  };
  HandleInfo after_commit = mine_now();
  CHECK(after_commit.snapshot_commit == db.snapshot_commit());
  CHECK(after_commit.snapshot_commit > first);
  CHECK(after_commit.cache_bytes >= kBlock);
  CHECK(after_commit.faults > 0);
  CHECK(after_commit.dirty_bytes == 0);
  int64_t v = 9;
  x.Append(View::Wrap(&v, DType::Of<int64_t>(), {1}).value()).ThrowIfError();
  x.view().value().Fill(6).ThrowIfError();
  CHECK(db.cache_stats().dirty_blocks > 0);
  db.Abort();
  HandleInfo after_abort = mine_now();
  CHECK(after_abort.snapshot_commit == db.snapshot_commit());
  CHECK(after_abort.dirty_bytes == 0);  // dropped
  CHECK(after_abort.since_ns == after_commit.since_ns);  // same snapshot: since is kept

  // A handle in another process shows up, then disappears when the process is killed.
  int go[2];
  REQUIRE(pipe(go) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    close(go[0]);
    auto other = Database::Open(path, Relaxed()).value();
    char c = 1;
    if (write(go[1], &c, 1) != 1) _exit(2);
    pause();
    _exit(0);
  }
  close(go[1]);
  char c = 0;
  REQUIRE(read(go[0], &c, 1) == 1);
  close(go[0]);
  CHECK(HasPid(ListHandles(path).value().handles, child));
  REQUIRE(kill(child, SIGKILL) == 0);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  report = ListHandles(path).value();
  CHECK_FALSE(HasPid(report.handles, child));
  for (const auto& r : report.readers) CHECK(r.pid != child);  // LMDB cleared the dead reader too
  // Closing a handle releases its slot.
  { auto tmp = Database::Open(path, Relaxed()).value(); }
  size_t mine = 0;
  report = ListHandles(path).value();
  for (const auto& h : report.handles) mine += h.pid == getpid();
  CHECK(mine == 1);
}

TEST_CASE("ListHandles of no database, and of databases that keep no registry") {
  TempDir dir;
  CHECK(ListHandles(dir / "nothing").status().code() == Code::kNotFound);
  CHECK(ListHandles("memory:").status().code() == Code::kUnsupported);
  CHECK(ListHandles("postgresql:///x").status().code() == Code::kUnsupported);
}

TEST_CASE("the board survives processes SIGKILLed at random instants while they register, publish and leave") {
  const uint64_t seed = bigarray::testing::TestSeed("board SIGKILL");
  std::mt19937_64 rng(seed);
  TempDir dir;
  const std::string file = dir / "data";
  {
    FILE* f = std::fopen(file.c_str(), "w");
    REQUIRE(f != nullptr);
    std::fclose(f);
  }
  BoardCleanup cleanup_board{file};
  auto board = internal::CommitBoard::OpenForFile(file, true).value();
  auto keeper = board->Register(board, 0).value();  // keeps the segment linked throughout
  for (int round = 0; round < 20; ++round) {
    std::vector<pid_t> pids;
    for (int k = 0; k < 3; ++k) {
      const pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        auto b = internal::CommitBoard::OpenForFile(file, true).value();
        for (uint64_t i = 1;; ++i) {
          auto h = b->Register(b, i).value();
          h->Update(i, i, i, i);
          b->Publish(i);
        }
      }
      pids.push_back(pid);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 5000));
    for (pid_t pid : pids) REQUIRE(kill(pid, SIGKILL) == 0);
    for (pid_t pid : pids) {
      int status = 0;
      REQUIRE(waitpid(pid, &status, 0) == pid);
    }
    // No slot of the dead remains; the board still registers and wakes.
    auto named = internal::CommitBoard::OpenForFile(file, false).value();
    for (const auto& h : named->Live()) CHECK(h.pid == getpid());
    auto mine = board->Register(board, 1).value();
    const uint32_t seen = board->sequence();
    board->Publish(board->latest() + 1);
    CHECK(board->sequence() != seen);
    CHECK(board->Sleep(seen, 1s).value());  // the word changed: returns at once
  }
  // All slots can be claimed again: the dead left none held.
  std::vector<std::unique_ptr<internal::CommitBoard::Handle>> all;
  for (size_t i = 1; i < internal::kBoardSlots; ++i) all.push_back(board->Register(board, 0).value());
  CHECK(board->Register(board, 0).status().code() == Code::kResourceExhausted);
  CHECK(board->Live().size() == internal::kBoardSlots);
  all.clear();
  CHECK(board->Live().size() == 1);
  keeper.reset();  // the last handle leaves: the name is removed
  CHECK(internal::CommitBoard::OpenForFile(file, false).status().code() == Code::kNotFound);
}

TEST_CASE("the last handle to leave removes the board; joiners racing with leavers always land in the named one") {
  TempDir dir;
  const std::string path = dir / "db";
  BoardCleanup cleanup_board;
  CreateSeries(path);
  cleanup_board.data_file = path + "/data.mdb";
  const std::string file = path + "/data.mdb";
  // Nobody holds the database: no board.
  CHECK(internal::CommitBoard::OpenForFile(file, false).status().code() == Code::kNotFound);
  {
    auto a = Database::Open(path, Relaxed()).value();
    {
      auto b = Database::Open(path, Relaxed()).value();
      CHECK(ListHandles(path).value().handles.size() == 2);
    }
    CHECK(ListHandles(path).value().handles.size() == 1);  // b left, a keeps the board
    CHECK(internal::CommitBoard::OpenForFile(file, false).ok());
  }
  CHECK(internal::CommitBoard::OpenForFile(file, false).status().code() == Code::kNotFound);
  // Four processes join and leave as fast as they can; while a handle is registered, the name
  // must lead to the segment that holds it (else its commits would wake nobody).
  const int bad = bigarray::testing::RunInChildren(4, [&](int) {
    for (int i = 0; i < 300; ++i) {
      auto h = internal::CommitBoard::Join(file, 0);
      if (!h.ok()) {
        std::fprintf(stderr, "join %d: %s\n", i, h.status().ToString().c_str());
        return 1;
      }
      auto named = internal::CommitBoard::OpenForFile(file, false);
      if (!named.ok()) {
        std::fprintf(stderr, "open %d: %s\n", i, named.status().ToString().c_str());
        return 1;
      }
      if (!HasPid((*named)->Live(), getpid())) {
        std::fprintf(stderr, "join %d: this handle is not in the named segment\n", i);
        return 1;
      }
    }
    return 0;
  });
  CHECK(bad == 0);
  CHECK(internal::CommitBoard::OpenForFile(file, false).status().code() == Code::kNotFound);
}

TEST_CASE("ProcessStartTime tells this process, and nothing for a pid that is gone") {
  CHECK(internal::ProcessStartTime(getpid()).has_value());
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) _exit(0);
  // Exited but not reaped (a zombie): already gone.
  for (int i = 0; i < 500 && internal::ProcessStartTime(child).has_value(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  CHECK_FALSE(internal::ProcessStartTime(child).has_value());
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK_FALSE(internal::ProcessStartTime(child).has_value());
}
