// Loader threads and requests (docs/pager.md, section 1, "Loader threads", "Requests" and
// "Fault source"; section 4; section 8, read-ahead): starting loaders, and more while others are
// in I/O, taking faults and queued requests, read-ahead, Mapping::Load, completing requests and
// waking those parked on a page. What a request does to its page is in pager.cc (Process).
#include <semaphore.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <system_error>
#include <utility>

#include "pager/bus_guard.h"
#include "pager/cpus.h"
#include "pager/fault_source.h"
#include "pager/io.h"
#include "pager/pager_impl.h"

namespace bigarray::pager {
namespace {
// Whether this loader thread works on a read-ahead request and counts in prefetching_.
thread_local bool t_readahead_turn = false;
}  // namespace

constexpr size_t kMaxLoaders = 256;

namespace {
// Whether a fault at `block` continues `run` (read-ahead window `k`): it is the run's marker, or
// it is past the run's last fault by at most k + 1 blocks with a page record for every block in
// between (the reader went through them without a fault of ours).
bool Continues(const FileState& f, const FileState::ReadRun& run, uint64_t block, unsigned k) {
  if (block == run.marker) return true;
  if (run.last == UINT64_MAX || block <= run.last || block - run.last > k + 1) return false;
  for (uint64_t b = run.last + 1; b < block; ++b) {
    if (!f.pages.count(b)) return false;
  }
  return true;
}

// The run a fault of thread `tid` at `block` belongs to, and whether it continues it: a run it
// continues (its marker first, whichever thread it followed: a pool's threads take turns on a
// scan), else the thread's own run, else a new one in place of the least recently used.
std::pair<FileState::ReadRun*, bool> RunOf(FileState& f, pid_t tid, uint64_t block, unsigned k) {
  FileState::ReadRun *found = nullptr, *own = nullptr, *oldest = &f.runs[0];
  for (FileState::ReadRun& run : f.runs) {
    if (run.marker == block) {
      found = &run;
      break;
    }
    if (!found && Continues(f, run, block, k)) found = &run;
    if (run.tid == tid) own = &run;
    if (run.used < oldest->used) oldest = &run;
  }
  FileState::ReadRun* run = found ? found : own ? own : oldest;
  if (!found && !own) *run = FileState::ReadRun{};
  for (FileState::ReadRun& other : f.runs) {
    if (other.tid == tid) other.tid = 0;  // one run per thread: the one it continues now
  }
  run->tid = tid;
  run->used = ++f.runs_used;
  return {run, found != nullptr};
}
}  // namespace

Status PagerImpl::Start() {
  SignalFaultSource::Get();  // install the handler before any mapping exists
  InstallBusGuard();         // and the one of the loaders' checks through mappings
  const unsigned n = std::max(1u, options_.loader_threads);
  std::lock_guard lock(mu_);
  readahead_limit_ = options_.readahead_loaders != 0 ? options_.readahead_loaders : std::max(1u, UsableCpus() - 1);
  try {
    for (unsigned i = 0; i < n; ++i) loaders_.emplace_back([this] { LoaderMain(); });
  } catch (const std::system_error& e) {
    if (loaders_.empty()) {  // one is enough to work, more only make it faster
      return ResourceExhausted("could not create a thread for the pager's loader: " + ErrorText(e) +
                               "; the limit on processes or threads (ulimit -u) or on address space "
                               "(ulimit -v) may be reached");
    }
  }
  return Status::Ok();
}

void PagerImpl::BeginIo() {
  ++busy_loaders_;
  if (busy_loaders_ >= loaders_.size() && loaders_.size() < kMaxLoaders && !stopping_) {
    try {
      loaders_.emplace_back([this] { LoaderMain(); });
    } catch (const std::system_error& e) {
      // No thread to be had (ulimit -u, address space): fewer loaders means a fault may wait
      // behind another block's I/O, or behind a loader waiting for room (P9 no longer holds),
      // never that it fails.
      if (!thread_warned_ && options_.logger) {
        options_.logger->warn("could not create another loader thread ({}); going on with {}", ErrorText(e),
                              loaders_.size());
      }
      thread_warned_ = true;
    }
  }
}

Status Mapping::Load(size_t offset, size_t length) {
  return file_->pager_->Load(*this, offset, length);
}

Status PagerImpl::Load(Mapping& m, size_t offset, size_t length) {
  if (length == 0) return Status::Ok();
  if (offset > m.size_ || length > m.size_ - offset) {
    return OutOfRange("load of bytes [" + std::to_string(offset) + ", " +
                      std::to_string(offset + length) + ") outside a mapping of " +
                      std::to_string(m.size_) + " bytes");
  }
  const size_t bs = m.file_->block_size_;
  const uint64_t first = offset / bs, end = (offset + length + bs - 1) / bs;
  auto waiter = std::make_shared<LoadWaiter>();
  waiter->remaining = end - first;
  {
    std::lock_guard lock(mu_);
    FileState* f = m.file_->state_;
    for (uint64_t b = first; b < end; ++b) {
      Request r;
      r.file_id = f->id;
      r.block = m.first_block_ + b;
      r.mapping = MappingRef{f->id, m.index_, f->mappings[m.index_].serial};
      r.waiter = waiter;
      Enqueue(std::move(r));
    }
  }
  std::unique_lock wl(waiter->mu);
  waiter->cv.wait(wl, [&] { return waiter->remaining == 0; });
  return waiter->error;
}

Result<bool> Mapping::ReadAbsent(uint64_t block, std::span<std::byte> out) {
  if (block >= size_ / file_->block_size_ || out.size() != file_->block_size_) {
    return OutOfRange("read of block " + std::to_string(block) + " of a mapping of " +
                      std::to_string(size_ / file_->block_size_) + " blocks into " + std::to_string(out.size()) +
                      " bytes");
  }
  return file_->pager_->ReadAbsent(file_->state_, first_block_ + block, out);
}

Result<bool> PagerImpl::ReadAbsent(FileState* f, uint64_t block, std::span<std::byte> out) {
  std::shared_ptr<BlockSource> source;
  std::string name;
  {
    std::lock_guard lock(mu_);
    if (f->pages.count(block)) return false;
    source = f->source;
    name = f->name;
  }
  // Not under mu_ (I/O). A fault that makes the block a page meanwhile loads the same bytes
  // from the same snapshot: the caller's read of them is not ordered with writes through views
  // anyway, as for any two threads.
  const Status st = source->LoadBlock(block, out);
  if (!st.ok()) return st.WithContext(name + " block " + std::to_string(block));
  return true;
}

void PagerImpl::YieldReadaheadTurn() {
  if (!t_readahead_turn) return;
  t_readahead_turn = false;
  --prefetching_;
  if (queued_prefetches_ > 0) sem_post(&work_);
}

void PagerImpl::Enqueue(Request req) {
  // A read-ahead wakes a loader only if one more may work on read-ahead: the loaders that do take
  // the queued ones in turn, and waking the others for nothing would take the CPU of the reader
  // the read-ahead is for.
  const bool wake = !req.prefetch || prefetching_ + queued_prefetches_ < readahead_limit_;
  if (req.prefetch) ++queued_prefetches_;
  ready_.push_back(std::move(req));
  if (wake) sem_post(&work_);
}

void PagerImpl::LoaderMain() {
  SignalFaultSource& source = SignalFaultSource::Get();
  for (;;) {
    while (sem_wait(&work_) != 0 && errno == EINTR) {
    }
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    while (FaultRecord* r = source.Take(this)) HandleFault(r);
    for (;;) {
      Request req;
      {
        std::lock_guard lock(mu_);
        // The first request this loader may take: a read-ahead only while fewer than
        // readahead_limit_ loaders work on one (the one that does takes the next when done).
        auto it = ready_.begin();
        if (prefetching_ >= readahead_limit_) {
          it = std::find_if(ready_.begin(), ready_.end(), [](const Request& r) { return !r.prefetch; });
        }
        if (it == ready_.end()) break;
        req = std::move(*it);
        ready_.erase(it);
        if (req.prefetch) ++prefetching_, --queued_prefetches_, t_readahead_turn = true;
      }
      Process(std::move(req));
      if (t_readahead_turn) {
        std::lock_guard lock(mu_);
        --prefetching_;
        t_readahead_turn = false;
        // This loader serves the faults posted meanwhile first: the next read-ahead goes to
        // another one then, instead of waiting for them.
        if (queued_prefetches_ > 0 && source.AnyPosted()) sem_post(&work_);
      }
      // Faults come first: a thread is stopped on each of them.
      while (FaultRecord* r = source.Take(this)) HandleFault(r);
    }
  }
}

void PagerImpl::HandleFault(FaultRecord* r) {
  ++faults_;
  Request req;
  std::vector<Request> prefetches;
  {
    std::lock_guard lock(mu_);
    auto it = mappings_by_address_.upper_bound(r->addr);
    if (it == mappings_by_address_.begin()) {
      SignalFaultSource::Get().Complete(r, FaultOutcome::kForeign);
      return;
    }
    --it;
    FileState* f = FindFile(it->second.file_id);
    if (!f) {
      SignalFaultSource::Get().Complete(r, FaultOutcome::kForeign);
      return;
    }
    const MappingSlot& m = f->mappings[it->second.index];
    const uintptr_t base = reinterpret_cast<uintptr_t>(m.base);
    if (r->addr >= base + m.count * f->block_size) {
      SignalFaultSource::Get().Complete(r, FaultOutcome::kForeign);
      return;
    }
    req.file_id = f->id;
    req.block = m.first + (r->addr - base) / f->block_size;
    req.write = r->access == FaultRecord::kWrite;
    req.access_unknown = r->access == FaultRecord::kUnknown;
    req.tid = r->tid;
    req.mapping = it->second;
    req.fault = r;
    // Read-ahead (P11): faults on a file make runs (RunOf); a fault continues one if it is the
    // run's marker, or if it is a little past the run's last fault with a page record for every
    // block in between (the reader went through them without a fault of ours: read ahead, or
    // there from before). A jump over a block without one is random access, which reads nothing
    // ahead. A run loads the next blocks and maps all but one, the marker, whose fault (cheap:
    // it is resident by then) announces that the run goes on, whatever happened to the blocks
    // before it. The marker is the first block queued halfway into the window or later, so that
    // the next window is asked for while half of this one is still ahead of the reader: loads
    // (and checks) stay ahead of a scan instead of starting when it reaches them.
    // The window: at most a quarter of the budget, so that a prefetch never evicts a block an
    // earlier one of the run brought in before the reader got to it. When the faulting block
    // has a page, its requests are queued once the fault is served: the loaders they wake
    // (readahead_loaders at most) would hold mu_ in turn to map their blocks while the faulting
    // thread waits (docs/pager.md, section 8).
    const unsigned k = static_cast<unsigned>(
        std::min<uint64_t>(options_.readahead_blocks, Budget() / f->block_size / 4));
    auto [run, continues] = k > 0 ? RunOf(*f, req.tid, req.block, k) : std::pair<FileState::ReadRun*, bool>();
    if (continues) {
      const uint64_t end = std::min({m.first + m.count, f->extent, req.block + 1 + k});
      std::vector<uint64_t> queued;
      for (uint64_t b = req.block + 1; b < end; ++b) {
        if (!f->pages.count(b)) queued.push_back(b);
      }
      const uint64_t half = req.block + 1 + k / 2;
      auto marker = std::find_if(queued.begin(), queued.end(), [&](uint64_t b) { return b >= half; });
      if (marker == queued.end() && !queued.empty()) --marker;
      run->marker = marker == queued.end() ? UINT64_MAX : *marker;
      for (auto q = queued.begin(); q != queued.end(); ++q) {
        Request ra;
        ra.file_id = f->id;
        ra.block = *q;
        ra.prefetch = true;
        ra.mapping = it->second;
        ra.map_after_prefetch = q != marker;
        prefetches.push_back(std::move(ra));
      }
    }
    if (run) run->last = req.block;
    // A fault on a block with a page (a marker, resident) is served in a moment: its window is
    // queued after it. One on a block without a page loads it first: the window's loads
    // overlap that one, as before.
    if (!f->pages.count(req.block)) {
      for (Request& ra : prefetches) Enqueue(std::move(ra));
      prefetches.clear();
    }
  }
  Process(std::move(req));
  if (!prefetches.empty()) {
    std::lock_guard lock(mu_);
    for (Request& ra : prefetches) Enqueue(std::move(ra));
  }
}

void PagerImpl::Complete(Request& req, FaultOutcome outcome, const Status& error) {
  if (req.fault) {
    std::string msg;
    if (outcome == FaultOutcome::kFatal) msg = "bigarray: fatal page fault: " + error.ToString();
    SignalFaultSource::Get().Complete(req.fault, outcome, msg.empty() ? nullptr : msg.c_str());
    req.fault = nullptr;
  }
  if (req.waiter) {
    std::lock_guard lock(req.waiter->mu);
    if (!error.ok() && req.waiter->error.ok()) req.waiter->error = error;
    if (outcome == FaultOutcome::kForeign && req.waiter->error.ok()) {
      req.waiter->error = FailedPrecondition("the mapping was released during the load");
    }
    if (--req.waiter->remaining == 0) req.waiter->cv.notify_all();
    req.waiter.reset();
  }
}

void PagerImpl::WakeWaiters(Page& p) {
  for (Request& r : p.waiters) Enqueue(std::move(r));
  p.waiters.clear();
  settled_cv_.notify_all();
}

}  // namespace bigarray::pager
