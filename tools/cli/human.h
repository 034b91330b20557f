// human.h: figures as people read them, for the tool's text output (JSON keeps exact numbers).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <string>

namespace bigarray::cli {

// "12.3 s", "4 min 05 s", "2 h 03 min", "3 d 04 h".
inline std::string Age(int64_t ns) {
  const double s = static_cast<double>(std::max<int64_t>(ns, 0)) / 1e9;
  if (s < 60) return fmt::format("{:.1f} s", s);
  const auto sec = static_cast<int64_t>(s);
  if (sec < 3600) return fmt::format("{} min {:02} s", sec / 60, sec % 60);
  if (sec < 86400) return fmt::format("{} h {:02} min", sec / 3600, sec % 3600 / 60);
  return fmt::format("{} d {:02} h", sec / 86400, sec % 86400 / 3600);
}

// "512 B", "1.5 KiB", "2.0 MiB", ...
inline std::string Bytes(uint64_t b) {
  if (b < 1024) return fmt::format("{} B", b);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) v /= 1024, ++u;
  return fmt::format("{:.1f} {}", v, units[u]);
}

}  // namespace bigarray::cli
