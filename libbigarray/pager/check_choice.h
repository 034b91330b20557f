// check_choice.h: which way a loader checks a mapped block, through a mapping (a slot: its file's
// check window, check_window.h) or by pread, whichever has been faster in this process
// (docs/pager.md, section 3b).
//
// Neither way is always the faster. Through a mapping, a 2 MiB slot held by the page cache in a
// 2 MiB folio is one PMD entry and the hash reads the page cache in place (65 us for 2 MiB,
// against 110 us by pread, which copies every byte out first: 2026-12-03); a page cache of
// small folios costs one entry per 4 KiB page, and on a day of this VM when each new entry cost
// ~6 us a check through a mapping took 770-830 us against pread's 150 (2026-12-01). So each
// way's cost per byte is kept as a running average of the checking thread's CPU time (a loader
// preempted mid-check is not charged for the wait), the cheaper way is used, and one check in
// kProbeEvery goes the other way so that its average follows the machine. The mapping is kept
// while it costs less than half again as much as pread: where both work, their averages cross
// back and forth (35-130 against 51-147 us per MiB in one scan, 2026-12-03), and first scans
// through the mapping ran at 14-18 GB/s against 11-14 by pread; the cheaper choice had gone by
// pread for a third to a half of the checks.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace bigarray::pager {

class CheckChoice {
 public:
  static constexpr uint64_t kProbeEvery = 16;

  // Whether the next check goes through a mapping (else by pread).
  bool Mapped() {
    const uint64_t n = checks_.fetch_add(1, std::memory_order_relaxed);
    const uint64_t mapped = cost_[1].load(std::memory_order_relaxed), pread = cost_[0].load(std::memory_order_relaxed);
    // A way not measured yet costs 0: it is tried first.
    const bool best = mapped <= pread + pread / 2;
    return n % kProbeEvery == kProbeEvery - 1 ? !best : best;
  }

  // Records that a check of `bytes` took `ns` nanoseconds, through a mapping or by pread.
  // Concurrent records may lose one another's update: an average, not an account.
  void Record(bool mapped, size_t bytes, int64_t ns) {
    if (bytes == 0 || ns <= 0) return;
    const uint64_t per_mib = static_cast<uint64_t>(ns) * (1u << 20) / bytes;
    std::atomic<uint64_t>& c = cost_[mapped ? 1 : 0];
    const uint64_t old = c.load(std::memory_order_relaxed);
    c.store(old == 0 ? per_mib : old - old / 8 + per_mib / 8, std::memory_order_relaxed);
  }

  // The running average of a way, in ns per MiB (0: not measured yet).
  uint64_t CostPerMiB(bool mapped) const { return cost_[mapped ? 1 : 0].load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> checks_{0};
  std::atomic<uint64_t> cost_[2] = {0, 0};  // [0] pread, [1] through a mapping
};

}  // namespace bigarray::pager
