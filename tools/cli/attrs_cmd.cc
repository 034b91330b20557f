// attrs_cmd.cc: attributes and groups on the command line (attrs_cmd.h).
#include "attrs_cmd.h"

#include <fmt/format.h>

#include "bigarray/utf8.h"
#include "json_text.h"
#include "shell_quote.h"

namespace bigarray::cli {

Result<std::string> AttrsJson(const Attrs& attrs) {
  BA_ASSIGN_OR_RETURN(std::vector<std::string> keys, attrs.Keys());
  std::string out = "{";
  for (size_t i = 0; i < keys.size(); ++i) {
    BA_ASSIGN_OR_RETURN(std::optional<AttrValue> v, attrs.Get(keys[i]));
    if (!v) continue;  // cannot happen: listed under the same lock
    out += (i ? ", " : "") + JsonString(keys[i]) + ": " + v->ToJson();
  }
  return out + "}";
}

Status RunAttrs(Database& db, const AttrsRequest& r) {
  Attrs attrs = db.attrs();
  if (r.name && r.name->ends_with('/')) {
    attrs = db.GroupAttrs(*r.name);
  } else if (r.name) {
    Result<Array> a = db.Get(*r.name);
    if (a.status().code() == Code::kNotFound) {
      if (Result<bool> group = db.GroupExists(*r.name); group.ok() && *group) {
        return NotFound(a.status().message() + "; '" + *r.name + "' is a group: name it '" + *r.name +
                        "/' for the group's attributes");
      }
    }
    BA_RETURN_IF_ERROR(a.status());
    attrs = a->attrs();
  }
  if (!r.sets.empty() || !r.deletes.empty()) {
    for (const std::string& key : r.deletes) BA_RETURN_IF_ERROR(attrs.Delete(key));
    for (const auto& [key, json] : r.sets) {
      Status st = attrs.SetJson(key, json);
      if (st.code() == Code::kInvalidArgument && st.message().find("not JSON") != std::string::npos &&
          InvalidUtf8At(json) == std::string_view::npos) {
        st = Status(st.code(), st.message() + " (a string needs quotes: --set '" + key + "=\"...\"')");
      }
      BA_RETURN_IF_ERROR(st);
    }
    return Status::Ok();
  }
  if (r.json) {
    BA_ASSIGN_OR_RETURN(std::string text, AttrsJson(attrs));
    fmt::print("{}\n", text);
    return Status::Ok();
  }
  BA_ASSIGN_OR_RETURN(std::vector<std::string> keys, attrs.Keys());
  for (const std::string& key : keys) {
    BA_ASSIGN_OR_RETURN(std::optional<AttrValue> v, attrs.Get(key));
    if (!v) continue;
    if (v->kind() == AttrValue::Kind::kJson) {
      fmt::print("{}: {}\n", ShellQuote(key), v->json());
    } else {
      fmt::print("{}: {} (array {} {})\n", ShellQuote(key), v->ToJson(), v->dtype().str(), ShapeString(v->shape()));
    }
  }
  return Status::Ok();
}

Status ListGroup(Database& db, const std::string& group, bool recursive) {
  std::string g = group;
  while (!g.empty() && g.front() == '/') g.erase(g.begin());
  while (!g.empty() && g.back() == '/') g.pop_back();
  const std::string prefix = g.empty() ? "" : g + "/";
  auto print_array = [&](const std::string& full, const std::string& shown) -> Status {
    BA_ASSIGN_OR_RETURN(Array a, db.Get(full));
    fmt::print("{}\t{}\t{}\t{}\t{}\n", ShellQuote(shown), a.dtype().str(), ShapeString(a.shape()), static_cast<char>(a.order()),
               a.nbytes());
    return Status::Ok();
  };
  if (recursive) {
    BA_ASSIGN_OR_RETURN(std::vector<std::string> names, db.Names(prefix));
    for (const std::string& name : names) BA_RETURN_IF_ERROR(print_array(name, name.substr(prefix.size())));
    return Status::Ok();
  }
  BA_ASSIGN_OR_RETURN(std::vector<Database::GroupEntry> entries, db.List(g));
  if (entries.empty() && !g.empty()) return NotFound("no group '" + g + "' in " + db.path() + " (no name below it)");
  for (const Database::GroupEntry& e : entries) {
    if (e.is_group) {
      fmt::print("{}/\n", ShellQuote(e.name));
    } else {
      BA_RETURN_IF_ERROR(print_array(prefix + e.name, e.name));
    }
  }
  return Status::Ok();
}

}  // namespace bigarray::cli
