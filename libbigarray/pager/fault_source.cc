// SignalFaultSource: the SIGSEGV handler and its lock-free tables (docs/pager.md, "Signal
// safety"). Everything the handler touches is static storage initialized before the handler is
// installed; it uses only lock-free atomics, sem_post, sem_wait, nanosleep, clock_gettime, write,
// getpid, sigaction, sigemptyset, raise, strlen and memset (RaiseFatalBus: the same), all
// async-signal-safe.
#include "pager/fault_source.h"

#include <signal.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "pager/bus_guard.h"
#include "pager/cpus.h"

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

constexpr size_t kMaxFaults = 1024;  // threads faulting at the same moment (more wait their turn)

// The registered ranges: an immutable array sorted by start, replaced whole by each AddRange
// and RemoveRange (copy on write, under g_ranges_mu) and searched by the handler without a lock.
// A replaced table is freed only once no handler can still be reading it: a handler announces
// itself in g_readers[epoch & 1] before it loads g_table, and a writer, after publishing the new
// table, flips the epoch and waits for the old epoch's count to drain (lookups take nanoseconds;
// new handlers count in the other epoch, so the wait cannot starve).
struct Range {
  uintptr_t start, end;
  FaultTarget* target;
  pid_t pid;  // the process whose loader threads serve the range
};
struct RangeTable {
  std::vector<Range> ranges;  // sorted by start, disjoint; only read once published
};
std::atomic<RangeTable*> g_table{nullptr};
std::atomic<uint32_t> g_epoch{0};
std::atomic<uint32_t> g_readers[2];
FaultRecord g_faults[kMaxFaults];
// Records posted and not taken yet: Take looks through g_faults (1,024 records of 512 bytes) only
// when some are, where a loader looked after every request it served (a tenth of its time in a
// first scan here). Raised before the record is posted, lowered once it is taken.
std::atomic<uint32_t> g_posted{0};
// The SIGSEGV disposition before ours. Written (under g_ranges_mu) before our handler is
// installed, and again only when SIGSEGV was reset to SIG_DFL/SIG_IGN, which no foreign fault in
// flight can be reading through our handler.
struct sigaction g_previous;
std::mutex g_ranges_mu;       // serializes AddRange/RemoveRange (never taken by the handler)
std::atomic<bool> g_ignore_cpu_access{false};
// Waiting for a fault's completion: first by polling the record, for at most kSpinNs, if no
// other thread polls and the process has at least two CPUs (CanPoll); then asleep in sem_wait.
// A sleeping thread's CPU may go idle, and waking it again took 60-70 us here, a quarter of a
// random demand fault. One poller at most: the loaders that serve the faults need the other CPUs.
std::atomic<int> g_spinners{0};
bool g_may_poll = false;  // set before the handler is installed
constexpr int64_t kSpinNs = 200000;
std::atomic<int64_t> g_spin_ns{kSpinNs};  // kSpinNs but in tests (SetPollNsForTesting)

// Loads announced by loaders (Announce): [start, end) of a range, accessible once withdrawn.
// start 0: free; 1: being claimed. Claimed by CAS 0 -> 1, end written, then start (release);
// withdrawn by storing 0. A handler reading a start and the end of a later announcement of the
// same slot only waits in vain (at most kSpinNs) or not at all: announcements save hand-offs,
// nothing depends on them.
struct Announced {
  std::atomic<uintptr_t> start{0};
  std::atomic<uintptr_t> end{0};
};
constexpr size_t kMaxAnnounced = 64;  // read-ahead loads at once (loader threads)
Announced g_announced[kMaxAnnounced];

static_assert(std::atomic<uintptr_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<FaultTarget*>::is_always_lock_free);
static_assert(std::atomic<RangeTable*>::is_always_lock_free);
static_assert(std::atomic<int>::is_always_lock_free);
static_assert(std::atomic<int64_t>::is_always_lock_free);

FaultTarget* FindTarget(uintptr_t addr, pid_t* pid) {
  // Count in the current epoch's slot, and make sure the epoch did not move meanwhile: a
  // writer only waits for the slot of the epoch it ends.
  std::atomic<uint32_t>* readers;
  for (;;) {
    const uint32_t epoch = g_epoch.load();
    readers = &g_readers[epoch & 1];
    readers->fetch_add(1);
    if (g_epoch.load() == epoch) break;
    readers->fetch_sub(1);
  }
  FaultTarget* target = nullptr;
  if (const RangeTable* t = g_table.load()) {
    const Range* ranges = t->ranges.data();
    size_t lo = 0, hi = t->ranges.size();  // first range with start > addr
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      if (ranges[mid].start <= addr) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    if (lo > 0 && addr < ranges[lo - 1].end) {
      target = ranges[lo - 1].target;
      *pid = ranges[lo - 1].pid;
    }
  }
  readers->fetch_sub(1);
  return target;
}

// Publishes `ranges` as the table and frees the one it replaces once no handler reads it.
// REQUIRES: g_ranges_mu held.
void Publish(std::vector<Range> ranges) {
  RangeTable* t = ranges.empty() ? nullptr : new RangeTable{std::move(ranges)};
  RangeTable* old = g_table.exchange(t);
  const uint32_t epoch = g_epoch.fetch_add(1);
  while (g_readers[epoch & 1].load() != 0) sched_yield();
  delete old;
}

// The current ranges. REQUIRES: g_ranges_mu held (no writer replaces the table meanwhile).
std::vector<Range> CurrentRanges() {
  const RangeTable* t = g_table.load();
  return t ? t->ranges : std::vector<Range>();
}

// fork(): the child inherits every view and the RAM pool's pages, but none of the loader
// threads. Its views are made inaccessible, resident pages included, so that any access to them
// faults and gets the "before fork()" error instead of reading or writing the parent's cache.
// Runs in the child of a multithreaded parent, where only async-signal-safe calls are allowed;
// mmap and mprotect are not on POSIX's list but are plain system calls on Linux.
void AtForkPrepare() { g_ranges_mu.lock(); }
void AtForkParent() { g_ranges_mu.unlock(); }
void AtForkChild() {
  // Lookups that were running in the parent's other threads never finish here.
  g_readers[0] = 0;
  g_readers[1] = 0;
  g_spinners = 0;
  for (Announced& a : g_announced) a.start = 0;  // the parent's loaders are not here
  g_posted = 0;  // records the parent's threads posted are never taken here: not ours to count
  if (const RangeTable* t = g_table.load()) {
    for (const Range& r : t->ranges) {
      void* start = reinterpret_cast<void*>(r.start);
      const size_t len = r.end - r.start;
      if (mmap(start, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) ==
          MAP_FAILED) {
        (void)mprotect(start, len, PROT_NONE);  // no new map entry needed: still inaccessible
      }
    }
  }
  g_ranges_mu.unlock();
}

FaultRecord::Access AccessOf(void* context) {
#if defined(__x86_64__)
  if (!g_ignore_cpu_access.load(std::memory_order_relaxed)) {
    const auto* uc = static_cast<const ucontext_t*>(context);
    // Page-fault error code bit 1: the access was a write.
    return (uc->uc_mcontext.gregs[REG_ERR] & 0x2) != 0 ? FaultRecord::kWrite : FaultRecord::kRead;
  }
#endif
  (void)context;
  return FaultRecord::kUnknown;
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
  // SIG_DFL and SIG_IGN are told by the handler's value, whatever the flags say (sa_handler and
  // sa_sigaction share their storage).
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    if (g_previous.sa_flags & SA_SIGINFO) {
      g_previous.sa_sigaction(sig, info, context);
    } else {
      g_previous.sa_handler(sig);
    }
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

int64_t MonotonicNs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000ll + t.tv_nsec;
}

// Polls `r` until a loader completes it (kDone; its sem_post follows) or kSpinNs pass, if no
// other thread is polling.
void SpinUntilDone(const FaultRecord& r) {
  if (!g_may_poll) return;
  if (g_spinners.fetch_add(1, std::memory_order_relaxed) == 0) {
    const int64_t until = MonotonicNs() + g_spin_ns.load(std::memory_order_relaxed);
    for (unsigned i = 1; r.state.load(std::memory_order_relaxed) != FaultRecord::kDone; ++i) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      if (i % 64 == 0 && MonotonicNs() > until) break;
    }
  }
  g_spinners.fetch_sub(1, std::memory_order_relaxed);
}

// If a loader announced a load of `addr`, polls until it withdraws it (true: retry the access)
// or kSpinNs pass (false), if no other thread is polling.
bool WaitForAnnounced(uintptr_t addr) {
  if (!g_may_poll) return false;
  Announced* a = nullptr;
  uintptr_t start = 0;
  for (Announced& x : g_announced) {
    start = x.start.load(std::memory_order_acquire);
    if (start > 1 && start <= addr && addr < x.end.load(std::memory_order_relaxed)) {
      a = &x;
      break;
    }
  }
  if (a == nullptr) return false;
  bool withdrawn = false;
  if (g_spinners.fetch_add(1, std::memory_order_relaxed) == 0) {
    const int64_t until = MonotonicNs() + g_spin_ns.load(std::memory_order_relaxed);
    for (unsigned i = 1;; ++i) {
      if (a->start.load(std::memory_order_acquire) != start) {
        withdrawn = true;
        break;
      }
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      if (i % 64 == 0 && MonotonicNs() > until) break;
    }
  }
  g_spinners.fetch_sub(1, std::memory_order_relaxed);
  if (withdrawn) BA_HAPPENS_AFTER(&g_handoff);
  return withdrawn;
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
    sigset_t bus;  // blocked, the raised signal would wait and the access fault again forever
    sigemptyset(&bus);
    sigaddset(&bus, SIGBUS);
    pthread_sigmask(SIG_UNBLOCK, &bus, nullptr);
    raise(SIGBUS);
    errno = saved_errno;
    return;
  }
  if (WaitForAnnounced(addr)) {  // a loader made it accessible meanwhile (or gave up): retry
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
  r->access = AccessOf(context);
  r->tid = gettid();
  g_posted.fetch_add(1, std::memory_order_relaxed);
  r->state.store(FaultRecord::kPosted, std::memory_order_release);
  target->NotifyFault();
  SpinUntilDone(*r);
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
      RaiseFatalBus();
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
  const bool reset = current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN;  // whatever the flags
  if (!at_start && !reset) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = Handler;
  // SA_ONSTACK: a stack overflow can only be reported on an alternate stack; with it, the
  // overflow's fault (outside every range) reaches the handler installed before ours there.
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_previous);
}

SignalFaultSource::SignalFaultSource() {
  for (FaultRecord& r : g_faults) sem_init(&r.done, 0, 0);
  g_may_poll = UsableCpus() >= 2;  // the process may run on two CPUs or more at once
  pthread_atfork(AtForkPrepare, AtForkParent, AtForkChild);
  std::lock_guard lock(g_ranges_mu);
  EnsureInstalled(true);
}

void SignalFaultSource::SetPollNsForTesting(int64_t ns) { g_spin_ns = ns > 0 ? ns : kSpinNs; }

bool SignalFaultSource::PollsForTesting() { return g_may_poll; }

void SignalFaultSource::IgnoreCpuAccessBitForTesting(bool ignore) { g_ignore_cpu_access = ignore; }

SignalFaultSource& SignalFaultSource::Get() {
  static SignalFaultSource* source = new SignalFaultSource();  // lives as long as the process
  return *source;
}

Status SignalFaultSource::AddRange(uintptr_t start, size_t length, FaultTarget* target) {
  std::lock_guard lock(g_ranges_mu);
  EnsureInstalled(false);
  std::vector<Range> ranges = CurrentRanges();
  const Range r{start, start + length, target, getpid()};
  auto at = std::lower_bound(ranges.begin(), ranges.end(), r,
                             [](const Range& x, const Range& y) { return x.start < y.start; });
  ranges.insert(at, r);
  Publish(std::move(ranges));
  return Status::Ok();
}

void SignalFaultSource::RemoveRange(uintptr_t start) {
  std::lock_guard lock(g_ranges_mu);
  std::vector<Range> ranges = CurrentRanges();
  auto it = std::find_if(ranges.begin(), ranges.end(), [&](const Range& x) { return x.start == start; });
  if (it == ranges.end()) return;
  ranges.erase(it);
  Publish(std::move(ranges));
}

int SignalFaultSource::Announce(uintptr_t start, size_t length) {
  if (!g_may_poll || start <= 1) return -1;  // nobody would poll for it
  for (size_t i = 0; i < kMaxAnnounced; ++i) {
    uintptr_t expected = 0;
    if (g_announced[i].start.compare_exchange_strong(expected, 1, std::memory_order_relaxed)) {
      g_announced[i].end.store(start + length, std::memory_order_relaxed);
      g_announced[i].start.store(start, std::memory_order_release);
      return static_cast<int>(i);
    }
  }
  return -1;
}

void SignalFaultSource::Withdraw(int slot) {
  if (slot < 0) return;
  BA_HAPPENS_BEFORE(&g_handoff);
  g_announced[slot].start.store(0, std::memory_order_release);
}

bool SignalFaultSource::AnyPosted() const { return g_posted.load(std::memory_order_relaxed) != 0; }

FaultRecord* SignalFaultSource::Take(FaultTarget* target) {
  // A handler raises the count before it posts, and posts before it wakes a loader (NotifyFault:
  // sem_post, whose sem_wait orders the raise before this load), so a record posted for us is
  // seen by the Take after that loader's wake-up at the latest. A Take that reads 0 too early
  // misses nothing: that record's sem_post is still to come.
  if (g_posted.load(std::memory_order_relaxed) == 0) return nullptr;
  for (FaultRecord& r : g_faults) {
    if (r.state.load(std::memory_order_acquire) != FaultRecord::kPosted ||
        r.target.load(std::memory_order_relaxed) != target) {
      continue;
    }
    uint32_t expected = FaultRecord::kPosted;
    if (r.state.compare_exchange_strong(expected, FaultRecord::kTaken, std::memory_order_acquire)) {
      FaultTarget* const owner = r.target.load(std::memory_order_relaxed);
      if (owner == target) {
        g_posted.fetch_sub(1, std::memory_order_relaxed);
        return &r;
      }
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
