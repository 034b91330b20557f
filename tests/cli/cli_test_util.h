// cli_test_util.h: running the bigarray tool from tests, and reading and writing files.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

extern char** environ;

namespace bigarray::testing {

// The tool under test and the fixtures (compile definitions from tests/cli/CMakeLists.txt).
inline const std::string kCli = BIGARRAY_CLI;
inline std::string Fixture(const std::string& name) { return std::string(CLI_TEST_DATA) + "/" + name; }

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

// VmHWM of a running process, in KiB (0 when gone).
inline long PeakRssKb(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.starts_with("VmHWM:")) return std::stol(line.substr(6));
  }
  return 0;
}

// Whether two files have the same bytes (compared in pieces: the files may be large).
inline bool SameFiles(const std::string& a, const std::string& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa || !fb) return false;
  std::vector<char> ba(1 << 16), bb(1 << 16);
  for (;;) {
    fa.read(ba.data(), static_cast<std::streamsize>(ba.size()));
    fb.read(bb.data(), static_cast<std::streamsize>(bb.size()));
    if (fa.gcount() != fb.gcount() || std::memcmp(ba.data(), bb.data(), static_cast<size_t>(fa.gcount())) != 0) {
      return false;
    }
    if (fa.gcount() == 0) return true;
  }
}

struct CliResult {
  int code = -1;  // exit code, or 128 + signal
  std::string out, err;
  long max_rss_kb = 0;  // peak RSS of the tool, KiB
};

// A started tool process whose output goes to files in `dir`; Wait() collects it.
class CliProcess {
 public:
  CliProcess(const std::vector<std::string>& args, const std::string& dir) : dir_(dir) {
    static int counter = 0;
    const std::string tag = std::to_string(getpid()) + "-" + std::to_string(counter++);
    out_path_ = dir + "/stdout-" + tag;
    err_path_ = dir + "/stderr-" + tag;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(kCli.c_str()));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, kCli.c_str(), &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~CliProcess() {
    if (pid_ > 0) Wait();
  }

  pid_t pid() const { return pid_; }  // -1 when it could not be started, or after Wait()

  // Waits for the exit. The peak RSS comes from polling /proc/PID/status (VmHWM of the tool's
  // own address space): wait4's ru_maxrss would include this process's peak, as posix_spawn
  // shares our address space until the exec.
  CliResult Wait() {
    CliResult r;
    int status = 0;
    while (pid_ > 0) {
      const pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (done < 0) break;
      r.max_rss_kb = std::max(r.max_rss_kb, PeakRssKb(pid_));
      usleep(2000);
    }
    pid_ = -1;
    r.out = ReadFile(out_path_);
    r.err = ReadFile(err_path_);
    unlink(out_path_.c_str());
    unlink(err_path_.c_str());
    return r;
  }

 private:
  std::string dir_, out_path_, err_path_;
  pid_t pid_ = -1;
};

// Runs the tool to completion; its output goes through files in `dir`.
inline CliResult RunCli(const std::string& dir, const std::vector<std::string>& args) {
  return CliProcess(args, dir).Wait();
}

// A scratch directory with a database path in it, and the tool.
struct Cli {
  TempDir tmp;
  const std::string db = tmp / "db";

  CliResult operator()(const std::vector<std::string>& args) const { return RunCli(tmp.path(), args); }
  // Runs a command that must succeed; returns its stdout.
  std::string Ok(const std::vector<std::string>& args) const {
    CliResult r = (*this)(args);
    std::string cmd;
    for (const auto& a : args) cmd += " " + a;
    REQUIRE_MESSAGE(r.code == 0, "bigarray" << cmd << "\nexit " << r.code << "\nstderr: " << r.err);
    return r.out;
  }
  std::string operator/(const std::string& name) const { return tmp / name; }
};

inline std::string Describe(const CliResult& r) {
  return "exit " + std::to_string(r.code) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

#define CHECK_EXIT(result, expected)                              \
  do {                                                            \
    const CliResult& r_ = (result);                               \
    CHECK_MESSAGE(r_.code == (expected), Describe(r_));           \
    if ((expected) != 0) CHECK_MESSAGE(!r_.err.empty(), "no message on stderr"); \
  } while (0)

}  // namespace bigarray::testing
