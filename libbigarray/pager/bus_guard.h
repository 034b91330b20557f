// bus_guard.h: reading a mapped range of a file on a loader thread without dying of SIGBUS
// (docs/pager.md, section 3b, "Checks through a mapping").
//
// A read through a file mapping whose page the kernel cannot read (an I/O error, a file cut
// below the range) raises SIGBUS in the reading thread, where pread returns an error. A loader
// that checks a block through a mapping of its range (file_ranges.h: a slot through its file's
// check window, check_window.h, or the populated mapping a view will show) reads under a guard: the pager's SIGBUS handler, when the fault is in the guarded range
// of the faulting thread, jumps back to the guard, which reports that the range could not be
// read; the caller then loads a copy, whose read reports the error. Every other SIGBUS goes on to
// the disposition found when the handler was installed, as if it were not there.
//
// Async-signal-safety: the handler finds the guard in a fixed table by thread id (gettid), not
// through thread_local storage (whose first access in a thread of a shared library may allocate),
// and calls only gettid, sigaction, sigemptyset, memset, raise, siglongjmp and the handler it
// chains to.
#pragma once

#include <cstddef>

namespace bigarray::pager {

// Installs the SIGBUS handler when the first pager of the process starts, remembering the
// disposition before it to chain to; later calls do nothing (a handler installed after ours
// chains to ours: taking over again would make the two chain to each other forever).
void InstallBusGuard();

enum class GuardedRead {
  kDone,        // read() ran to its end
  kBus,         // a SIGBUS in [start, start + length) interrupted it: the range cannot be read
  kUnguarded,   // read() was not called: the SIGBUS handler is not ours (somebody replaced it)
};

// Whether our handler is the disposition of SIGBUS now (taking over again from SIG_DFL/SIG_IGN
// that somebody restored): when not, a read through a mapping that may fault is not made.
bool BusGuardInstalled();

// Calls read(arg), which reads [start, start + length) of a file mapping, with SIGBUS unblocked
// on this thread meanwhile (so a SIGBUS sent to the process may be delivered to this thread
// then, where a program waiting for it with sigwait or a signalfd has it blocked: it goes to
// the disposition before ours). read() may be abandoned at any instruction that reads the range:
// while it does, it must hold no lock and own nothing that needs releasing (a pure computation
// over the bytes, such as a hash). Not reentrant on a thread. Somebody's SIGBUS handler
// installed between the check of the disposition and the read (two system calls) would get a
// SIGBUS of the read.
GuardedRead ReadGuarded(const void* start, size_t length, void (*read)(void* arg) noexcept, void* arg);

// Raises SIGBUS to end the process, as an I/O error under mmap does (fault_source.cc, a fatal
// page fault): where nobody handles SIGBUS (SIG_DFL or SIG_IGN, before our handler or instead
// of it), resets it to SIG_DFL first, and unblocks SIGBUS on the thread. Async-signal-safe.
void RaiseFatalBus();

}  // namespace bigarray::pager
