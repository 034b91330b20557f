// stats.cc: streaming statistics (stats.h).
#include "stats.h"

#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <cmath>

namespace bigarray::cli {

namespace {

constexpr int64_t kBatch = 4096;  // elements converted to double at a time

uint64_t LoadBits(const std::byte* p, int n, bool little) {
  uint64_t v = 0;
  for (int k = 0; k < n; ++k) v |= static_cast<uint64_t>(p[k]) << (8 * (little ? k : n - 1 - k));
  return v;
}

int64_t SignExtend(uint64_t bits, int n) {
  if (n == 8) return static_cast<int64_t>(bits);
  const uint64_t sign = 1ull << (8 * n - 1);
  return static_cast<int64_t>((bits ^ sign) - sign);
}

}  // namespace

std::string JsonNumber(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return fmt::format("{}", v);
}

void RunningStats::Add(const std::byte* data, int64_t count) {
  const int isz = dtype_.itemsize();
  const DTypeKind kind = dtype_.kind();
  const bool is_signed = kind == DTypeKind::kInt;
  const bool is_integer = kind == DTypeKind::kInt || kind == DTypeKind::kUInt || kind == DTypeKind::kBool;
  double values[kBatch];
  for (int64_t done = 0; done < count; done += kBatch) {
    const int64_t nb = std::min(kBatch, count - done);
    const std::byte* p = data + done * isz;
    for (int64_t k = 0; k < nb; ++k, p += isz) {
      double v;
      if (is_integer) {
        uint64_t bits = LoadBits(p, isz, dtype_.little_endian());
        if (kind == DTypeKind::kBool) bits = bits != 0;  // any byte but 0 is True, as in NumPy
        if (is_signed) {
          const int64_t i = SignExtend(bits, isz);
          imin_ = seen_ ? std::min(imin_, i) : i;
          imax_ = seen_ ? std::max(imax_, i) : i;
          v = static_cast<double>(i);
        } else {
          umin_ = seen_ ? std::min(umin_, bits) : bits;
          umax_ = seen_ ? std::max(umax_, bits) : bits;
          v = static_cast<double>(bits);
        }
        seen_ = true;
      } else {
        v = dtype_.ToDouble(p);
        if (std::isnan(v)) {
          nan_ = true;
        } else {
          fmin_ = seen_ ? std::min(fmin_, v) : v;
          fmax_ = seen_ ? std::max(fmax_, v) : v;
          seen_ = true;
        }
      }
      values[k] = v;
    }
    if (n_ == 0) {  // the shift: the first finite value (0 if none)
      const double* finite = std::find_if(values, values + nb, [](double v) { return std::isfinite(v); });
      shift_ = finite == values + nb ? 0 : *finite;
    }
    // This batch's mean and sum of squared deviations, both of the values less the shift (two
    // passes, corrected), then merged.
    double sum = 0;
    for (int64_t k = 0; k < nb; ++k) sum += values[k] - shift_;
    const double mean_b = sum / static_cast<double>(nb);
    double dev = 0, sq = 0;
    for (int64_t k = 0; k < nb; ++k) {
      const double d = (values[k] - shift_) - mean_b;
      dev += d;
      sq += d * d;
    }
    const double m2_b = sq - dev * dev / static_cast<double>(nb);
    const double na = static_cast<double>(n_), nbd = static_cast<double>(nb), n = na + nbd;
    const double delta = mean_b - mean_;
    mean_ = n_ == 0 ? mean_b : mean_ + delta * (nbd / n);
    m2_ = n_ == 0 ? m2_b : m2_ + m2_b + delta * delta * (na * nbd / n);
    n_ += nb;
  }
}

void RunningStats::AddZeros(int64_t count) {
  if (count <= 0) return;
  imin_ = seen_ ? std::min<int64_t>(imin_, 0) : 0;
  imax_ = seen_ ? std::max<int64_t>(imax_, 0) : 0;
  umin_ = 0;  // the smallest unsigned value
  umax_ = seen_ ? umax_ : 0;
  fmin_ = seen_ ? std::min(fmin_, 0.0) : 0.0;
  fmax_ = seen_ ? std::max(fmax_, 0.0) : 0.0;
  seen_ = true;
  // Chan's formula with a group of mean 0 (-shift_ shifted) and no deviation.
  if (n_ == 0) shift_ = 0;
  const double na = static_cast<double>(n_), nb = static_cast<double>(count), n = na + nb;
  const double delta = -shift_ - mean_;
  m2_ = n_ == 0 ? 0 : m2_ + delta * delta * (na * nb / n);
  mean_ = n_ == 0 ? 0 : mean_ + delta * (nb / n);
  n_ += count;
}

double RunningStats::std() const {
  if (n_ == 0) return std::nan("");
  return std::sqrt((m2_ < 0 ? 0.0 : m2_) / static_cast<double>(n_));  // NaN stays NaN
}

std::optional<std::string> RunningStats::min() const {
  if (n_ == 0) return std::nullopt;
  switch (dtype_.kind()) {
    case DTypeKind::kInt: return std::to_string(imin_);
    case DTypeKind::kUInt:
    case DTypeKind::kBool: return std::to_string(umin_);
    default: return nan_ ? "NaN" : JsonNumber(fmin_);
  }
}

std::optional<std::string> RunningStats::max() const {
  if (n_ == 0) return std::nullopt;
  switch (dtype_.kind()) {
    case DTypeKind::kInt: return std::to_string(imax_);
    case DTypeKind::kUInt:
    case DTypeKind::kBool: return std::to_string(umax_);
    default: return nan_ ? "NaN" : JsonNumber(fmax_);
  }
}

}  // namespace bigarray::cli
