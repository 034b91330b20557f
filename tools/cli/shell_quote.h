// shell_quote.h: names on the tool's text output, quoted as coreutils ls quotes file names
// (--quoting-style=shell-escape, its default on a terminal), so that a tab, a newline or an
// escape sequence in a name can neither break a line or column apart nor reach the terminal.
#pragma once

#include <cctype>
#include <string>
#include <string_view>

#include "bigarray/utf8.h"

namespace bigarray::cli {

namespace shell_quote_detail {

// Shown as is inside quotes: valid UTF-8, no C0 or C1 control character, no DEL.
inline size_t PrintableLength(std::string_view s) {
  const size_t n = Utf8SequenceLength(s);
  if (n == 0) return 0;
  const auto c = static_cast<unsigned char>(s[0]);
  if (n == 1 && (c < 0x20 || c == 0x7f)) return 0;
  if (n == 2 && c == 0xc2 && static_cast<unsigned char>(s[1]) < 0xa0) return 0;  // U+0080..U+009F
  return n;
}

// Needs no quotes anywhere in a word: letters, digits, "%+,-./:@_" and printable non-ASCII.
// '#' and '~' are plain except at the start of a word.
inline bool Plain(std::string_view s) {
  if (s.empty() || s[0] == '#' || s[0] == '~') return false;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = PrintableLength(s.substr(i));
    if (n == 0) return false;
    if (n == 1 && !(std::isalnum(c) || std::string_view("%+,-./:@_#~").find(static_cast<char>(c)) != std::string_view::npos)) {
      return false;
    }
    i += n;
  }
  return true;
}

}  // namespace shell_quote_detail

// `s` as the shell reads it back: as is when nothing in it is special ("temps"); in double
// quotes when it holds a single quote and nothing else the shell would expand ("it's"); in
// single quotes otherwise ('a b'), with runs of bytes that are not printable text as ANSI-C
// quoted strings: 'a'$'\t''b', $'\377' for a byte that is not UTF-8, 'e'$'\033''[31m'.
inline std::string ShellQuote(std::string_view s) {
  using namespace shell_quote_detail;
  if (Plain(s)) return std::string(s);
  bool printable = true;
  for (size_t i = 0; i < s.size() && printable;) {
    const size_t n = PrintableLength(s.substr(i));
    printable = n > 0;
    i += n;
  }
  if (printable && s.find('\'') != std::string_view::npos && s.find_first_of("\"$`\\!") == std::string_view::npos) {
    return "\"" + std::string(s) + "\"";
  }
  if (s.empty()) return "''";
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (PrintableLength(s.substr(i)) > 0) {  // a run of text in '...', a quote as '\''
      out += '\'';
      size_t n;
      while (i < s.size() && (n = PrintableLength(s.substr(i))) > 0) {
        if (s[i] == '\'') {
          out += "'\\''";
        } else {
          out.append(s.substr(i, n));
        }
        i += n;
      }
      out += '\'';
    } else {  // a run of other bytes in $'...'
      out += "$'";
      while (i < s.size() && PrintableLength(s.substr(i)) == 0) {
        const auto c = static_cast<unsigned char>(s[i]);
        const char* named = c == '\a' ? "\\a" : c == '\b' ? "\\b" : c == '\t' ? "\\t" : c == '\n' ? "\\n"
                          : c == '\v' ? "\\v" : c == '\f' ? "\\f" : c == '\r' ? "\\r" : nullptr;
        if (named) {
          out += named;
        } else {
          out += '\\';
          out += static_cast<char>('0' + (c >> 6));
          out += static_cast<char>('0' + ((c >> 3) & 7));
          out += static_cast<char>('0' + (c & 7));
        }
        ++i;
      }
      out += '\'';
    }
  }
  return out;
}

}  // namespace bigarray::cli
