// cli.h: the bigarray command-line tool (docs/cli.md): its entry point, help texts and the
// mapping of errors to exit codes. main.cc only calls Run().
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "bigarray/dtype.h"
#include "bigarray/status.h"
#include "args.h"

namespace bigarray::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;     // the operation failed; stderr says what, where, why
inline constexpr int kExitUsage = 2;     // a malformed command line
inline constexpr int kExitConflict = 3;  // the commit lost to another transaction; nothing written

// 0 for ok, kExitConflict for Code::kConflict, kExitError for any other error.
int ExitCodeFor(const Status& status);

// Runs the tool: parses argv, runs the command, prints errors; returns the exit code.
int Run(int argc, const char* const* argv);

// The --help text of a command ("" for the tool's own).
std::string_view HelpText(std::string_view command);
// `bigarray help [COMMAND]` (argv[1] is "help"): prints the help of COMMAND (as COMMAND
// --help does) or the tool's; returns the exit code (kExitUsage for an unknown COMMAND).
int RunHelp(int argc, const char* const* argv);
// The names of the commands, in the order of the help.
std::vector<std::string_view> CommandNames();

// The bytes of `value` as an element of `dtype` (at most 16). kInvalidArgument when the value
// is not representable: a non-integer or out-of-range value for an integer type, an imaginary
// part for a real type, a finite value that overflows a float type.
Status EncodeScalar(const Scalar& value, const DType& dtype, std::byte* element);

}  // namespace bigarray::cli
