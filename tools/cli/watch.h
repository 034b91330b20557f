// watch.h: following a database from the command line (docs/cli.md): `bigarray watch`, which
// prints a line per commit, and `bigarray stats DB --handles`, which lists the processes that
// hold the database open.
#pragma once

#include <spdlog/logger.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "bigarray/status.h"

namespace bigarray::cli {

struct WatchOptions {
  std::string path;
  std::optional<std::string> name;  // only commits that changed this array
  bool json = false;
  std::optional<uint64_t> count;    // stop after this many lines
  uint64_t cache_bytes = 0;
  std::shared_ptr<spdlog::logger> logger;
};

// The value of --count: a non-negative integer.
Result<uint64_t> ParseCount(const std::string& text);

// Prints one line per commit newer than the one the database was at when it started (or one
// JSON object per line with json): the commit id, the arrays it changed and their new shapes.
// Returns OK on SIGINT or SIGTERM (handled while it runs), or after `count` lines.
Status Watch(const WatchOptions& options);

// Lists the live handles of the database at `path`, the oldest snapshot and its age, and LMDB's
// reader table; as one JSON object with json.
Status PrintHandles(const std::string& path, bool json);

}  // namespace bigarray::cli
