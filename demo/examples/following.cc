// Following a growing dataset: a producer process appends and commits; a consumer process waits
// for each commit (no polling), moves to it with Abort() and reads the new rows.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "bigarray/database.h"

using namespace bigarray;

int main() {
  char dir[] = "/tmp/following-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  const std::string path = std::string(dir) + "/db";
  Options options;
  options.durability = Durability::kRelaxed;  // survives a crash of the process; fast commits
  {
    auto db = Database::Open(path, options).value();
    db.Create("readings", {0}, "f8", ArrayOptions{Order::kC, 4096}).value();
    db.Commit().ThrowIfError();
  }
  constexpr int kRows = 50;
  const pid_t producer = fork();
  if (producer == 0) {  // the producer: one row per commit
    {
      auto db = Database::Open(path, options).value();
      for (int i = 0; i < kRows; ++i) {
        double value = 0.5 * i;
        db.Get("readings").value().Append(View::Wrap(&value, DType::Of<double>(), {1}).value()).ThrowIfError();
        db.Commit().ThrowIfError();
      }
    }  // closed before _exit, which runs no destructors
    _exit(0);
  }
  // The consumer: wait for a commit newer than the one it reads, then move to it.
  int64_t seen = 0, wakeups = 0;
  double sum = 0;
  {
    auto db = Database::Open(path, options).value();
    while (seen < kRows) {
      auto commit = db.WaitForCommit(db.snapshot_commit(), std::chrono::seconds(10)).value();
      if (!commit) break;  // nothing new for 10 s: the producer is gone
      db.Abort();          // the boundary: from here on it reads the newest commit
      auto rows = db.Get("readings").value().view().value().Span<const double>().value();
      for (int64_t i = seen; i < static_cast<int64_t>(rows.size()); ++i) sum += rows[static_cast<size_t>(i)];
      seen = static_cast<int64_t>(rows.size());
      ++wakeups;
    }
  }
  int status = 0;
  waitpid(producer, &status, 0);
  std::printf("followed %lld rows in %lld wakeups, sum %.1f\n", static_cast<long long>(seen),
              static_cast<long long>(wakeups), sum);
  std::filesystem::remove_all(dir);
  return seen == kRows && sum == 0.5 * kRows * (kRows - 1) / 2 && WIFEXITED(status) ? 0 : 1;
}
