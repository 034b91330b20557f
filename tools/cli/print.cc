// print.cc: array values as NumPy prints them, as CSV and as JSON (print.h).
//
// The text layout transcribes numpy/core/arrayprint.py (NumPy 1.24, default options, legacy
// off): FloatingFormat.fillFormat, ComplexFloatingFormat, IntegerFormat, BoolFormat and
// _formatArray with _extendLine. The shortest digits of an element are found by printing it
// with 1, 2, ... significant digits until the text reads back as the same element of its dtype
// (half, single or double precision), which is what NumPy's Dragon4 "unique" mode yields.
#include "print.h"

#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>

namespace bigarray::cli {

namespace {

constexpr int kLineWidth = 75;        // numpy.get_printoptions()["linewidth"]
constexpr int64_t kThreshold = 1000;  // ["threshold"]: more elements than this are summarized
constexpr int64_t kEdgeItems = 3;     // ["edgeitems"]
constexpr int kPrecision = 8;         // ["precision"]

// ---- elements ----------------------------------------------------------------------------------

uint64_t LoadBits(const std::byte* p, int n, bool little) {
  uint64_t v = 0;
  for (int k = 0; k < n; ++k) v |= static_cast<uint64_t>(p[k]) << (8 * (little ? k : n - 1 - k));
  return v;
}

std::string IntegerText(const DType& dtype, const std::byte* p) {
  const int n = dtype.itemsize();
  const uint64_t bits = LoadBits(p, n, dtype.little_endian());
  if (dtype.kind() == DTypeKind::kUInt) return std::to_string(bits);
  const uint64_t sign = 1ull << (8 * n - 1);
  return std::to_string(n == 8 ? static_cast<int64_t>(bits)
                               : static_cast<int64_t>((bits ^ sign) - sign));
}

// The real dtype of a float element or of each half of a complex one.
DType PartType(const DType& d) {
  if (d.kind() != DTypeKind::kComplex) return d;
  return DType::Parse(std::string(d.little_endian() ? "<" : ">") + "f" +
                      std::to_string(d.itemsize() / 2))
      .value();
}

// A finite value as decimal digits: value = ±d1.d2d3... × 10^exp, without trailing zeros.
struct Decimal {
  bool negative = false;
  std::string digits;
  int exp = 0;
};

Decimal ParseE(const char* text) {  // "-1.2345e+05"
  Decimal d;
  const char* p = text;
  if (*p == '-') {
    d.negative = true;
    ++p;
  }
  for (; *p && *p != 'e'; ++p) {
    if (*p != '.') d.digits += *p;
  }
  if (*p == 'e') d.exp = std::atoi(p + 1);
  while (d.digits.size() > 1 && d.digits.back() == '0') d.digits.pop_back();
  return d;
}

// The shortest digits that read back as `v`, an element of the float dtype `part`.
Decimal Shortest(double v, const DType& part) {
  char buf[64];
  std::byte element[8];
  for (int p = 0; p < 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*e", p, v);
    part.FromDouble(std::strtod(buf, nullptr), element);
    if (part.ToDouble(element) == v) break;
  }
  Decimal d = ParseE(buf);
  d.negative = std::signbit(v);
  return d;
}

// Digits with at most `max_frac` digits after the point in scientific form: the shortest, or
// `v` rounded when they need more.
Decimal ShortestCapped(double v, const DType& part, int max_frac, bool positional) {
  Decimal d = Shortest(v, part);
  const int frac = positional ? static_cast<int>(d.digits.size()) - 1 - d.exp
                              : static_cast<int>(d.digits.size()) - 1;
  if (frac <= max_frac) return d;
  char buf[400];
  if (positional) {
    std::snprintf(buf, sizeof buf, "%.*f", max_frac, v);
    // Back to digits and exponent.
    Decimal r;
    r.negative = std::signbit(v);
    const char* p = buf + (buf[0] == '-');
    std::string all;
    int int_len = 0;
    for (const char* q = p; *q; ++q) {
      if (*q == '.') {
        int_len = static_cast<int>(q - p);
      } else {
        all += *q;
      }
    }
    const size_t nz = all.find_first_not_of('0');
    if (nz == std::string::npos) return Decimal{r.negative, "0", 0};
    r.digits = all.substr(nz);
    r.exp = int_len - 1 - static_cast<int>(nz);
    while (r.digits.size() > 1 && r.digits.back() == '0') r.digits.pop_back();
    return r;
  }
  std::snprintf(buf, sizeof buf, "%.*e", max_frac, v);
  Decimal r = ParseE(buf);
  r.negative = std::signbit(v);
  return r;
}

// Integer and fraction parts of the positional form ("-12", "5"), sign included.
std::pair<std::string, std::string> Positional(const Decimal& d, bool plus) {
  std::string int_part, frac;
  const int n = static_cast<int>(d.digits.size());
  if (d.digits == "0") {
    int_part = "0";
  } else if (d.exp >= 0) {
    int_part = d.digits.substr(0, static_cast<size_t>(std::min(n, d.exp + 1)));
    if (n < d.exp + 1) int_part.append(static_cast<size_t>(d.exp + 1 - n), '0');
    if (n > d.exp + 1) frac = d.digits.substr(static_cast<size_t>(d.exp + 1));
  } else {
    int_part = "0";
    frac = std::string(static_cast<size_t>(-d.exp - 1), '0') + d.digits;
  }
  return {(d.negative ? "-" : plus ? "+" : "") + int_part, frac};
}

std::string ExpText(int exp, int min_digits) {
  std::string e = std::to_string(exp < 0 ? -exp : exp);
  if (static_cast<int>(e.size()) < min_digits)
    e.insert(0, static_cast<size_t>(min_digits) - e.size(), '0');
  return (exp < 0 ? "e-" : "e+") + e;
}

// Python's repr() of a float: positional for 1e-4 <= |v| < 1e16, else scientific.
std::string FloatRepr(double v, const DType& part, bool complex_part) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  const Decimal d = Shortest(v, part);
  if (d.digits == "0" || (d.exp >= -4 && d.exp < 16)) {
    auto [i, f] = Positional(d, false);
    if (f.empty()) return complex_part ? i : i + ".0";  // Python writes (1+0j), not (1.0+0.0j)
    return i + "." + f;
  }
  std::string m = (d.negative ? "-" : "") + d.digits.substr(0, 1);
  if (d.digits.size() > 1) m += "." + d.digits.substr(1);
  return m + ExpText(d.exp, 2);
}

std::string ComplexRepr(double re, double im, const DType& part) {
  std::string i = FloatRepr(im, part, true);
  if (i[0] != '-' && i[0] != '+') i = "+" + i;
  if (re == 0 && !std::signbit(re)) return FloatRepr(im, part, true) + "j";
  return FloatRepr(re, part, true) + i + "j";
}

// NumPy's FloatingFormat for the values `data` (maxprec mode, precision 8).
class FloatFormat {
 public:
  FloatFormat(const std::vector<double>& data, const DType& part, bool plus)
      : part_(part), plus_(plus) {
    std::vector<double> finite;
    for (double x : data) {
      if (std::isfinite(x)) finite.push_back(x);
    }
    double max_val = 0, min_val = INFINITY;
    bool any_nonzero = false;
    for (double x : finite) {
      if (x == 0) continue;
      any_nonzero = true;
      max_val = std::max(max_val, std::fabs(x));
      min_val = std::min(min_val, std::fabs(x));
    }
    if (any_nonzero && (max_val >= 1e8 || min_val < 1e-4 || max_val / min_val > 1000.)) exp_ = true;
    if (finite.empty()) {
      pad_left_ = pad_right_ = 0;
    } else if (exp_) {
      int exp_len = 0;
      for (double x : finite) {
        const Decimal d = ShortestCapped(x, part_, kPrecision, false);
        pad_left_ = std::max(pad_left_, 1 + (d.negative || plus_ ? 1 : 0));
        precision_ = std::max(precision_, static_cast<int>(d.digits.size()) - 1);
        exp_len = std::max(exp_len, static_cast<int>(ExpText(d.exp, 2).size()) - 1);
      }
      exp_size_ = exp_len - 1;
      pad_right_ = exp_size_ + 2 + precision_;
    } else {
      for (double x : finite) {
        auto [i, f] = Positional(ShortestCapped(x, part_, kPrecision, true), plus_);
        pad_left_ = std::max(pad_left_, static_cast<int>(i.size()));
        pad_right_ = std::max(pad_right_, static_cast<int>(f.size()));
      }
    }
    if (finite.size() != data.size()) {
      bool neginf = plus_;
      for (double x : data) neginf = neginf || (std::isinf(x) && x < 0);
      const int offset = pad_right_ + 1;
      pad_left_ = std::max({pad_left_, 3 - offset, 3 + (neginf ? 1 : 0) - offset});
    }
  }

  std::string operator()(double x) const {
    if (!std::isfinite(x)) {
      std::string ret = std::isnan(x) ? std::string(plus_ ? "+" : "") + "nan"
                                      : std::string(x < 0   ? "-"
                                                    : plus_ ? "+"
                                                            : "") +
                                            "inf";
      const int pad = pad_left_ + pad_right_ + 1 - static_cast<int>(ret.size());
      return std::string(static_cast<size_t>(std::max(pad, 0)), ' ') + ret;
    }
    if (exp_) {
      const Decimal d = ShortestCapped(x, part_, kPrecision, false);
      std::string i = (d.negative ? "-" : plus_ ? "+" : "") + d.digits.substr(0, 1);
      std::string f = d.digits.substr(1);
      f.append(static_cast<size_t>(precision_) - f.size(), '0');
      return Pad(i) + "." + f + ExpText(d.exp, exp_size_);
    }
    auto [i, f] = Positional(ShortestCapped(x, part_, kPrecision, true), plus_);
    f.append(static_cast<size_t>(pad_right_) - f.size(), ' ');
    return Pad(i) + "." + f;
  }

 private:
  std::string Pad(const std::string& int_part) const {
    const int pad = pad_left_ - static_cast<int>(int_part.size());
    return std::string(static_cast<size_t>(std::max(pad, 0)), ' ') + int_part;
  }

  DType part_;
  bool plus_;
  bool exp_ = false;
  int pad_left_ = 0, pad_right_ = 0, precision_ = 0, exp_size_ = 0;
};

// The formatter of NumPy's array2string for the shown elements (itemsize bytes each).
std::function<std::string(const std::byte*)> ElementFormatter(const DType& dtype,
                                                              const std::vector<std::byte>& shown) {
  const int64_t isz = dtype.itemsize();
  const size_t count = shown.size() / static_cast<size_t>(isz);
  switch (dtype.kind()) {
    case DTypeKind::kBool:
      return [](const std::byte* p) { return std::string(*p != std::byte{0} ? " True" : "False"); };
    case DTypeKind::kInt:
    case DTypeKind::kUInt: {
      size_t width = 0;
      for (size_t k = 0; k < count; ++k)
        width = std::max(width, IntegerText(dtype, shown.data() + k * isz).size());
      return [dtype, width](const std::byte* p) {
        std::string s = IntegerText(dtype, p);
        return std::string(width - std::min(width, s.size()), ' ') + s;
      };
    }
    case DTypeKind::kFloat: {
      std::vector<double> values(count);
      for (size_t k = 0; k < count; ++k) values[k] = dtype.ToDouble(shown.data() + k * isz);
      FloatFormat f(values, dtype, false);
      return [dtype, f](const std::byte* p) { return f(dtype.ToDouble(p)); };
    }
    case DTypeKind::kComplex: {
      const DType part = PartType(dtype);
      const int64_t half = isz / 2;
      std::vector<double> re(count), im(count);
      for (size_t k = 0; k < count; ++k) {
        re[k] = part.ToDouble(shown.data() + k * isz);
        im[k] = part.ToDouble(shown.data() + k * isz + half);
      }
      FloatFormat fr(re, part, false), fi(im, part, true);
      return [part, half, fr, fi](const std::byte* p) {
        std::string i = fi(part.ToDouble(p + half));
        const size_t sp = i.find_last_not_of(' ') + 1;  // the j goes before the padding
        i.insert(sp, "j");
        return fr(part.ToDouble(p)) + i;
      };
    }
  }
  return [](const std::byte*) { return std::string("?"); };
}

// ---- the text layout
// -----------------------------------------------------------------------------

// The elements NumPy shows: along each axis, all, or the first and last kEdgeItems when the
// array is summarized; in C order, each itemsize bytes.
struct Shown {
  std::vector<int64_t> shape;    // of the shown part
  std::vector<bool> summarized;  // per axis
  std::vector<std::byte> data;
  int64_t itemsize = 0;
};

void ExtendLine(std::string& s, std::string& line, const std::string& word, size_t width,
                const std::string& prefix) {
  bool wrap = line.size() + word.size() > width;
  if (line.size() <= prefix.size()) wrap = false;  // wrapping would not help
  if (wrap) {
    const size_t end = line.find_last_not_of(' ');
    s += line.substr(0, end == std::string::npos ? 0 : end + 1) + "\n";
    line = prefix;
  }
  line += word;
}

class TextLayout {
 public:
  TextLayout(const Shown& shown, std::function<std::string(const std::byte*)> format)
      : shown_(shown), format_(std::move(format)) {
    inner_.assign(shown.shape.size(), 1);
    for (int k = static_cast<int>(shown.shape.size()) - 2; k >= 0; --k)
      inner_[k] = inner_[k + 1] * shown.shape[k + 1];
  }

  std::string Run() { return Recurse(0, 0, " ", kLineWidth); }

 private:
  // The part of the shown array under flat offset `base` at axis `axis` (_formatArray.recurser).
  std::string Recurse(size_t axis, int64_t base, const std::string& hanging, int width) {
    const size_t ndim = shown_.shape.size();
    if (axis == ndim) return format_(shown_.data.data() + base * shown_.itemsize);
    const std::string next_hanging = hanging + " ";
    const int next_width = width - 1;
    const int64_t len = shown_.shape[axis];
    const bool summary = shown_.summarized[axis];
    const int64_t leading = summary ? kEdgeItems : 0, trailing = summary ? kEdgeItems : len;
    auto at = [&](int64_t i) {
      return base + i * inner_[axis];
    };  // i-th shown; negative: from the end
    std::string s;
    if (ndim - axis == 1) {
      const size_t elem_width = static_cast<size_t>(width - 1);
      std::string line = hanging;
      for (int64_t i = 0; i < leading; ++i) {
        ExtendLine(s, line, Recurse(axis + 1, at(i), next_hanging, next_width), elem_width,
                   hanging);
        line += " ";
      }
      if (summary) {
        ExtendLine(s, line, "...", elem_width, hanging);
        line += " ";
      }
      for (int64_t i = trailing; i > 1; --i) {
        ExtendLine(s, line, Recurse(axis + 1, at(len - i), next_hanging, next_width), elem_width,
                   hanging);
        line += " ";
      }
      ExtendLine(s, line, Recurse(axis + 1, at(len - 1), next_hanging, next_width), elem_width,
                 hanging);
      s += line;
    } else {
      const std::string line_sep(ndim - axis - 1, '\n');
      for (int64_t i = 0; i < leading; ++i)
        s += hanging + Recurse(axis + 1, at(i), next_hanging, next_width) + line_sep;
      if (summary) s += hanging + "..." + line_sep;
      for (int64_t i = trailing; i > 1; --i) {
        s += hanging + Recurse(axis + 1, at(len - i), next_hanging, next_width) + line_sep;
      }
      s += hanging + Recurse(axis + 1, at(len - 1), next_hanging, next_width);
    }
    return "[" + s.substr(hanging.size()) + "]";
  }

  const Shown& shown_;
  std::function<std::string(const std::byte*)> format_;
  std::vector<int64_t> inner_;
};

// Reads the elements of the region that NumPy would show. Each is loaded before it is read.
Result<Shown> ReadShown(const Array& a, const Region& region) {
  Shown shown;
  shown.itemsize = a.itemsize();
  const bool summarize = region.size() > kThreshold;
  // Per axis, the region indices shown.
  std::vector<std::vector<int64_t>> picks;
  for (int64_t n : region.shape) {
    std::vector<int64_t> p;
    const bool cut = summarize && 2 * kEdgeItems < n;
    if (cut) {
      for (int64_t i = 0; i < kEdgeItems; ++i) p.push_back(i);
      for (int64_t i = n - kEdgeItems; i < n; ++i) p.push_back(i);
    } else {
      for (int64_t i = 0; i < n; ++i) p.push_back(i);
    }
    shown.shape.push_back(static_cast<int64_t>(p.size()));
    shown.summarized.push_back(cut);
    picks.push_back(std::move(p));
  }
  int64_t count = 1;
  for (int64_t n : shown.shape) count *= n;
  shown.data.resize(static_cast<size_t>(count * shown.itemsize));
  std::vector<int64_t> idx(region.shape.size(), 0);  // into picks
  for (int64_t k = 0; k < count; ++k) {
    Box box;
    box.count = 1;
    for (size_t axis = 0; axis < idx.size(); ++axis)
      box.index.emplace_back(picks[axis][static_cast<size_t>(idx[axis])]);
    BA_ASSIGN_OR_RETURN(View v, a.Index(RegionIndex(region, box)));
    BA_RETURN_IF_ERROR(v.Load());
    std::memcpy(shown.data.data() + k * shown.itemsize, v.data(),
                static_cast<size_t>(shown.itemsize));
    for (size_t axis = idx.size(); axis-- > 0;) {  // the next index in C order
      if (++idx[axis] < shown.shape[axis]) break;
      idx[axis] = 0;
    }
  }
  return shown;
}

Status PrintText(const Array& a, const Region& region, std::FILE* out) {
  const DType dtype = a.dtype();
  if (region.size() == 0) {
    std::fputs("[]\n", out);
    return Status::Ok();
  }
  BA_ASSIGN_OR_RETURN(Shown shown, ReadShown(a, region));
  std::string text;
  if (region.shape.empty()) {  // a 0-d array prints as its scalar
    text = ElementRepr(dtype, shown.data.data());
    if (dtype.kind() == DTypeKind::kComplex) text = "(" + text + ")";
  } else {
    text = TextLayout(shown, ElementFormatter(dtype, shown.data)).Run();
  }
  text += "\n";
  std::fwrite(text.data(), 1, text.size(), out);
  return Status::Ok();
}

// ---- CSV and JSON ------------------------------------------------------------------------------

std::string JsonElement(const DType& dtype, const std::byte* p) {
  auto real = [](double v, const DType& part) {
    if (std::isnan(v)) return std::string("NaN");
    if (std::isinf(v)) return std::string(v < 0 ? "-Infinity" : "Infinity");
    return FloatRepr(v, part, false);
  };
  switch (dtype.kind()) {
    case DTypeKind::kBool:
      return *p != std::byte{0} ? "true" : "false";
    case DTypeKind::kInt:
    case DTypeKind::kUInt:
      return IntegerText(dtype, p);
    case DTypeKind::kFloat:
      return real(dtype.ToDouble(p), dtype);
    case DTypeKind::kComplex: {
      const DType part = PartType(dtype);
      return "[" + real(part.ToDouble(p), part) + ", " +
             real(part.ToDouble(p + dtype.itemsize() / 2), part) + "]";
    }
  }
  return "null";
}

Status PrintStream(const Array& a, const Region& region, PrintFormat format,
                   const TransferOptions& options, std::FILE* out) {
  const DType dtype = a.dtype();
  const std::vector<int64_t>& shape = region.shape;
  const size_t ndim = shape.size();
  if (format == PrintFormat::kCsv && ndim > 2) {
    return Unsupported("--format csv: array '" + a.name() + "' has " + std::to_string(ndim) +
                       " dimensions; CSV holds 1 or 2 (use --format json or text)");
  }
  const int64_t isz = dtype.itemsize();
  const int64_t row = ndim == 2 ? shape[1] : 1;  // CSV: elements per line
  std::vector<int64_t> idx(ndim, 0);             // JSON: the C-order index of the next element
  int64_t done = 0;
  std::string text;
  if (format == PrintFormat::kJson && region.size() == 0) {
    // No element opens the brackets: the nested lists down to the first empty axis, as
    // tolist() gives them ([[], []] for shape (2, 0)).
    std::function<std::string(size_t)> empty = [&](size_t axis) {
      if (shape[axis] == 0) return std::string("[]");
      std::string s = "[";
      for (int64_t i = 0; i < shape[axis]; ++i) s += (i ? ", " : "") + empty(axis + 1);
      return s + "]";
    };
    text = empty(0);
  }
  Status st =
      ReadRegion(a, region, false, options, [&](std::span<const std::byte> data, int64_t count) {
        for (int64_t k = 0; k < count; ++k, ++done) {
          const std::byte* p = data.data() + k * isz;
          if (format == PrintFormat::kCsv) {
            text += ElementRepr(dtype, p);
            text += (done + 1) % row == 0 ? "\n" : ",";
            continue;
          }
          // JSON: open a bracket for every trailing axis at index 0, close one for every trailing
          // axis at its last index.
          size_t opening = 0;
          while (opening < ndim && idx[ndim - 1 - opening] == 0) ++opening;
          if (done > 0) text += ", ";
          text.append(opening, '[');
          text += JsonElement(dtype, p);
          size_t axis = ndim;
          while (axis > 0) {
            --axis;
            if (++idx[axis] < shape[axis]) break;
            idx[axis] = 0;
            text += ']';
          }
        }
        if (std::fwrite(text.data(), 1, text.size(), out) != text.size())
          return ErrnoStatus(errno, "write the values");
        text.clear();
        return Status::Ok();
      });
  BA_RETURN_IF_ERROR(st);
  if (format == PrintFormat::kJson) text += "\n";
  if (std::fwrite(text.data(), 1, text.size(), out) != text.size())
    return ErrnoStatus(errno, "write the values");
  return Status::Ok();
}

}  // namespace

std::string ElementRepr(const DType& dtype, const std::byte* p) {
  switch (dtype.kind()) {
    case DTypeKind::kBool:
      return *p != std::byte{0} ? "True" : "False";
    case DTypeKind::kInt:
    case DTypeKind::kUInt:
      return IntegerText(dtype, p);
    case DTypeKind::kFloat:
      return FloatRepr(dtype.ToDouble(p), dtype, false);
    case DTypeKind::kComplex: {
      const DType part = PartType(dtype);
      return ComplexRepr(part.ToDouble(p), part.ToDouble(p + dtype.itemsize() / 2), part);
    }
  }
  return "?";
}

Status PrintRegion(const Array& a, const Region& region, PrintFormat format,
                   const TransferOptions& options, std::FILE* out) {
  if (format == PrintFormat::kText) return PrintText(a, region, out);
  return PrintStream(a, region, format, options, out);
}

}  // namespace bigarray::cli
