// fault_source.h: how page faults in the pager's regions reach the pager (docs/pager.md).
//
// A FaultSource detects accesses to registered address ranges that the current protection does
// not allow and hands each one, as a FaultRecord, to the range's FaultTarget; a thread of the
// target (a loader thread, free to lock, allocate, log and do I/O) takes the record, makes the
// access possible (or decides it cannot be), and completes it. The faulting thread is blocked
// until then, and then retries its access.
//
// SignalFaultSource is the default mechanism: SIGSEGV + mprotect, which works unprivileged and
// in containers that block userfaultfd. Its handler is async-signal-safe: it reads lock-free
// tables, claims a preallocated record with an atomic compare-and-swap, wakes the target with
// sem_post, polls the record briefly and then sleeps in sem_wait (all async-signal-safe), and
// saves and restores errno. It never allocates, locks or logs. A userfaultfd source would
// implement the same three calls.
//
// Thread contract: all functions are thread-safe. AddRange/RemoveRange must not run inside a
// signal handler.
#pragma once

#include <semaphore.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "bigarray/status.h"

namespace bigarray::pager {

enum class FaultOutcome : uint32_t {
  kRetry,    // the access may now proceed: return from the fault and re-execute it
  kForeign,  // not ours after all (the range went away): behave as an unhandled SIGSEGV
  kFatal,    // the block could not be loaded: print the record's message, raise SIGBUS
};

// Receives faults. NotifyFault is called from signal context: it must be async-signal-safe.
class FaultTarget {
 public:
  virtual void NotifyFault() noexcept = 0;

 protected:
  ~FaultTarget() = default;
};

// One fault in flight. Records are preallocated; their lifecycle is
//   kFree -(handler claims)-> kFilling -(handler posts)-> kPosted -(target takes)-> kTaken
//   -(target completes, sem_post)-> kDone -(handler reads outcome)-> kFree.
struct FaultRecord {
  enum State : uint32_t { kFree, kFilling, kPosted, kTaken, kDone };
  // What the faulting access was. x86-64 reports it in the page fault's error code; elsewhere it
  // is kUnknown, and the pager decides from the page's state and the faulting thread (pager.md,
  // "Read or write").
  enum Access : uint8_t { kRead, kWrite, kUnknown };
  std::atomic<uint32_t> state{kFree};
  // Atomic: a loader scanning for its records reads it while a handler may be filling the
  // record (the state then tells it to skip); everything else is owned via `state`.
  std::atomic<FaultTarget*> target{nullptr};
  uintptr_t addr = 0;
  Access access = kUnknown;
  pid_t tid = 0;  // the faulting thread
  FaultOutcome outcome = FaultOutcome::kRetry;
  char message[480] = {};  // for kFatal: written to stderr by the handler
  sem_t done;
};

class SignalFaultSource {
 public:
  // The process-wide source. The first call installs the SIGSEGV handler, remembering the one
  // installed before so that faults outside every range go to it (semantics.md P7).
  static SignalFaultSource& Get();

  // Faults in [start, start + length) go to `target`. The table of ranges grows as needed; only
  // memory limits it.
  Status AddRange(uintptr_t start, size_t length, FaultTarget* target);
  void RemoveRange(uintptr_t start);

  // A posted record for `target`, now owned by the caller until Complete; nullptr if none.
  FaultRecord* Take(FaultTarget* target);
  // Whether a record is posted and not taken yet, for any target (a hint: it may be taken by the
  // time the caller acts).
  bool AnyPosted() const;

  // A loader about to make [start, start + length) of a range accessible in a moment (a
  // read-ahead checking a cached block it will map there: docs/pager.md, section 6, "Announced
  // loads") says so: a thread faulting there polls for Withdraw instead of posting a record, whose
  // hand-off would wake a loader only to park the fault on the page being loaded. Returns the
  // announcement's slot, or -1 when none is free (nothing announced). After Withdraw the faulting
  // thread retries its access whatever became of the load: one that left the range inaccessible
  // faults again and is posted. Polls as step 8 does: at most kSpinNs, one thread at a time.
  int Announce(uintptr_t start, size_t length);
  void Withdraw(int slot);
  // Finishes a taken record: sets the outcome (and message for kFatal) and wakes the thread.
  void Complete(FaultRecord* record, FaultOutcome outcome, const char* message = nullptr);

  // For tests: how long a faulting thread polls (step 8, and for an announced load) before it
  // sleeps or posts; 0 restores the default (200 us). Whether it polls at all (two CPUs or more).
  static void SetPollNsForTesting(int64_t ns);
  static bool PollsForTesting();

  // For tests: report every fault as FaultRecord::kUnknown, as on a CPU that does not say
  // whether an access was a write, so that the pager's fallback rule runs on x86-64 too.
  static void IgnoreCpuAccessBitForTesting(bool ignore);

 private:
  SignalFaultSource();
};

// An announced load for the length of a scope: withdrawn when it ends, whatever the load did.
class Announcement {
 public:
  Announcement() = default;
  Announcement(const Announcement&) = delete;
  Announcement& operator=(const Announcement&) = delete;
  ~Announcement() { SignalFaultSource::Get().Withdraw(slot_); }
  void Make(uintptr_t start, size_t length) {
    if (slot_ < 0) slot_ = SignalFaultSource::Get().Announce(start, length);
  }

 private:
  int slot_ = -1;
};

}  // namespace bigarray::pager
