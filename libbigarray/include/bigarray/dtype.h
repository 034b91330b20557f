// bigarray/dtype.h: element types, named by NumPy type strings ("<f8", "i4", "|b1", ">c16").
//
// Supported (semantics.md A1): bool (b1), signed and unsigned integers of 1, 2, 4 and 8 bytes,
// float16/32/64 (f2, f4, f8) and complex64/128 (c8, c16), in either byte order. Object, string,
// void and datetime types are refused with a clear error.
//
// Thread contract: DType is an immutable value.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "bigarray/status.h"

namespace bigarray {

enum class DTypeKind : char { kBool = 'b', kInt = 'i', kUInt = 'u', kFloat = 'f', kComplex = 'c' };

class DType {
 public:
  // Parses a NumPy type string: optional byte order ('<', '>', '=', '|'), a kind letter and the
  // item size in bytes ("f8", "<f8", ">i4", "u1", "b1", "?", "c16").
  static Result<DType> Parse(std::string_view str);

  // The native-order dtype of a C++ type: bool, int8_t...uint64_t, float, double,
  // std::complex<float>, std::complex<double>.
  template <typename T>
  static DType Of();

  DTypeKind kind() const { return kind_; }
  int itemsize() const { return itemsize_; }
  bool little_endian() const { return little_endian_; }
  // True when values are stored in this machine's byte order (always for 1-byte types).
  bool native() const;
  // NumPy's canonical str: "<f8", ">i4", "|b1", "|u1".
  std::string str() const;

  // The value at `p` as a double (byte order handled). Complex: the real part.
  double ToDouble(const std::byte* p) const;
  // Stores `v` at `p`, converted to this type (integers: truncated toward zero; bool: v != 0).
  void FromDouble(double v, std::byte* p) const;

  friend bool operator==(const DType& a, const DType& b) {
    return a.kind_ == b.kind_ && a.itemsize_ == b.itemsize_ &&
           (a.itemsize_ == 1 || a.little_endian_ == b.little_endian_);
  }

 private:
  DType(DTypeKind kind, int itemsize, bool little) : kind_(kind), itemsize_(itemsize), little_endian_(little) {}
  DTypeKind kind_ = DTypeKind::kFloat;
  int itemsize_ = 8;
  bool little_endian_ = true;
};

namespace internal {
constexpr bool kHostLittleEndian = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
template <typename T> struct DTypeTraits;
template <> struct DTypeTraits<bool> { static constexpr DTypeKind kind = DTypeKind::kBool; };
template <> struct DTypeTraits<int8_t> { static constexpr DTypeKind kind = DTypeKind::kInt; };
template <> struct DTypeTraits<int16_t> { static constexpr DTypeKind kind = DTypeKind::kInt; };
template <> struct DTypeTraits<int32_t> { static constexpr DTypeKind kind = DTypeKind::kInt; };
template <> struct DTypeTraits<int64_t> { static constexpr DTypeKind kind = DTypeKind::kInt; };
template <> struct DTypeTraits<uint8_t> { static constexpr DTypeKind kind = DTypeKind::kUInt; };
template <> struct DTypeTraits<uint16_t> { static constexpr DTypeKind kind = DTypeKind::kUInt; };
template <> struct DTypeTraits<uint32_t> { static constexpr DTypeKind kind = DTypeKind::kUInt; };
template <> struct DTypeTraits<uint64_t> { static constexpr DTypeKind kind = DTypeKind::kUInt; };
template <> struct DTypeTraits<float> { static constexpr DTypeKind kind = DTypeKind::kFloat; };
template <> struct DTypeTraits<double> { static constexpr DTypeKind kind = DTypeKind::kFloat; };
template <> struct DTypeTraits<std::complex<float>> { static constexpr DTypeKind kind = DTypeKind::kComplex; };
template <> struct DTypeTraits<std::complex<double>> { static constexpr DTypeKind kind = DTypeKind::kComplex; };
}  // namespace internal

template <typename T>
DType DType::Of() {
  static_assert(sizeof(bool) == 1);
  return DType(internal::DTypeTraits<T>::kind, static_cast<int>(sizeof(T)), internal::kHostLittleEndian);
}

}  // namespace bigarray
