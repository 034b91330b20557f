// A program that uses bigarray from outside its source tree (tests/install/install_test.sh):
// prints the library's version, stores an array in the database directory DB, reads it back
// through a new handle. With --no-postgres it checks instead that a postgresql:// URI fails as
// it must in a build without PostgreSQL support.
#include <bigarray/database.h>
#include <bigarray/version.h>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  const std::string arg = argc == 2 ? argv[1] : "";
  if (arg.empty()) {
    std::fprintf(stderr, "usage: app DB | app --no-postgres\n");
    return 2;
  }
  const bigarray::Version v = bigarray::version();
  std::printf("bigarray %s (format %u)\n", v.str().c_str(), static_cast<unsigned>(v.format));

  if (arg == "--no-postgres") {
    auto db = bigarray::Database::Open("postgresql:///postgres");
    std::printf("%s\n", db.status().ToString().c_str());
    const bool ok = !db.ok() && db.status().code() == bigarray::Code::kUnsupported &&
                    db.status().message().find("built without PostgreSQL support") != std::string::npos;
    return ok ? 0 : 1;
  }

  {
    auto db = bigarray::Database::Open(arg).value();  // value() throws bigarray::Error on failure
    auto a = db.Create("squares", {1000}, "i8").value();
    auto view = a.view().value();
    for (int64_t i = 0; i < 1000; ++i) view.at<int64_t>(i) = i * i;
    db.Commit().ThrowIfError();
  }
  auto db = bigarray::Database::Open(arg).value();
  const int64_t last = db.Get("squares").value().view().value().at<int64_t>(999);
  std::printf("squares[999] = %lld\n", static_cast<long long>(last));
  return last == 999 * 999 ? 0 : 1;
}
