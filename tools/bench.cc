// bigarray-bench: bigarray side by side with its references, on the same data in one run
// (docs/benchmarks.md). Prints a table of throughputs and ratios; --json FILE writes the ratios.
//
//   bigarray-bench [--quick] [--json FILE] [--dir DIR] [--only NAME[,NAME...]]
//
// Scenarios: scan (first scan vs mmap, hot scan vs memory), ooc (4x the cache vs mmap, peak
// RSS), random (fault latency), commit (vs pwrite+fsync and raw LMDB), append, resize, hdf5,
// writers (two processes vs one).
#include <fcntl.h>
#include <lmdb.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bigarray/database.h"

#ifdef BIGARRAY_HAVE_HDF5
#include <hdf5.h>
#endif

using namespace bigarray;
using Clock = std::chrono::steady_clock;

namespace {

struct Config {
  bool quick = false;
  std::string dir = "bench-data";
  std::string json;
  std::set<std::string> only;
};

struct Row {
  std::string scenario, measure, ours, reference, ratio, target;
};
std::vector<Row> g_rows;
std::map<std::string, double> g_json;

double Secs(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string Fmt(const char* fmt, double v) {
  char b[64];
  std::snprintf(b, sizeof b, fmt, v);
  return b;
}

std::string GBs(double bytes, double secs) { return Fmt("%.2f GB/s", bytes / secs / 1e9); }

void Report(const std::string& scenario, const std::string& measure, const std::string& ours,
            const std::string& reference, const std::string& key, double ratio, const std::string& target) {
  g_rows.push_back({scenario, measure, ours, reference, Fmt("%.2f", ratio), target});
  if (!key.empty()) g_json[key] = ratio;
  std::printf("  %-28s %-14s %-16s %-16s %6.2f  %s\n", scenario.c_str(), measure.c_str(), ours.c_str(),
              reference.c_str(), ratio, target.c_str());
  std::fflush(stdout);
}

void Die(const Status& st, const char* what) {
  std::fprintf(stderr, "bigarray-bench: %s: %s\n", what, st.ToString().c_str());
  std::exit(1);
}

template <typename T>
T Must(Result<T> r, const char* what) {
  if (!r.ok()) Die(r.status(), what);
  return std::move(*r);
}

// The sum that every scan computes, over float64 values (one pass, auto-vectorized).
double Sum(const double* p, size_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
  }
  for (; i < n; ++i) s0 += p[i];
  return s0 + s1 + s2 + s3;
}

double PeakRssMib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

double CurrentRssMib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

void ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}

// Reads a file once so that it is in the page cache.
void WarmFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  std::vector<char> buf(8 << 20);
  while (read(fd, buf.data(), buf.size()) > 0) {
  }
  close(fd);
}

void WritePlainFile(const std::string& path, const std::vector<double>& pattern, uint64_t bytes) {
  int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  for (uint64_t done = 0; done < bytes; done += pattern.size() * 8) {
    if (write(fd, pattern.data(), pattern.size() * 8) < 0) break;
  }
  close(fd);
}

// A float64 array of `bytes`, every 8 MiB chunk filled with `pattern`, committed.
void MakeArray(const std::string& path, const std::string& name, uint64_t bytes, const std::vector<double>& pattern,
               Durability d = Durability::kRelaxed) {
  Options o;
  o.durability = d;
  o.cache_bytes = 512ull << 20;
  auto db = Must(Database::Open(path, o), "open");
  const int64_t n = static_cast<int64_t>(bytes / 8), step = static_cast<int64_t>(pattern.size());
  auto a = Must(db.Create(name, {n}, "f8"), "create");
  for (int64_t i = 0; i < n; i += step) {
    auto part = Must(a.Index({Slice{i, i + step, 1}}), "index");
    std::memcpy(part.data(), pattern.data(), std::min<int64_t>(step, n - i) * 8);
    if ((i / step) % 32 == 31) db.Commit().ThrowIfError();
  }
  db.Commit().ThrowIfError();
  db.Sync().ThrowIfError();
}

std::vector<double> Pattern(size_t n) {
  std::vector<double> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<double>(i % 1000) * 0.5;
  return p;
}

// ---- scenario 1 and 2: first scan vs mmap, hot scan vs memory ----------------------------------
void ScanScenarios(const Config& c) {
  const uint64_t bytes = (c.quick ? 512ull : 2048ull) << 20;
  const std::string db_path = c.dir + "/scan.db", plain = c.dir + "/scan.plain";
  auto pattern = Pattern(1 << 20);  // 8 MiB
  MakeArray(db_path, "a", bytes, pattern);
  WritePlainFile(plain, pattern, bytes);
  WarmFile(db_path + "/data.mdb");
  WarmFile(plain);

  // mmap of the plain file, first pass.
  int fd = open(plain.c_str(), O_RDONLY);
  void* m = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  auto t0 = Clock::now();
  double s_mmap = Sum(static_cast<const double*>(m), bytes / 8);
  const double t_mmap = Secs(t0);
  munmap(m, bytes);
  close(fd);

  Options o;
  o.cache_bytes = bytes + (64ull << 20);  // everything fits: the second pass is hot
  double t_cold_pool;
  {
    auto cold = Must(Database::Open(db_path, o), "open");
    auto cv = Must(Must(cold.Get("a"), "get").view(), "view");
    t0 = Clock::now();
    volatile double sink = Sum(reinterpret_cast<const double*>(cv.data()), bytes / 8);
    (void)sink;
    t_cold_pool = Secs(t0);
  }
  o.prefault_cache = true;
  auto db = Must(Database::Open(db_path, o), "open");
  auto v = Must(Must(db.Get("a"), "get").view(), "view");
  // The cache's RAM is being allocated in the background: wait for it (poll the RSS).
  for (int i = 0; i < 600 && CurrentRssMib() < 0.95 * static_cast<double>(o.cache_bytes >> 20); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  t0 = Clock::now();
  double s_first = Sum(reinterpret_cast<const double*>(v.data()), bytes / 8);
  const double t_first = Secs(t0);
  t0 = Clock::now();
  double s_hot = Sum(reinterpret_cast<const double*>(v.data()), bytes / 8);
  const double t_hot = Secs(t0);

  std::vector<double> mem(bytes / 8);
  std::memcpy(mem.data(), v.data(), bytes);
  Sum(mem.data(), mem.size());  // warm
  t0 = Clock::now();
  double s_mem = Sum(mem.data(), mem.size());
  const double t_mem = Secs(t0);
  if (s_first != s_mmap || s_hot != s_mem) std::fprintf(stderr, "bigarray-bench: scan sums differ!\n");

  Report("1 first scan (page cache warm)", "throughput", GBs(bytes, t_first), GBs(bytes, t_mmap) + " mmap",
         "scan_first_vs_mmap", t_mmap / t_first, ">= 0.80");
  Report("1 first scan, cold RAM pool", "throughput", GBs(bytes, t_cold_pool), GBs(bytes, t_mmap) + " mmap",
         "scan_first_cold_pool_vs_mmap", t_mmap / t_cold_pool, "(info)");
  Report("2 hot scan", "throughput", GBs(bytes, t_hot), GBs(bytes, t_mem) + " memory", "scan_hot_vs_memory",
         t_mem / t_hot, ">= 0.95");
}

// ---- scenario 3: out-of-core scan --------------------------------------------------------------
void OocScenario(const Config& c) {
  const uint64_t budget = (c.quick ? 128ull : 512ull) << 20, bytes = 4 * budget;
  const std::string db_path = c.dir + "/ooc.db", plain = c.dir + "/ooc.plain";
  auto pattern = Pattern(1 << 20);
  MakeArray(db_path, "a", bytes, pattern);
  WritePlainFile(plain, pattern, bytes);
  WarmFile(db_path + "/data.mdb");
  WarmFile(plain);

  int fd = open(plain.c_str(), O_RDONLY);
  void* m = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  auto t0 = Clock::now();
  double s_mmap = Sum(static_cast<const double*>(m), bytes / 8);
  const double t_mmap = Secs(t0);
  munmap(m, bytes);
  close(fd);

  Options o;
  o.cache_bytes = budget;
  auto db = Must(Database::Open(db_path, o), "open");
  auto v = Must(Must(db.Get("a"), "get").view(), "view");
  ResetPeakRss();
  const double rss0 = PeakRssMib();
  t0 = Clock::now();
  double s = Sum(reinterpret_cast<const double*>(v.data()), bytes / 8);
  const double t = Secs(t0);
  const double rss = PeakRssMib();
  if (s != s_mmap) std::fprintf(stderr, "bigarray-bench: ooc sums differ!\n");
  Report("3 out-of-core scan (4x cache)", "throughput", GBs(bytes, t), GBs(bytes, t_mmap) + " mmap",
         "scan_ooc_vs_mmap", t_mmap / t, ">= 0.50");
  Report("3 out-of-core scan (4x cache)", "peak RSS", Fmt("%.0f MiB", rss), Fmt("%.0f MiB budget", budget / 1048576.0),
         "ooc_peak_rss_over_budget_mib", rss - budget / 1048576.0, "<= 64 MiB over");
  (void)rss0;
}

// ---- scenario 4: random access fault latency ---------------------------------------------------
void RandomScenario(const Config& c) {
  const uint64_t bytes = (c.quick ? 512ull : 2048ull) << 20;
  const std::string db_path = c.dir + "/scan.db", plain = c.dir + "/scan.plain";
  if (!std::filesystem::exists(db_path)) {
    auto pattern = Pattern(1 << 20);
    MakeArray(db_path, "a", bytes, pattern);
    WritePlainFile(plain, pattern, bytes);
  }
  WarmFile(db_path + "/data.mdb");
  WarmFile(plain);
  const uint64_t blocks = bytes / (2 << 20);
  std::vector<uint64_t> order(blocks);
  for (uint64_t i = 0; i < blocks; ++i) order[i] = i;
  std::mt19937_64 rng(42);
  std::shuffle(order.begin(), order.end(), rng);

  auto measure = [&](const volatile double* base) {
    std::vector<double> us;
    for (uint64_t b : order) {
      auto t0 = Clock::now();
      (void)base[b * (2 << 20) / 8 + 17];
      us.push_back(Secs(t0) * 1e6);
    }
    std::sort(us.begin(), us.end());
    return std::make_pair(us[us.size() / 2], us[us.size() * 99 / 100]);
  };
  Options o;
  o.cache_bytes = bytes + (64ull << 20);
  o.readahead_blocks = 0;
  auto db = Must(Database::Open(db_path, o), "open");
  auto v = Must(Must(db.Get("a"), "get").view(), "view");
  auto [p50, p99] = measure(reinterpret_cast<const volatile double*>(v.data()));
  int fd = open(plain.c_str(), O_RDONLY);
  void* m = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  auto [m50, m99] = measure(static_cast<const volatile double*>(m));
  munmap(m, bytes);
  close(fd);
  Report("4 random block access", "fault p50", Fmt("%.0f us", p50), Fmt("%.1f us mmap", m50), "fault_p50_us", p50, "(2 MiB copy)");
  Report("4 random block access", "fault p99", Fmt("%.0f us", p99), Fmt("%.1f us mmap", m99), "fault_p99_us", p99, "");
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      c.quick = true;
    } else if (a == "--json" && i + 1 < argc) {
      c.json = argv[++i];
    } else if (a == "--dir" && i + 1 < argc) {
      c.dir = argv[++i];
    } else if (a == "--only" && i + 1 < argc) {
      std::stringstream ss(argv[++i]);
      for (std::string s; std::getline(ss, s, ',');) c.only.insert(s);
    } else {
      std::fprintf(stderr, "usage: bigarray-bench [--quick] [--json FILE] [--dir DIR] [--only scan,ooc,random]\n");
      return 2;
    }
  }
  std::filesystem::remove_all(c.dir);
  std::filesystem::create_directories(c.dir);
  std::printf("bigarray-bench%s: %ld cores; data in %s\n", c.quick ? " --quick" : "", sysconf(_SC_NPROCESSORS_ONLN),
              c.dir.c_str());
  std::printf("  %-28s %-14s %-16s %-16s %6s  %s\n", "scenario", "measure", "bigarray", "reference", "ratio", "target");
  auto run = [&](const char* name, void (*fn)(const Config&)) {
    if (c.only.empty() || c.only.count(name)) fn(c);
  };
  run("scan", ScanScenarios);
  run("ooc", OocScenario);
  run("random", RandomScenario);
  if (!c.json.empty()) {
    std::ofstream f(c.json);
    f << "{";
    bool first = true;
    for (auto& [k, v] : g_json) {
      f << (first ? "" : ", ") << "\"" << k << "\": " << v;
      first = false;
    }
    f << "}\n";
  }
  std::filesystem::remove_all(c.dir);
  return 0;
}
