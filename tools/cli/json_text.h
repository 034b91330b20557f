// json_text.h: the few pieces of JSON text the tool writes by hand (info --json, watch --json,
// stats --handles --json): a string literal and a list of integers.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bigarray::cli {

// `s` as a JSON string literal: quotes and backslashes escaped, control characters as \uXXXX.
inline std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += static_cast<char>(c);
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
