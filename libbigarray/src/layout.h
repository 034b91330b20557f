// layout.h: NumPy's basic indexing on an abstract (offset, shape, strides) layout, so that the
// array layer can compute a view's extent before deciding what to map.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "bigarray/status.h"
#include "bigarray/view.h"

namespace bigarray::internal {

struct Layout {
  int64_t offset = 0;  // bytes from some base to element [0, ..., 0]
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
};

// Applies `index` to `in` (NumPy basic indexing).
Result<Layout> ApplyIndex(const Layout& in, std::span<const IndexItem> index);

// [lo, hi): the bytes relative to the base that a layout's elements cover (lo == hi if empty).
std::pair<int64_t, int64_t> LayoutExtent(const Layout& l, int64_t itemsize);

// Copies `shape` elements of `itemsize` bytes between two strided layouts.
void StridedCopy(std::byte* dst, const std::vector<int64_t>& dst_strides, const std::byte* src,
                 const std::vector<int64_t>& src_strides, const std::vector<int64_t>& shape,
                 int64_t itemsize);

}  // namespace bigarray::internal
