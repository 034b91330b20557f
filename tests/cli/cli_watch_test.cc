// bigarray watch and bigarray stats --handles (docs/cli.md), run as black boxes: a watcher in the
// background reads commits made by other invocations of the tool, and is ended by SIGINT.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "bigarray/handles.h"
#include "cli_test_util.h"

using namespace bigarray;
using namespace bigarray::testing;

namespace {

// The tool started with its stdout on a pipe, so that lines can be read as they come.
class Watcher {
 public:
  explicit Watcher(const std::vector<std::string>& args) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(kCli.c_str()));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, kCli.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    out_ = fds[0];
    REQUIRE(rc == 0);
  }
  ~Watcher() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(out_);
  }
  pid_t pid() const { return pid_; }

  // The next line of its stdout, without the newline; "" after 10 s or at the end.
  std::string Line() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      const size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "";
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return "";
      char b[4096];
      const ssize_t n = read(out_, b, sizeof b);
      if (n <= 0) return "";
      buf_.append(b, static_cast<size_t>(n));
    }
  }

  // Sends `sig` and returns the exit code (128 + signal if it died of one).
  int Stop(int sig) {
    REQUIRE(kill(pid_, sig) == 0);
    int status = 0;
    REQUIRE(waitpid(pid_, &status, 0) == pid_);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  int Wait() {
    int status = 0;
    REQUIRE(waitpid(pid_, &status, 0) == pid_);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buf_;
};

bool Listed(const std::string& db, pid_t pid) {
  auto r = ListHandles(db);
  if (!r.ok()) return false;
  for (const auto& h : r->handles) {
    if (h.pid == pid) return true;
  }
  return false;
}

// Waits until the watcher has opened the database (it is then registered and waiting).
bool Registered(const std::string& db, pid_t pid) {
  for (int i = 0; i < 500; ++i) {
    if (Listed(db, pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

struct BoardCleanup {  // boards outlive databases until reboot: remove the test's own
  std::string db;
  ~BoardCleanup() {
    struct stat st;
    if (stat((db + "/data.mdb").c_str(), &st) != 0) return;
    char name[96];
    std::snprintf(name, sizeof name, "/bigarray-1-%llx-%llx", static_cast<unsigned long long>(st.st_dev),
                  static_cast<unsigned long long>(st.st_ino));
    shm_unlink(name);
  }
};

}  // namespace

TEST_CASE("watch prints a line per commit with the arrays changed and their shapes; SIGINT ends it with 0") {
  TempDir tmp;
  const std::string db = tmp / "db";
  REQUIRE(RunCli(tmp.path(), {"create", db, "x", "--dtype", "f8", "--shape", "2,3"}).code == 0);
  BoardCleanup cleanup{db};
  Watcher w({"watch", db});
  REQUIRE(Registered(db, w.pid()));
  REQUIRE(RunCli(tmp.path(), {"resize", db, "x", "--shape", "5,3"}).code == 0);
  std::string line = w.Line();
  CHECK(line.starts_with("commit "));
  CHECK(Contains(line, "\tx (5, 3)"));
  REQUIRE(RunCli(tmp.path(), {"create", db, "y", "--dtype", "i4", "--shape", "7"}).code == 0);
  line = w.Line();
  CHECK(Contains(line, "\ty (7,)"));
  CHECK_FALSE(Contains(line, "x ("));
  REQUIRE(RunCli(tmp.path(), {"fill", db, "x", "--value", "2"}).code == 0);
  CHECK(Contains(w.Line(), "\tx (5, 3)"));
  const pid_t pid = w.pid();
  CHECK(w.Stop(SIGINT) == 0);
  CHECK_FALSE(Listed(db, pid));  // it closed its handle
}

TEST_CASE("watch NAME --json --count: only commits that changed NAME, as JSON, then exit") {
  TempDir tmp;
  const std::string db = tmp / "db";
  REQUIRE(RunCli(tmp.path(), {"create", db, "x", "--dtype", "f8", "--shape", "4"}).code == 0);
  REQUIRE(RunCli(tmp.path(), {"create", db, "other", "--dtype", "f8", "--shape", "4"}).code == 0);
  BoardCleanup cleanup{db};
  Watcher w({"watch", db, "x", "--json", "--count", "2"});
  REQUIRE(Registered(db, w.pid()));
  REQUIRE(RunCli(tmp.path(), {"fill", db, "other", "--value", "1"}).code == 0);  // not printed
  REQUIRE(RunCli(tmp.path(), {"resize", db, "x", "--shape", "6"}).code == 0);
  const std::string first = w.Line();
  CHECK(first.starts_with("{\"commit\": "));
  CHECK(Contains(first, "\"arrays\": [{\"name\": \"x\", \"shape\": [6]}]}"));
  CHECK_FALSE(Contains(first, "other"));
  REQUIRE(RunCli(tmp.path(), {"resize", db, "x", "--shape", "8"}).code == 0);
  CHECK(Contains(w.Line(), "\"shape\": [8]"));
  CHECK(w.Wait() == 0);  // --count 2 reached
  // An unknown NAME is an error, not a silent wait.
  CliResult r = RunCli(tmp.path(), {"watch", db, "nope"});
  CHECK(r.code == 1);
  CHECK(Contains(r.err, "nope"));
}

TEST_CASE("stats --handles lists the processes holding the database; a killed one disappears") {
  TempDir tmp;
  const std::string db = tmp / "db";
  REQUIRE(RunCli(tmp.path(), {"create", db, "x", "--dtype", "f8", "--shape", "4"}).code == 0);
  BoardCleanup cleanup{db};
  Watcher w({"watch", db});
  REQUIRE(Registered(db, w.pid()));
  CliResult r = RunCli(tmp.path(), {"stats", db, "--handles"});
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "1 handle open on " + db));
  CHECK(Contains(r.out, std::to_string(w.pid()) + "  bigarray"));
  CHECK(Contains(r.out, "oldest snapshot: commit "));
  r = RunCli(tmp.path(), {"stats", db, "--handles", "--json"});
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "\"pid\": " + std::to_string(w.pid()) + ", \"process\": \"bigarray\""));
  CHECK(Contains(r.out, "\"readers\": [{\"pid\": " + std::to_string(w.pid())));
  CHECK(w.Stop(SIGKILL) == 128 + SIGKILL);
  r = RunCli(tmp.path(), {"stats", db, "--handles", "--json"});
  REQUIRE(r.code == 0);
  CHECK(Contains(r.out, "\"handles\": []"));
  CHECK(Contains(r.out, "\"oldest_snapshot\": null"));
  // NAME and --handles exclude each other; stats without either is the space report (info DB).
  CHECK(Contains(RunCli(tmp.path(), {"stats", db}).out, "live_bytes: "));
  CHECK(RunCli(tmp.path(), {"stats", db, "x", "--handles"}).code == 2);
}
