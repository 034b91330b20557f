// progress.h: a progress bar on stderr with throughput, shown only when stderr is a terminal
// and the operation has run for more than a second. Header-only; used by the tool and the demo.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace bigarray::tools {

class Progress {
 public:
  Progress(std::string label, uint64_t total_bytes, bool enabled = true)
      : label_(std::move(label)), total_(total_bytes), enabled_(enabled && isatty(STDERR_FILENO)),
        start_(std::chrono::steady_clock::now()) {}
  // Counts `unit`s (e.g. "blocks") instead of bytes.
  Progress(std::string label, uint64_t total, const char* unit, bool enabled)
      : Progress(std::move(label), total, enabled) {
    unit_ = unit;
  }

  void SetTotal(uint64_t total) { total_ = total; }
  ~Progress() { Done(); }

  void Update(uint64_t done_bytes) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    const double secs = std::chrono::duration<double>(now - start_).count();
    if (secs < 1.0 || now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    shown_ = true;
    const double frac = total_ ? static_cast<double>(done_bytes) / static_cast<double>(total_) : 1.0;
    const int width = 30, filled = static_cast<int>(frac * width);
    const double rate = unit_ ? done_bytes / secs : done_bytes / secs / 1e6;
    std::fprintf(stderr, "\r%s [%s%s] %5.1f%%  %.0f %s/s ", label_.c_str(), std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), frac * 100, rate, unit_ ? unit_ : "MB");
    std::fflush(stderr);
  }
  void Done() {
    if (shown_) std::fprintf(stderr, "\r%*s\r", static_cast<int>(label_.size()) + 60, "");
    shown_ = false;
  }

 private:
  std::string label_;
  uint64_t total_;
  const char* unit_ = nullptr;  // null: bytes, shown as MB
  bool enabled_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point start_, last_{};
};

}  // namespace bigarray::tools
