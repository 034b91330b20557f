// args.h: the command line of the bigarray tool — a subcommand, its positional arguments and
// --options — and the parsers of option values (sizes, shapes, row ranges, scalars).
//
// Options take their value as `--opt value` or `--opt=value` (the next argument is taken as the
// value even when it begins with '-'). Global options are accepted before or after the
// subcommand. "--" ends the options. Every option value is checked while parsing, so that a
// bad value is a usage error before anything is opened.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bigarray/database.h"
#include "bigarray/status.h"
#include "bigarray/view.h"

namespace bigarray::cli {

// What an option's value must look like.
enum class ValueKind {
  kFlag,      // no value
  kText,      // anything
  kByteSize,  // ParseByteSize
  kBlockSize, // ParseBlockSize
  kShape,     // ParseShape
  kDType,     // DType::Parse
  kOrder,     // ParseOrder
  kRows,      // ParseRows
  kScalar,    // ParseScalar
  kCount,     // ParseCount
  kFormat,    // ParsePrintFormat
  kAttrSet,   // ParseAttrSet
};

struct OptionSpec {
  std::string_view name;  // long name without "--"
  char short_name = 0;    // e.g. 'v' for -v; 0: none
  ValueKind kind = ValueKind::kFlag;
  bool required = false;
  bool repeatable = false;  // may be given more than once (ParsedArgs::Values); else the last counts
};

struct CommandSpec {
  std::string_view name;
  std::vector<std::string_view> positionals;  // all required, e.g. {"DB", "NAME"}
  std::vector<OptionSpec> options;            // besides the global ones
  std::vector<std::string_view> optional_positionals = {};  // may follow the required ones
};

struct ParsedArgs {
  const CommandSpec* command = nullptr;  // null: no subcommand was given
  std::vector<std::string> positionals;
  std::map<std::string, std::string, std::less<>> options;  // by long name; a flag maps to ""
  // Every value of each option, in command-line order (for repeatable options).
  std::map<std::string, std::vector<std::string>, std::less<>> all_values;
  bool help = false;                                        // -h or --help was given

  bool Flag(std::string_view name) const { return options.count(name) != 0; }
  std::optional<std::string> Value(std::string_view name) const;
  std::vector<std::string> Values(std::string_view name) const;
};

// Parses argv[1..argc). kInvalidArgument (a usage error) for an unknown subcommand or option, a
// missing or malformed value, a missing required option or a wrong number of positional
// arguments; with -h/--help only unknown names are errors.
Result<ParsedArgs> ParseArgs(int argc, const char* const* argv, std::span<const OptionSpec> globals,
                             std::span<const CommandSpec> commands);

// "1048576", "64K", "512M", "2G" (binary multiples; lower case accepted); more than 0.
Result<uint64_t> ParseByteSize(std::string_view s);
// A block size: a byte size that is a multiple of the page size, at most 1G.
Result<uint64_t> ParseBlockSize(std::string_view s);
// "1000,3", "0,5", "7"; "" or "()" is the 0-d shape. Parentheses and spaces are allowed:
// "(3, 4)". Extents are non-negative, at most 32 of them, and their product fits 63 bits.
Result<std::vector<int64_t>> ParseShape(std::string_view s);
// "C" or "F" (either case).
Result<Order> ParseOrder(std::string_view s);
// "START:STOP" or "START:STOP:STEP" with Python slice semantics: either bound may be empty or
// negative; the step (default 1) may be negative, not 0.
Result<Slice> ParseRows(std::string_view s);

// A number of rows: a non-negative integer.
Result<int64_t> ParseCount(std::string_view s);

// How cat, head and tail print values (print.h).
enum class PrintFormat { kText, kCsv, kJson };
// "text", "csv" or "json".
Result<PrintFormat> ParsePrintFormat(std::string_view s);

// A value for fill: a number ("3", "-2.5", "1e-3", "nan", "inf"), true/false, or a Python
// complex literal ("1+2j", "-0.5j", "(1-1j)").
struct Scalar {
  std::string text;
  double real = 0, imag = 0;
  std::optional<int64_t> as_int64;    // when the text is an integer in range
  std::optional<uint64_t> as_uint64;  // when the text is a non-negative integer in range
};
Result<Scalar> ParseScalar(std::string_view s);

// KEY=JSON (attrs --set): the key (not empty; it ends at the first '=') and the JSON text,
// which the library checks when it is set.
Result<std::pair<std::string, std::string>> ParseAttrSet(std::string_view s);

// NumPy's spelling of a shape: (3, 4), (5,), ().

}  // namespace bigarray::cli
