// The process-wide map-entry budget (map_budget.h).
#include "pager/map_budget.h"

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
  static MapBudget* budget = new MapBudget();  // lives as long as the process
  return *budget;
}

void MapBudget::SetLimitForTesting(uint64_t limit) { limit_ = limit ? limit : computed_; }

}  // namespace bigarray::pager
