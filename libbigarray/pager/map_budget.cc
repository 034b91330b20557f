// The process-wide map-entry budget (map_budget.h).
#include "pager/map_budget.h"

#include <pthread.h>

#include <cstdio>

namespace bigarray::pager {

namespace {
constexpr uint64_t kDefaultMaxMapCount = 65530;  // Linux's DEFAULT_MAX_MAP_COUNT

uint64_t ReadMaxMapCount() {
  uint64_t n = 0;
  if (FILE* f = std::fopen("/proc/sys/vm/max_map_count", "re")) {
    unsigned long long v = 0;
    if (std::fscanf(f, "%llu", &v) == 1) n = v;
    std::fclose(f);
  }
  return n > 0 ? n : kDefaultMaxMapCount;
}
}  // namespace

uint64_t MapBudget::LimitFor(uint64_t max_map_count) {
  const uint64_t margin = max_map_count / 4 > 4096 ? max_map_count / 4 : 4096;
  return max_map_count > 2 * margin ? max_map_count - margin : max_map_count / 2;
}

MapBudget::MapBudget() : computed_(LimitFor(ReadMaxMapCount())) { limit_ = computed_; }

MapBudget& MapBudget::Get() {
  // Lives as long as the process. A forked child has none of its parent's views (the fault
  // source reserves them over), so it starts its count from 0.
  static MapBudget* budget = [] {
    auto* b = new MapBudget();
    pthread_atfork(nullptr, nullptr, [] { Get().used_.store(0, std::memory_order_relaxed); });
    return b;
  }();
  return *budget;
}

void MapBudget::Release(uint64_t n) {
  uint64_t used = used_.load(std::memory_order_relaxed);
  while (!used_.compare_exchange_weak(used, used > n ? used - n : 0, std::memory_order_relaxed)) {
  }
}

void MapBudget::SetLimitForTesting(uint64_t limit) { limit_ = limit ? limit : computed_; }

}  // namespace bigarray::pager
