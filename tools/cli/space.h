// space.h: the tool's disk-space output (docs/cli.md): `bigarray info DB` and `stats DB` (the
// space report of a database), the stored bytes in `info DB NAME`, and `bigarray compact DB`.
#pragma once

#include <string>

#include "bigarray/database.h"
#include "bigarray/space.h"
#include "bigarray/status.h"

namespace bigarray::cli {

// The blocks an array needs for its shape.
uint64_t BlockCount(const Array& a);

// `bigarray info DB NAME --json`: one JSON object and a newline.
Result<std::string> ArrayInfoJson(const Array& a);
// `bigarray info DB NAME`: "key: value" lines, the attributes last.
Result<std::string> ArrayInfoText(const Array& a);

// `bigarray info DB` and `bigarray stats DB`: the space report of the handle's snapshot.
Status PrintSpace(Database& db, bool json);

// `bigarray compact DB`.
Status PrintCompact(const std::string& path, bool json);

}  // namespace bigarray::cli
