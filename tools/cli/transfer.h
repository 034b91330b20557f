// transfer.h: moving data between .npy files and arrays in bounded chunks, dtype casts, and the
// splitting of element ranges into boxes that Array::Index can address.
//
// Every transfer walks a region of an array in chunks of at most `chunk_bytes`, in the element
// order of the file (C or F). A chunk is a range of elements in that order; it is split into at
// most 2 * ndim boxes, each a view of the array (Array::Index maps only what it covers, so huge
// arrays work) and each contiguous in the chunk's buffer. Every view is loaded with View::Load()
// before it is touched, so that a damaged block is an error, not a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "bigarray/database.h"
#include "bigarray/view.h"
#include "npy.h"
#include "progress.h"

namespace bigarray::cli {

// A hyper-rectangle of an array's elements.
struct Box {
  std::vector<IndexItem> index;  // one item per axis: an integer or a slice with both bounds
  std::vector<int64_t> shape;    // the shape of the view that `index` selects
  int64_t count = 0;             // its number of elements
};

// Splits elements [begin, end) of an array of `shape`, numbered in C order (F order when
// `fortran`), into boxes that are each contiguous in that order, in order; at most 2 * ndim.
std::vector<Box> FlatRangeBoxes(const std::vector<int64_t>& shape, bool fortran, int64_t begin, int64_t end);

// A part of an array: `shape` elements along `axis`, the k-th at index offset + k * step of the
// array, the other axes whole (rows START:STOP:STEP, the tail an append fills, or the whole
// array). REQUIRES: step != 0, and every index it selects is in the array.
struct Region {
  std::vector<int64_t> shape;
  int axis = 0;
  int64_t offset = 0;
  int64_t step = 1;

  static Region Whole(const Array& a) { return Region{a.shape(), 0, 0}; }
  int64_t size() const;
};

// The index (for Array::Index) of `box`, a box of the region's shape.
std::vector<IndexItem> RegionIndex(const Region& region, const Box& box);

// Casts the import and append commands accept from a file's dtype to an array's: the same type
// in either byte order, the same kind with a larger item size (i2 -> i8, f4 -> f8, c8 -> c16),
// unsigned to a wider signed integer (u4 -> i8), and integers to floats whose significand holds
// them exactly (i1/u1 -> f2; up to i2/u2 -> f4; up to i4/u4 -> f8). Every value converts exactly.
bool CanCastSafely(const DType& from, const DType& to);
// Converts `count` elements; REQUIRES: CanCastSafely(from, to).
void ConvertElements(const DType& from, const std::byte* src, const DType& to, std::byte* dst, int64_t count);

struct TransferOptions {
  uint64_t chunk_bytes = 16 << 20;
  // Bytes of array blocks a transfer may keep in use at once (about half the cache); 0: no limit.
  uint64_t working_set_bytes = 0;
  tools::Progress* progress = nullptr;  // updated with the file bytes moved so far
};

// Reads the data of `in` (whose shape is region.shape; its dtype castable to the array's) into
// the region, then checks that the file ends there. In the array's order, or from a pipe: one
// pass over the file. In the other order (2 or more dimensions, a regular file): in slabs along
// the array's slowest axis that fit the working set, one pass over the file each.
Status WriteRegionFromNpy(npy::NpyReader& in, const Array& a, const Region& region, const TransferOptions& options);

// Calls `sink` with the region's elements in C order (F order when `fortran`), chunk by chunk,
// in the array's dtype.
using ChunkSink = std::function<Status(std::span<const std::byte> data, int64_t count)>;
Status ReadRegion(const Array& a, const Region& region, bool fortran, const TransferOptions& options,
                  const ChunkSink& sink);

// Sets every element of the region to the `a.itemsize()` bytes at `element`.
Status FillRegion(const Array& a, const Region& region, const std::byte* element, const TransferOptions& options);

}  // namespace bigarray::cli
