// libFuzzer target: opening and reading a damaged database must never crash, hang or return
// damaged data as good (a read that succeeds with other content than was written aborts). The input damages a small valid database: its first 4 bytes choose a
// truncation (0xFFFFFFFF: none), the rest are (u32 offset, u8 xor) patches to data.mdb.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "bigarray/database.h"

namespace {

const std::string& Dir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/bigarray-fuzz-XXXXXX";
    return std::string(mkdtemp(tmpl));
  }();
  return dir;
}

// data.mdb of a database with two arrays of known content (built once).
const std::vector<char>& Image() {
  static const std::vector<char> image = [] {
    const std::string path = Dir() + "/seed";
    {
      auto db = bigarray::Database::Open(path).value();
      auto a = db.Create("a", {3, 8192}, "f8", {bigarray::Order::kC, 4096}).value();
      auto d = a.view().value().Span<double>().value();
      for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<double>(i);
      auto b = db.Create("b", {100}, ">i4").value();
      b.view().value().Fill(7).ThrowIfError();
      db.Commit().ThrowIfError();
    }
    std::ifstream f(path + "/data.mdb", std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), {});
    // Keep only the used part: the map's sparse tail is zeros.
    while (!bytes.empty() && bytes.back() == 0) bytes.pop_back();
    bytes.resize((bytes.size() + 4095) / 4096 * 4096);
    return bytes;
  }();
  return image;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<char> image = Image();
  if (size >= 4) {
    uint32_t cut;
    std::memcpy(&cut, data, 4);
    if (cut != 0xFFFFFFFFu) image.resize(cut % (image.size() + 1));
    for (size_t i = 4; i + 5 <= size; i += 5) {
      uint32_t off;
      std::memcpy(&off, data + i, 4);
      if (!image.empty()) image[off % image.size()] ^= static_cast<char>(data[i + 4]);
    }
  }
  const std::string path = Dir() + "/case";
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path);
  {
    std::ofstream f(path + "/data.mdb", std::ios::binary);
    f.write(image.data(), static_cast<std::streamsize>(image.size()));
  }
  bigarray::Options o;
  o.create_if_missing = false;
  o.cache_bytes = 1 << 20;
  auto db = bigarray::Database::Open(path, o);
  if (!db.ok()) return 0;  // refused with an error: fine
  auto names = db->Names();
  if (!names.ok()) return 0;
  // Damage must be reported, never returned as good: when every read succeeds, the arrays must
  // be exactly what Image() wrote (the damage sweep, tests/damage_sweep.cc, checks the same for
  // every single byte).
  bool all_ok = true, as_written = *names == std::vector<std::string>{"a", "b"};
  for (const std::string& name : *names) {
    auto a = db->Get(name);
    if (!a.ok()) {
      all_ok = false;
      continue;
    }
    if (a->nbytes() > (64 << 20)) {  // damaged shape: refuse to read gigabytes
      as_written = false;
      continue;
    }
    auto v = a->view();
    if (!v.ok()) {
      all_ok = false;
      continue;
    }
    // Load returns damage as an error; only then may the bytes be read.
    if (!v->Load().ok()) {
      all_ok = false;
    } else if (name == "a") {
      as_written &= a->dtype().str() == "<f8" && a->shape() == std::vector<int64_t>{3, 8192};
      for (int64_t i = 0; as_written && i < a->size(); ++i) {
        double x;
        std::memcpy(&x, v->data() + 8 * i, 8);
        as_written = x == static_cast<double>(i);
      }
    } else if (name == "b") {
      as_written &= a->dtype().str() == ">i4" && a->shape() == std::vector<int64_t>{100};
      static const unsigned char kSeven[4] = {0, 0, 0, 7};
      for (int64_t i = 0; as_written && i < a->size(); ++i) as_written = std::memcmp(v->data() + 4 * i, kSeven, 4) == 0;
    }
    // The block list against the array's tally: a record lost to a damaged key reads as zeros.
    if (!a->BlocksStored().ok()) all_ok = false;
  }
  if (all_ok && !as_written) {
    std::fprintf(stderr, "fuzz_open_db: damaged data returned as good\n");
    std::abort();
  }
  return 0;
}
