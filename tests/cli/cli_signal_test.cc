// An export ended by a signal: its temporary file is removed and the tool exits as the signal
// would have (docs/cli.md, export).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "cli_test_util.h"

using namespace bigarray::testing;

namespace {

// Size of a file, or -1 when it does not exist.
int64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : -1;
}

}  // namespace

TEST_CASE("export: SIGINT and SIGTERM mid-export remove the temporary file; exit 130 and 143") {
  Cli cli;
  // 1 GiB of zeros: nothing is stored, but the export writes every byte, 64 KiB at a time with
  // this cache, so it runs long enough to be interrupted after its first megabyte.
  cli.Ok({"create", cli.db, "big", "--dtype", "u1", "--shape", std::to_string(1 << 30)});
  for (int sig : {SIGINT, SIGTERM}) {
    CAPTURE(sig);
    const std::string out = cli / "big.npy";
    CliProcess p({"--cache", "1M", "--no-progress", "export", cli.db, "big", out}, cli.tmp.path());
    REQUIRE(p.pid() > 0);
    const std::string temp = out + ".tmp." + std::to_string(p.pid());
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (FileSize(temp) < (1 << 20) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    REQUIRE_MESSAGE(FileSize(temp) >= (1 << 20), "the export did not start writing " << temp);
    REQUIRE(kill(p.pid(), sig) == 0);
    CliResult r = p.Wait();
    CHECK_MESSAGE(r.code == 128 + sig, Describe(r));
    CHECK_MESSAGE(FileSize(temp) == -1, temp << " was left behind");
    CHECK(FileSize(out) == -1);
    // Nothing else is left in the directory but the database.
    for (const auto& entry : std::filesystem::directory_iterator(cli.tmp.path())) {
      CHECK_MESSAGE(entry.path().filename() == "db", entry.path().string() << " was left behind");
    }
  }
  // Uninterrupted, the same export completes and leaves only the file.
  CliResult r = cli({"--cache", "16M", "--no-progress", "export", cli.db, "big", cli / "ok.npy",
                     "--rows", ":4096"});
  CHECK_EXIT(r, 0);
  CHECK(FileSize(cli / "ok.npy") == 4096 + 128);
}
