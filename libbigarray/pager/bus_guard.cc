// The SIGBUS guard of loaders' reads through file mappings (bus_guard.h).
#include "pager/bus_guard.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
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
static_assert(std::atomic<bool>::is_always_lock_free);

// The SIGBUS disposition before ours. Written under g_mu before our handler is installed (and
// corrected right after, should it have changed in between), again only when somebody reset
// SIGBUS to SIG_DFL/SIG_IGN after us (not Chain: g_dying).
struct sigaction g_previous;
std::mutex g_mu;
// Set by Chain before it restores SIG_DFL to end the process: nobody takes over again then.
std::atomic<bool> g_dying{false};
// Whether the fork handlers are registered (InstallBusGuard); no guarded read without them.
std::atomic<bool> g_fork_safe{false};

// Whether `a` is SIG_DFL or SIG_IGN, whatever its flags say (sa_handler and sa_sigaction share
// their storage).
bool IsDefaultOrIgnore(const struct sigaction& a) { return a.sa_handler == SIG_DFL || a.sa_handler == SIG_IGN; }

void Handler(int sig, siginfo_t* info, void* context);

bool IsOurs(const struct sigaction& a) { return (a.sa_flags & SA_SIGINFO) && a.sa_sigaction == Handler; }

void SetDefault(int sig) {
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
}

// Hands a SIGBUS that is not a guarded read's to whoever handled SIGBUS before us.
void Chain(int sig, siginfo_t* info, void* context) {
  if (!IsDefaultOrIgnore(g_previous)) {
    if (g_previous.sa_flags & SA_SIGINFO) {
      g_previous.sa_sigaction(sig, info, context);
    } else {
      g_previous.sa_handler(sig);
    }
    return;
  }
  // By kill, raise, sigqueue, or an asynchronous report of a memory error: no access to execute
  // again.
  const bool sent = info->si_code <= 0 || info->si_code == BUS_MCEERR_AO;
  if (g_previous.sa_handler == SIG_IGN && sent) return;  // ignored, as asked
  // Default action: restore it. A faulting access is executed again on return and kills the
  // process as an unhandled SIGBUS would; a sent signal is sent again (pending until we return).
  g_dying.store(true);
  SetDefault(sig);
  if (sent) raise(sig);
}

void Handler(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  if (info->si_code > 0 && info->si_code != BUS_MCEERR_AO) {  // raised by an access: si_addr is its address
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

// Installs Handler unless it is installed. At start-up (the first pager) always; later only
// over SIG_DFL/SIG_IGN (somebody restored the disposition they found, as test frameworks do),
// unless Chain set SIG_DFL to end the process: a handler installed after ours is left alone, it
// must chain to ours (see fault_source.cc, EnsureInstalled). REQUIRES: g_mu held.
bool EnsureInstalled(bool at_start) {
  struct sigaction current;
  if (sigaction(SIGBUS, nullptr, &current) != 0) return false;
  if (IsOurs(current)) return true;
  if (!at_start && (!IsDefaultOrIgnore(current) || g_dying.load())) return false;
  g_previous = current;  // before ours is installed: a SIGBUS meanwhile finds it
  struct sigaction sa, replaced;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = Handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, &replaced) != 0) return false;
  if (replaced.sa_handler != current.sa_handler || replaced.sa_flags != current.sa_flags) g_previous = replaced;
  return true;
}

// Whether our handler is the disposition of SIGBUS now (taking over again from SIG_DFL/SIG_IGN).
bool Installed() {
  if (!g_fork_safe.load(std::memory_order_relaxed)) return false;
  struct sigaction current;
  if (sigaction(SIGBUS, nullptr, &current) != 0) return false;
  if (IsOurs(current)) return true;
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

// fork(): the child has one thread, the forking one, which is in no guarded read; slots held by
// the parent's other threads are freed, and g_mu is never inherited held.
void AtForkPrepare() { g_mu.lock(); }
void AtForkParent() { g_mu.unlock(); }
void AtForkChild() {
  for (Slot& s : g_slots) {
    s.jump = nullptr;
    s.tid.store(0, std::memory_order_relaxed);
  }
  g_mu.unlock();
}

}  // namespace

void InstallBusGuard() {
  static std::once_flag once;  // at start-up once: never again over a handler chained to ours
  std::call_once(once, [] {
    {
      std::lock_guard lock(g_mu);
      EnsureInstalled(true);
    }
    // Without it a child of fork() could inherit g_mu held, or slots of threads it does not have:
    // then no read is guarded (checks use pread).
    g_fork_safe.store(pthread_atfork(AtForkPrepare, AtForkParent, AtForkChild) == 0);
  });
}

bool BusGuardInstalled() { return Installed(); }

void RaiseFatalBus() {
  struct sigaction current;
  std::memset(&current, 0, sizeof current);  // SIG_DFL, should the query fail
  (void)sigaction(SIGBUS, nullptr, &current);
  // Through our handler, what counts is the disposition it chains to.
  if (IsDefaultOrIgnore(IsOurs(current) ? g_previous : current)) {
    g_dying.store(true);
    SetDefault(SIGBUS);
  }
  // Blocked, the raised signal would wait, and the access would fault again forever.
  sigset_t bus;
  sigemptyset(&bus);
  sigaddset(&bus, SIGBUS);
  pthread_sigmask(SIG_UNBLOCK, &bus, nullptr);
  raise(SIGBUS);
}

GuardedRead ReadGuarded(const void* start, size_t length, void (*read)(void* arg) noexcept, void* arg) {
  if (!Installed()) return GuardedRead::kUnguarded;
  // A SIGBUS raised by an access while it is blocked kills the process whatever the handler:
  // unblock it for the read (threads inherit the mask of their creator; programs block signals
  // before starting threads).
  sigset_t bus, before;
  sigemptyset(&bus);
  sigaddset(&bus, SIGBUS);
  if (pthread_sigmask(SIG_UNBLOCK, &bus, &before) != 0) return GuardedRead::kUnguarded;
  const bool was_blocked = sigismember(&before, SIGBUS) == 1;
  Slot* const s = Claim(gettid());
  GuardedRead result = GuardedRead::kUnguarded;
  if (s) {
    s->start = reinterpret_cast<uintptr_t>(start);
    s->end = s->start + length;
    result = GuardedRead::kDone;
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
  }
  if (was_blocked) pthread_sigmask(SIG_BLOCK, &bus, nullptr);  // as it was; cannot fail with these arguments
  return result;
}

}  // namespace bigarray::pager
