// Attributes and groups: metadata beside the arrays, in the same transactions.
#include <cstdio>
#include <cstring>

#include "bigarray/database.h"

using namespace bigarray;

int main() {
  auto db = Database::Open("memory:").value();
  auto t = db.Create("stations/berlin/temperature", {365, 24}, "f4").value();  // '/' makes groups
  db.Create("stations/berlin/pressure", {365, 24}, "f4").value();
  db.Create("stations/oslo/temperature", {365, 24}, "f4").value();

  t.attrs().SetJson("units", R"("K")").ThrowIfError();  // JSON text, checked
  t.attrs().SetJson("_ARRAY_DIMENSIONS", R"(["day", "hour"])").ThrowIfError();
  double offsets[2] = {273.15, 0.5};
  std::string bytes(sizeof offsets, '\0');
  std::memcpy(bytes.data(), offsets, sizeof offsets);
  t.attrs().Set("offsets", AttrValue::Array(DType::Of<double>(), {2}, bytes).value()).ThrowIfError();
  db.GroupAttrs("stations/berlin").SetJson("elevation_m", "34").ThrowIfError();
  db.attrs().SetJson("title", R"("daily weather")").ThrowIfError();
  db.Commit().ThrowIfError();  // data, names and attributes: all or nothing

  const auto entries = db.List("stations").value();  // one level: the sub-groups berlin/, oslo/
  for (const auto& e : entries) std::printf("stations/%s%s\n", e.name.c_str(), e.is_group ? "/" : "");
  const auto keys = t.attrs().Keys().value();
  for (const std::string& key : keys) {
    std::printf("%s = %s\n", key.c_str(), t.attrs().Get(key).value()->ToJson().c_str());
  }
  std::printf("invalid: %s\n", t.attrs().SetJson("units", "K").ToString().c_str());  // not JSON

  db.Rename("stations/berlin/temperature", "stations/berlin/t2m").ThrowIfError();  // attributes follow
  const bool kept = db.Get("stations/berlin/t2m").value().attrs().Get("units").value()->json() == R"("K")";
  std::printf("dropped %zu arrays of group stations/oslo\n", db.DropGroup("stations/oslo").value());
  db.Commit().ThrowIfError();
  return kept && db.Names("stations/").value().size() == 2 ? 0 : 1;
}
