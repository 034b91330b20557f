// args.cc: the command-line parser and option value parsers (args.h).
#include "args.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>

namespace bigarray::cli {

namespace {

Status Usage(std::string message) { return InvalidArgument(std::move(message)); }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A whole decimal integer, optionally signed; nullopt when it is not one or does not fit.
std::optional<int64_t> ParseInt64(std::string_view s) {
  if (s.empty()) return std::nullopt;
  bool negative = false;
  size_t i = 0;
  if (s[0] == '+' || s[0] == '-') {
    negative = s[0] == '-';
    i = 1;
  }
  if (i == s.size()) return std::nullopt;
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    const int digit = s[i] - '0';
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, negative ? -digit : digit, &v)) {
      return std::nullopt;
    }
  }
  return v;
}

std::optional<uint64_t> ParseUint64(std::string_view s) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, static_cast<uint64_t>(c - '0'), &v)) {
      return std::nullopt;
    }
  }
  return v;
}

// A whole floating-point literal (strtod's syntax: also nan, inf, 1e5).
std::optional<double> ParseDouble(std::string_view s) {
  if (s.empty() || s.front() == ' ') return std::nullopt;
  const std::string str(s);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(str.c_str(), &end);
  if (end != str.c_str() + str.size()) return std::nullopt;
  if (errno == ERANGE && std::isinf(v)) return std::nullopt;  // overflow, e.g. 1e999
  return v;
}

Status CheckValue(const OptionSpec& o, const std::string& value) {
  auto bad = [&](const Status& st) { return Usage("--" + std::string(o.name) + ": " + st.message()); };
  switch (o.kind) {
    case ValueKind::kFlag:
    case ValueKind::kText:
      return Status::Ok();
    case ValueKind::kByteSize:
      if (auto r = ParseByteSize(value); !r.ok()) return bad(r.status());
      return Status::Ok();
    case ValueKind::kBlockSize:
      if (auto r = ParseBlockSize(value); !r.ok()) return bad(r.status());
      return Status::Ok();
    case ValueKind::kShape:
      if (auto r = ParseShape(value); !r.ok()) return bad(r.status());
      return Status::Ok();
    case ValueKind::kDType:
      if (auto r = DType::Parse(value); !r.ok()) return bad(r.status());
      return Status::Ok();
    case ValueKind::kOrder:
      if (auto r = ParseOrder(value); !r.ok()) return bad(r.status());
      return Status::Ok();
    case ValueKind::kRows:
      if (auto r = ParseRows(value); !r.ok()) return bad(r.status());
      return Status::Ok();
    case ValueKind::kScalar:
      if (auto r = ParseScalar(value); !r.ok()) return bad(r.status());
      return Status::Ok();
    case ValueKind::kCount:
      if (auto r = ParseCount(value); !r.ok()) return bad(r.status());
      return Status::Ok();
    case ValueKind::kFormat:
      if (auto r = ParsePrintFormat(value); !r.ok()) return bad(r.status());
      return Status::Ok();
    case ValueKind::kAttrSet:
      if (auto r = ParseAttrSet(value); !r.ok()) return bad(r.status());
      return Status::Ok();
  }
  return Status::Ok();
}

const OptionSpec* FindOption(std::span<const OptionSpec> options, std::string_view name, char short_name) {
  for (const OptionSpec& o : options) {
    if (short_name ? o.short_name == short_name : o.name == name) return &o;
  }
  return nullptr;
}

}  // namespace

std::optional<std::string> ParsedArgs::Value(std::string_view name) const {
  auto it = options.find(name);
  if (it == options.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> ParsedArgs::Values(std::string_view name) const {
  auto it = all_values.find(name);
  if (it == all_values.end()) return {};
  return it->second;
}

Result<ParsedArgs> ParseArgs(int argc, const char* const* argv, std::span<const OptionSpec> globals,
                             std::span<const CommandSpec> commands) {
  ParsedArgs out;
  bool options_ended = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool is_option = !options_ended && arg.size() > 1 && arg[0] == '-';
    if (!is_option) {
      if (!out.command) {
        for (const CommandSpec& c : commands) {
          if (c.name == arg) out.command = &c;
        }
        if (!out.command) return Usage("unknown command '" + std::string(arg) + "'");
      } else {
        out.positionals.emplace_back(arg);
      }
      continue;
    }
    if (arg == "--") {
      options_ended = true;
      continue;
    }
    // --name, --name=value, or -x.
    std::string_view name;
    std::optional<std::string> inline_value;
    char short_name = 0;
    if (arg.starts_with("--")) {
      name = arg.substr(2);
      if (size_t eq = name.find('='); eq != std::string_view::npos) {
        inline_value = std::string(name.substr(eq + 1));
        name = name.substr(0, eq);
      }
    } else if (arg.size() == 2) {
      short_name = arg[1];
    } else {
      return Usage("unknown option '" + std::string(arg) + "'");
    }
    const OptionSpec* spec = FindOption(globals, name, short_name);
    if (!spec && out.command) spec = FindOption(out.command->options, name, short_name);
    if (!spec) {
      std::string msg = "unknown option '" + std::string(short_name ? arg : arg.substr(0, 2 + name.size())) + "'";
      if (out.command) msg += " for '" + std::string(out.command->name) + "'";
      return Usage(msg);
    }
    const std::string label = "--" + std::string(spec->name);
    std::string value;
    if (spec->kind == ValueKind::kFlag) {
      if (inline_value) return Usage(label + " takes no value");
    } else if (inline_value) {
      value = *inline_value;
    } else {
      if (i + 1 >= argc) return Usage(label + " needs a value");
      value = argv[++i];
    }
    if (spec->name == "help") out.help = true;
    if (spec->repeatable) out.all_values[std::string(spec->name)].push_back(value);
    out.options[std::string(spec->name)] = std::move(value);
  }
  if (out.help) return out;  // help needs nothing else, but unknown names were still errors
  for (const auto& [name, value] : out.options) {
    const OptionSpec* spec = FindOption(globals, name, 0);
    if (!spec) spec = FindOption(out.command->options, name, 0);
    BA_RETURN_IF_ERROR(CheckValue(*spec, value));
    if (spec->kind == ValueKind::kAttrSet) {
      for (const std::string& v : out.Values(name)) BA_RETURN_IF_ERROR(CheckValue(*spec, v));
    }
  }
  if (!out.command) return out;
  const CommandSpec& c = *out.command;
  for (const OptionSpec& o : c.options) {
    if (o.required && !out.options.count(o.name)) {
      return Usage(std::string(c.name) + ": --" + std::string(o.name) + " is required");
    }
  }
  if (out.positionals.size() < c.positionals.size() ||
      out.positionals.size() > c.positionals.size() + c.optional_positionals.size()) {
    std::string want;
    for (std::string_view p : c.positionals) want += " " + std::string(p);
    for (std::string_view p : c.optional_positionals) want += " [" + std::string(p) + "]";
    if (out.positionals.size() < c.positionals.size()) {
      return Usage(std::string(c.name) + ": missing " + std::string(c.positionals[out.positionals.size()]) +
                   " (usage: bigarray " + std::string(c.name) + want + " ...)");
    }
    return Usage(std::string(c.name) + ": unexpected argument '" +
                 out.positionals[c.positionals.size() + c.optional_positionals.size()] +
                 "' (usage: bigarray " + std::string(c.name) + want + " ...)");
  }
  return out;
}

Result<uint64_t> ParseByteSize(std::string_view s) {
  const std::string original(s);
  uint64_t multiplier = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'K': case 'k': multiplier = 1ull << 10; break;
      case 'M': case 'm': multiplier = 1ull << 20; break;
      case 'G': case 'g': multiplier = 1ull << 30; break;
      default: break;
    }
    if (multiplier != 1) s.remove_suffix(1);
  }
  auto n = ParseUint64(s);
  uint64_t bytes = 0;
  if (!n || __builtin_mul_overflow(*n, multiplier, &bytes) || bytes == 0 || bytes > (1ull << 62)) {
    return InvalidArgument("'" + original + "' is not a size in bytes (e.g. 65536, 64K, 512M, 2G)");
  }
  return bytes;
}

Result<uint64_t> ParseBlockSize(std::string_view s) {
  BA_ASSIGN_OR_RETURN(uint64_t bytes, ParseByteSize(s));
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (bytes % page != 0 || bytes > (1ull << 30)) {
    return InvalidArgument("block size " + std::to_string(bytes) + " is not a multiple of the page size (" +
                           std::to_string(page) + ") up to 1G");
  }
  return bytes;
}

Result<std::vector<int64_t>> ParseShape(std::string_view s) {
  const std::string original(s);
  auto bad = [&](const std::string& why) {
    return InvalidArgument("shape '" + original + "': " + why + " (expected e.g. 1000,3)");
  };
  s = Trim(s);
  if (s.starts_with("(") && s.ends_with(")")) s = Trim(s.substr(1, s.size() - 2));
  std::vector<int64_t> shape;
  while (!s.empty()) {
    const size_t comma = s.find(',');
    const std::string_view item = Trim(s.substr(0, comma));
    s = comma == std::string_view::npos ? std::string_view() : Trim(s.substr(comma + 1));
    if (item.empty()) {
      if (comma != std::string_view::npos && s.empty() && !shape.empty()) break;  // "(3,)"
      return bad("empty extent");
    }
    auto v = ParseInt64(item);
    if (!v) return bad("'" + std::string(item) + "' is not an integer");
    if (*v < 0) return bad("negative extent " + std::to_string(*v));
    shape.push_back(*v);
  }
  auto nbytes = CheckedNbytes(shape, 1);
  if (!nbytes.ok()) return bad(nbytes.status().message());
  return shape;
}

Result<Order> ParseOrder(std::string_view s) {
  if (s == "C" || s == "c") return Order::kC;
  if (s == "F" || s == "f") return Order::kF;
  return InvalidArgument("order '" + std::string(s) + "': expected C or F");
}

Result<Slice> ParseRows(std::string_view s) {
  const size_t colon = s.find(':');
  const size_t colon2 = colon == std::string_view::npos ? colon : s.find(':', colon + 1);
  if (colon == std::string_view::npos ||
      (colon2 != std::string_view::npos && s.find(':', colon2 + 1) != std::string_view::npos)) {
    return InvalidArgument("rows '" + std::string(s) + "': expected START:STOP[:STEP], e.g. 10:20, -5:, :100, ::10");
  }
  const std::string_view parts[3] = {
      s.substr(0, colon),
      colon2 == std::string_view::npos ? s.substr(colon + 1) : s.substr(colon + 1, colon2 - colon - 1),
      colon2 == std::string_view::npos ? std::string_view() : s.substr(colon2 + 1)};
  Slice slice;
  for (int k = 0; k < 3; ++k) {
    if (parts[k].empty()) continue;
    auto v = ParseInt64(parts[k]);
    if (!v) return InvalidArgument("rows '" + std::string(s) + "': '" + std::string(parts[k]) + "' is not an integer");
    if (k == 2) {
      if (*v == 0) return InvalidArgument("rows '" + std::string(s) + "': the step must not be 0");
      if (*v == INT64_MIN) return InvalidArgument("rows '" + std::string(s) + "': the step is out of range");
      slice.step = *v;
    } else {
      (k == 0 ? slice.start : slice.stop) = *v;
    }
  }
  return slice;
}

Result<int64_t> ParseCount(std::string_view s) {
  auto v = ParseInt64(s);
  if (!v || *v < 0) return InvalidArgument("'" + std::string(s) + "' is not a number of rows (0, 1, 2, ...)");
  return *v;
}

Result<PrintFormat> ParsePrintFormat(std::string_view s) {
  if (s == "text") return PrintFormat::kText;
  if (s == "csv") return PrintFormat::kCsv;
  if (s == "json") return PrintFormat::kJson;
  return InvalidArgument("format '" + std::string(s) + "': expected text, csv or json");
}

Result<Scalar> ParseScalar(std::string_view s) {
  Scalar v;
  v.text = std::string(s);
  auto bad = [&] {
    return InvalidArgument("value '" + v.text + "' is not a number (e.g. 3, -2.5, 1e-3, nan, true, 1+2j)");
  };
  if (s == "true" || s == "True") s = "1";
  if (s == "false" || s == "False") s = "0";
  if (s.size() >= 2 && s.front() == '(' && s.back() == ')') s = s.substr(1, s.size() - 2);
  if (!s.empty() && (s.back() == 'j' || s.back() == 'J')) {
    // A Python complex literal: [REAL](+|-)IMAGj, or IMAGj.
    const std::string_view body = s.substr(0, s.size() - 1);
    size_t split = std::string_view::npos;
    for (size_t i = body.size(); i-- > 1;) {
      if ((body[i] == '+' || body[i] == '-') && body[i - 1] != 'e' && body[i - 1] != 'E') {
        split = i;
        break;
      }
    }
    const std::string_view re = split == std::string_view::npos ? std::string_view() : body.substr(0, split);
    const std::string_view im = split == std::string_view::npos ? body : body.substr(split);
    auto r = re.empty() ? std::optional<double>(0.0) : ParseDouble(re);
    auto i = ParseDouble(im);
    if (!r || !i) return bad();
    v.real = *r;
    v.imag = *i;
    return v;
  }
  auto d = ParseDouble(s);
  if (!d) return bad();
  v.real = *d;
  v.as_int64 = ParseInt64(s);
  v.as_uint64 = ParseUint64(s);
  return v;
}

}  // namespace bigarray::cli

namespace bigarray::cli {

Result<std::pair<std::string, std::string>> ParseAttrSet(std::string_view s) {
  const size_t eq = s.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return InvalidArgument("'" + std::string(s) + "': expected KEY=JSON, e.g. units='\"K\"' or scale=0.5");
  }
  return std::make_pair(std::string(s.substr(0, eq)), std::string(s.substr(eq + 1)));
}

}  // namespace bigarray::cli
