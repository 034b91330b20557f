// bigarray/attrs.h: attributes of arrays, groups and the database (docs/api.md, "Attributes").
//
// Attributes are small named values kept beside the arrays, as in HDF5 and zarr: string keys,
// values that are JSON (null, booleans, numbers, strings, lists, objects) or small arrays
// (a dtype, a shape and their bytes, as NumPy's). They are part of the transaction like
// everything else: Set and Delete are visible at once to the handle that made them, to others
// at Commit, and discarded by Abort; two transactions that change the same key of the same
// owner conflict (the later Commit fails with kConflict and writes nothing). An array's
// attributes belong to the array, not its name: Rename keeps them, Drop deletes them in the
// same commit. Reading attributes never loads an array's blocks.
//
// Thread contract: an Attrs is a value that refers to its handle (it does not keep the handle
// alive: after the Database is destroyed its calls fail with kFailedPrecondition). Its calls
// take the handle's lock, like Create or Rename, and may be made from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bigarray/dtype.h"
#include "bigarray/status.h"

namespace bigarray {

namespace internal {
class Session;
class ArrayState;
}  // namespace internal

// Keys are 1 to kMaxAttrKeyBytes bytes without NUL (the store's key length limit, less the
// owner's prefix). An encoded value is at most kMaxAttrValueBytes: attributes are metadata,
// read whole on every Get; larger data belongs in an array.
inline constexpr size_t kMaxAttrKeyBytes = 255;
inline constexpr size_t kMaxAttrValueBytes = 64 << 10;

// An attribute's value: JSON text, or a small C-order array.
class AttrValue {
 public:
  enum class Kind { kJson, kArray };

  // JSON text (RFC 8259; any value, not only objects). Attrs::Set checks it.
  static AttrValue Json(std::string text);
  // An array of `dtype` and `shape` (rank 0 to 32), `data` its elements in C order: exactly
  // size x itemsize bytes, else kInvalidArgument.
  static Result<AttrValue> Array(const DType& dtype, std::vector<int64_t> shape, std::string data);

  Kind kind() const { return kind_; }
  // kJson: the text as it was set.
  const std::string& json() const { return json_; }
  // kArray: the element type, the shape and the elements' bytes in C order.
  const DType& dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::string& data() const { return data_; }

  // The value as JSON text: kJson as set; kArray as nested lists of its elements (as NumPy's
  // tolist() and json.dumps write them: booleans true/false, integers exact, floats in the
  // shortest form that reads back, NaN and infinities as NaN, Infinity, -Infinity, complex
  // numbers as [real, imag]); a 0-d array as its one element.
  std::string ToJson() const;

  friend bool operator==(const AttrValue& a, const AttrValue& b) {
    return a.kind_ == b.kind_ && a.json_ == b.json_ && a.dtype_ == b.dtype_ && a.shape_ == b.shape_ &&
           a.data_ == b.data_;
  }

 private:
  AttrValue() = default;
  Kind kind_ = Kind::kJson;
  std::string json_;
  DType dtype_ = DType::Of<double>();
  std::vector<int64_t> shape_;
  std::string data_;
};

// The attributes of one array, one group, or the database (Array::attrs(), Database::attrs(),
// Database::GroupAttrs()).
class Attrs {
 public:
  // The value of `key`, or nullopt when there is none. kCorruption when the stored record is
  // malformed (naming the owner and the key).
  Result<std::optional<AttrValue>> Get(std::string_view key) const;
  // Sets `key` in this transaction. kInvalidArgument (naming the owner and the key) for an
  // empty key, a key with NUL or longer than kMaxAttrKeyBytes, JSON that does not parse, or an
  // encoded value larger than kMaxAttrValueBytes; kFailedPrecondition on a read-only handle;
  // kNotFound when the array no longer exists.
  Status Set(std::string_view key, const AttrValue& value);
  // Set(key, AttrValue::Json(json)).
  Status SetJson(std::string_view key, std::string_view json);
  // Deletes `key` in this transaction; kNotFound when there is no such attribute.
  Status Delete(std::string_view key);
  // The keys, sorted bytewise.
  Result<std::vector<std::string>> Keys() const;
  Result<bool> Contains(std::string_view key) const;

  // Who they belong to, for messages: "array 'x'", "group 'runs'", "database data.db".
  std::string owner() const;

 private:
  friend class Array;
  friend class Database;
  Attrs(std::weak_ptr<internal::Session> session, std::shared_ptr<internal::ArrayState> array, std::string prefix,
        std::string group);

  std::weak_ptr<internal::Session> session_;
  std::shared_ptr<internal::ArrayState> array_;  // null for a group or the database
  std::string prefix_;                           // of the meta keys: "t/<id>/", "g/<group>\0", "T/"
  std::string group_;                            // the group's name (groups only)
};

}  // namespace bigarray
