// signal_cleanup.h: removing a temporary file when SIGINT, SIGTERM or SIGHUP end the tool.
//
// A RemoveOnSignal guard names one file; while it lives, those signals unlink the file and then
// end the process as the signal would have (exit status 128 + signal number in a shell: 130 for
// SIGINT, 143 for SIGTERM). The handler does nothing else (unlink, sigaction and raise are
// async-signal-safe) and runs on whichever thread receives the signal.
//
// Thread contract: at most one guard exists at a time (the tool writes one file per command);
// construct and destroy it on one thread. The previous dispositions come back at destruction.
#pragma once

#include <signal.h>

#include <string>

#include "bigarray/status.h"

namespace bigarray::cli {

class RemoveOnSignal {
 public:
  // Installs the handlers; the path is set by Arm (before the file is created, so that no signal
  // can fall between its creation and its registration).
  static Result<RemoveOnSignal> Install();

  RemoveOnSignal(RemoveOnSignal&& other) noexcept;
  RemoveOnSignal& operator=(RemoveOnSignal&&) = delete;
  RemoveOnSignal(const RemoveOnSignal&) = delete;
  RemoveOnSignal& operator=(const RemoveOnSignal&) = delete;
  ~RemoveOnSignal();  // restores the previous handlers

  // From now on a signal removes `path`. kInvalidArgument for a path longer than PATH_MAX.
  Status Arm(const std::string& path);
  // From now on a signal removes nothing (the file was renamed or removed).
  void Disarm();

 private:
  RemoveOnSignal() = default;
  bool installed_ = false;
  struct sigaction previous_[3] = {};
};

}  // namespace bigarray::cli
