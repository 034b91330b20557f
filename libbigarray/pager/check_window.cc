// The windows loaders check slots through (declared in check_window.h).
#include "pager/check_window.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "pager/file_ranges.h"
#include "pager/io.h"
#include "pager/map_budget.h"

namespace bigarray::pager {

struct CheckWindows::Window {
  int fd = -1;
  dev_t dev = 0;
  ino_t ino = 0;
  off_t start = 0;  // the offset of the file at base: a multiple of kChunk
  std::byte* base = nullptr;
  size_t size = 0;  // at most kChunk
  bool huge = false;  // advised for 2 MiB folios (AdviseSlotReads): a fault's read may be exact
  std::mutex mu;    // guards checked, checked_bytes
  std::vector<std::pair<off_t, size_t>> checked;  // slots checked since the last drop (offsets of the file)
  size_t checked_bytes = 0;

  ~Window() {
    // Fails only for wrong arguments; the range would stay mapped read-only, shown by nobody.
    if (base) (void)munmap(base, size);
    if (charged) MapBudget::Get().Release(1);
  }
  bool charged = false;  // its map entry counts in the MapBudget
};

namespace {
bool SameFile(const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; }
}  // namespace

std::shared_ptr<CheckWindows::Window> CheckWindows::For(const FileRange& r) {
  struct stat st;
  if (fstat(r.fd, &st) != 0) return nullptr;
  const off_t start = r.offset / static_cast<off_t>(kChunk) * static_cast<off_t>(kChunk);
  const size_t end = static_cast<size_t>(r.offset - start) + r.length;  // within the chunk
  if (end > kChunk) return nullptr;  // not a slot: it would straddle two chunks
  std::lock_guard lock(mu_);
  auto it = std::find_if(windows_.begin(), windows_.end(), [&](const auto& w) { return w->fd == r.fd && w->start == start; });
  if (it != windows_.end() && (*it)->dev == st.st_dev && (*it)->ino == st.st_ino && (*it)->size >= end) {
    std::rotate(it, it + 1, windows_.end());  // most recently used last
    return windows_.back();
  }
  // A new window, or a larger one: as much of the chunk as the file holds now and a quarter
  // more. Pages past the end of the file are never read (a slot lies inside the file: the store
  // checked it), and cost no memory.
  const size_t in_file = st.st_size > start ? static_cast<size_t>(st.st_size - start) : 0;
  const size_t want = std::max(end, std::min(in_file, kChunk));
  const size_t size = std::min(kChunk, (want + want / 4 + kHuge - 1) / kHuge * kHuge);
  // One map entry, charged like the views' (map_budget.h): none when the budget is spent.
  if (!MapBudget::Get().Fits(1)) return nullptr;
  void* m = MapAligned(size, PROT_READ, MAP_SHARED, r.fd, start);
  if (m == MAP_FAILED) return nullptr;  // checked another way; the old window (if any) stays
  const bool huge = AdviseSlotReads(m, size, /*exact=*/false);
  auto w = std::make_shared<Window>();
  w->huge = huge;
  MapBudget::Get().Charge(1);
  w->charged = true;
  w->fd = r.fd;
  w->dev = st.st_dev;
  w->ino = st.st_ino;
  w->start = start;
  w->base = static_cast<std::byte*>(m);
  w->size = size;
  // The descriptor could have been closed and reused between the fstat and the mmap: the window
  // must show the file it is named by.
  struct stat mapped;
  if (fstat(r.fd, &mapped) != 0 || !SameFile(st, mapped)) return nullptr;  // w is unmapped
  if (it != windows_.end()) windows_.erase(it);  // unmapped once the checks holding it are done
  if (windows_.size() >= kMaxWindows) windows_.erase(windows_.begin());  // least recently used
  windows_.push_back(w);
  return w;
}

void CheckWindows::Checked(const std::shared_ptr<Window>& w, off_t offset, size_t length) {
  std::vector<std::pair<off_t, size_t>> drop;
  {
    std::lock_guard lock(w->mu);
    w->checked.emplace_back(offset, length);
    w->checked_bytes += length;
    if (w->checked_bytes < kDropBatch) return;
    drop.swap(w->checked);
    w->checked_bytes = 0;
  }
  // Runs of adjacent slots go in one call each: one TLB flush per run.
  std::sort(drop.begin(), drop.end());
  for (size_t i = 0; i < drop.size();) {
    const off_t start = drop[i].first;
    off_t stop = start + static_cast<off_t>(drop[i].second);
    for (++i; i < drop.size() && drop[i].first <= stop; ++i) {
      stop = std::max(stop, drop[i].first + static_cast<off_t>(drop[i].second));
    }
    if (madvise(w->base + (start - w->start), static_cast<size_t>(stop - start), MADV_DONTNEED) != 0) {
      // Cannot happen for a range of a mapping of ours; should it, retire the window: it is
      // unmapped (its entries with it) once the checks holding it are done.
      std::lock_guard lock(mu_);
      std::erase(windows_, w);
      return;
    }
  }
}

GuardedRead CheckWindows::Check(const FileRange& r, SlotRead how, Status* error) {
  const std::shared_ptr<Window> w = For(r);
  if (!w) return GuardedRead::kUnguarded;
  std::byte* at = w->base + (r.offset - w->start);
  // A fault's slot: split off (the window and its two other parts) while it is read and hashed,
  // whether it is read from the disk or was before, maybe with a read-ahead mark on it.
  MapBudget& budget = MapBudget::Get();
  bool exact = how.fault && w->huge && budget.Fits(2);
  if (exact) {
    budget.Charge(2);
    exact = BeginExactRead(at, r.length);
    if (!exact) budget.Release(2);
  }
  // In whole before the hash, read or not: one call where the hash would take a fault per 2 MiB
  // (24 us on this VM, the populate 7), or per 16 pages of a slot in small folios (~1 ms, the
  // populate 0.3).
  PopulateRead(at, r.length);
  const GuardedRead read = CheckMapped(r, at);
  if (exact) {
    EndExactRead(at, r.length);
    budget.Release(2);
  }
  if (read == GuardedRead::kDone) *error = r.check->Finish();
  Checked(w, r.offset, r.length);
  return read;
}

bool CheckWindows::Read(const FileRange& r) {
  const std::shared_ptr<Window> w = For(r);
  if (!w) return false;
  PopulateRead(w->base + (r.offset - w->start), r.length);
  Checked(w, r.offset, r.length);
  return true;
}

bool CheckWindows::MappedForTesting(int fd, off_t offset, WindowInfo* info) const {
  std::lock_guard lock(mu_);
  for (const auto& w : windows_) {
    if (w->fd != fd || offset < w->start || offset >= w->start + static_cast<off_t>(kChunk)) continue;
    std::lock_guard wl(w->mu);
    *info = WindowInfo{w->base, w->start, w->size, w->checked_bytes};
    return true;
  }
  return false;
}

size_t CheckWindows::CountForTesting() const {
  std::lock_guard lock(mu_);
  return windows_.size();
}

}  // namespace bigarray::pager
