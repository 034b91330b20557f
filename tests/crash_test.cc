// Crash consistency (docs/reliability.md): a child process runs a seeded workload of durable
// commits — three arrays changed together, grown by append or resize, shrunk, each commit larger
// than the cache — and the parent kills it with SIGKILL at random moments. After every kill the
// parent reopens the database and checks that every block's checksum holds, that all arrays are
// exactly at one committed generation (the same one: cross-array atomicity), and that no
// acknowledged commit was lost. Seed: $BIGARRAY_SEED; kills: $BIGARRAY_CRASH_KILLS (default 60).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "bigarray/database.h"
#include "test_util.h"

using namespace bigarray;
using bigarray::testing::TempDir;

namespace {

constexpr int kArrays = 3;
constexpr int64_t kCols = 16;
constexpr uint64_t kBlock = 64 * 1024;

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

// The rows of array j at generation g (g >= 1): up to 6000 x 16 x 8 bytes = 750 KiB.
int64_t Rows(uint64_t seed, uint64_t g, int j) { return 1 + static_cast<int64_t>(Mix(seed ^ (g * 131 + j)) % 6000); }
int64_t Value(uint64_t g, int j, int64_t flat) { return static_cast<int64_t>(g) * 1000003 + j * 7919 + flat; }

std::string Name(int j) { return "a" + std::to_string(j); }

// The child: commits generation after generation, acknowledging each on `ack_fd`.
[[noreturn]] void Workload(const std::string& path, uint64_t seed, int ack_fd) {
  Options o;
  o.cache_bytes = 16 * kBlock;  // 1 MiB: each commit (up to ~2 MiB) spills
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
                    : db->Create(Name(j), {rows, kCols}, "i8", ArrayOptions{Order::kC, kBlock}).value();
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
    CHECK(a.BlocksStored().value() <= (static_cast<uint64_t>(a.nbytes()) + kBlock - 1) / kBlock);
  }
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
    CHECK(committed <= acked + 1);     // at most the commit in flight landed
    CHECK(committed >= before);
    if (committed == acked + 1) ++landed_unacknowledged;  // killed between commit and ack
    stalls = committed > before ? 0 : stalls + 1;
  }
  MESSAGE("crash_test: " << kills << " kills survived, " << committed << " generations committed, "
                         << landed_unacknowledged << " commits landed just before their kill");
  CHECK(committed > 0);
}
