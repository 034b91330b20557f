// signal_cleanup.cc: RemoveOnSignal (signal_cleanup.h).
#include "signal_cleanup.h"

#include <limits.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

namespace bigarray::cli {

namespace {

constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};

// The file to remove. The handler reads g_armed first: the path is written only while it is
// false (one guard at a time), so the handler never sees a half-written path.
char g_path[PATH_MAX + 1];
std::atomic<bool> g_armed{false};
static_assert(std::atomic<bool>::is_always_lock_free, "read in a signal handler");

void OnSignal(int sig) {
  const int saved = errno;
  if (g_armed.load(std::memory_order_acquire)) (void)::unlink(g_path);  // nothing to do if it fails
  // End the process as the signal would have: the default action, raised again.
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  if (::sigaction(sig, &dfl, nullptr) == 0 && ::raise(sig) == 0) {
    // Delivered once the handler returns (the signal is blocked inside it).
  } else {
    ::_exit(128 + sig);
  }
  errno = saved;
}

}  // namespace

Result<RemoveOnSignal> RemoveOnSignal::Install() {
  RemoveOnSignal guard;
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : kSignals) sigaddset(&sa.sa_mask, sig);  // one handler at a time
  for (size_t k = 0; k < std::size(kSignals); ++k) {
    if (::sigaction(kSignals[k], &sa, &guard.previous_[k]) != 0) {
      const int err = errno;
      for (size_t j = 0; j < k; ++j) (void)::sigaction(kSignals[j], &guard.previous_[j], nullptr);
      return ErrnoStatus(err, "install a handler for signal " + std::to_string(kSignals[k]));
    }
  }
  guard.installed_ = true;
  return guard;
}

RemoveOnSignal::RemoveOnSignal(RemoveOnSignal&& other) noexcept
    : installed_(std::exchange(other.installed_, false)) {
  std::memcpy(previous_, other.previous_, sizeof previous_);
}

RemoveOnSignal::~RemoveOnSignal() {
  if (!installed_) return;
  Disarm();
  // Restoring cannot fail for valid signals and dispositions that sigaction itself returned.
  for (size_t k = 0; k < std::size(kSignals); ++k)
    (void)::sigaction(kSignals[k], &previous_[k], nullptr);
}

Status RemoveOnSignal::Arm(const std::string& path) {
  if (path.size() > PATH_MAX) return InvalidArgument("path " + path + " is longer than PATH_MAX");
  g_armed.store(false, std::memory_order_release);
  std::memcpy(g_path, path.c_str(), path.size() + 1);
  g_armed.store(true, std::memory_order_release);
  return Status::Ok();
}

void RemoveOnSignal::Disarm() { g_armed.store(false, std::memory_order_release); }

}  // namespace bigarray::cli
