// Quickstart: create an array, write it, commit, reopen, read.
#include <cstdio>
#include <filesystem>

#include "bigarray/database.h"

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "quickstart.db";
  {
    auto db = bigarray::Database::Open(path).value();  // value() throws bigarray::Error on failure
    auto a = db.Create("temperatures", {1000, 24}, "f8").value();
    auto v = a.view().value();  // a strided view straight into the mapped array: no copy
    for (int64_t day = 0; day < 1000; ++day) {
      for (int64_t hour = 0; hour < 24; ++hour) v.at<double>(day, hour) = 15.0 + hour * 0.5;
    }
    db.Commit().ThrowIfError();  // all or nothing
  }
  auto db = bigarray::Database::Open(path).value();
  auto a = db.Get("temperatures").value();
  auto noon = a.Index({bigarray::All(), int64_t{12}}).value();  // A[:, 12]
  std::printf("shape (%lld, %lld), noon on day 7: %.1f\n", static_cast<long long>(a.shape()[0]),
              static_cast<long long>(a.shape()[1]), noon.at<double>(7));
  std::filesystem::remove_all(path);
  return noon.at<double>(7) == 21.0 ? 0 : 1;
}
