// The RAM pool (docs/pager.md, section 1, "RAM pool" and "Memory"): struct Pool, the slots of
// one memfd per block size and the thread that prefaults them. Making room in it (the budget,
// eviction, spills) is in pool.cc; moving a slot's page-table entries into views in
// page_tables.cc.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

namespace bigarray::pager {

// A pool of RAM pages of one size: slots of a memfd, mapped once (read-write) for the pager's own
// copies. A slot's page-table entries live either here or, while the page is mapped, in its
// home Mapping (moved there by MapInto and back by UnmapAll): RSS counts each page once, and a
// recycled slot is written without faults.
struct Pool {
  size_t block_size = 0;
  int fd = -1;
  std::byte* base = nullptr;     // capacity * block_size bytes, MAP_SHARED
  uint32_t capacity = 0;
  uint32_t next_fresh = 0;       // slots at or above it were never used
  std::vector<uint32_t> free;    // used before, RAM still allocated: reuse first
  // 1: the slot's range of the pool mapping was left read-only (a failed mprotect while map
  // entries ran out); AllocateSlot makes it writable again before handing the slot out.
  std::vector<uint8_t> read_only;
  std::byte* SlotAddr(int32_t slot) const { return base + static_cast<size_t>(slot) * block_size; }

  // Faults the whole pool in, on a thread of its own (PagerOptions::prefault_cache). Throws
  // std::system_error when no thread can be created.
  void StartPrefault() {
    warmer = std::thread([this] {
      constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE, Linux 5.14
      const size_t chunk = std::max<size_t>(block_size, 8u << 20);
      const size_t total = static_cast<size_t>(capacity) * block_size;
      for (size_t off = 0; off < total && !stop_warming.load(std::memory_order_relaxed); off += chunk) {
        // A range whose pages were moved into a view (and write-protected) fails: skip it.
        (void)madvise(base + off, std::min(chunk, total - off), kPopulateWrite);
      }
    });
  }
  ~Pool() {
    stop_warming = true;
    if (warmer.joinable()) warmer.join();
    if (base) munmap(base, static_cast<size_t>(capacity) * block_size);
    if (fd >= 0) close(fd);
  }
  std::thread warmer;
  std::atomic<bool> stop_warming{false};
};

}  // namespace bigarray::pager
