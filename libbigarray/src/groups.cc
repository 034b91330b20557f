// groups.cc: groups over the flat catalog (docs/api.md, "Groups"). A name with '/' lies in a
// group, as in HDF5 and zarr ("runs/2026/temperature" is array "temperature" of group
// "runs/2026"); a group exists while a name lies below it. Nothing is stored for a group
// itself except its attributes. Listing reads the catalog's "n/" records below the group, which
// the store keeps in key order, and skips each sub-group's (Database::ListLevel).
#include "attr_access.h"
#include "bigarray/database.h"

namespace bigarray {

namespace {

// "runs/2026" from "/runs/2026/", "" for the top level.
std::string GroupName(std::string_view group) {
  while (!group.empty() && group.front() == '/') group.remove_prefix(1);
  while (!group.empty() && group.back() == '/') group.remove_suffix(1);
  return std::string(group);
}

std::string GroupPrefix(const std::string& group) { return group.empty() ? "" : group + "/"; }

}  // namespace

Result<std::vector<Database::GroupEntry>> Database::List(std::string_view group) {
  return ListLevel(GroupPrefix(GroupName(group)), 0);
}

Result<bool> Database::GroupExists(std::string_view group) {
  BA_ASSIGN_OR_RETURN(std::vector<GroupEntry> some, ListLevel(GroupPrefix(GroupName(group)), 1));
  return !some.empty();
}

Result<size_t> Database::DropGroup(std::string_view group) {
  const std::string name = GroupName(group);
  if (name.empty()) return InvalidArgument("drop group: name the group (the top level is not dropped whole)");
  const std::string prefix = GroupPrefix(name);
  BA_ASSIGN_OR_RETURN(std::vector<std::string> names, Names(prefix));
  // The attributes of the group and of its sub-groups: keys "g/<name>\0..." and "g/<name>/...".
  size_t attrs = 0;
  const Status st = internal::WithAttrContext(
      session_, nullptr, name, true, "drop group '" + name + "'", [&](internal::AttrContext& ctx) {
        std::vector<std::string> keys;
        for (const std::string& attr_prefix : {internal::GroupAttrPrefix(name), internal::SubGroupAttrPrefix(name)}) {
          BA_RETURN_IF_ERROR(internal::ForEachAttr(ctx, attr_prefix, [&](const std::string& k, const std::string&) {
            keys.push_back(k);
            return true;
          }));
        }
        for (std::string& k : keys) (*ctx.changes)[std::move(k)] = internal::AttrChange{std::nullopt, 0};
        attrs = keys.size();
        if (!names.empty() || attrs != 0) ctx.dropped_groups->insert(name);
        return Status::Ok();
      });
  if (!st.ok()) return st;
  if (names.empty() && attrs == 0) return NotFound("no group '" + name + "' in " + path() + " (no name below it)");
  for (const std::string& n : names) BA_RETURN_IF_ERROR(Drop(n));
  return names.size();
}

}  // namespace bigarray
