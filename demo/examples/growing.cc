// A growing dataset: append rows, resize, views that keep their shape.
#include <cstdio>
#include <vector>

#include "bigarray/database.h"

using namespace bigarray;

int main() {
  auto db = Database::Open("memory:").value();  // in memory: nothing on disk
  auto log = db.Create("events", {0, 3}, "i8").value();
  std::vector<int64_t> batch = {1, 2, 3, 4, 5, 6};  // two rows of three
  for (int i = 0; i < 5; ++i) {
    log.Append(View::Wrap(batch.data(), DType::Of<int64_t>(), {2, 3}).value()).ThrowIfError();
    db.Commit().ThrowIfError();
  }
  auto before = log.view().value();  // shape (10, 3)
  log.Resize({4, 3}).ThrowIfError();     // shrink: rows 4.. are released at commit
  log.Resize({6, 3}).ThrowIfError();     // grow again: the new rows read as zeros
  db.Commit().ThrowIfError();
  auto after = log.view().value();
  std::printf("old view %lld rows, new shape %lld rows, [5, 0] = %lld\n",
              static_cast<long long>(before.shape()[0]), static_cast<long long>(after.shape()[0]),
              static_cast<long long>(after.at<int64_t>(5, 0)));
  return before.shape()[0] == 10 && after.at<int64_t>(3, 2) == 6 && after.at<int64_t>(5, 0) == 0 ? 0 : 1;
}
