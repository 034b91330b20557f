// test_util.h: helpers shared by the tests (temporary directories, seeds, byte patterns).
#pragma once

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace bigarray::testing {

// ThreadSanitizer's shadow memory leaves far less address space to the program: tests that
// reserve a terabyte scale down under it.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BIGARRAY_TEST_UNDER_TSAN 1
#endif
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BIGARRAY_TEST_UNDER_SANITIZER 1
#endif
#endif
#if defined(BIGARRAY_TEST_UNDER_TSAN) || defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define BIGARRAY_TEST_UNDER_SANITIZER 1
#endif
#if defined(BIGARRAY_TEST_UNDER_TSAN) || defined(__SANITIZE_THREAD__)
inline constexpr int64_t kHugeBytes = int64_t{16} << 30;  // 16 GiB
#else
inline constexpr int64_t kHugeBytes = int64_t{1} << 40;   // 1 TiB
#endif

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/bigarray-test-XXXXXX";
    if (!mkdtemp(tmpl.data())) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Waits (up to 20 s, for sanitizer builds) until `pred()`, which another thread brings about,
// holds; returns whether it does.
template <typename Pred>
bool Eventually(Pred pred) {
  for (int i = 0; i < 2000 && !pred(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return pred();
}

// The seed of a randomized test: $BIGARRAY_SEED if set, else random; always printed.
inline uint64_t TestSeed(const char* test) {
  uint64_t seed;
  if (const char* s = std::getenv("BIGARRAY_SEED")) {
    seed = std::strtoull(s, nullptr, 0);
  } else {
    seed = std::random_device{}();
  }
  std::fprintf(stderr, "%s: seed %llu (rerun with BIGARRAY_SEED=%llu)\n", test,
               static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  return seed;
}

// A deterministic, position-dependent byte pattern: block `tag`, byte i.
inline std::vector<std::byte> Pattern(size_t n, uint64_t tag) {
  std::vector<std::byte> v(n);
  uint64_t x = tag * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v[i] = static_cast<std::byte>(x | 1);  // never zero, so nothing is trimmed
  }
  return v;
}

// Runs fn() (returning an int) in `n` forked child processes, fn(i) in the i-th; returns the sum
// of their exit codes: 0 when all succeeded. A child that throws or dies counts as failed.
template <typename Fn>
int RunInChildren(int n, Fn fn) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      int rc = 99;
      try {
        rc = fn(i);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", i, e.what());
      }
      _exit(rc);
    }
    pids.push_back(pid);
  }
  int bad = 0;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    bad += WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return bad;
}

// Runs fn() in one child process; returns its exit code (128 + signal if it died).
template <typename Fn>
int InChild(Fn fn) {
  return RunInChildren(1, [&](int) { return fn(); });
}

// Runs fn() in a child process with its stderr captured; returns the wait status and the text.
struct ChildOutcome {
  int status = 0;
  std::string err;
};
template <typename Fn>
ChildOutcome RunCapturingStderr(Fn fn) {
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    fn();
    _exit(0);
  }
  close(fds[1]);
  ChildOutcome out;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.err.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  waitpid(pid, &out.status, 0);
  return out;
}

inline bool AllZero(std::span<const std::byte> s) {
  for (std::byte b : s) {
    if (b != std::byte{0}) return false;
  }
  return true;
}

// A tmpfs of `size` (e.g. "6m") mounted at `dir`/small for the life of the object: a small disk
// that fills. ok() is false where this process may not mount (not root): the caller skips,
// saying why (why()).
class SmallTmpfs {
 public:
  SmallTmpfs(const std::string& dir, const char* size) : path_(dir + "/small") {
    const std::string options = std::string("size=") + size;
    if (mkdir(path_.c_str(), 0755) != 0 || mount("tmpfs", path_.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      why_ = std::string("cannot mount a small tmpfs (") + std::strerror(errno) + ")";
    }
  }
  ~SmallTmpfs() {
    if (why_.empty()) umount2(path_.c_str(), MNT_DETACH);
  }
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;
  bool ok() const { return why_.empty(); }
  const std::string& why() const { return why_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_, why_;
};

}  // namespace bigarray::testing
