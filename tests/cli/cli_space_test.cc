// Disk space from the command line (docs/cli.md, "compact" and "info"): info DB and stats DB,
// the stored bytes of info NAME, compact (what it gives back, its refusal while the database is
// open elsewhere), and stats of a huge sparse array in time proportional to its stored blocks.
#include <doctest/doctest.h>
#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <regex>
#include <thread>

#include "bigarray/database.h"
#include "bigarray/handles.h"
#include "cli_test_util.h"

using namespace bigarray;
using namespace bigarray::testing;

namespace {

constexpr uint64_t kMiB = 1 << 20;

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The integer value of "key": N in a JSON text (the first one); -1 when absent or not a number.
int64_t Field(const std::string& json, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + key + "\": (-?[0-9]+)"))) return -1;
  return std::stoll(m[1]);
}

// What du counts for the files of a database directory.
uint64_t Du(const std::string& dir) {
  uint64_t total = 0;
  DIR* d = opendir(dir.c_str());
  REQUIRE(d);
  while (dirent* e = readdir(d)) {
    struct stat st;
    const std::string name = e->d_name;
    if (name != "." && name != ".." && stat((dir + "/" + name).c_str(), &st) == 0) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  closedir(d);
  return total;
}

// Removes the shared-memory boards the test's databases leave behind (named after data.mdb's
// device and inode, which compact changes: each name is taken when the board is in use).
struct Boards {
  std::vector<std::string> names;
  void Add(const std::string& db) {
    struct stat st;
    if (stat((db + "/data.mdb").c_str(), &st) != 0) return;
    char name[96];
    std::snprintf(name, sizeof name, "/bigarray-1-%llx-%llx", static_cast<unsigned long long>(st.st_dev),
                  static_cast<unsigned long long>(st.st_ino));
    names.push_back(name);
  }
  ~Boards() {
    for (const auto& n : names) shm_unlink(n.c_str());
  }
};

}  // namespace

TEST_CASE("info DB and stats DB: live, file, free and reclaimable bytes; info NAME: stored bytes") {
  Cli cli;
  cli.Ok({"create", cli.db, "t", "--dtype", "f8", "--shape", "1000,24"});
  cli.Ok({"fill", cli.db, "t", "--value", "1.5", "--rows", ":500"});  // half the rows: 96000 bytes, 24 pages
  cli.Ok({"create", cli.db, "big", "--dtype", "f8", "--shape", "1000000"});
  cli.Ok({"fill", cli.db, "big", "--value", "2"});
  CHECK(Field(cli.Ok({"info", cli.db, "t", "--json"}), "stored_bytes") == 98304);
  CHECK(Has(cli.Ok({"info", cli.db, "t"}), "blocks_stored: 1\nstored_bytes: 98304\n"));

  std::string json = cli.Ok({"info", cli.db, "--json"});
  INFO(json);
  CHECK(json.starts_with("{\"path\": \"" + cli.db + "\", \"commit\": "));
  CHECK(Field(json, "live_bytes") == 98304 + 8003584);  // big's last block: 1659136 bytes, 406 pages
  CHECK(Field(json, "page_size") == 4096);
  const int64_t allocated = Field(json, "allocated_bytes"), compact = Field(json, "compact_bytes");
  // big's blocks (each more than 1 MiB) are in slots of blocks.dat; t's 96 KiB in data.mdb.
  CHECK(Field(json, "slots") == 4);
  // Its blocks are stored in block order: the short last one (1708544 bytes, 418 pages) is in
  // the last slot, and the file ends where its payload does.
  CHECK(Field(json, "slot_file_bytes") == static_cast<int64_t>(6 * kMiB + 418 * 4096));
  CHECK(Field(json, "slot_allocated_bytes") >= 8003584);
  CHECK(compact >= 98304);
  CHECK(compact <= 98304 + 200 * 1024);
  CHECK(allocated >= compact);
  CHECK(Field(json, "reclaimable_bytes") == allocated - compact);
  CHECK(Field(json, "file_bytes") >= Field(json, "used_bytes"));
  CHECK(Has(json, "\"oldest_snapshot\": null"));
  CHECK(Has(json, "\"arrays\": {\"big\": {\"name\": \"big\""));
  std::string t = cli.Ok({"info", cli.db, "t", "--json"});
  t.pop_back();  // the newline
  CHECK(Has(json, "\"t\": " + t + "}}\n"));  // the last array's object, as info NAME prints it
  CHECK(cli.Ok({"stats", cli.db, "--json"}) == json);
  const std::string text = cli.Ok({"info", cli.db});
  CHECK(Has(text, "live_bytes: 8101888 (7.7 MiB: stored by 2 arrays)\n"));
  CHECK(Has(text, "reclaimable_bytes: "));
  CHECK(Has(text, "array \"t\": 1 of 1 blocks stored, 98304 bytes (96.0 KiB)\n"));
  CHECK(cli.Ok({"stats", cli.db}) == text);

  // rm: the pages of big are free, and reclaimable; a snapshot held from before pins them.
  Options ro;
  ro.read_only = true;
  auto reader = Database::Open(cli.db, ro).value();
  cli.Ok({"rm", cli.db, "big"});
  json = cli.Ok({"info", cli.db, "--json"});
  CHECK(Field(json, "live_bytes") == 98304);
  CHECK(Field(json, "pinned_slots") == 4);
  CHECK(Field(json, "free_slots") == 0);
  CHECK(Field(json, "slot_allocated_bytes") >= 8003584);
  CHECK(Has(json, "\"oldest_snapshot\": {\"pid\": " + std::to_string(getpid()) + ", \"process\": \"cli_test\", \"commit\": " +
                      std::to_string(reader.snapshot_commit()) + ", \"commits_behind\": 1, \"age_s\": "));
  CHECK(Has(cli.Ok({"info", cli.db}), "oldest_snapshot: commit " + std::to_string(reader.snapshot_commit()) + " (pid " +
                                          std::to_string(getpid()) + ", cli_test), "));
  // While this process holds it open, compact refuses and names it.
  CliResult r = cli({"compact", cli.db});
  CHECK_EXIT(r, 1);
  CHECK(Has(r.err, "bigarray compact: FailedPrecondition: compact " + cli.db + ": the database is open in process " +
                       std::to_string(getpid()) + " (cli_test, 1 handle reading commit " +
                       std::to_string(reader.snapshot_commit()) + "); close it there and run compact again (nothing was changed)"));
}

TEST_CASE("compact after rm of most data and a 365 -> 30 resize: du at most 1.1 x live + 1 MiB") {
  Cli cli;
  cli.Ok({"create", cli.db, "days", "--dtype", "f8", "--shape", "365,2880"});  // 8.0 MiB
  cli.Ok({"fill", cli.db, "days", "--value", "1.25"});
  cli.Ok({"create", cli.db, "big", "--dtype", "f8", "--shape", "5000000"});  // 38 MiB
  cli.Ok({"fill", cli.db, "big", "--value", "2"});
  cli.Ok({"fill", cli.db, "big", "--value", "3"});  // an old version
  cli.Ok({"rm", cli.db, "big"});
  cli.Ok({"resize", cli.db, "days", "--shape", "30,2880"});
  const std::string before = cli.Ok({"info", cli.db, "--json"});
  const int64_t live = Field(before, "live_bytes");
  CHECK(live == 692224);  // 30 x 2880 x 8 = 691200 bytes, in whole pages
  const uint64_t data = 30 * 2880 * 8;
  const uint64_t bound = data + data / 10 + kMiB;
  const uint64_t du_before = Du(cli.db);
  CHECK(du_before > bound);
  const std::string stats = cli.Ok({"stats", cli.db, "days", "--json"});

  const std::string out = cli.Ok({"compact", cli.db, "--json"});
  INFO(out);
  CHECK(Field(out, "commit") == Field(before, "commit"));
  CHECK(static_cast<uint64_t>(Field(out, "before_allocated_bytes") + Field(out, "before_slot_allocated_bytes")) > bound);
  CHECK(Field(out, "after_slot_allocated_bytes") == 0);  // days' last block, 675 KiB, is in data.mdb
  CHECK(Field(out, "after_file_bytes") == Field(before, "compact_bytes"));
  const uint64_t du_after = Du(cli.db);
  MESSAGE("cli_space_test: data " << data << " B, live " << live << " B, du " << du_before << " B before compact, " << du_after << " B after");
  CHECK(du_after <= bound);
  const std::string after = cli.Ok({"info", cli.db, "--json"});
  CHECK(Field(after, "commit") == Field(before, "commit"));
  CHECK(Field(after, "live_bytes") == live);
  CHECK(Field(after, "free_bytes") == 0);
  CHECK(cli.Ok({"stats", cli.db, "days", "--json"}) == stats);
  CHECK(cli.Ok({"verify", cli.db}) == cli.db + ": ok, 1 arrays, 1 blocks checked\n");
  // The text form, and a second compact that has nothing left to give back.
  const std::string again = cli.Ok({"compact", cli.db});
  CHECK(std::regex_search(again, std::regex("^" + cli.db + ": [0-9.]+ KiB -> [0-9.]+ KiB on disk \\(0 B given back\\) at commit " +
                                                std::to_string(Field(before, "commit")) + ", in [0-9.]+ s\n$")));
  // The database goes on: commits after a compact continue from its commit id.
  cli.Ok({"fill", cli.db, "days", "--value", "4", "--rows", ":1"});
  CHECK(Field(cli.Ok({"info", cli.db, "--json"}), "commit") > Field(before, "commit"));
}

TEST_CASE("compact refuses while another process has the database open, naming it; then works") {
  Cli cli;
  cli.Ok({"create", cli.db, "x", "--dtype", "f8", "--shape", "4"});
  Boards boards;
  boards.Add(cli.db);
  // bigarray watch holds the database open until SIGINT.
  CliProcess watch({"watch", cli.db}, cli.tmp.path());
  bool listed = false;
  for (int i = 0; i < 500 && !listed; ++i) {
    auto r = ListHandles(cli.db);
    for (const auto& h : r.ok() ? r->handles : std::vector<HandleInfo>{}) listed |= h.pid == watch.pid();
    if (!listed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(listed);
  struct stat st;
  REQUIRE(stat((cli.db + "/data.mdb").c_str(), &st) == 0);
  CliResult r = cli({"compact", cli.db});
  CHECK_EXIT(r, 1);
  CHECK(Has(r.err, "the database is open in process " + std::to_string(watch.pid()) + " (bigarray, 1 handle reading commit"));
  CHECK(Has(r.err, "nothing was changed"));
  struct stat after;
  REQUIRE(stat((cli.db + "/data.mdb").c_str(), &after) == 0);
  CHECK(after.st_ino == st.st_ino);
  REQUIRE(kill(watch.pid(), SIGINT) == 0);
  CHECK(watch.Wait().code == 0);
  cli.Ok({"compact", cli.db});
  REQUIRE(stat((cli.db + "/data.mdb").c_str(), &after) == 0);
  CHECK(after.st_ino != st.st_ino);
  CHECK(cli.Ok({"cat", cli.db, "x"}) == "[0. 0. 0. 0.]\n");
}

TEST_CASE("compact: usage and missing databases") {
  Cli cli;
  CHECK_EXIT(cli({"compact"}), 2);
  CHECK_EXIT(cli({"compact", cli.db, "x"}), 2);
  CHECK_EXIT(cli({"info", cli.db, "x", "y"}), 2);
  CliResult r = cli({"compact", cli.db});
  CHECK_EXIT(r, 1);
  CHECK(Has(r.err, "no bigarray database at " + cli.db));
  r = cli({"info", cli.db});
  CHECK_EXIT(r, 1);
  CHECK(Has(r.err, "no bigarray database at " + cli.db));
}

TEST_CASE("stats and info of a 2^50-byte array with 2 stored blocks take time in proportion to them") {
  Cli cli;
  cli.Ok({"create", cli.db, "huge", "--dtype", "f8", "--shape", "140737488355328"});  // 2^47 x 8 bytes = 2^50
  cli.Ok({"fill", cli.db, "huge", "--value", "3", "--rows", ":1"});
  cli.Ok({"fill", cli.db, "huge", "--value", "5", "--rows=-1:"});
  const auto start = std::chrono::steady_clock::now();
  const std::string stats = cli.Ok({"stats", cli.db, "huge", "--json"});
  const std::string info = cli.Ok({"info", cli.db, "--json"});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(stats.starts_with("{\"count\": 140737488355328, \"min\": 0, \"max\": 5, \"mean\": "));
  CHECK(Field(info, "blocks") == 536870912);
  CHECK(Field(info, "blocks_stored") == 2);
  CHECK(Field(info, "live_bytes") == 8 + 2097152);  // block 0 stores its one non-zero element
  // A pass over 2^50 bytes would take days; over the two stored blocks, milliseconds.
  CHECK_MESSAGE(seconds < 10, "stats and info took " << seconds << " s");
}
