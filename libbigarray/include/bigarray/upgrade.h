// bigarray/upgrade.h: converting a database written by an older bigarray to this build's
// on-disk format (docs/format.md, "Upgrading"; `bigarray upgrade DB`).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "bigarray/status.h"

namespace bigarray {

struct UpgradeReport {
  uint32_t from_version = 0;  // the format version found
  bool upgraded = false;      // false: already of this build's version; nothing was done
  uint64_t records = 0;       // catalog records copied
  uint64_t blocks = 0;        // blocks copied, each checked against its old checksum first
  uint64_t payload_bytes = 0;
  std::string backup;         // where the old data.mdb is kept (delete it once satisfied)
};

// Converts the database at `path` (a directory) in place. kFailedPrecondition while another
// process has it open (processes that open it meanwhile wait); kCorruption, with nothing
// changed, when a block is damaged. Killed at any moment, the database is the old or the new
// one, and a new run completes the job. `progress(done, total)` counts blocks.
Result<UpgradeReport> Upgrade(const std::string& path, const std::function<void(uint64_t, uint64_t)>& progress = {});

}  // namespace bigarray
