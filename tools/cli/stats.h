// stats.h: count, min, max, mean and population standard deviation in one streaming pass.
//
// Each chunk's mean and sum of squared deviations are computed in two passes over the chunk (in
// memory), with the rounding correction of Chan, Golub and LeVeque; chunks are combined with
// Chan's parallel formula. Both are of the values less a shift, the first finite value: values
// far from zero but close to each other then lose no digits to the running mean's rounding
// (1e9 + N(0, 1e-3): the mean within 1e-15 relative, where the unshifted sums of a chunk alone
// could be off by more). Integer minima and maxima are kept exactly (also beyond 2^53). A NaN
// makes min, max, mean and std NaN, as in NumPy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "bigarray/dtype.h"

namespace bigarray::cli {

class RunningStats {
 public:
  // REQUIRES: dtype is not complex.
  explicit RunningStats(const DType& dtype) : dtype_(dtype) {}

  // Adds `count` elements of the dtype stored at `data`.
  void Add(const std::byte* data, int64_t count);
  // Adds `count` zero elements (the blocks a sparse array does not store), in O(1).
  void AddZeros(int64_t count);

  int64_t count() const { return n_; }
  double mean() const { return shift_ + mean_; }
  double std() const;  // population (ddof = 0)
  // min and max as JSON numbers: exact integers for integer and bool dtypes, else the shortest
  // text that reads back as the same double; "NaN", "Infinity", "-Infinity" as Python's json
  // writes them. nullopt when empty.
  std::optional<std::string> min() const;
  std::optional<std::string> max() const;

 private:
  DType dtype_;
  int64_t n_ = 0;
  double shift_ = 0;           // subtracted from every value: the first finite one (0 if none)
  double mean_ = 0, m2_ = 0;  // of the shifted values
  bool nan_ = false;
  bool seen_ = false;  // a value other than NaN was added
  // Exact extremes: integers in the 64-bit type of their signedness; floats as doubles.
  int64_t imin_ = 0, imax_ = 0;
  uint64_t umin_ = 0, umax_ = 0;
  double fmin_ = 0, fmax_ = 0;
};

// A double as a JSON number (shortest round-trip form), or NaN / Infinity / -Infinity.
std::string JsonNumber(double v);

}  // namespace bigarray::cli
