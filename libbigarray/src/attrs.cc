// attrs.cc: attributes (bigarray/attrs.h): their keys, the encoding of their values as meta
// records (docs/format.md, "Array layer records"), and the transaction's view of them.
//
// A value is stored as one meta record: 'j' + JSON text, or 'a' + a small array header + its
// bytes. Reads go to the snapshot overlaid by the transaction's own changes (AttrContext); no
// array block is ever read.
#include "bigarray/attrs.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

#include "attr_access.h"
#include "bigarray/utf8.h"
#include "bigarray/view.h"

namespace bigarray {

namespace {

constexpr char kJsonTag = 'j';
constexpr char kArrayTag = 'a';
constexpr int kMaxRank = 32;

std::string Hex16(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

void AppendU64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t ReadU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

// "<owner> attribute '<key>'" for messages.
std::string Named(const std::string& owner, std::string_view key) {
  return owner + " attribute '" + std::string(key) + "'";
}

// A key to look up or delete: 1 to kMaxAttrKeyBytes bytes without NUL. A key to set must also
// be UTF-8 (CheckNewKey); keys set before that rule can still be read and deleted.
Status CheckKey(const std::string& owner, std::string_view key) {
  if (key.empty()) return InvalidArgument("an attribute key of " + owner + " must not be empty");
  if (key.find('\0') != std::string_view::npos) {
    std::string shown(key);
    for (char& c : shown) {
      if (c == '\0') c = '?';
    }
    return InvalidArgument(Named(owner, shown) + ": a key must not contain NUL");
  }
  if (key.size() > kMaxAttrKeyBytes) {
    return InvalidArgument(Named(owner, key.substr(0, 40)) + "...: a key has at most " +
                           std::to_string(kMaxAttrKeyBytes) + " bytes, this one " + std::to_string(key.size()));
  }
  return Status::Ok();
}

Status CheckNewKey(const std::string& owner, std::string_view key) {
  BA_RETURN_IF_ERROR(CheckKey(owner, key));
  if (const size_t bad = InvalidUtf8At(key); bad != std::string_view::npos) {
    return InvalidArgument(Named(owner, key.substr(0, bad)) + "...: a key must be UTF-8 (an invalid byte at " +
                           std::to_string(bad) + ")");
  }
  return Status::Ok();
}

std::string Encode(const AttrValue& v) {
  if (v.kind() == AttrValue::Kind::kJson) return std::string(1, kJsonTag) + v.json();
  const std::string dtype = v.dtype().str();
  std::string s(1, kArrayTag);
  s.push_back(static_cast<char>(dtype.size()));
  s += dtype;
  s.push_back(static_cast<char>(v.shape().size()));
  for (int64_t d : v.shape()) AppendU64(s, static_cast<uint64_t>(d));
  s += v.data();
  return s;
}

Result<AttrValue> Decode(std::string_view s, const std::string& what) {
  auto bad = [&](const std::string& why) { return Corruption(what + ": malformed record (" + why + ")"); };
  if (s.empty()) return bad("empty");
  if (s[0] == kJsonTag) {
    std::string text(s.substr(1));
    if (!nlohmann::json::accept(text)) return bad("not JSON");
    return AttrValue::Json(std::move(text));
  }
  if (s[0] != kArrayTag) return bad("unknown tag " + std::to_string(static_cast<unsigned char>(s[0])));
  size_t at = 1;
  if (s.size() < at + 1) return bad("truncated");
  const size_t dlen = static_cast<unsigned char>(s[at++]);
  if (s.size() < at + dlen + 1) return bad("truncated");
  auto dtype = DType::Parse(s.substr(at, dlen));
  if (!dtype.ok()) return bad(dtype.status().message());
  at += dlen;
  const int ndim = static_cast<unsigned char>(s[at++]);
  if (ndim > kMaxRank) return bad("rank " + std::to_string(ndim));
  if (s.size() < at + 8 * static_cast<size_t>(ndim)) return bad("truncated");
  std::vector<int64_t> shape;
  for (int k = 0; k < ndim; ++k) {
    const uint64_t d = ReadU64(s.data() + at);
    if (d > static_cast<uint64_t>(INT64_MAX)) return bad("extent");
    shape.push_back(static_cast<int64_t>(d));
    at += 8;
  }
  auto nbytes = CheckedNbytes(shape, dtype->itemsize());
  if (!nbytes.ok() || static_cast<uint64_t>(*nbytes) != s.size() - at) return bad("data size");
  return AttrValue::Array(*dtype, std::move(shape), std::string(s.substr(at)));
}

// One element as JSON (see AttrValue::ToJson).
std::string FloatJson(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v < 0 ? "-Infinity" : "Infinity";
  return nlohmann::json(v).dump();
}

std::string ElementJson(const DType& dtype, const std::byte* p) {
  const int n = dtype.itemsize();
  switch (dtype.kind()) {
    case DTypeKind::kBool:
      return *p != std::byte{0} ? "true" : "false";
    case DTypeKind::kInt:
    case DTypeKind::kUInt: {
      uint64_t v = 0;
      for (int k = 0; k < n; ++k) {
        const uint64_t byte = static_cast<uint8_t>(p[dtype.little_endian() ? k : n - 1 - k]);
        v |= byte << (8 * k);
      }
      if (dtype.kind() == DTypeKind::kUInt) return std::to_string(v);
      if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
      return std::to_string(static_cast<int64_t>(v));
    }
    case DTypeKind::kFloat:
      return FloatJson(dtype.ToDouble(p));
    case DTypeKind::kComplex: {
      const DType part = DType::Parse(std::string(dtype.little_endian() ? "<" : ">") + "f" + std::to_string(n / 2)).value();
      return "[" + FloatJson(part.ToDouble(p)) + ", " + FloatJson(part.ToDouble(p + n / 2)) + "]";
    }
  }
  return "null";
}

void NestedJson(const AttrValue& v, size_t axis, const std::byte*& p, std::string& out) {
  if (axis == v.shape().size()) {
    out += ElementJson(v.dtype(), p);
    p += v.dtype().itemsize();
    return;
  }
  out += "[";
  for (int64_t i = 0; i < v.shape()[axis]; ++i) {
    if (i) out += ", ";
    NestedJson(v, axis + 1, p, out);
  }
  out += "]";
}

}  // namespace

// ---- AttrValue ----------------------------------------------------------------------------------

AttrValue AttrValue::Json(std::string text) {
  AttrValue v;
  v.kind_ = Kind::kJson;
  v.json_ = std::move(text);
  return v;
}

Result<AttrValue> AttrValue::Array(const DType& dtype, std::vector<int64_t> shape, std::string data) {
  if (shape.size() > static_cast<size_t>(kMaxRank)) return InvalidArgument("an array attribute has rank 0 to 32");
  BA_ASSIGN_OR_RETURN(int64_t nbytes, CheckedNbytes(shape, dtype.itemsize()));
  if (static_cast<uint64_t>(nbytes) != data.size()) {
    return InvalidArgument("an array attribute of shape " + ShapeString(shape) + " and dtype " + dtype.str() +
                           " has " + std::to_string(nbytes) + " bytes, not " + std::to_string(data.size()));
  }
  AttrValue v;
  v.kind_ = Kind::kArray;
  v.dtype_ = dtype;
  v.shape_ = std::move(shape);
  v.data_ = std::move(data);
  return v;
}

std::string AttrValue::ToJson() const {
  if (kind_ == Kind::kJson) return json_;
  std::string out;
  const std::byte* p = reinterpret_cast<const std::byte*>(data_.data());
  NestedJson(*this, 0, p, out);
  return out;
}

// ---- Attrs --------------------------------------------------------------------------------------

Attrs::Attrs(std::weak_ptr<internal::Session> session, std::shared_ptr<internal::ArrayState> array, std::string prefix,
             std::string group)
    : session_(std::move(session)), array_(std::move(array)), prefix_(std::move(prefix)), group_(std::move(group)) {}

std::string Attrs::owner() const {
  std::string owner;
  (void)internal::WithAttrContext(session_, array_, group_, false, "", [&](internal::AttrContext& ctx) {
    owner = ctx.owner;
    return Status::Ok();
  });
  if (owner.empty()) owner = array_ ? "an array" : group_.empty() ? "the database" : "group '" + group_ + "'";
  return owner;
}

Result<std::optional<AttrValue>> Attrs::Get(std::string_view key) const {
  std::optional<AttrValue> out;
  const Status st = internal::WithAttrContext(session_, array_, group_, false, "", [&](internal::AttrContext& ctx) {
    BA_RETURN_IF_ERROR(CheckKey(ctx.owner, key));
    const std::string meta_key = prefix_ + std::string(key);
    std::optional<std::string> record;
    if (auto it = ctx.changes->find(meta_key); it != ctx.changes->end()) {
      record = it->second.value;
    } else {
      BA_ASSIGN_OR_RETURN(record, ctx.snapshot->GetMeta(meta_key));
    }
    if (!record) return Status::Ok();
    BA_ASSIGN_OR_RETURN(out, Decode(*record, Named(ctx.owner, key)));
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return out;
}

Status Attrs::Set(std::string_view key, const AttrValue& value) {
  return internal::WithAttrContext(
      session_, array_, group_, true, "set attribute '" + std::string(key) + "'", [&](internal::AttrContext& ctx) {
        if (!array_) BA_RETURN_IF_ERROR(internal::CheckGroupName(group_));
        BA_RETURN_IF_ERROR(CheckNewKey(ctx.owner, key));
        if (value.kind() == AttrValue::Kind::kJson && !nlohmann::json::accept(value.json())) {
          return InvalidArgument(Named(ctx.owner, key) + ": the value is not JSON text: " +
                                 value.json().substr(0, 80) + (value.json().size() > 80 ? "..." : ""));
        }
        std::string record = Encode(value);
        if (record.size() > kMaxAttrValueBytes) {
          return InvalidArgument(Named(ctx.owner, key) + ": the value takes " + std::to_string(record.size()) +
                                 " bytes, more than the limit of " + std::to_string(kMaxAttrValueBytes) +
                                 " (store large data in an array)");
        }
        (*ctx.changes)[prefix_ + std::string(key)] = internal::AttrChange{std::move(record), ctx.array};
        return Status::Ok();
      });
}

Status Attrs::SetJson(std::string_view key, std::string_view json) { return Set(key, AttrValue::Json(std::string(json))); }

Status Attrs::Delete(std::string_view key) {
  return internal::WithAttrContext(
      session_, array_, group_, true, "delete attribute '" + std::string(key) + "'", [&](internal::AttrContext& ctx) {
        BA_RETURN_IF_ERROR(CheckKey(ctx.owner, key));
        const std::string meta_key = prefix_ + std::string(key);
        bool exists = false;
        if (auto it = ctx.changes->find(meta_key); it != ctx.changes->end()) {
          exists = it->second.value.has_value();
        } else {
          BA_ASSIGN_OR_RETURN(auto record, ctx.snapshot->GetMeta(meta_key));
          exists = record.has_value();
        }
        if (!exists) return NotFound(ctx.owner + " has no attribute '" + std::string(key) + "'");
        (*ctx.changes)[meta_key] = internal::AttrChange{std::nullopt, ctx.array};
        return Status::Ok();
      });
}

Result<std::vector<std::string>> Attrs::Keys() const {
  std::vector<std::string> keys;
  BA_RETURN_IF_ERROR(internal::WithAttrContext(session_, array_, group_, false, "", [&](internal::AttrContext& ctx) {
    return internal::ForEachAttr(ctx, prefix_, [&](const std::string& k, const std::string&) {
      keys.push_back(k.substr(prefix_.size()));
      return true;
    });
  }));
  return keys;
}

Result<bool> Attrs::Contains(std::string_view key) const {
  BA_ASSIGN_OR_RETURN(auto v, Get(key));
  return v.has_value();
}

// ---- internal -----------------------------------------------------------------------------------

namespace internal {

std::string ArrayAttrPrefix(uint64_t array) { return "t/" + Hex16(array) + "/"; }

std::string GroupAttrPrefix(const std::string& group) {
  if (group.empty()) return "T/";
  std::string p = "g/" + group;
  p.push_back('\0');
  return p;
}

std::string SubGroupAttrPrefix(const std::string& group) { return "g/" + group + "/"; }

std::string AttrKeyGroup(const std::string& key) {
  return key.starts_with("g/") ? key.substr(2, key.find('\0') - 2) : std::string();
}

Status ForEachAttr(const AttrContext& ctx, const std::string& prefix,
                   const std::function<bool(const std::string&, const std::string&)>& fn) {
  // Merge the snapshot's records (in key order) with the changes under the prefix.
  auto change = ctx.changes->lower_bound(prefix);
  auto changes_end = ctx.changes->end();
  auto in_prefix = [&](AttrChanges::iterator it) { return it != changes_end && it->first.starts_with(prefix); };
  bool go = true;
  // Emits the changes before `key` (all remaining ones when key is null); false: stop.
  auto flush = [&](const std::string* key) {
    while (go && in_prefix(change) && (!key || change->first < *key)) {
      if (change->second.value) go = fn(change->first, *change->second.value);
      ++change;
    }
    return go;
  };
  BA_RETURN_IF_ERROR(ctx.snapshot->ForEachMeta(prefix, [&](std::string_view k, std::string_view v) {
    const std::string key(k);
    if (!flush(&key)) return false;
    if (in_prefix(change) && change->first == key) {  // changed in this transaction
      if (change->second.value) go = fn(key, *change->second.value);
      ++change;
      return go;
    }
    go = fn(key, std::string(v));
    return go;
  }));
  flush(nullptr);
  return Status::Ok();
}

}  // namespace internal

}  // namespace bigarray
