// map_budget.h: the process-wide budget of memory map entries (docs/pager.md, "Map entries").
//
// Linux refuses any mmap, mremap, mprotect or munmap that would give a process more than
// vm.max_map_count map entries (VMAs; 65530 by default). Every page the pager shows in a view
// splits that view's reservation, so without a budget a process reading many small blocks runs
// into the limit, and at the limit even unmapping can fail. All pagers of the process charge
// what their mappings may cost here, and unmap least recently used pages before the budget is
// reached. The budget leaves a margin of the limit to the rest of the program.
#pragma once

#include <atomic>
#include <cstdint>

namespace bigarray::pager {

class MapBudget {
 public:
  static MapBudget& Get();

  // Entries the pagers may use together: vm.max_map_count less a margin for the rest of the
  // program (a quarter of the limit, at least 4096 entries).
  uint64_t limit() const { return limit_.load(std::memory_order_relaxed); }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  bool Fits(uint64_t more) const { return used() + more <= limit(); }
  void Charge(uint64_t n) { used_.fetch_add(n, std::memory_order_relaxed); }
  void Release(uint64_t n);  // never below 0 (a forked child starts from 0, see Get)

  // Computes the limit from a given vm.max_map_count (what the constructor does with the file's).
  static uint64_t LimitFor(uint64_t max_map_count);
  // For tests: a smaller budget, to reach it quickly. 0 restores the computed one.
  void SetLimitForTesting(uint64_t limit);

 private:
  MapBudget();
  uint64_t computed_ = 0;
  std::atomic<uint64_t> limit_{0};
  std::atomic<uint64_t> used_{0};
};

}  // namespace bigarray::pager
