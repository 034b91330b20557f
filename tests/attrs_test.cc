// Attributes (bigarray/attrs.h) and groups (Database::Names(prefix), List, DropGroup): values,
// key rules, transactions (visibility, abort, conflicts, rename and drop), the stored records,
// and that reading attributes loads no block.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "bigarray/database.h"
#include "bigarray/storage/block_store.h"
#include "catalog_util.h"
#include "database_internal.h"
#include "test_util.h"

using namespace bigarray;
using bigarray::testing::TempDir;

namespace {

constexpr uint64_t kBlock = 64 * 1024;

Options SmallCache() {
  Options o;
  o.cache_bytes = 64 * kBlock;
  o.spill_dir = "/tmp";
  return o;
}

Database OpenDb(const std::string& path, Options o = SmallCache()) {
  auto r = Database::Open(path, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(*r);
}

Database OnStore(std::shared_ptr<storage::BlockStore> store, const std::string& name) {
  auto r = internal::OpenDatabaseOnStore(std::move(store), name, SmallCache());
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(*r);
}

std::optional<std::string> JsonOf(const Attrs& attrs, std::string_view key) {
  auto v = attrs.Get(key);
  REQUIRE_MESSAGE(v.ok(), v.status().ToString());
  if (!*v) return std::nullopt;
  return (*v)->ToJson();
}

// Every meta record of the store's latest snapshot whose key begins with `prefix`.
std::vector<std::string> MetaKeys(storage::BlockStore& store, const std::string& prefix) {
  auto snap = store.OpenSnapshot().value();
  std::vector<std::string> keys;
  REQUIRE(snap->ForEachMeta(prefix, [&](std::string_view k, std::string_view) {
                keys.emplace_back(k);
                return true;
              }).ok());
  return keys;
}

template <typename T>
AttrValue ArrayValue(std::vector<T> values, std::vector<int64_t> shape) {
  std::string data(values.size() * sizeof(T), '\0');
  if (!data.empty()) std::memcpy(data.data(), values.data(), data.size());  // values.data() may be null
  return AttrValue::Array(DType::Of<T>(), std::move(shape), std::move(data)).value();
}

}  // namespace

TEST_CASE("attributes: JSON and array values are set, read, listed and deleted in the transaction") {
  auto db = Database::Open("memory:").value();
  auto a = db.Create("t", {10}, "f8").value();
  Attrs attrs = a.attrs();
  CHECK(attrs.Keys().value().empty());
  CHECK(!attrs.Get("units").value());
  REQUIRE(attrs.SetJson("units", "\"K\"").ok());
  REQUIRE(attrs.SetJson("valid_range", "[0, 400.5]").ok());
  REQUIRE(attrs.SetJson("meta", R"({"a": null, "b": [true, false], "c": {"d": "é"}})").ok());
  REQUIRE(attrs.Set("scale", ArrayValue<double>({1.5, -2, 0.1}, {3})).ok());
  REQUIRE(attrs.Set("grid", ArrayValue<int32_t>({1, 2, 3, 4, 5, 6}, {2, 3})).ok());
  CHECK(attrs.Keys().value() == std::vector<std::string>{"grid", "meta", "scale", "units", "valid_range"});
  CHECK(JsonOf(attrs, "units") == "\"K\"");
  CHECK(JsonOf(attrs, "valid_range") == "[0, 400.5]");  // the text as set
  CHECK(JsonOf(attrs, "grid") == "[[1, 2, 3], [4, 5, 6]]");
  CHECK(JsonOf(attrs, "scale") == "[1.5, -2.0, 0.1]");
  auto scale = attrs.Get("scale").value().value();
  CHECK(scale.kind() == AttrValue::Kind::kArray);
  CHECK(scale.dtype().str() == "<f8");
  CHECK(scale.shape() == std::vector<int64_t>{3});
  CHECK(scale == ArrayValue<double>({1.5, -2, 0.1}, {3}));
  CHECK(attrs.Contains("units").value());
  REQUIRE(attrs.SetJson("units", "\"degC\"").ok());  // replaced
  CHECK(JsonOf(attrs, "units") == "\"degC\"");
  REQUIRE(attrs.Delete("meta").ok());
  CHECK(!attrs.Contains("meta").value());
  CHECK(attrs.Delete("meta").code() == Code::kNotFound);
  CHECK(attrs.Keys().value() == std::vector<std::string>{"grid", "scale", "units", "valid_range"});
  REQUIRE(db.Commit().ok());
  CHECK(a.attrs().Keys().value() == std::vector<std::string>{"grid", "scale", "units", "valid_range"});
  CHECK(JsonOf(a.attrs(), "units") == "\"degC\"");
}

TEST_CASE("attributes: array values as JSON: every dtype, 0-d, empty, NaN, complex, big-endian") {
  CHECK(AttrValue::Array(DType::Of<bool>(), {2}, std::string("\1\0", 2)).value().ToJson() == "[true, false]");
  CHECK(ArrayValue<int8_t>({-128, 127}, {2}).ToJson() == "[-128, 127]");
  CHECK(ArrayValue<int64_t>({std::numeric_limits<int64_t>::min()}, {1}).ToJson() == "[-9223372036854775808]");
  CHECK(ArrayValue<uint64_t>({std::numeric_limits<uint64_t>::max()}, {}).ToJson() == "18446744073709551615");
  CHECK(ArrayValue<double>({}, {0, 3}).ToJson() == "[]");
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  CHECK(ArrayValue<double>({nan, inf, -inf}, {3}).ToJson() == "[NaN, Infinity, -Infinity]");
  CHECK(ArrayValue<float>({0.5f}, {1}).ToJson() == "[0.5]");
  CHECK(ArrayValue<std::complex<double>>({{1, -2}}, {1}).ToJson() == "[[1.0, -2.0]]");
  auto be = AttrValue::Array(DType::Parse(">i4").value(), {2}, std::string("\0\0\0\1\xff\xff\xff\xfe", 8)).value();
  CHECK(be.ToJson() == "[1, -2]");
  CHECK(AttrValue::Array(DType::Of<double>(), {3}, std::string(16, '\0')).status().code() == Code::kInvalidArgument);
}

TEST_CASE("attributes: keys and values are checked, with errors naming the array and the key") {
  auto db = Database::Open("memory:").value();
  auto a = db.Create("temps", {4}, "f8").value();
  Attrs attrs = a.attrs();
  Status st = attrs.SetJson("", "1");
  CHECK(st.code() == Code::kInvalidArgument);
  CHECK(st.message().find("array 'temps'") != std::string::npos);
  st = attrs.SetJson(std::string("a\0b", 3), "1");
  CHECK(st.code() == Code::kInvalidArgument);
  CHECK(st.message().find("array 'temps' attribute 'a?b'") != std::string::npos);
  CHECK(st.message().find("NUL") != std::string::npos);
  CHECK(attrs.SetJson(std::string(kMaxAttrKeyBytes + 1, 'k'), "1").code() == Code::kInvalidArgument);
  CHECK(attrs.SetJson(std::string(kMaxAttrKeyBytes, 'k'), "1").ok());
  st = attrs.SetJson("units", "K");  // not JSON: a string needs quotes
  CHECK(st.code() == Code::kInvalidArgument);
  CHECK(st.message().find("array 'temps' attribute 'units'") != std::string::npos);
  CHECK(attrs.SetJson("x", "[1, 2").code() == Code::kInvalidArgument);
  st = attrs.SetJson("big", "\"" + std::string(kMaxAttrValueBytes, 'x') + "\"");
  CHECK(st.code() == Code::kInvalidArgument);
  CHECK(st.message().find("limit") != std::string::npos);
  CHECK(attrs.Set("big", ArrayValue<double>(std::vector<double>(kMaxAttrValueBytes / 8), {int64_t(kMaxAttrValueBytes / 8)}))
            .code() == Code::kInvalidArgument);
  CHECK(attrs.SetJson("fits", "\"" + std::string(kMaxAttrValueBytes - 3, 'x') + "\"").ok());
  CHECK(attrs.Get("").status().code() == Code::kInvalidArgument);
  CHECK(db.attrs().SetJson("", "1").message().find("database memory:") != std::string::npos);
}

TEST_CASE("attributes: visible to others at commit, discarded at abort, kept by a read-only handle's rules") {
  TempDir dir;
  const std::string path = dir / "db";
  auto w = OpenDb(path);
  w.Create("x", {4}, "f8").value();
  REQUIRE(w.Commit().ok());
  auto r = OpenDb(path);
  REQUIRE(w.Get("x").value().attrs().SetJson("units", "\"K\"").ok());
  REQUIRE(w.attrs().SetJson("title", "\"run 1\"").ok());
  CHECK(!r.Get("x").value().attrs().Get("units").value());  // not committed
  CHECK(!r.attrs().Get("title").value());
  REQUIRE(w.Commit().ok());
  CHECK(!r.Get("x").value().attrs().Get("units").value());  // r's snapshot (T3)
  r.Abort();
  CHECK(JsonOf(r.Get("x").value().attrs(), "units") == "\"K\"");
  CHECK(JsonOf(r.attrs(), "title") == "\"run 1\"");
  CHECK(r.ArraysChangedSince(w.snapshot_commit() - 1).value() == std::vector<std::string>{"x"});  // a follower sees it

  REQUIRE(w.Get("x").value().attrs().SetJson("units", "\"degC\"").ok());
  REQUIRE(w.Get("x").value().attrs().Delete("units").ok());
  REQUIRE(w.attrs().SetJson("extra", "1").ok());
  REQUIRE(w.GroupAttrs("runs/2026").SetJson("extra", "2").ok());
  // An attribute change counts; the database's and a group's are named "/" and "<group>/".
  CHECK(w.ChangedArrays().value() == std::vector<std::string>{"/", "runs/2026/", "x"});
  w.Abort();
  CHECK(JsonOf(w.Get("x").value().attrs(), "units") == "\"K\"");
  CHECK(!w.attrs().Get("extra").value());
  CHECK(w.ChangedArrays().value().empty());

  Options ro = SmallCache();
  ro.read_only = true;
  auto reader = OpenDb(path, ro);
  CHECK(JsonOf(reader.Get("x").value().attrs(), "units") == "\"K\"");
  Status st = reader.Get("x").value().attrs().SetJson("units", "1");
  CHECK(st.code() == Code::kFailedPrecondition);
  CHECK(st.message().find("read-only") != std::string::npos);
  CHECK(reader.attrs().Delete("title").code() == Code::kFailedPrecondition);
}

TEST_CASE("attributes: the same key of the same array conflicts; other keys and arrays do not") {
  TempDir dir;
  const std::string path = dir / "db";
  {
    auto db = OpenDb(path);
    db.Create("x", {4}, "f8").value();
    db.Create("y", {4}, "f8").value();
    REQUIRE(db.Commit().ok());
  }
  auto a = OpenDb(path), b = OpenDb(path);
  REQUIRE(a.Get("x").value().attrs().SetJson("k", "1").ok());
  REQUIRE(b.Get("x").value().attrs().SetJson("k", "2").ok());
  REQUIRE(a.Commit().ok());
  Status st = b.Commit();
  CHECK(st.code() == Code::kConflict);
  CHECK(st.message().find("t/") != std::string::npos);
  b.Abort();
  CHECK(JsonOf(b.Get("x").value().attrs(), "k") == "1");  // the winner's, never lost

  REQUIRE(a.Get("x").value().attrs().SetJson("k1", "1").ok());
  REQUIRE(b.Get("x").value().attrs().SetJson("k2", "2").ok());  // another key
  REQUIRE(b.Get("y").value().attrs().SetJson("k1", "3").ok());  // the same key of another array
  REQUIRE(a.Commit().ok());
  REQUIRE(b.Commit().ok());
  a.Abort();
  CHECK(a.Get("x").value().attrs().Keys().value() == std::vector<std::string>{"k", "k1", "k2"});

  REQUIRE(a.attrs().SetJson("title", "\"a\"").ok());  // the database's attributes too
  REQUIRE(b.attrs().SetJson("title", "\"b\"").ok());
  REQUIRE(a.Commit().ok());
  CHECK(b.Commit().code() == Code::kConflict);
  b.Abort();
  REQUIRE(a.Get("x").value().attrs().Delete("k").ok());  // a delete against a set
  REQUIRE(b.Get("x").value().attrs().SetJson("k", "9").ok());
  REQUIRE(a.Commit().ok());
  CHECK(b.Commit().code() == Code::kConflict);
}

TEST_CASE("attributes go with the array: rename keeps them, drop deletes them in the same commit") {
  auto store = storage::NewMemoryStore();
  auto db = OnStore(store, "db");
  auto x = db.Create("x", {4}, "f8").value();
  REQUIRE(x.attrs().SetJson("units", "\"K\"").ok());
  REQUIRE(x.attrs().SetJson("long_name", "\"temperature\"").ok());
  REQUIRE(db.Commit().ok());
  CHECK(MetaKeys(*store, "t/").size() == 2);
  REQUIRE(db.Rename("x", "runs/x").ok());
  CHECK(JsonOf(x.attrs(), "units") == "\"K\"");
  REQUIRE(db.Commit().ok());
  CHECK(JsonOf(db.Get("runs/x").value().attrs(), "units") == "\"K\"");
  CHECK(db.Get("runs/x").value().attrs().owner() == "array 'runs/x'");

  auto y = db.Create("y", {4}, "f8").value();  // same name later: a new array, no attributes
  REQUIRE(db.Drop("runs/x").ok());
  CHECK(x.attrs().Get("units").status().code() == Code::kNotFound);
  CHECK(x.attrs().SetJson("units", "1").code() == Code::kNotFound);
  REQUIRE(db.Commit().ok());
  CHECK(MetaKeys(*store, "t/").empty());
  auto again = db.Create("runs/x", {4}, "f8").value();
  CHECK(again.attrs().Keys().value().empty());

  // Created, given attributes and dropped in one transaction: nothing is stored.
  auto tmp = db.Create("tmp", {4}, "f8").value();
  REQUIRE(tmp.attrs().SetJson("a", "1").ok());
  REQUIRE(db.Drop("tmp").ok());
  REQUIRE(db.Commit().ok());
  CHECK(MetaKeys(*store, "t/").empty());
  (void)y;
}

TEST_CASE("attributes: a drop and a concurrent new attribute of the same array conflict, in either order") {
  auto store = storage::NewMemoryStore();
  {
    auto db = OnStore(store, "setup");
    db.Create("x", {4}, "f8").value();
    REQUIRE(db.Commit().ok());
  }
  for (bool dropper_first : {true, false}) {
    CAPTURE(dropper_first);
    auto dropper = OnStore(store, "dropper"), setter = OnStore(store, "setter");
    REQUIRE(dropper.Drop("x").ok());
    REQUIRE(setter.Get("x").value().attrs().SetJson("new", "1").ok());
    Database& first = dropper_first ? dropper : setter;
    Database& second = dropper_first ? setter : dropper;
    REQUIRE(first.Commit().ok());
    CHECK(second.Commit().code() == Code::kConflict);
    second.Abort();
    // Clean up: the array is gone or has the attribute; leave neither an orphan record nor x.
    if (!dropper_first) {
      REQUIRE(second.Drop("x").ok());
      REQUIRE(second.Commit().ok());
    }
    CHECK(MetaKeys(*store, "t/").empty());
    auto db = OnStore(store, "setup");
    db.Create("x", {4}, "f8").value();
    REQUIRE(db.Commit().ok());
  }
}

TEST_CASE("attributes: reading them loads no block") {
  TempDir dir;
  const std::string path = dir / "db";
  {
    auto db = OpenDb(path);
    auto a = db.Create("x", {100000}, "f8", {Order::kC, kBlock}).value();
    a.view().value().Fill(1.0).ThrowIfError();
    REQUIRE(a.attrs().SetJson("units", "\"K\"").ok());
    REQUIRE(a.attrs().Set("scale", ArrayValue<double>({1, 2}, {2})).ok());
    REQUIRE(db.Commit().ok());
  }
  auto db = OpenDb(path);
  auto a = db.Get("x").value();
  CHECK(a.attrs().Keys().value().size() == 2);
  CHECK(JsonOf(a.attrs(), "units") == "\"K\"");
  CHECK(JsonOf(a.attrs(), "scale") == "[1.0, 2.0]");
  const CacheStats st = db.cache_stats();
  CHECK(st.loads == 0);
  CHECK(st.faults == 0);
  CHECK(st.resident_bytes == 0);
}

TEST_CASE("attributes: a malformed stored record is corruption naming the array and the key") {
  auto store = storage::NewMemoryStore();
  uint64_t id = 0;
  {
    auto db = OnStore(store, "db");
    auto x = db.Create("x", {4}, "f8").value();
    REQUIRE(x.attrs().SetJson("good", "1").ok());
    REQUIRE(db.Commit().ok());
    const auto keys = MetaKeys(*store, "t/");
    REQUIRE(keys.size() == 1);
    id = std::stoull(keys[0].substr(2, 16), nullptr, 16);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(id));
  const std::string prefix = std::string("t/") + hex + "/";
  storage::WriteBatch batch(store->OpenSnapshot().value()->commit_id());
  batch.PutMeta(prefix + "notjson", "j{");
  batch.PutMeta(prefix + "tag", "?x");
  batch.PutMeta(prefix + "short", std::string("a\3<f8\1", 6) + std::string(4, '\0'));  // extent cut short
  batch.PutMeta(prefix + "size", std::string("a\3<f8\1\2\0\0\0\0\0\0\0", 14) + std::string(15, '\0'));
  REQUIRE(store->Commit(batch).ok());
  auto db = OnStore(store, "db");
  auto x = db.Get("x").value();
  for (const char* key : {"notjson", "tag", "short", "size"}) {
    auto v = x.attrs().Get(key);
    CHECK(v.status().code() == Code::kCorruption);
    CHECK(v.status().message().find("array 'x' attribute '" + std::string(key) + "'") != std::string::npos);
  }
  CHECK(JsonOf(x.attrs(), "good") == "1");
  CHECK(x.attrs().Keys().value().size() == 5);  // listing reads keys only
}

TEST_CASE("groups: names with '/' list one level, by prefix; hostile names are refused") {
  auto db = Database::Open("memory:").value();
  for (const char* n : {"runs/2026/t", "runs/2026/p", "runs/2025/t", "runs/notes", "runs", "runsx", "other/a", "top"}) {
    REQUIRE(db.Create(n, {1}, "f8").ok());
  }
  REQUIRE(db.Commit().ok());
  db.Create("runs/2027/new", {1}, "f8").value();  // this transaction's names are listed too
  REQUIRE(db.Drop("runs/2025/t").ok());
  using E = Database::GroupEntry;
  CHECK(db.List("").value() == std::vector<E>{{"other", true}, {"runs", false}, {"runs", true}, {"runsx", false},
                                             {"top", false}});
  CHECK(db.List("/runs").value() == std::vector<E>{{"2026", true}, {"2027", true}, {"notes", false}});
  CHECK(db.List("runs/2026/").value() == std::vector<E>{{"p", false}, {"t", false}});
  CHECK(db.List("nothing").value().empty());
  CHECK(db.Names("runs/").value() ==
        std::vector<std::string>{"runs/2026/p", "runs/2026/t", "runs/2027/new", "runs/notes"});
  CHECK(db.Names().value().size() == 8);
  for (const std::string& bad : std::vector<std::string>{"/abs", "trailing/", "a//b", "/", std::string("a\0b", 3), std::string(256, 'n')}) {
    CHECK_MESSAGE(db.Create(bad, {1}, "f8").status().code() == Code::kInvalidArgument, bad);
    CHECK_MESSAGE(db.Rename("top", bad).code() == Code::kInvalidArgument, bad);
  }
  CHECK(db.Create("a/../b", {1}, "f8").ok());  // no path resolution: a plain name in group "a/.."
  CHECK(db.List("a").value() == std::vector<E>{{"..", true}});
}

// Counts the catalog's name records ("n/") that listings hand to the database layer.
class NameCountingStore final : public storage::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  std::shared_ptr<int64_t> names_read = std::make_shared<int64_t>(0);

 private:
  class Snap final : public storage::ForwardingSnapshot {
   public:
    Snap(std::shared_ptr<storage::Snapshot> base, std::shared_ptr<int64_t> n)
        : ForwardingSnapshot(std::move(base)), n_(std::move(n)) {}
    Status ForEachMetaFrom(std::string_view prefix, std::string_view from,
                           const std::function<bool(std::string_view, std::string_view)>& fn) override {
      return base_->ForEachMetaFrom(prefix, from, [&](std::string_view k, std::string_view v) {
        if (k.starts_with("n/")) ++*n_;
        return fn(k, v);
      });
    }

   private:
    std::shared_ptr<int64_t> n_;
  };
  std::shared_ptr<storage::Snapshot> WrapSnapshot(std::shared_ptr<storage::Snapshot> s) override {
    return std::make_shared<Snap>(std::move(s), names_read);
  }
};

TEST_CASE("groups: listing one level reads past each sub-group, not through it (O(entries listed))") {
  auto store = std::make_shared<NameCountingStore>(storage::NewMemoryStore());
  {
    auto w = OnStore(store, "w");
    for (int i = 0; i < 600; ++i) {
      w.Create("g/sub/x" + std::to_string(i), {1}, "f8").value();
      w.Create("g/sub2/deep/y" + std::to_string(i), {1}, "f8").value();
      w.Create("other/z" + std::to_string(i), {1}, "f8").value();
    }
    for (const char* n : {"g/a", "g/b", "g/sub3/c", "top"}) w.Create(n, {1}, "f8").value();
    REQUIRE(w.Commit().ok());
  }
  auto db = OnStore(store, "r");
  using E = Database::GroupEntry;
  auto reads = [&](auto&& call) {
    *store->names_read = 0;
    call();
    return *store->names_read;
  };
  CHECK(reads([&] {
          CHECK(db.List("g").value() == std::vector<E>{{"a", false}, {"b", false}, {"sub", true}, {"sub2", true},
                                                       {"sub3", true}});
        }) <= 5);
  CHECK(reads([&] { CHECK(db.List("").value() == std::vector<E>{{"g", true}, {"other", true}, {"top", false}}); }) <= 3);
  CHECK(reads([&] { CHECK(db.GroupExists("g/sub2").value()); }) <= 1);
  CHECK(reads([&] { CHECK(!db.GroupExists("g/none").value()); }) == 0);
  CHECK(reads([&] { CHECK(db.List("g/sub").value().size() == 600); }) == 600);

  // This transaction's view: a dropped array's sub-group is gone, a renamed one moves.
  REQUIRE(db.Drop("g/sub3/c").ok());
  REQUIRE(db.Rename("g/a", "g/sub4/a").ok());
  CHECK(db.List("g").value() == std::vector<E>{{"b", false}, {"sub", true}, {"sub2", true}, {"sub4", true}});
  CHECK(!db.GroupExists("g/sub3").value());
  CHECK(db.GroupExists("g/sub4").value());
}

TEST_CASE("attributes: group names are checked like the names they prefix, keys must be UTF-8") {
  TempDir dir;
  auto db = OpenDb(dir.path() + "/db");
  db.Create("runs/x", {1}, "f8").value();
  // The longest group name that can hold an array, with the longest key: the store takes it.
  const std::string longest(253, 'g');
  REQUIRE(db.GroupAttrs(longest).SetJson(std::string(kMaxAttrKeyBytes, 'k'), "1").ok());
  REQUIRE(db.Commit().ok());
  CHECK(JsonOf(db.GroupAttrs(longest), std::string(kMaxAttrKeyBytes, 'k')) == "1");
  for (const std::string& bad :
       std::vector<std::string>{std::string(254, 'g'), std::string(600, 'g'), std::string("a\0b", 3), "a//b", "a\xff"}) {
    Attrs attrs = db.GroupAttrs(bad);
    Status st = attrs.SetJson("k", "1");
    CHECK_MESSAGE(st.code() == Code::kInvalidArgument, bad);
    CHECK_MESSAGE(st.message().starts_with("group name '"), st.message());
    // Reading and deleting are not refused (groups named before the rule stay readable): there
    // is nothing to find.
    CHECK(!attrs.Get("k").value());
    CHECK(attrs.Keys().value().empty());
    CHECK(attrs.Delete("k").code() == Code::kNotFound);
  }
  Status st = db.GroupAttrs("runs").SetJson("k\xff\xfe", "1");
  CHECK(st.code() == Code::kInvalidArgument);
  CHECK(st.message().find("UTF-8") != std::string::npos);
  CHECK(db.GroupAttrs("a': b//c").SetJson("k", "1").message() ==
        "group name 'a': b//c': '/' separates groups, so it may not begin or end a name or follow another '/'");
  CHECK(db.Get("runs/x").value().attrs().SetJson(std::string("\xc3", 1), "1").code() == Code::kInvalidArgument);
  CHECK(db.attrs().SetJson("", "1").message() == "an attribute key of database " + dir.path() + "/db must not be empty");
  // Nothing refused was kept: the transaction commits.
  REQUIRE(db.GroupAttrs("runs").SetJson("ok", "true").ok());
  CHECK(db.ChangedArrays().value() == std::vector<std::string>{"runs/"});
  REQUIRE(db.Commit().ok());
  CHECK(db.GroupAttrs("runs").Keys().value() == std::vector<std::string>{"ok"});

  // Names too long for a group are still names: no group below them, nothing to refuse
  // (`rm -r NAME` drops the array, then finds no group).
  const std::string long_name(255, 'a');
  db.Create(long_name, {1}, "f8").value();
  REQUIRE(db.Commit().ok());
  CHECK(db.DropGroup(long_name).status().code() == Code::kNotFound);
  CHECK(db.List(long_name).value().empty());
  CHECK(!db.GroupAttrs(long_name + "/" + long_name).Get("k").value());  // a key longer than LMDB takes

  // A group named before the rules (invalid UTF-8) is listed, read and dropped.
  db.Create("legacy/x", {1}, "f8").value();
  REQUIRE(db.Commit().ok());
  db = OpenDb(dir.path() + "/other");  // release the environment before changing it below
  bigarray::testing::RenameInCatalog(dir.path() + "/db", "legacy/x", "old\xff/x");
  db = OpenDb(dir.path() + "/db");
  CHECK(db.GroupExists("old\xff").value());
  CHECK(db.GroupAttrs("old\xff").Keys().value().empty());
  CHECK(db.GroupAttrs("old\xff").SetJson("k", "1").code() == Code::kInvalidArgument);
  CHECK(db.DropGroup("old\xff").value() == 1);
  REQUIRE(db.Commit().ok());
  CHECK(!db.GroupExists("old\xff").value());
}

TEST_CASE("groups: a name or an attribute put below a group while another transaction drops it conflicts") {
  auto store = storage::NewMemoryStore();
  auto a = OnStore(store, "a");
  auto b = OnStore(store, "b");
  for (const char* n : {"runs/x", "runs/sub/y", "keep/z"}) a.Create(n, {1}, "f8").value();
  REQUIRE(a.Commit().ok());
  b.Abort();  // b sees them

  SUBCASE("a new array in the group") {
    REQUIRE(b.Create("runs/new", {1}, "f8").ok());
  }
  SUBCASE("a new array in a sub-group") {
    REQUIRE(b.Create("runs/sub/new", {1}, "f8").ok());
  }
  SUBCASE("an array renamed into it") {
    REQUIRE(b.Rename("keep/z", "runs/z").ok());
  }
  SUBCASE("an attribute of the group") {
    REQUIRE(b.GroupAttrs("runs").SetJson("k", "1").ok());
  }
  SUBCASE("an attribute of a sub-group") {
    REQUIRE(b.GroupAttrs("runs/sub").SetJson("k", "1").ok());
  }
  REQUIRE(a.DropGroup("runs").value() == 2);
  REQUIRE(b.Commit().ok());
  CHECK(a.Commit().code() == Code::kConflict);  // else b's change would outlive its group unseen
  a.Abort();
  CHECK(!a.Names("runs/").value().empty());
  // Afterwards, with b's change seen, the drop goes through.
  REQUIRE(a.DropGroup("runs").ok());
  REQUIRE(a.Commit().ok());
  CHECK(a.Names("runs/").value().empty());
}

TEST_CASE("groups: dropping a group conflicts with nothing outside it") {
  auto store = storage::NewMemoryStore();
  auto a = OnStore(store, "a");
  auto b = OnStore(store, "b");
  for (const char* n : {"runs/x", "runsx/y"}) a.Create(n, {1}, "f8").value();
  REQUIRE(a.Commit().ok());
  b.Abort();
  REQUIRE(b.Create("runsx/new", {1}, "f8").ok());
  REQUIRE(b.GroupAttrs("runsx").SetJson("k", "1").ok());
  REQUIRE(b.attrs().SetJson("k", "1").ok());
  REQUIRE(a.DropGroup("runs").value() == 1);
  REQUIRE(b.Commit().ok());
  CHECK(a.Commit().ok());
  CHECK(a.DropGroup("nothing").status().code() == Code::kNotFound);  // and a drop of nothing checks nothing
  REQUIRE(b.Create("nothing/new", {1}, "f8").ok());
  REQUIRE(b.Commit().ok());
  CHECK(a.Commit().ok());
}

TEST_CASE("groups: DropGroup drops the arrays and the attributes below a group, and only those") {
  auto store = storage::NewMemoryStore();
  auto db = OnStore(store, "db");
  for (const char* n : {"runs/a", "runs/sub/b", "runsx/c", "runs"}) db.Create(n, {1}, "f8").value();
  REQUIRE(db.GroupAttrs("runs").SetJson("title", "\"runs\"").ok());
  REQUIRE(db.GroupAttrs("/runs/sub/").SetJson("title", "\"sub\"").ok());
  REQUIRE(db.GroupAttrs("runsx").SetJson("title", "\"x\"").ok());
  REQUIRE(db.Get("runs/a").value().attrs().SetJson("u", "1").ok());
  REQUIRE(db.Commit().ok());
  CHECK(JsonOf(db.GroupAttrs("runs/sub"), "title") == "\"sub\"");
  CHECK(db.GroupAttrs("runs").owner() == "group 'runs'");
  CHECK(db.GroupAttrs("").owner() == "database db");
  CHECK(db.DropGroup("runs").value() == 2);
  CHECK(db.Names().value() == std::vector<std::string>{"runs", "runsx/c"});
  CHECK(!db.GroupAttrs("runs").Get("title").value());
  REQUIRE(db.Commit().ok());
  CHECK(MetaKeys(*store, "t/").empty());
  CHECK(MetaKeys(*store, "g/").size() == 1);  // runsx's
  CHECK(JsonOf(db.GroupAttrs("runsx"), "title") == "\"x\"");
  CHECK(db.DropGroup("runs").status().code() == Code::kNotFound);
  CHECK(db.DropGroup("/").status().code() == Code::kInvalidArgument);
}
