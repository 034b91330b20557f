// DType: parsing, NumPy strings and value conversion.
#include "bigarray/dtype.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace bigarray {

Result<DType> DType::Parse(std::string_view s) {
  const std::string original(s);
  auto bad = [&](const std::string& why) {
    return InvalidArgument("dtype '" + original + "': " + why +
                           " (supported: b1, i1, i2, i4, i8, u1, u2, u4, u8, f2, f4, f8, c8, c16, "
                           "with an optional byte order '<', '>', '=' or '|')");
  };
  if (s == "?") s = "b1";
  bool little = internal::kHostLittleEndian;
  bool explicit_order = false;
  if (!s.empty() && (s[0] == '<' || s[0] == '>' || s[0] == '=' || s[0] == '|')) {
    if (s[0] == '<') little = true;
    if (s[0] == '>') little = false;
    explicit_order = s[0] != '=';
    s.remove_prefix(1);
  }
  if (s.empty()) return bad("empty");
  const char kind = s[0];
  s.remove_prefix(1);
  if (kind == 'O' || kind == 'U' || kind == 'S' || kind == 'V' || kind == 'M' || kind == 'm' ||
      kind == 'a') {
    return bad("object, string, void and datetime types cannot be stored");
  }
  int size = 0;
  if (s.empty() || s.size() > 2 || !std::all_of(s.begin(), s.end(), ::isdigit)) {
    return bad("expected a kind letter followed by the item size in bytes");
  }
  size = std::stoi(std::string(s));
  bool ok = false;
  DTypeKind k{};
  switch (kind) {
    case 'b':
      k = DTypeKind::kBool;
      ok = size == 1;
      break;
    case 'i':
      k = DTypeKind::kInt;
      ok = size == 1 || size == 2 || size == 4 || size == 8;
      break;
    case 'u':
      k = DTypeKind::kUInt;
      ok = size == 1 || size == 2 || size == 4 || size == 8;
      break;
    case 'f':
      k = DTypeKind::kFloat;
      ok = size == 2 || size == 4 || size == 8;
      break;
    case 'c':
      k = DTypeKind::kComplex;
      ok = size == 8 || size == 16;
      break;
    default:
      return bad("unknown kind '" + std::string(1, kind) + "'");
  }
  if (!ok) return bad("no such item size for kind '" + std::string(1, kind) + "'");
  if (size == 1) little = internal::kHostLittleEndian;
  (void)explicit_order;
  return DType(k, size, little);
}

bool DType::native() const { return itemsize_ == 1 || little_endian_ == internal::kHostLittleEndian; }

std::string DType::str() const {
  std::string s(1, itemsize_ == 1 ? '|' : (little_endian_ ? '<' : '>'));
  s += static_cast<char>(kind_);
  s += std::to_string(itemsize_);
  return s;
}

namespace {

// Copies `n` bytes from p into out in native order.
void LoadNative(const std::byte* p, int n, bool swap, unsigned char* out) {
  std::memcpy(out, p, n);
  if (swap) std::reverse(out, out + n);
}

void StoreNative(const unsigned char* in, int n, bool swap, std::byte* p) {
  std::memcpy(p, in, n);
  if (swap) std::reverse(reinterpret_cast<unsigned char*>(p), reinterpret_cast<unsigned char*>(p) + n);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const int exp = static_cast<int>((x >> 23) & 0xFF) - 127 + 15;
  uint32_t mant = x & 0x7FFFFF;
  if (((x >> 23) & 0xFF) == 0xFF) return static_cast<uint16_t>(sign | 0x7C00 | (mant ? 0x200 : 0));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7C00);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000;
    const uint32_t shift = static_cast<uint32_t>(14 - exp);
    uint32_t half = mant >> shift;
    if ((mant >> (shift - 1)) & 1) ++half;  // round half up
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  if (mant & 0x1000) ++half;  // round half up (carries into the exponent correctly)
  return static_cast<uint16_t>(half);
}

template <typename T>
T Load(const std::byte* p, bool swap) {
  unsigned char b[sizeof(T)];
  LoadNative(p, sizeof(T), swap, b);
  T v;
  std::memcpy(&v, b, sizeof(T));
  return v;
}

template <typename T>
void Store(T v, std::byte* p, bool swap) {
  unsigned char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  StoreNative(b, sizeof(T), swap, p);
}

template <typename T>
T Saturate(double v) {
  // Out-of-range conversions are undefined in C++; clamp like a careful cast would.
  if (std::isnan(v)) return 0;
  constexpr double lo = static_cast<double>(std::numeric_limits<T>::lowest());
  constexpr double hi = static_cast<double>(std::numeric_limits<T>::max());
  if (v <= lo) return std::numeric_limits<T>::lowest();
  if (v >= hi) return std::numeric_limits<T>::max();
  return static_cast<T>(v);
}

}  // namespace

double DType::ToDouble(const std::byte* p) const {
  const bool swap = !native();
  switch (kind_) {
    case DTypeKind::kBool:
      return *p != std::byte{0} ? 1.0 : 0.0;
    case DTypeKind::kInt:
      switch (itemsize_) {
        case 1: return Load<int8_t>(p, false);
        case 2: return Load<int16_t>(p, swap);
        case 4: return Load<int32_t>(p, swap);
        default: return static_cast<double>(Load<int64_t>(p, swap));
      }
    case DTypeKind::kUInt:
      switch (itemsize_) {
        case 1: return Load<uint8_t>(p, false);
        case 2: return Load<uint16_t>(p, swap);
        case 4: return Load<uint32_t>(p, swap);
        default: return static_cast<double>(Load<uint64_t>(p, swap));
      }
    case DTypeKind::kFloat:
      switch (itemsize_) {
        case 2: return HalfToFloat(Load<uint16_t>(p, swap));
        case 4: return Load<float>(p, swap);
        default: return Load<double>(p, swap);
      }
    case DTypeKind::kComplex:
      return itemsize_ == 8 ? Load<float>(p, swap) : Load<double>(p, swap);
  }
  return 0;
}

void DType::FromDouble(double v, std::byte* p) const {
  const bool swap = !native();
  switch (kind_) {
    case DTypeKind::kBool:
      *p = std::byte{v != 0.0};
      return;
    case DTypeKind::kInt:
      switch (itemsize_) {
        case 1: return Store(Saturate<int8_t>(v), p, false);
        case 2: return Store(Saturate<int16_t>(v), p, swap);
        case 4: return Store(Saturate<int32_t>(v), p, swap);
        default: return Store(Saturate<int64_t>(v), p, swap);
      }
    case DTypeKind::kUInt:
      switch (itemsize_) {
        case 1: return Store(Saturate<uint8_t>(v), p, false);
        case 2: return Store(Saturate<uint16_t>(v), p, swap);
        case 4: return Store(Saturate<uint32_t>(v), p, swap);
        default: return Store(Saturate<uint64_t>(v), p, swap);
      }
    case DTypeKind::kFloat:
      switch (itemsize_) {
        case 2: return Store(FloatToHalf(static_cast<float>(v)), p, swap);
        case 4: return Store(static_cast<float>(v), p, swap);
        default: return Store(v, p, swap);
      }
    case DTypeKind::kComplex:
      if (itemsize_ == 8) {
        Store(static_cast<float>(v), p, swap);
        Store(0.0f, p + 4, swap);
      } else {
        Store(v, p, swap);
        Store(0.0, p + 8, swap);
      }
      return;
  }
}

}  // namespace bigarray
