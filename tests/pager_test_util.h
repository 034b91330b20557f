// pager_test_util.h: helpers shared by the pager's tests.
#pragma once

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "pager/fault_source.h"
#include "pager/pager.h"

namespace bigarray::testing {

// Accesses that the compiler cannot drop or merge: each one is a load or store of the view.
inline std::byte ReadByte(const std::byte* p) { return *static_cast<const volatile std::byte*>(p); }
inline void WriteByte(std::byte* p, std::byte v) { *static_cast<volatile std::byte*>(p) = v; }

// A pager with a cache of `cache_bytes` and `readahead` blocks of read-ahead (tests turn it off
// unless they test it).
inline std::shared_ptr<pager::Pager> TestPager(uint64_t cache_bytes, unsigned readahead) {
  pager::PagerOptions o;
  o.cache_bytes = cache_bytes;
  o.readahead_blocks = readahead;
  return pager::Pager::Create(o).value();
}

// Runs the body once with the CPU's read/write bit and once without it (as on a CPU that does
// not report it), so that the pager's fallback rule is tested here too.
template <typename Body>
void WithAndWithoutCpuAccessBit(Body body) {
  struct Restore {
    ~Restore() { pager::SignalFaultSource::IgnoreCpuAccessBitForTesting(false); }
  } restore;  // also when a REQUIRE throws
  for (bool ignore : {false, true}) {
    CAPTURE(ignore);
    pager::SignalFaultSource::IgnoreCpuAccessBitForTesting(ignore);
    body();
  }
}

}  // namespace bigarray::testing
