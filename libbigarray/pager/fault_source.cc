// SignalFaultSource: the SIGSEGV handler and its lock-free tables (docs/pager.md, "Signal
// safety"). Everything the handler touches is static storage initialized before the handler is
// installed; it uses only lock-free atomics, sem_post, sem_wait, nanosleep, write, getpid,
// sigaction, sigemptyset, raise, strlen and memset, all async-signal-safe.
#include "pager/fault_source.h"

#include <signal.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

// Under ThreadSanitizer: the hand-off below orders the loader's work (mapping the page) before
// the faulting thread's retried access, through sem_post/sem_wait in a signal handler, which
// TSan does not follow. Tell it.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BIGARRAY_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define BIGARRAY_TSAN 1
#endif
#ifdef BIGARRAY_TSAN
#include <sanitizer/tsan_interface.h>
#define BA_HAPPENS_BEFORE(addr) __tsan_release(addr)
#define BA_HAPPENS_AFTER(addr) __tsan_acquire(addr)
#else
#define BA_HAPPENS_BEFORE(addr) (void)(addr)
#define BA_HAPPENS_AFTER(addr) (void)(addr)
#endif

namespace bigarray::pager {
namespace {

// One address for all hand-offs: every page mapping happens before every retried access.
char g_handoff;

constexpr size_t kMaxRanges = 4096;
constexpr size_t kMaxFaults = 1024;  // threads faulting at the same moment (more wait their turn)

struct RangeEntry {
  std::atomic<uintptr_t> start{0};  // 0: free. Published last, cleared first.
  std::atomic<uintptr_t> end{0};
  std::atomic<FaultTarget*> target{nullptr};
  std::atomic<pid_t> pid{0};  // the process whose loader threads serve the range
};

RangeEntry g_ranges[kMaxRanges];
std::atomic<size_t> g_range_high_water{0};  // entries at or above it were never used
FaultRecord g_faults[kMaxFaults];
// The SIGSEGV disposition before ours. Written (under g_ranges_mu) before our handler is
// installed, and again only when SIGSEGV was reset to SIG_DFL/SIG_IGN, which no foreign fault in
// flight can be reading through our handler.
struct sigaction g_previous;
std::mutex g_ranges_mu;       // serializes AddRange/RemoveRange (never taken by the handler)

static_assert(std::atomic<uintptr_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<FaultTarget*>::is_always_lock_free);

FaultTarget* FindTarget(uintptr_t addr, pid_t* pid) {
  const size_t n = g_range_high_water.load(std::memory_order_acquire);
  for (size_t i = 0; i < n; ++i) {
    uintptr_t s = g_ranges[i].start.load(std::memory_order_acquire);
    if (s != 0 && addr >= s && addr < g_ranges[i].end.load(std::memory_order_relaxed)) {
      *pid = g_ranges[i].pid.load(std::memory_order_relaxed);
      return g_ranges[i].target.load(std::memory_order_relaxed);
    }
  }
  return nullptr;
}

bool IsWriteFault(void* context) {
#if defined(__x86_64__)
  const auto* uc = static_cast<const ucontext_t*>(context);
  return (uc->uc_mcontext.gregs[REG_ERR] & 0x2) != 0;  // page-fault error code bit 1: write
#else
  (void)context;
  return false;  // a write then faults twice: once to load, once to make the page writable
#endif
}

void WriteAll(const char* s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, s, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      return;
    }
    s += w;
    n -= static_cast<size_t>(w);
  }
}

// Hands a fault that is not ours to whoever handled SIGSEGV before us.
void Chain(int sig, siginfo_t* info, void* context) {
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) {
      g_previous.sa_sigaction(sig, info, context);
      return;
    }
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // Default action: restore it; returning re-executes the access, which then kills the
  // process exactly as an unhandled segfault would (with a core dump where enabled).
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGSEGV, &dfl, nullptr);
}

void Handler(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  pid_t owner = 0;
  FaultTarget* target = FindTarget(addr, &owner);
  if (target == nullptr) {
    Chain(sig, info, context);
    errno = saved_errno;
    return;
  }
  if (owner != getpid()) {
    // A forked child inherits the parent's mappings but not its loader threads: nobody would
    // ever serve this fault. Say so instead of waiting forever.
    WriteAll("bigarray: fatal page fault: a view of a database opened before fork() was used in "
             "the child process; open the database again in the child\n");
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGBUS, &dfl, nullptr);
    raise(SIGBUS);
    errno = saved_errno;
    return;
  }
  // Claim a free record, starting at a spot that spreads threads apart.
  FaultRecord* r = nullptr;
  size_t i = (addr >> 12) % kMaxFaults;
  for (size_t tries = 0; r == nullptr; ++tries, i = (i + 1) % kMaxFaults) {
    uint32_t expected = FaultRecord::kFree;
    if (g_faults[i].state.compare_exchange_strong(expected, FaultRecord::kFilling,
                                                  std::memory_order_acquire)) {
      r = &g_faults[i];
    } else if (tries % kMaxFaults == kMaxFaults - 1) {
      const timespec pause{0, 100000};  // every record busy: wait 0.1 ms and scan again
      nanosleep(&pause, nullptr);
    }
  }
  r->target.store(target, std::memory_order_relaxed);
  r->addr = addr;
  r->write = IsWriteFault(context);
  r->state.store(FaultRecord::kPosted, std::memory_order_release);
  target->NotifyFault();
  while (sem_wait(&r->done) != 0 && errno == EINTR) {
  }
  BA_HAPPENS_AFTER(&g_handoff);
  const FaultOutcome outcome = r->outcome;
  if (outcome == FaultOutcome::kFatal) WriteAll(r->message);
  r->state.store(FaultRecord::kFree, std::memory_order_release);

  switch (outcome) {
    case FaultOutcome::kRetry:
      break;
    case FaultOutcome::kForeign:
      Chain(sig, info, context);
      break;
    case FaultOutcome::kFatal: {
      // Like SIGBUS from an mmap'ed file whose read failed: unless the program handles
      // SIGBUS itself, the process ends here.
      struct sigaction bus;
      sigaction(SIGBUS, nullptr, &bus);
      if (!(bus.sa_flags & SA_SIGINFO) && (bus.sa_handler == SIG_IGN || bus.sa_handler == SIG_DFL)) {
        memset(&bus, 0, sizeof bus);
        bus.sa_handler = SIG_DFL;
        sigemptyset(&bus.sa_mask);
        sigaction(SIGBUS, &bus, nullptr);
      }
      raise(SIGBUS);
      break;
    }
  }
  errno = saved_errno;
}

}  // namespace

// Installs our handler, remembering the current disposition as the handler to chain to. At
// start-up unconditionally; when a range is added, only if somebody reset SIGSEGV to SIG_DFL or
// SIG_IGN after us (as test frameworks do when they restore the disposition they found). A
// handler that somebody installed after us is left alone: it must chain to the one it replaced
// (ours), as crash reporters do; taking over again could make the two chain to each other
// forever. REQUIRES: g_ranges_mu held.
static void EnsureInstalled(bool at_start) {
  struct sigaction current;
  sigaction(SIGSEGV, nullptr, &current);
  if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == Handler) return;
  const bool reset = !(current.sa_flags & SA_SIGINFO) &&
                     (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN);
  if (!at_start && !reset) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = Handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_previous);
}

SignalFaultSource::SignalFaultSource() {
  for (FaultRecord& r : g_faults) sem_init(&r.done, 0, 0);
  std::lock_guard lock(g_ranges_mu);
  EnsureInstalled(true);
}

SignalFaultSource& SignalFaultSource::Get() {
  static SignalFaultSource* source = new SignalFaultSource();  // lives as long as the process
  return *source;
}

Status SignalFaultSource::AddRange(uintptr_t start, size_t length, FaultTarget* target) {
  std::lock_guard lock(g_ranges_mu);
  EnsureInstalled(false);
  for (size_t i = 0; i < kMaxRanges; ++i) {
    if (g_ranges[i].start.load(std::memory_order_relaxed) != 0) continue;
    g_ranges[i].target.store(target, std::memory_order_relaxed);
    g_ranges[i].pid.store(getpid(), std::memory_order_relaxed);
    g_ranges[i].end.store(start + length, std::memory_order_relaxed);
    g_ranges[i].start.store(start, std::memory_order_release);
    if (i >= g_range_high_water.load(std::memory_order_relaxed)) {
      g_range_high_water.store(i + 1, std::memory_order_release);
    }
    return Status::Ok();
  }
  return ResourceExhausted("too many mapped array regions at once (" + std::to_string(kMaxRanges) +
                           "); drop some views");
}

void SignalFaultSource::RemoveRange(uintptr_t start) {
  std::lock_guard lock(g_ranges_mu);
  for (size_t i = 0; i < g_range_high_water.load(std::memory_order_relaxed); ++i) {
    if (g_ranges[i].start.load(std::memory_order_relaxed) == start) {
      g_ranges[i].start.store(0, std::memory_order_release);
      g_ranges[i].end.store(0, std::memory_order_relaxed);
      g_ranges[i].target.store(nullptr, std::memory_order_relaxed);
      return;
    }
  }
}

FaultRecord* SignalFaultSource::Take(FaultTarget* target) {
  for (FaultRecord& r : g_faults) {
    if (r.state.load(std::memory_order_acquire) != FaultRecord::kPosted ||
        r.target.load(std::memory_order_relaxed) != target) {
      continue;
    }
    uint32_t expected = FaultRecord::kPosted;
    if (r.state.compare_exchange_strong(expected, FaultRecord::kTaken, std::memory_order_acquire)) {
      FaultTarget* const owner = r.target.load(std::memory_order_relaxed);
      if (owner == target) return &r;
      // The record was completed and posted again for another target between our two reads.
      r.state.store(FaultRecord::kPosted, std::memory_order_release);
      owner->NotifyFault();
    }
  }
  return nullptr;
}

void SignalFaultSource::Complete(FaultRecord* r, FaultOutcome outcome, const char* message) {
  r->outcome = outcome;
  if (message) {
    strncpy(r->message, message, sizeof r->message - 2);
    r->message[sizeof r->message - 2] = '\0';
    size_t n = strlen(r->message);
    if (n == 0 || r->message[n - 1] != '\n') strcat(r->message, "\n");
  }
  r->state.store(FaultRecord::kDone, std::memory_order_release);
  BA_HAPPENS_BEFORE(&g_handoff);
  sem_post(&r->done);
}

}  // namespace bigarray::pager
