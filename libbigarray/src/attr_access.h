// attr_access.h: what attrs.cc needs of a Database handle (database.cc implements it): the
// snapshot its transaction reads and the attribute changes it has made, under the handle's lock.
//
// Attribute records are meta records of the array layer (docs/format.md, "Array layer
// records"); a transaction keeps its changes in AttrChanges until Commit writes them (with the
// rest of the transaction, in one batch) or Abort drops them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "bigarray/status.h"
#include "bigarray/storage/block_store.h"

namespace bigarray::internal {

class Session;
class ArrayState;

// One changed attribute record: its new encoded value, or nullopt for a deletion.
struct AttrChange {
  std::optional<std::string> value;
  uint64_t array = 0;  // the owning array's id; 0 for the database's and groups' attributes
};
// By meta key. Guarded by the session's lock.
using AttrChanges = std::map<std::string, AttrChange>;

// What an attribute call sees while it holds the handle's lock.
struct AttrContext {
  std::shared_ptr<storage::Snapshot> snapshot;
  AttrChanges* changes = nullptr;
  std::set<std::string>* dropped_groups = nullptr;  // the handle's (DropGroup adds to it)
  std::string owner;  // "array 'x'" (its current name), "group 'g'", "database PATH"
  uint64_t array = 0;
};

// Runs `fn` under the handle's lock. kFailedPrecondition when the handle is gone or, for a
// change (`write`), read-only ("`what`: PATH was opened read-only"); kNotFound when `array`
// (null for a group or the database) no longer exists in this transaction. `group`: the
// owner's name when `array` is null ("" for the database).
Status WithAttrContext(const std::weak_ptr<Session>& session, const std::shared_ptr<ArrayState>& array,
                       const std::string& group, bool write, const std::string& what,
                       const std::function<Status(AttrContext&)>& fn);

// kInvalidArgument unless attributes may be set on group `group` (without leading or trailing
// '/'; "" is the database): it must be able to hold an array, i.e. "<group>/x" must be a valid new
// array name (so at most 253 bytes, UTF-8, no NUL, no "//"). Checked when an attribute is set,
// as names are when created: groups named before the rule can still be read and dropped.
Status CheckGroupName(const std::string& group);

// The meta key prefixes (docs/format.md).
std::string ArrayAttrPrefix(uint64_t array);   // "t/<16 hex digits>/"
std::string GroupAttrPrefix(const std::string& group);  // "T/" for "", else "g/<group>\0"
std::string SubGroupAttrPrefix(const std::string& group);  // "g/<group>/": its sub-groups'
// The group of a key under GroupAttrPrefix ("" for the database's).
std::string AttrKeyGroup(const std::string& key);

// Calls fn(key, value) for every attribute record under `prefix` as this transaction sees it
// (the snapshot's records overlaid by `changes`), in key order; fn returns false to stop.
Status ForEachAttr(const AttrContext& ctx, const std::string& prefix,
                   const std::function<bool(const std::string&, const std::string&)>& fn);

}  // namespace bigarray::internal
