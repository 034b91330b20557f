// bigarray-demo: the story of a new user with data bigger than RAM (what `make demo` runs).
//
// Creates a float64 array several times the cache budget, fills it in chunks with a commit per
// chunk, reopens it, computes mean and standard deviation out-of-core, appends rows, shrinks
// it, makes an edit and aborts it, and reports throughput and peak RSS against the budget.
//
//   bigarray-demo [--gib N] [--cache-mib M] [--path DIR] [--keep]
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "../tools/progress.h"
#include "bigarray/database.h"

using namespace bigarray;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

double PeakRssMib() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

// The value stored at (row, col): anything deterministic and not constant.
double Value(int64_t row, int64_t col) { return std::sin(0.001 * row) * 10.0 + col * 0.01; }

int Fail(const Status& st) {
  std::fprintf(stderr, "bigarray-demo: %s\n", st.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  double gib = 6;
  uint64_t cache_mib = 256;
  std::string path = "demo-data/demo.db";
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--gib" && i + 1 < argc) gib = std::atof(argv[++i]);
    else if (a == "--cache-mib" && i + 1 < argc) cache_mib = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--path" && i + 1 < argc) path = argv[++i];
    else if (a == "--keep") keep = true;
    else {
      std::fprintf(stderr, "usage: bigarray-demo [--gib N] [--cache-mib M] [--path DIR] [--keep]\n");
      return 2;
    }
  }
  constexpr int64_t kCols = 1024;  // 8 KiB rows
  const int64_t rows = static_cast<int64_t>(gib * (1ull << 30)) / (kCols * 8);
  const int64_t chunk = (256ll << 20) / (kCols * 8);  // commit every 256 MiB
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());

  Options options;
  options.cache_bytes = cache_mib << 20;
  std::printf("bigarray demo: a %.1f GiB float64 array through a %llu MiB cache, in %s\n", gib,
              static_cast<unsigned long long>(cache_mib), path.c_str());

  // 1. Create and fill, one commit per 256 MiB chunk.
  double sum = 0, sumsq = 0;
  auto t0 = Clock::now();
  {
    auto db = Database::Open(path, options);
    if (!db.ok()) return Fail(db.status());
    auto a = db->Create("measurements", {rows, kCols}, "f8");
    if (!a.ok()) return Fail(a.status());
    tools::Progress progress("fill", rows * kCols * 8);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t r1 = std::min(rows, r0 + chunk);
      auto part = a->Index({Slice{r0, r1, 1}});
      if (!part.ok()) return Fail(part.status());
      auto d = part->Span<double>().value();
      for (int64_t r = r0; r < r1; ++r) {
        double* row = d.data() + (r - r0) * kCols;
        for (int64_t c = 0; c < kCols; ++c) {
          row[c] = Value(r, c);
          sum += row[c];
          sumsq += row[c] * row[c];
        }
      }
      if (Status st = db->Commit(); !st.ok()) return Fail(st);
      progress.Update(r1 * kCols * 8);
    }
  }
  const double fill_secs = Seconds(t0);
  const double bytes = static_cast<double>(rows) * kCols * 8;
  std::printf("1. filled %lld x %lld and committed every 256 MiB: %.2f s, %.0f MB/s (durable commits)\n",
              static_cast<long long>(rows), static_cast<long long>(kCols), fill_secs, bytes / fill_secs / 1e6);

  // 2. Reopen and compute statistics out-of-core.
  auto db = Database::Open(path, options);
  if (!db.ok()) return Fail(db.status());
  auto a = db->Get("measurements");
  if (!a.ok()) return Fail(a.status());
  t0 = Clock::now();
  double s1 = 0, s2 = 0;
  {
    auto v = a->view();
    if (!v.ok()) return Fail(v.status());
    auto d = v->Span<const double>().value();
    tools::Progress progress("scan", d.size() * 8);
    for (size_t i = 0; i < d.size(); ++i) {
      s1 += d[i];
      s2 += d[i] * d[i];
      if ((i & ((1 << 24) - 1)) == 0) progress.Update(i * 8);
    }
  }
  const double scan_secs = Seconds(t0);
  const double n = static_cast<double>(rows) * kCols;
  const double mean = s1 / n, stddev = std::sqrt(std::max(0.0, s2 / n - mean * mean));
  const double want_mean = sum / n;
  std::printf("2. reopened; mean %.6f, std %.6f, computed out-of-core in %.2f s (%.0f MB/s); %s\n", mean,
              stddev, scan_secs, bytes / scan_secs / 1e6,
              std::fabs(mean - want_mean) < 1e-9 * (1 + std::fabs(want_mean)) ? "matches what was written"
                                                                              : "MISMATCH");
  auto stats = db->cache_stats();
  std::printf("   cache: %llu faults, %llu loads (%llu by read-ahead), %llu evictions\n",
              static_cast<unsigned long long>(stats.faults), static_cast<unsigned long long>(stats.loads),
              static_cast<unsigned long long>(stats.readahead_loads), static_cast<unsigned long long>(stats.evictions));

  // 3. Append rows: the cost is that of the new rows only.
  std::vector<double> extra(1000 * kCols, 1.5);
  t0 = Clock::now();
  if (Status st = a->Append(View::Wrap(extra.data(), DType::Of<double>(), {1000, kCols}).value()); !st.ok()) return Fail(st);
  if (Status st = db->Commit(); !st.ok()) return Fail(st);
  std::printf("3. appended 1000 rows in %.3f s; shape is now (%lld, %lld)\n", Seconds(t0),
              static_cast<long long>(a->shape()[0]), static_cast<long long>(a->shape()[1]));

  // 4. Shrink: blocks past the new end are released.
  const uint64_t blocks_before = a->BlocksStored().value();
  t0 = Clock::now();
  if (Status st = a->Resize({rows / 2, kCols}); !st.ok()) return Fail(st);
  if (Status st = db->Commit(); !st.ok()) return Fail(st);
  std::printf("4. resized to (%lld, %lld) in %.3f s: %llu blocks stored before, %llu after\n",
              static_cast<long long>(rows / 2), static_cast<long long>(kCols), Seconds(t0),
              static_cast<unsigned long long>(blocks_before),
              static_cast<unsigned long long>(a->BlocksStored().value()));

  // 5. An edit, then abort: it vanishes.
  auto v = a->view().value();
  const double before = v.at<double>(0, 0);
  v.at<double>(0, 0) = 42.0;
  std::printf("5. set [0, 0] from %.3f to %.3f, then aborted: ", before, v.at<double>(0, 0));
  db->Abort();
  std::printf("it reads %.3f again\n", v.at<double>(0, 0));

  const double rss = PeakRssMib();
  std::printf("peak RSS %.0f MiB for a %.1f GiB array and a %llu MiB cache budget\n", rss, gib,
              static_cast<unsigned long long>(cache_mib));
  if (!keep) {
    *db = Database::Open("memory:").value();  // release the files before removing them
    std::filesystem::remove_all(path);
    std::printf("removed %s (pass --keep to keep it)\n", path.c_str());
  }
  return std::fabs(mean - want_mean) < 1e-9 * (1 + std::fabs(want_mean)) ? 0 : 1;
}
