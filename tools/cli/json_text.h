// json_text.h: the few pieces of JSON text the tool writes by hand (info --json, watch --json,
// stats --handles --json): a string literal and a list of integers.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bigarray/utf8.h"

namespace bigarray::cli {

// `s` as a JSON string literal: quotes and backslashes escaped, control characters as \uXXXX.
// The output is always valid UTF-8: a byte that is not part of valid UTF-8 (array names from
// before names had to be UTF-8, process names) becomes \udcXX, the lone surrogate Python's
// "surrogateescape" decodes it to, so that json.loads gives the str the Python module shows
// for the same name (and os.fsencode the original bytes).
inline std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = Utf8SequenceLength(s.substr(i));
    if (n == 0) {
      out += fmt::format("\\udc{:02x}", c);
      ++i;
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out + "\"";
}

// `v` as a JSON list: [1, 2, 3].
inline std::string JsonList(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace bigarray::cli
