// Database handles in separate processes sharing arrays through one PostgreSQL server
// (docs/distributed.md): isolation, invalidation at the next boundary, conflicts (the later
// commit fails and writes nothing), disjoint blocks that all commit, contended counters that end
// exact, and a client killed with SIGKILL in the middle of a large commit.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "bigarray/database.h"
#include "pg_test_util.h"
#include "test_util.h"

using namespace bigarray;
using bigarray::testing::PgExec;
using bigarray::testing::PgSchema;
using bigarray::testing::WithParam;

namespace {

constexpr uint64_t kBlock = 64 * 1024;
constexpr int64_t kPerBlock = kBlock / 8;

Options Opts() {
  Options o;
  o.cache_bytes = 64 * kBlock;
  return o;
}

// A one-way pipe of single-character messages.
class Channel {
 public:
  Channel() {
    if (pipe(fds_) != 0) throw std::runtime_error("pipe");
  }
  ~Channel() {
    close(fds_[0]);
    close(fds_[1]);
  }
  void Send(char c) const {
    if (write(fds_[1], &c, 1) != 1) throw std::runtime_error("pipe write");
  }
  // The next message; 0 at end of file (every writer gone).
  char Receive() const {
    char c = 0;
    ssize_t n;
    do {
      n = read(fds_[0], &c, 1);
    } while (n < 0 && errno == EINTR);
    return n == 1 ? c : 0;
  }
  // Closes the write end in this process (so that Receive sees the writer's exit as EOF).
  void CloseWriter() {
    close(fds_[1]);
    fds_[1] = -1;
  }

 private:
  int fds_[2];
};

// Forks a child running fn (its return value is the exit code; exceptions exit 99).
pid_t Spawn(const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    int rc = 99;
    try {
      rc = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
    }
    _exit(rc);
  }
  return pid;
}

int Wait(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Database OpenDb(const std::string& uri, Options o = Opts()) {
  auto db = Database::Open(uri, o);
  REQUIRE_MESSAGE(db.ok(), db.status().ToString());
  return std::move(*db);
}

int64_t& At(Database& db, const std::string& name, int64_t i) {
  return db.Get(name).value().view().value().at<int64_t>(i);
}

}  // namespace

TEST_CASE("isolation: another process's commit is invisible until this handle's next boundary") {
  PgSchema schema;
  Channel go, done;
  pid_t child = Spawn([&] {
    if (go.Receive() != 'g') return 2;
    Database b = Database::Open(schema.uri(), Opts()).value();
    At(b, "x", 0) = 7;
    At(b, "x", kPerBlock) = 8;
    b.Create("y", {10}, "i8").value();
    if (!b.Commit().ok()) return 3;
    done.Send('d');
    return 0;
  });
  Database a = OpenDb(schema.uri());
  a.Create("x", {4 * kPerBlock}, "i8", ArrayOptions{Order::kC, kBlock}).value();
  REQUIRE(a.Commit().ok());
  CHECK(At(a, "x", 0) == 0);  // cached now
  const uint64_t before = a.snapshot_commit();
  go.Send('g');
  REQUIRE(done.Receive() == 'd');
  CHECK(Wait(child) == 0);

  CHECK(At(a, "x", 0) == 0);
  CHECK(At(a, "x", kPerBlock) == 0);
  CHECK_FALSE(a.Contains("y").value());
  CHECK(a.snapshot_commit() == before);
  a.Abort();  // the boundary: the cached block is invalidated
  CHECK(a.snapshot_commit() > before);
  CHECK(At(a, "x", 0) == 7);
  CHECK(At(a, "x", kPerBlock) == 8);
  CHECK(a.Contains("y").value());
}

TEST_CASE("conflict: the later of two processes writing one block gets Conflict and writes nothing") {
  PgSchema schema;
  Channel open, ready, commit;
  pid_t child = Spawn([&] {
    if (open.Receive() != 'o') return 2;
    Database b = Database::Open(schema.uri(), Opts()).value();
    At(b, "x", 0) = 111;
    At(b, "x", 2 * kPerBlock) = 112;  // a block nobody else writes: must not land either
    ready.Send('r');
    if (commit.Receive() != 'c') return 3;
    Status st = b.Commit();
    if (st.code() != Code::kConflict) {
      std::fprintf(stderr, "child: expected a conflict, got %s\n", st.ToString().c_str());
      return 4;
    }
    b.Abort();
    if (At(b, "x", 0) != 222 || At(b, "x", 2 * kPerBlock) != 0) return 5;
    // Redone from the new snapshot, it commits.
    At(b, "x", 0) = 333;
    return b.Commit().ok() ? 0 : 6;
  });
  Database a = OpenDb(schema.uri());
  a.Create("x", {4 * kPerBlock}, "i8", ArrayOptions{Order::kC, kBlock}).value();
  REQUIRE(a.Commit().ok());
  open.Send('o');
  REQUIRE(ready.Receive() == 'r');
  At(a, "x", 0) = 222;
  REQUIRE(a.Commit().ok());
  commit.Send('c');
  CHECK(Wait(child) == 0);
  a.Abort();
  CHECK(At(a, "x", 0) == 333);
  CHECK(At(a, "x", 2 * kPerBlock) == 0);
}

TEST_CASE("disjoint blocks: every process's commits land, exactly") {
  constexpr int kProcs = 4, kCommits = 5;
  PgSchema schema;
  {
    Database a = OpenDb(schema.uri());
    a.Create("x", {kProcs * kPerBlock}, "i8", ArrayOptions{Order::kC, kBlock}).value();
    REQUIRE(a.Commit().ok());
  }
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pids.push_back(Spawn([&, p] {
      Database b = Database::Open(schema.uri(), Opts()).value();
      for (int c = 0; c < kCommits; ++c) {
        At(b, "x", p * kPerBlock + c) = p * 1000 + c + 1;
        Status st = b.Commit();
        if (!st.ok()) {
          std::fprintf(stderr, "child %d: %s\n", p, st.ToString().c_str());
          return 2;
        }
      }
      return 0;
    }));
  }
  for (pid_t pid : pids) CHECK(Wait(pid) == 0);
  Database a = OpenDb(schema.uri());
  for (int p = 0; p < kProcs; ++p) {
    for (int c = 0; c < kCommits; ++c) CHECK(At(a, "x", p * kPerBlock + c) == p * 1000 + c + 1);
  }
}

TEST_CASE("contended counter: processes retry on Conflict; no update is lost") {
  constexpr int kProcs = 3, kIncrements = 8;
  PgSchema schema;
  {
    Database a = OpenDb(schema.uri());
    a.Create("counter", {1}, "i8").value();
    REQUIRE(a.Commit().ok());
  }
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pids.push_back(Spawn([&] {
      Database b = Database::Open(schema.uri(), Opts()).value();
      for (int i = 0; i < kIncrements; ++i) {
        for (int attempt = 0;; ++attempt) {
          if (attempt > 200) return 2;
          At(b, "counter", 0) += 1;
          Status st = b.Commit();
          if (st.ok()) break;
          if (st.code() != Code::kConflict) return 3;
          b.Abort();
        }
      }
      return 0;
    }));
  }
  for (pid_t pid : pids) CHECK(Wait(pid) == 0);
  Database a = OpenDb(schema.uri());
  CHECK(At(a, "counter", 0) == kProcs * kIncrements);
}

TEST_CASE("a client killed in the middle of a large commit: nothing of it lands, others carry on") {
  PgSchema schema;
  const std::string child_uri = WithParam(schema.uri(), "application_name=crash_child");
  constexpr uint64_t kBig = 2ull << 20;       // 2 MiB blocks
  constexpr int64_t kBigBlocks = 96;          // 192 MiB in one commit
  Channel start, committing;
  pid_t child = Spawn([&] {
    if (start.Receive() != 's') return 2;
    Options o;
    o.cache_bytes = 256ull << 20;
    Database b = Database::Open(child_uri, o).value();
    Array big = b.Create("big", {kBigBlocks * static_cast<int64_t>(kBig / 8)}, "i8",
                         ArrayOptions{Order::kC, kBig}).value();
    auto data = big.view().value().Span<int64_t>().value();
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<int64_t>(i) + 1;
    At(b, "small", 1) = -1;
    committing.Send('c');
    Status st = b.Commit();
    committing.Send(st.ok() ? 'd' : 'e');
    pause();
    return 0;
  });
  committing.CloseWriter();

  Database a = OpenDb(schema.uri());
  a.Create("small", {kPerBlock}, "i8", ArrayOptions{Order::kC, kBlock}).value();
  At(a, "small", 0) = 5;
  REQUIRE(a.Commit().ok());
  start.Send('s');

  REQUIRE(committing.Receive() == 'c');
  // Wait until the child's transaction is storing blocks, then kill it.
  bool storing = false;
  for (int i = 0; i < 3000 && !storing; ++i) {
    storing = PgExec(schema.base(),
                     "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'crash_child' "
                     "AND backend_xid IS NOT NULL AND query LIKE 'INSERT INTO bigarray_blocks%'") != "0";
    if (!storing) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(child, SIGKILL);
  CHECK(Wait(child) == 128 + SIGKILL);
  REQUIRE_MESSAGE(storing, "the child never started storing blocks");
  const char after = committing.Receive();
  REQUIRE_MESSAGE(after == 0, "the child's commit ended before the kill (" << after << "): make it larger");

  // The other handle carries on: it sees no trace of the killed commit and commits itself.
  a.Abort();
  CHECK_FALSE(a.Contains("big").value());
  CHECK(At(a, "small", 0) == 5);
  CHECK(At(a, "small", 1) == 0);
  At(a, "small", 0) = 6;
  Status st = a.Commit();
  REQUIRE_MESSAGE(st.ok(), st.ToString());

  Database c = OpenDb(schema.uri());
  CHECK(c.Names().value() == std::vector<std::string>{"small"});
  CHECK(At(c, "small", 0) == 6);
  CHECK(schema.Exec("SELECT count(*) FROM bigarray_blocks") == "1");
  CHECK(schema.Exec("SELECT commit_id FROM bigarray_head") == std::to_string(c.snapshot_commit()));
}
