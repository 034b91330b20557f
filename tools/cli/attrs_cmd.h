// attrs_cmd.h: attributes and groups on the command line (docs/cli.md): `bigarray attrs`, the
// attrs line of `info`, `ls DB [GROUP]` and `rm -r`.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bigarray/database.h"
#include "bigarray/status.h"

namespace bigarray::cli {

// The attributes as one JSON object, {"key": value, ...} in key order; array values as nested
// lists (AttrValue::ToJson).
Result<std::string> AttrsJson(const Attrs& attrs);

// The attributes of array NAME, of group NAME (NAME ends with '/'), or of the database (no
// NAME). Without changes: prints them, one "KEY: JSON" line each (an array value: its nested
// lists, then its dtype and shape), or, with json, AttrsJson. With changes: deletes then sets
// them in this transaction (the caller commits).
struct AttrsRequest {
  std::optional<std::string> name;
  std::vector<std::pair<std::string, std::string>> sets;  // key, JSON text
  std::vector<std::string> deletes;
  bool json = false;
};
Status RunAttrs(Database& db, const AttrsRequest& request);

// `ls DB [GROUP]`: one line per entry one level below GROUP (the top level without it): an
// array as "name<TAB>dtype<TAB>shape<TAB>order<TAB>nbytes", a sub-group as "name/". With
// recursive: every array below GROUP, by its name relative to GROUP.
Status ListGroup(Database& db, const std::string& group, bool recursive);

}  // namespace bigarray::cli
