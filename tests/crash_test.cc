// Crash consistency (docs/reliability.md): a child process runs a seeded workload of durable
// commits — three arrays changed together, grown by append or resize, shrunk, each commit larger
// than the cache — and the parent kills it with SIGKILL at random moments. After every kill the
// parent reopens the database and checks that every block's checksum holds, that all arrays are
// exactly at one committed generation (the same one: cross-array atomicity), and that no
// acknowledged commit was lost. Seed: $BIGARRAY_SEED; kills: $BIGARRAY_CRASH_KILLS (default 60).
// The second case kills compactions (bigarray compact) the same way.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "bigarray/database.h"
#include "bigarray/storage/lmdb_space.h"
#include "test_util.h"

using namespace bigarray;
using bigarray::testing::TempDir;

namespace {

constexpr int kArrays = 4;
constexpr int64_t kCols = 16;
constexpr uint64_t kBlock = 64 * 1024;
// The last array has blocks of 2 MiB, most of them full: those live in slots of blocks.dat
// (docs/format.md), which its commits take, free and reuse.
constexpr int kSlotted = kArrays - 1;
uint64_t BlockOf(int j) { return j == kSlotted ? uint64_t{2} << 20 : kBlock; }

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

// The rows of array j at generation g (g >= 1): up to 6000 x 16 x 8 bytes = 750 KiB; the slotted
// array 9,000 to 41,000 rows (1.1 to 5 MiB: 1 to 3 blocks).
int64_t Rows(uint64_t seed, uint64_t g, int j) {
  const uint64_t r = Mix(seed ^ (g * 131 + j));
  return j == kSlotted ? 9000 + static_cast<int64_t>(r % 32000) : 1 + static_cast<int64_t>(r % 6000);
}
int64_t Value(uint64_t g, int j, int64_t flat) { return static_cast<int64_t>(g) * 1000003 + j * 7919 + flat; }

std::string Name(int j) { return "a" + std::to_string(j); }

// The child: commits generation after generation, acknowledging each on `ack_fd`.
[[noreturn]] void Workload(const std::string& path, uint64_t seed, int ack_fd) {
  Options o;
  o.cache_bytes = 4 << 20;  // each commit (up to ~7 MiB) spills
  auto db = Database::Open(path, o);
  if (!db.ok()) _exit(10);
  uint64_t g = 0;
  if (db->Contains(Name(0)).value()) g = static_cast<uint64_t>(db->Get(Name(0)).value().view().value().at<int64_t>(0, 0) / 1000003);
  std::mt19937_64 rng(seed ^ g);
  for (;;) {
    const uint64_t next = g + 1;
    for (int j = 0; j < kArrays; ++j) {
      const int64_t rows = Rows(seed, next, j);
      Array a = db->Contains(Name(j)).value()
                    ? db->Get(Name(j)).value()
                    : db->Create(Name(j), {rows, kCols}, "i8", ArrayOptions{Order::kC, BlockOf(j)}).value();
      const int64_t old_rows = a.shape()[0];
      if (rows > old_rows && rng() % 2) {  // grow by appending the new rows
        std::vector<int64_t> tail((rows - old_rows) * kCols);
        for (size_t i = 0; i < tail.size(); ++i) tail[i] = Value(next, j, old_rows * kCols + static_cast<int64_t>(i));
        if (!a.Append(View::Wrap(tail.data(), DType::Of<int64_t>(), {rows - old_rows, kCols}).value()).ok()) _exit(11);
      } else if (!a.Resize({rows, kCols}).ok()) {
        _exit(12);
      }
      auto d = a.view().value().Span<int64_t>().value();
      for (size_t i = 0; i < d.size(); ++i) d[i] = Value(next, j, static_cast<int64_t>(i));
    }
    if (!db->Commit().ok()) _exit(13);
    g = next;
    if (write(ack_fd, &g, sizeof g) != sizeof g) _exit(14);
  }
}

// Checks the database holds exactly generation g for every array; returns g (0: empty).
uint64_t Verify(const std::string& path, uint64_t seed) {
  auto db = Database::Open(path, Options{});
  REQUIRE_MESSAGE(db.ok(), db.status().ToString());
  if (!db->Contains(Name(0)).value()) {
    CHECK(db->Names().value().empty());
    return 0;
  }
  const uint64_t g = static_cast<uint64_t>(db->Get(Name(0)).value().view().value().at<int64_t>(0, 0) / 1000003);
  CHECK(db->Names().value().size() == kArrays);
  for (int j = 0; j < kArrays; ++j) {
    auto a = db->Get(Name(j)).value();
    const std::vector<int64_t> want{Rows(seed, g, j), kCols};
    REQUIRE_MESSAGE(a.shape() == want, "array " << j << " generation " << g);
    auto v = a.view().value();
    Status st = v.Load();  // every block's checksum
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    auto d = v.Span<int64_t>().value();
    for (size_t i = 0; i < d.size(); ++i) {
      if (d[i] != Value(g, j, static_cast<int64_t>(i))) {
        FAIL("array " << j << " element " << i << " is " << d[i] << ", generation " << g << " wants "
                      << Value(g, j, static_cast<int64_t>(i)));
      }
    }
    CHECK(a.BlocksStored().value() <= (static_cast<uint64_t>(a.nbytes()) + BlockOf(j) - 1) / BlockOf(j));
  }
  // No slot of blocks.dat named twice, or named and free: a commit killed after it wrote its
  // payloads left them in slots no committed state uses.
  std::vector<std::string> damaged;
  REQUIRE(db->VerifyRecords([&](const Status& s) { damaged.push_back(s.ToString()); }).ok());
  CHECK_MESSAGE(damaged.empty(), damaged.front());
  // Nor does a killed commit leak slots: at most the 3 in use, and those of the 2 commits that
  // may be pinned or not yet reclaimed (no snapshot of a dead process holds any).
  const SpaceReport space = db->Space().value();
  REQUIRE(space.file);
  CHECK(space.file->slots >= 1);  // the slotted array's first block is in one
  CHECK(space.file->slots <= 9);
  return g;
}

}  // namespace

TEST_CASE("crash consistency: SIGKILL at random moments loses no acknowledged commit") {
  const uint64_t seed = bigarray::testing::TestSeed("crash_test");
  const char* env = std::getenv("BIGARRAY_CRASH_KILLS");
  const int kills = env ? std::atoi(env) : 60;
  TempDir dir;
  const std::string path = dir / "db";
  std::mt19937_64 rng(seed);
  uint64_t acked = 0, committed = 0;
  int landed_unacknowledged = 0;
  int stalls = 0;  // kills in a row that found no new generation
  for (int k = 0; k < kills; ++k) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      Workload(path, seed, fds[1]);
    }
    close(fds[1]);
    // Random instants within a window that widens while no commit lands (a loaded machine
    // runs the workload slower), so that the kills also reach commits in progress.
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % (120 << std::min(stalls, 4))));
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    REQUIRE_MESSAGE(WIFSIGNALED(status), "the workload exited by itself with " << WEXITSTATUS(status));
    uint64_t g;
    while (read(fds[0], &g, sizeof g) == sizeof g) acked = std::max(acked, g);
    close(fds[0]);
    const uint64_t before = committed;
    committed = Verify(path, seed);
    INFO("kill " << k << ": acknowledged " << acked << ", found generation " << committed);
    CHECK(committed >= acked);         // durable: nothing acknowledged is lost
    // At most the commit in flight landed: one past what was acknowledged, or past what the last
    // check found (a child killed after its commit landed but before it acknowledged it leaves
    // the next child starting from a generation never acknowledged).
    CHECK(committed <= std::max(acked, before) + 1);
    CHECK(committed >= before);
    if (committed > std::max(acked, before)) ++landed_unacknowledged;  // killed between commit and ack
    stalls = committed > before ? 0 : stalls + 1;
  }
  MESSAGE("crash_test: " << kills << " kills survived, " << committed << " generations committed, "
                         << landed_unacknowledged << " commits landed just before their kill");
  CHECK(committed > 0);
}

// ---- compaction ------------------------------------------------------------------------------
//
// A child compacts the database and is killed at a random moment (or, for the first rounds, at
// the start of each step in turn); the parent checks that the database opens with exactly the
// content and commit id it had: data.mdb is the old file or the compacted one, never a mix.
// Between kills the parent commits a round of changes (a rewritten array, a dropped one), so
// that every compaction has space to give back. Kills: $BIGARRAY_CRASH_COMPACT_KILLS (default 40).

namespace {

constexpr int64_t kCompactRows = 8192;  // x 16 x 8 bytes = 1 MiB per array

int64_t CompactValue(uint64_t round, int j, int64_t flat) { return static_cast<int64_t>(round) * 7777 + j * 31 + flat; }

// Commits round `round`: arrays k0 and k1 keep round 0's values, "churn" gets this round's,
// "junk" is written then dropped. Returns the commit id.
uint64_t CommitRound(const std::string& path, uint64_t round) {
  Options o;
  o.durability = Durability::kRelaxed;  // this process is not killed: no fsync needed (faster under load)
  auto db = Database::Open(path, o).value();
  for (int j = 0; j < 3; ++j) {
    const std::string name = j < 2 ? "k" + std::to_string(j) : "churn";
    if (j < 2 && db.Contains(name).value()) continue;
    Array a = db.Contains(name).value() ? db.Get(name).value() : db.Create(name, {kCompactRows, kCols}, "i8").value();
    auto d = a.view().value().Span<int64_t>().value();
    for (size_t i = 0; i < d.size(); ++i) d[i] = CompactValue(j < 2 ? 0 : round, j, static_cast<int64_t>(i));
  }
  auto junk = db.Create("junk", {kCompactRows, kCols}, "i8").value();
  REQUIRE(junk.view().value().Fill(static_cast<double>(round + 1)).ok());
  REQUIRE(db.Commit().ok());
  REQUIRE(db.Drop("junk").ok());
  REQUIRE(db.Commit().ok());
  return db.snapshot_commit();
}

// Whether `path` holds exactly round `round` at commit `commit`.
void CheckRound(const std::string& path, uint64_t round, uint64_t commit) {
  auto db = Database::Open(path, Options{});
  REQUIRE_MESSAGE(db.ok(), db.status().ToString());
  CHECK(db->snapshot_commit() == commit);
  CHECK(db->Names().value() == std::vector<std::string>{"churn", "k0", "k1"});
  for (int j = 0; j < 3; ++j) {
    auto a = db->Get(j < 2 ? "k" + std::to_string(j) : "churn").value();
    REQUIRE(a.shape() == std::vector<int64_t>{kCompactRows, kCols});
    auto v = a.view().value();
    Status st = v.Load();  // every block's checksum
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    auto d = v.Span<int64_t>().value();
    for (size_t i = 0; i < d.size(); ++i) {
      if (d[i] != CompactValue(j < 2 ? 0 : round, j, static_cast<int64_t>(i))) {
        FAIL("array " << j << " element " << i << " is " << d[i] << ", round " << round << " wants "
                      << CompactValue(j < 2 ? 0 : round, j, static_cast<int64_t>(i)));
      }
    }
  }
}

ino_t InodeOf(const std::string& file) {
  struct stat st;
  REQUIRE(stat(file.c_str(), &st) == 0);
  return st.st_ino;
}

}  // namespace

TEST_CASE("crash consistency: compaction killed at any moment leaves the old or the new file, same content") {
  const uint64_t seed = bigarray::testing::TestSeed("crash_test compaction");
  const char* env = std::getenv("BIGARRAY_CRASH_COMPACT_KILLS");
  const int kills = env ? std::atoi(env) : 40;
  const std::vector<std::string> steps = {"lock", "copy", "patch", "sync", "verify", "rename", "sync-dir", "reopen"};
  TempDir dir;
  const std::string path = dir / "db";
  const std::string temp = path + "/" + std::string(storage::kCompactTempName);
  std::mt19937_64 rng(seed);
  // How long one compaction takes here, from fork to exit: the range of the random delays.
  uint64_t commit = CommitRound(path, 0);
  auto start = std::chrono::steady_clock::now();
  REQUIRE(bigarray::testing::InChild([&] { return storage::CompactLmdb(path).ok() ? 0 : 1; }) == 0);
  const auto span_us = std::max<int64_t>(
      1000, std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count());
  CheckRound(path, 0, commit);
  int old_file = 0, new_file = 0, finished = 0;
  for (int k = 0; k < kills; ++k) {
    const uint64_t round = static_cast<uint64_t>(k) + 1;
    commit = CommitRound(path, round);
    const ino_t before = InodeOf(path + "/data.mdb");
    const bool at_step = static_cast<size_t>(k) < steps.size();
    const int64_t delay_us = at_step ? 0 : static_cast<int64_t>(rng() % static_cast<uint64_t>(span_us + span_us / 2));
    INFO("kill " << k << (at_step ? " at step " + steps[k] : " after " + std::to_string(delay_us) + " us"));
    const pid_t pid = fork();
    if (pid == 0) {
      storage::LmdbCompactOptions o;
      if (at_step) {
        o.before_step = [&](std::string_view step) {
          if (step == steps[k]) raise(SIGKILL);
          return Status::Ok();
        };
      }
      _exit(storage::CompactLmdb(path, o).ok() ? 0 : 1);
    }
    if (!at_step) {
      std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
      kill(pid, SIGKILL);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE_MESSAGE((WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0)),
                    "the compaction failed by itself: exit " << WEXITSTATUS(status));
    finished += WIFEXITED(status);
    const bool replaced = InodeOf(path + "/data.mdb") != before;
    (replaced ? new_file : old_file)++;
    if (at_step) CHECK(replaced == (static_cast<size_t>(k) >= 6));  // killed after the rename
    struct stat st;
    if (replaced) CHECK(stat(temp.c_str(), &st) != 0);  // the copy became data.mdb
    CheckRound(path, round, commit);
  }
  // The last leftover goes with the next compaction.
  REQUIRE(storage::CompactLmdb(path).ok());
  struct stat st;
  CHECK(stat(temp.c_str(), &st) != 0);
  CheckRound(path, static_cast<uint64_t>(kills), commit);
  MESSAGE("crash_test compaction: " << kills << " kills (one compaction takes ~" << span_us << " us): "
                                    << old_file << " left the old file, " << new_file << " the new one, "
                                    << finished << " finished first");
  CHECK(old_file > 0);
  CHECK(new_file > 0);
}
