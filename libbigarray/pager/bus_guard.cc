// The SIGBUS guard of loaders' reads through file mappings (bus_guard.h).
#include "pager/bus_guard.h"

#include <setjmp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>

namespace bigarray::pager {
namespace {

// One guarded read in flight per thread; a thread that finds every slot taken reads unguarded
// (ReadGuarded answers kUnguarded and the caller uses pread).
constexpr size_t kSlots = 1024;
struct Slot {
  std::atomic<pid_t> tid{0};  // the thread that holds it; 0: free
  uintptr_t start = 0, end = 0;
  sigjmp_buf* volatile jump = nullptr;  // set while read() runs
};
Slot g_slots[kSlots];
static_assert(std::atomic<pid_t>::is_always_lock_free);

// The SIGBUS disposition before ours. Written under g_mu before our handler is installed (again
// only when somebody reset SIGBUS to SIG_DFL/SIG_IGN after us: no signal is then in our handler).
struct sigaction g_previous;
std::mutex g_mu;

void SetDefault(int sig) {
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
}

// Hands a SIGBUS that is not a guarded read's to whoever handled SIGBUS before us.
void Chain(int sig, siginfo_t* info, void* context) {
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  const bool sent = info->si_code <= 0;  // by kill, raise, sigqueue: not a faulting access
  if (g_previous.sa_handler == SIG_IGN && sent) return;  // ignored, as asked
  // Default action: restore it. A faulting access is executed again on return and kills the
  // process as an unhandled SIGBUS would; a sent signal is sent again (pending until we return).
  SetDefault(sig);
  if (sent) raise(sig);
}

void Handler(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  if (info->si_code > 0) {  // raised by the kernel for an access: si_addr is the address
    const pid_t tid = gettid();
    const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
    for (Slot& s : g_slots) {
      if (s.tid.load(std::memory_order_relaxed) != tid) continue;
      sigjmp_buf* jump = s.jump;
      if (jump && addr >= s.start && addr < s.end) {
        s.jump = nullptr;
        siglongjmp(*jump, 1);  // restores the signal mask saved by sigsetjmp
      }
    }
  }
  Chain(sig, info, context);
  errno = saved_errno;
}

// Installs Handler unless it is installed. At start-up (the first pager) always; later only over SIG_DFL/SIG_IGN
// (somebody restored the disposition they found, as test frameworks do): a handler installed
// after ours is left alone, it must chain to ours (see fault_source.cc, EnsureInstalled).
// REQUIRES: g_mu held.
bool EnsureInstalled(bool at_start) {
  struct sigaction current;
  if (sigaction(SIGBUS, nullptr, &current) != 0) return false;
  if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == Handler) return true;
  const bool reset = !(current.sa_flags & SA_SIGINFO) &&
                     (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN);
  if (!at_start && !reset) return false;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = Handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  return sigaction(SIGBUS, &sa, &g_previous) == 0;
}

// Whether our handler is the disposition of SIGBUS now (taking over again from SIG_DFL/SIG_IGN).
bool Installed() {
  struct sigaction current;
  if (sigaction(SIGBUS, nullptr, &current) != 0) return false;
  if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == Handler) return true;
  std::lock_guard lock(g_mu);
  return EnsureInstalled(false);
}

Slot* Claim(pid_t tid) {
  size_t i = static_cast<size_t>(tid) % kSlots;
  for (size_t n = 0; n < kSlots; ++n, i = (i + 1) % kSlots) {
    pid_t expected = 0;
    if (g_slots[i].tid.compare_exchange_strong(expected, tid, std::memory_order_acquire)) return &g_slots[i];
  }
  return nullptr;
}

}  // namespace

void InstallBusGuard() {
  std::lock_guard lock(g_mu);
  static bool installed = false;  // at start-up once: never again over a handler chained to ours
  if (!installed) EnsureInstalled(true);
  installed = true;
}

GuardedRead ReadGuarded(const void* start, size_t length, void (*read)(void* arg), void* arg) {
  if (!Installed()) return GuardedRead::kUnguarded;
  Slot* s = Claim(gettid());
  if (!s) return GuardedRead::kUnguarded;
  s->start = reinterpret_cast<uintptr_t>(start);
  s->end = s->start + length;
  GuardedRead result = GuardedRead::kDone;
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1) == 0) {
    s->jump = &jump;
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the handler, on this thread, sees it set
    read(arg);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    s->jump = nullptr;
  } else {
    result = GuardedRead::kBus;  // the handler cleared s->jump
  }
  s->tid.store(0, std::memory_order_release);
  return result;
}

}  // namespace bigarray::pager
