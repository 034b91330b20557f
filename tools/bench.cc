// bigarray-bench: bigarray side by side with its references, on the same data in one run
// (docs/benchmarks.md). Prints a table of throughputs and ratios; --json FILE writes the ratios.
//
//   bigarray-bench [--quick] [--json FILE] [--dir DIR] [--only NAME[,NAME...]]
//
// Scenarios: scan (first scans of fresh handles vs mmap: default options, without verification,
// by copy into a cold and a warm RAM pool; hot scan vs memory), ooc (4x the cache vs mmap, peak
// RSS), random (fault latency), cold (first scan with the page cache dropped vs mmap), shared
// (four processes scanning one array: their PSS), commit (vs pwrite+fsync and raw LMDB), grow
// (append, resize), hdf5, writers (two processes vs one), watch (commit-to-wakeup of a follower
// in another process), space (device bytes written by small commits).
#include <fcntl.h>
#include <lmdb.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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
  std::string pg;  // a postgresql:// URI: run the PostgreSQL scenario against it
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

// CPU seconds, user and system, of every thread of this process so far.
double CpuSecs() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

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

// A read that returned other bytes than were written (a sum that differs): reported at once,
// and the run fails at the end (its figures are still printed and written).
bool g_wrong_data = false;
void WrongData(const std::string& what) {
  std::fprintf(stderr, "bigarray-bench: %s\n", what.c_str());
  g_wrong_data = true;
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

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
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

// Waits (at most 6 s) until the RSS reaches `mib`: the cache's RAM being prefaulted.
void WaitForRss(double mib) {
  for (int i = 0; i < 600 && CurrentRssMib() < 0.95 * mib; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
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

// Both files of a database: data.mdb and blocks.dat (the slots of full blocks).
void WarmDatabase(const std::string& db_path) {
  WarmFile(db_path + "/data.mdb");
  WarmFile(db_path + "/blocks.dat");
}

// `bytes` of `pattern` repeated, written with pwrite: the plain file that mmap scans.
void WritePlainFile(const std::string& path, const std::vector<double>& pattern, uint64_t bytes) {
  int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  if (fd < 0) Die(ErrnoStatus(errno, "open " + path), "write the plain file");
  const uint64_t chunk = pattern.size() * 8;
  for (uint64_t done = 0; done < bytes; done += chunk) {
    const size_t n = static_cast<size_t>(std::min(chunk, bytes - done));
    if (pwrite(fd, pattern.data(), n, static_cast<off_t>(done)) != static_cast<ssize_t>(n)) {
      Die(ErrnoStatus(errno, "pwrite " + path), "write the plain file");
    }
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

// The same bytes as a bigarray array ("a" in db_path) and as a plain file, both in the page cache.
void PrepareScanData(const std::string& db_path, const std::string& plain, uint64_t bytes) {
  auto pattern = Pattern(1 << 20);  // 8 MiB
  MakeArray(db_path, "a", bytes, pattern);
  WritePlainFile(plain, pattern, bytes);
  WarmDatabase(db_path);
  WarmFile(plain);
}

// The data of the scan, random and cold scenarios: 1 GiB (512 MiB with --quick) in scan.db and
// scan.plain, made by the first of them that runs and warmed again by the others.
struct ScanData {
  std::string db_path, plain;
  uint64_t bytes;
};

ScanData EnsureScanData(const Config& c) {
  ScanData d{c.dir + "/scan.db", c.dir + "/scan.plain", (c.quick ? 512ull : 1024ull) << 20};
  if (std::filesystem::exists(d.db_path) && std::filesystem::exists(d.plain)) {
    WarmDatabase(d.db_path);
    WarmFile(d.plain);
  } else {
    PrepareScanData(d.db_path, d.plain, d.bytes);
  }
  return d;
}

// The share of `path`'s bytes that a 2 MiB-aligned mapping of it shows with one PMD entry per
// 2 MiB (FilePmdMapped / Rss of that mapping in /proc/self/smaps, once populated): the page cache
// holds those in 2 MiB folios. The rest costs a scan ~16-45 times as many faults (a fault per 16
// pages; docs/benchmarks.md, "Read-ahead fills the view's entries"), for mmap and bigarray alike,
// and which slots the kernel gives small folios (memory fragmentation when the file was written)
// varies from file to file: the ratios of a run are read with it. -1: not measured.
double PmdShare(const std::string& path) {
  constexpr size_t kHugeBytes = 2u << 20;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  const size_t size = fstat(fd, &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
  double share = -1;
  void* room = size ? mmap(nullptr, size + kHugeBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
  if (room != MAP_FAILED) {
    const uintptr_t at = (reinterpret_cast<uintptr_t>(room) + kHugeBytes - 1) & ~(kHugeBytes - 1);
    void* m = mmap(reinterpret_cast<void*>(at), size, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
    if (m != MAP_FAILED && madvise(m, size, 22 /* MADV_POPULATE_READ */) == 0) {
      std::ifstream smaps("/proc/self/smaps");
      std::string line;
      bool ours = false;
      double rss = 0, pmd = 0;
      while (std::getline(smaps, line)) {
        unsigned long lo, hi;
        if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {
          ours = lo == at;
          continue;
        }
        double kb;
        if (ours && std::sscanf(line.c_str(), "Rss: %lf", &kb) == 1) rss = kb;
        if (ours && std::sscanf(line.c_str(), "FilePmdMapped: %lf", &kb) == 1) pmd = kb;
      }
      if (rss > 0) share = pmd / rss;
    }
    munmap(room, size + kHugeBytes);
  }
  close(fd);
  return share;
}

// One summing pass over a fresh mmap of `plain` (as numpy.memmap(...).sum() does): returns the
// seconds, stores the sum.
double TimeMmapSum(const std::string& plain, uint64_t bytes, double* sum) {
  int fd = open(plain.c_str(), O_RDONLY);
  void* m = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) Die(ErrnoStatus(errno, "mmap " + plain), "mmap scan");
  auto t0 = Clock::now();
  *sum = Sum(static_cast<const double*>(m), bytes / 8);
  const double t = Secs(t0);
  munmap(m, bytes);
  close(fd);
  return t;
}

// The best of `tries` passes over fresh mmaps of `plain`: the time of a fresh map's first pass
// varies 3-fold here from one map to the next (2.4 to 14 GB/s over 1 GiB), with the page cache
// warm; the best is the reference each first scan of bigarray is held to (also its best).
double BestMmapSum(const std::string& plain, uint64_t bytes, double* sum, int tries = 3) {
  double best = 1e30;
  for (int i = 0; i < tries; ++i) best = std::min(best, TimeMmapSum(plain, bytes, sum));
  return best;
}

// Opens a fresh handle on `db_path` with `o`, calls `before` (if any) once the view of array "a"
// exists, then times `passes` summing passes over the whole view. Returns the seconds of each
// pass; a pass whose sum differs from `expect` is reported on stderr as `what`. `first_cpu`: where
// to put the CPU seconds of the first pass, the pager's loader threads included.
std::vector<double> TimeViewSums(const std::string& db_path, const Options& o, uint64_t bytes, int passes,
                                 double expect, const char* what, const std::function<void()>& before = {},
                                 double* first_cpu = nullptr) {
  auto db = Must(Database::Open(db_path, o), "open");
  auto v = Must(Must(db.Get("a"), "get").view(), "view");
  if (before) before();
  std::vector<double> secs;
  for (int i = 0; i < passes; ++i) {
    const double cpu0 = CpuSecs();
    auto t0 = Clock::now();
    const double s = Sum(reinterpret_cast<const double*>(v.data()), bytes / 8);
    secs.push_back(Secs(t0));
    if (first_cpu && i == 0) *first_cpu = CpuSecs() - cpu0;
    if (s != expect) WrongData(std::string(what) + ": sum " + Fmt("%g", s) + ", mmap's " + Fmt("%g", expect));
  }
  return secs;
}

// ---- scenario 1 and 2: first scan vs mmap, hot scan vs memory ----------------------------------
// Every first scan is of a fresh handle with nothing resident in it, the page cache warm for both
// data.mdb and the plain file; all against the same mmap pass.
void ScanScenarios(const Config& c) {
  const ScanData d = EnsureScanData(c);
  const uint64_t bytes = d.bytes;
  double s_mmap;
  const double t_mmap = BestMmapSum(d.plain, bytes, &s_mmap);
  const std::string mmap_gbs = GBs(bytes, t_mmap) + " mmap";

  // Default options: the first pass of a fresh handle, then the hot one over the same view; the
  // best of three fresh handles, as for mmap.
  // The CPU time of each best pass too (all threads): a first scan can be no faster than its
  // CPU time spread over every core, however well its threads overlap.
  std::vector<double> t_default = {1e30, 0};
  double cpu_default = 0, cpu_noverify = 0;
  for (int i = 0; i < 3; ++i) {
    double cpu = 0;
    const auto t = TimeViewSums(d.db_path, Options{}, bytes, 2, s_mmap, "first scan", {}, &cpu);
    if (t[0] < t_default[0]) cpu_default = cpu;
    t_default = {std::min(t_default[0], t[0]), t[1]};
  }
  Options nv;
  nv.verify_reads = false;
  double t_noverify = 1e30;
  for (int i = 0; i < 3; ++i) {
    double cpu = 0;
    const double t = TimeViewSums(d.db_path, nv, bytes, 1, s_mmap, "first scan, no verify", {}, &cpu)[0];
    if (t < t_noverify) cpu_noverify = cpu;
    t_noverify = std::min(t_noverify, t);
  }
  // The copy path (every block copied into the RAM pool), the pool cold, then warm.
  Options copy;
  copy.map_reads = false;
  copy.cache_bytes = bytes + (64ull << 20);  // everything fits
  const double t_cold_pool = TimeViewSums(d.db_path, copy, bytes, 1, s_mmap, "copy, cold pool")[0];
  copy.prefault_cache = true;
  const double t_copy = TimeViewSums(d.db_path, copy, bytes, 1, s_mmap, "copy, warm pool", [&] {
    WaitForRss(static_cast<double>(copy.cache_bytes >> 20));  // the cache's RAM, allocated in the background
  })[0];

  std::vector<double> mem(bytes / 8);
  {
    int fd = open(d.plain.c_str(), O_RDONLY);
    if (fd < 0 || pread(fd, mem.data(), bytes, 0) != static_cast<ssize_t>(bytes)) Die(IOError("read " + d.plain), "scan");
    close(fd);
  }
  Sum(mem.data(), mem.size());  // warm
  auto t0 = Clock::now();
  const double s_mem = Sum(mem.data(), mem.size());
  const double t_mem = Secs(t0);
  if (s_mem != s_mmap) WrongData("scan: the sums of memory and mmap differ");

  Report("1 first scan (page cache warm)", "throughput", GBs(bytes, t_default[0]), mmap_gbs, "scan_first_vs_mmap",
         t_mmap / t_default[0], ">= 0.80");
  Report("1 first scan, no verify", "throughput", GBs(bytes, t_noverify), mmap_gbs, "scan_first_noverify_vs_mmap",
         t_mmap / t_noverify, ">= 0.95");
  // CPU time against mmap's pass (one thread, CPU time = its time): on n cores a first scan
  // reaches at most n / this of mmap's speed.
  const std::string mmap_ms = Fmt("%.1f ms mmap", t_mmap * 1e3);
  Report("1 first scan, CPU time", "all threads", Fmt("%.1f ms", cpu_default * 1e3), mmap_ms, "scan_first_cpu_vs_mmap",
         cpu_default / t_mmap, "(info)");
  Report("1 first scan, no verify, CPU", "all threads", Fmt("%.1f ms", cpu_noverify * 1e3), mmap_ms,
         "scan_first_noverify_cpu_vs_mmap", cpu_noverify / t_mmap, "(info)");
  Report("1 first scan, copy, cold pool", "throughput", GBs(bytes, t_cold_pool), mmap_gbs,
         "scan_first_cold_pool_vs_mmap", t_mmap / t_cold_pool, "(info)");
  Report("1 first scan, copy, warm pool", "throughput", GBs(bytes, t_copy), mmap_gbs, "scan_first_copy_vs_mmap",
         t_mmap / t_copy, "(info)");
  // The page cache's layout that every figure above depends on (PmdShare): info, per file.
  const double pmd_plain = PmdShare(d.plain), pmd_db = PmdShare(d.db_path + "/blocks.dat");
  Report("1 page cache in 2 MiB folios", "blocks.dat", Fmt("%.3f", pmd_db), Fmt("%.3f plain", pmd_plain),
         "scan_db_pmd_share", pmd_db, "(info)");
  g_json["scan_plain_pmd_share"] = pmd_plain;
  Report("2 hot scan", "throughput", GBs(bytes, t_default[1]), GBs(bytes, t_mem) + " memory", "scan_hot_vs_memory",
         t_mem / t_default[1], ">= 0.95");
}

// ---- scenario 3: out-of-core scan --------------------------------------------------------------
void OocScenario(const Config& c) {
  const uint64_t budget = (c.quick ? 128ull : 512ull) << 20, bytes = 4 * budget;
  const std::string db_path = c.dir + "/ooc.db", plain = c.dir + "/ooc.plain";
  PrepareScanData(db_path, plain, bytes);
  double s_mmap;
  const double t_mmap = BestMmapSum(plain, bytes, &s_mmap);

  // The best of three fresh handles, as for mmap: the first pass over pages just written runs at
  // a third of the speed of the next ones here, for mmap as for bigarray (docs/benchmarks.md).
  Options o;  // the defaults but the cache's size
  o.cache_bytes = budget;
  double t = 1e30, over = 0;
  for (int i = 0; i < 3; ++i) {
    t = std::min(t, TimeViewSums(db_path, o, bytes, 1, s_mmap, "out-of-core scan", ResetPeakRss)[0]);
    over = std::max(over, PeakRssMib() - budget / 1048576.0);
  }
  Report("3 out-of-core scan (4x cache)", "throughput", GBs(bytes, t), GBs(bytes, t_mmap) + " mmap",
         "scan_ooc_vs_mmap", t_mmap / t, ">= 0.70");
  Report("3 out-of-core scan (4x cache)", "peak RSS", Fmt("%.0f MiB", over + budget / 1048576.0),
         Fmt("%.0f MiB budget", budget / 1048576.0), "scan_ooc_peak_rss_over_budget_mib", over, "<= 64 MiB over");
  g_json["ooc_peak_rss_over_budget_mib"] = over;  // the key's name before issue 14
}

// ---- scenario 4: random access fault latency ---------------------------------------------------
// The first touch of each 2 MiB block of the scan data, in random order, on a fresh handle (no
// block resident, the page cache warm): the median and 99th percentile of its microseconds.
void RandomScenario(const Config& c) {
  const ScanData d = EnsureScanData(c);
  const uint64_t blocks = d.bytes / (2 << 20);
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
    return std::make_pair(Percentile(us, 0.5), Percentile(us, 0.99));
  };
  auto fault_times = [&](const Options& o, bool warm_pool) {
    auto db = Must(Database::Open(d.db_path, o), "open");
    auto v = Must(Must(db.Get("a"), "get").view(), "view");
    if (warm_pool) WaitForRss(static_cast<double>(o.cache_bytes >> 20));
    return measure(reinterpret_cast<const volatile double*>(v.data()));
  };
  auto [p50, p99] = fault_times(Options{}, false);
  Options unverified;  // the defaults but the check: what a fault costs besides it
  unverified.verify_reads = false;
  const double u50 = fault_times(unverified, false).first;
  // The copy path at its best, as measured before issue 14: a warm RAM pool, no read-ahead.
  Options copy;
  copy.map_reads = false;
  copy.cache_bytes = d.bytes + (64ull << 20);
  copy.readahead_blocks = 0;
  copy.prefault_cache = true;
  const double c50 = fault_times(copy, true).first;
  int fd = open(d.plain.c_str(), O_RDONLY);
  void* m = mmap(nullptr, d.bytes, PROT_READ, MAP_SHARED, fd, 0);
  auto [m50, m99] = measure(static_cast<const volatile double*>(m));
  munmap(m, d.bytes);
  close(fd);
  Report("4 random block access", "fault p50", Fmt("%.0f us", p50), Fmt("%.1f us mmap", m50), "fault_p50_us", p50, "<= 150");
  Report("4 random block access", "fault p99", Fmt("%.0f us", p99), Fmt("%.1f us mmap", m99), "fault_p99_us", p99, "");
  Report("4 random block access, no verify", "fault p50", Fmt("%.0f us", u50), Fmt("%.1f us mmap", m50),
         "fault_noverify_p50_us", u50, "(info)");
  Report("4 random access, copy, warm pool", "fault p50", Fmt("%.0f us", c50), Fmt("%.1f us mmap", m50),
         "fault_copy_p50_us", c50, "(info)");
}

// ---- scenario 14: processes scanning one array at once -----------------------------------------

// Pss of process `pid` in MiB (/proc/PID/smaps_rollup: its share of every page it maps).
double PssMib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Pss:", 0) == 0) return std::stod(line.substr(4)) / 1024.0;
  }
  Die(IOError("no Pss in /proc/" + std::to_string(pid) + "/smaps_rollup"), "shared scan");
  return 0;
}

void WriteAll(int fd, const void* p, size_t n) {
  if (write(fd, p, n) != static_cast<ssize_t>(n)) Die(ErrnoStatus(errno, "write to a pipe"), "shared scan");
}

void ReadAll(int fd, void* p, size_t n) {
  if (read(fd, p, n) != static_cast<ssize_t>(n)) Die(IOError("a scanning process went away"), "shared scan");
}

// Four processes, forked before any of them opens the database, each open it (default options)
// and scan the whole array at once; while their views are still alive, the sum of their PSS
// over the array's bytes. Pipes keep them in step: all opened, then all scan, then all are
// measured, then all close.
void SharedScanScenario(const Config& c) {
  const int procs = 4;
  const uint64_t bytes = (c.quick ? 256ull : 1024ull) << 20;
  const std::string db_path = c.dir + "/shared.db";
  MakeArray(db_path, "a", bytes, Pattern(1 << 20));
  WarmDatabase(db_path);
  struct Child {
    pid_t pid;
    int to, from;  // pipe ends: parent -> child, child -> parent
  };
  std::vector<Child> children;
  for (int p = 0; p < procs; ++p) {
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) Die(ErrnoStatus(errno, "pipe"), "shared scan");
    const pid_t pid = fork();
    if (pid < 0) Die(ErrnoStatus(errno, "fork"), "shared scan");
    if (pid == 0) {
      close(down[1]);
      close(up[0]);
      for (const Child& other : children) {
        close(other.to);
        close(other.from);
      }
      {
        auto db = Must(Database::Open(db_path, Options{}), "open");
        auto v = Must(Must(db.Get("a"), "get").view(), "view");
        char go;
        WriteAll(up[1], "r", 1);      // opened
        ReadAll(down[0], &go, 1);     // every process has: scan
        const double s = Sum(reinterpret_cast<const double*>(v.data()), bytes / 8);
        WriteAll(up[1], &s, sizeof s);  // scanned; the view stays alive while the parent measures
        ReadAll(down[0], &go, 1);
      }
      _exit(0);
    }
    close(down[0]);
    close(up[1]);
    children.push_back({pid, down[1], up[0]});
  }
  char r;
  for (const Child& ch : children) ReadAll(ch.from, &r, 1);
  for (const Child& ch : children) WriteAll(ch.to, "g", 1);
  std::vector<double> sums(procs);
  for (int p = 0; p < procs; ++p) ReadAll(children[p].from, &sums[p], sizeof(double));
  double pss = 0;
  for (const Child& ch : children) pss += PssMib(ch.pid);
  for (const Child& ch : children) {
    WriteAll(ch.to, "q", 1);
    close(ch.to);
    close(ch.from);
  }
  for (const Child& ch : children) {
    int status = 0;
    if (waitpid(ch.pid, &status, 0) != ch.pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      Die(Internal("a scanning process failed"), "shared scan");
    }
  }
  for (double s : sums) {
    if (s != sums[0]) WrongData("shared scan: the processes' sums differ");
  }
  const double array_mib = static_cast<double>(bytes) / 1048576.0;
  Report("14 4 processes scan one array", "sum of PSS", Fmt("%.0f MiB", pss), Fmt("%.0f MiB array", array_mib),
         "shared_scan_pss_ratio", pss / array_mib, "<= 1.30");
}

// ---- scenario 15: first scan with the page cache dropped ---------------------------------------

// Writes back and drops `path`'s pages from the page cache (fsync, POSIX_FADV_DONTNEED); returns
// the fraction of its pages still resident (mincore), 0 when the drop worked.
double DropFromPageCache(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) Die(ErrnoStatus(errno, "open " + path), "drop the page cache");
  if (fsync(fd) != 0) Die(ErrnoStatus(errno, "fsync " + path), "drop the page cache");
  if (int e = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); e != 0) Die(ErrnoStatus(e, "posix_fadvise " + path), "drop the page cache");
  const auto size = static_cast<size_t>(std::filesystem::file_size(path));
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE)), pages = (size + page - 1) / page;
  double resident = 0;
  if (size > 0) {
    void* m = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    std::vector<unsigned char> in(pages);
    if (m != MAP_FAILED && mincore(m, size, in.data()) == 0) {
      resident = static_cast<double>(std::count_if(in.begin(), in.end(), [](unsigned char b) { return b & 1; })) /
                 static_cast<double>(pages);
    }
    if (m != MAP_FAILED) munmap(m, size);
  }
  close(fd);
  if (resident > 0.01) std::fprintf(stderr, "bigarray-bench: %.0f %% of %s stayed in the page cache\n", resident * 100, path.c_str());
  return resident;
}

// The scan data read from the device: the page cache dropped for the plain file before the mmap
// pass and for the database's files before bigarray's (default options, fresh handle). The best
// of three of each, taken in turns: one pass from this machine's disk varied by half.
void ColdScenario(const Config& c) {
  const ScanData d = EnsureScanData(c);
  double s_mmap = 0, t_mmap = 1e30, t = 1e30;
  for (int i = 0; i < 3; ++i) {
    DropFromPageCache(d.plain);
    t_mmap = std::min(t_mmap, TimeMmapSum(d.plain, d.bytes, &s_mmap));
    t = std::min(t, TimeViewSums(d.db_path, Options{}, d.bytes, 1, s_mmap, "cold scan",
                                 [&] {
                                   DropFromPageCache(d.db_path + "/data.mdb");
                                   DropFromPageCache(d.db_path + "/blocks.dat");
                                 })[0]);
  }
  Report("15 first scan, page cache cold", "throughput", GBs(d.bytes, t), GBs(d.bytes, t_mmap) + " mmap",
         "cold_cache_first_scan_vs_mmap", t_mmap / t, ">= 0.80");
}

// The pages of the RAM cache, by the kernel's setting for shared memory (docs/api.md, "Huge pages
// for the cache"): writes and copied reads depend on it.
std::string CachePages() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  std::string line;
  std::getline(f, line);
  const size_t open = line.find('['), close = line.find(']');
  const std::string mode = open < close && close != std::string::npos ? line.substr(open + 1, close - open - 1) : "";
  const bool huge = mode == "advise" || mode == "always" || mode == "within_size" || mode == "force";
  return std::string("cache pages ") + (huge ? "2 MiB" : "4 KiB") + " (shmem_enabled: " + (mode.empty() ? "unknown" : mode) + ")";
}

// ---- scenario 5: fill + commit vs pwrite+fsync and raw LMDB --------------------------------------
void CommitScenario(const Config& c) {
  const uint64_t bytes = (c.quick ? 256ull : 1024ull) << 20;
  const uint64_t block = 2 << 20;
  auto pattern = Pattern(block / 8);
  // bigarray: fill through a view, one durable commit.
  Options o;
  o.cache_bytes = bytes + (64ull << 20);
  o.prefault_cache = true;
  double t_ba;
  {
    auto db = Must(Database::Open(c.dir + "/commit.db", o), "open");
    auto a = Must(db.Create("a", {static_cast<int64_t>(bytes / 8)}, "f8"), "create");
    auto v = Must(a.view(), "view");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto t0 = Clock::now();
    for (uint64_t off = 0; off < bytes; off += block) std::memcpy(v.data() + off, pattern.data(), block);
    db.Commit().ThrowIfError();
    t_ba = Secs(t0);
  }
  // pwrite + fsync of the same bytes.
  double t_fsync;
  {
    std::vector<std::byte> buf(block);
    std::memcpy(buf.data(), pattern.data(), block);
    int fd = open((c.dir + "/commit.plain").c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    auto t0 = Clock::now();
    for (uint64_t off = 0; off < bytes; off += block) {
      if (pwrite(fd, buf.data(), block, static_cast<off_t>(off)) < 0) std::exit(1);
    }
    fsync(fd);
    t_fsync = Secs(t0);
    close(fd);
  }
  // Raw LMDB: the same blocks, MDB_WRITEMAP + MDB_RESERVE (its fastest way), one durable commit.
  double t_lmdb;
  {
    std::filesystem::create_directories(c.dir + "/raw.lmdb");
    MDB_env* env;
    mdb_env_create(&env);
    mdb_env_set_mapsize(env, bytes * 2 + (64ull << 20));
    mdb_env_open(env, (c.dir + "/raw.lmdb").c_str(), MDB_WRITEMAP, 0644);
    auto t0 = Clock::now();
    MDB_txn* txn;
    MDB_dbi dbi;
    mdb_txn_begin(env, nullptr, 0, &txn);
    mdb_dbi_open(txn, nullptr, 0, &dbi);
    for (uint64_t i = 0; i < bytes / block; ++i) {
      uint64_t key = __builtin_bswap64(i);
      MDB_val k{8, &key}, v{block, nullptr};
      mdb_put(txn, dbi, &k, &v, MDB_RESERVE);
      std::memcpy(v.mv_data, pattern.data(), block);
    }
    mdb_txn_commit(txn);
    t_lmdb = Secs(t0);
    mdb_env_close(env);
  }
  Report("5 fill + durable commit", "throughput", GBs(bytes, t_ba), GBs(bytes, t_fsync) + " fsync",
         "commit_vs_fsync", t_fsync / t_ba, ">= 0.80");
  Report("5 fill + durable commit", "throughput", GBs(bytes, t_ba), GBs(bytes, t_lmdb) + " raw LMDB",
         "commit_vs_raw_lmdb", t_lmdb / t_ba, ">= 0.80");
}

// ---- scenario 6 and 7: append and resize on small and huge arrays -------------------------------
void GrowScenarios(const Config& c) {
  const int64_t cols = 1 << 17;  // 1 MiB rows
  const int rounds = c.quick ? 10 : 30;
  auto db = Must(Database::Open(c.dir + "/grow.db", Options{}), "open");
  auto small = Must(db.Create("small", {16, cols}, "f8"), "create");            // 16 MiB
  auto large = Must(db.Create("large", {4096, cols}, "f8"), "create");          // 4 GiB
  Must(small.view(), "view").Fill(1).ThrowIfError();
  Must(large.Index({Slice{4000, 4096, 1}}), "index").Fill(1).ThrowIfError();   // data at its end
  db.Commit().ThrowIfError();
  std::vector<double> row(cols, 2.0);
  auto delta = Must(View::Wrap(row.data(), DType::Of<double>(), {1, cols}), "wrap");
  auto time_appends = [&](Array& a) {
    auto t0 = Clock::now();
    for (int i = 0; i < rounds; ++i) {
      a.Append(delta).ThrowIfError();
      db.Commit().ThrowIfError();
    }
    return Secs(t0) / rounds;
  };
  time_appends(small);  // warm up
  const double t_small = time_appends(small), t_large = time_appends(large);
  Report("6 append 1 MiB + commit", "time", Fmt("%.2f ms large", t_large * 1e3), Fmt("%.2f ms small", t_small * 1e3),
         "append_large_over_small", t_large / t_small, "<= 1.20");

  auto tib = Must(db.Create("tib", {int64_t{1} << 37}, "f8"), "create");  // 1 TiB
  db.Commit().ThrowIfError();
  auto time_resizes = [&](Array& a) {
    const int64_t n = a.shape()[0];
    auto t0 = Clock::now();
    for (int i = 0; i < rounds; ++i) {
      a.Resize({n + 1 + i}).ThrowIfError();
      db.Commit().ThrowIfError();
    }
    return Secs(t0) / rounds;
  };
  auto flat = Must(db.Create("flat", {2 << 20}, "f8"), "create");  // 16 MiB
  db.Commit().ThrowIfError();
  time_resizes(flat);
  const double r_small = time_resizes(flat), r_large = time_resizes(tib);
  Report("7 resize + commit", "time", Fmt("%.2f ms 1 TiB", r_large * 1e3), Fmt("%.2f ms 16 MiB", r_small * 1e3),
         "resize_large_over_small", r_large / r_small, "<= 1.20");
}

// ---- scenarios 12, 13: bytes written by small commits --------------------------------------------

// Bytes this process has caused to be written to the storage device: /proc/self/io write_bytes,
// counted when pages are dirtied (a page dirtied again after its writeback counts again).
uint64_t DeviceWriteBytes() {
  std::ifstream f("/proc/self/io");
  std::string key;
  uint64_t v = 0;
  while (f >> key >> v) {
    if (key == "write_bytes:") return v;
  }
  Die(IOError("no write_bytes in /proc/self/io"), "read /proc/self/io");
  return 0;
}

void SmallWriteScenario(const Config& c) {
  // 500 committed appends of 3,200 bytes (400 f8) to an array of 2 MiB blocks.
  {
    auto db = Must(Database::Open(c.dir + "/appends.db", Options{}), "open");
    auto a = Must(db.Create("log", {0}, "f8"), "create");
    db.Commit().ThrowIfError();
    std::vector<double> rows(400);
    const int appends = 500;
    const uint64_t before = DeviceWriteBytes();
    for (int i = 0; i < appends; ++i) {
      for (size_t j = 0; j < rows.size(); ++j) rows[j] = i * 400.0 + static_cast<double>(j) + 0.5;
      a.Append(Must(View::Wrap(rows.data(), DType::Of<double>(), {400}), "wrap")).ThrowIfError();
      db.Commit().ThrowIfError();
    }
    const double written = static_cast<double>(DeviceWriteBytes() - before);
    const double appended = appends * 3200.0;
    Report("12 500 appends of 3.2 KB", "device bytes", Fmt("%.1f MB", written / 1e6), Fmt("%.1f MB appended", appended / 1e6),
           "append_small_write_amplification", written / appended, "<= 8.2");
  }
  // One committed 8-byte write into each of 100 random blocks of a 1 GiB array (stored).
  {
    const int64_t n = int64_t{1} << 27;  // 1 GiB of f8
    auto db = Must(Database::Open(c.dir + "/sparse.db", Options{}), "open");
    auto a = Must(db.Create("x", {n}, "f8"), "create");
    Must(a.view(), "view").Fill(1).ThrowIfError();
    db.Commit().ThrowIfError();
    std::mt19937_64 rng(11);
    const int64_t per_block = (2 << 20) / 8;
    const uint64_t before = DeviceWriteBytes();
    for (int i = 0; i < 100; ++i) {
      const int64_t block = static_cast<int64_t>(rng() % static_cast<uint64_t>(n / per_block));
      Must(a.Index({block * per_block + static_cast<int64_t>(rng() % per_block)}), "index").Fill(2).ThrowIfError();
      db.Commit().ThrowIfError();
    }
    const double per = static_cast<double>(DeviceWriteBytes() - before) / 100;
    Report("13 8-byte write + commit", "device bytes", Fmt("%.0f B/commit", per), "16384 B", "sparse_write_bytes_per_block",
           per, "<= 16384");
  }
  // The floor under both: a bare LMDB environment (bigarray's flags, durable commits) committing
  // one 48-byte record at a time into its main database, which holds nothing else: one leaf,
  // the free list and the meta page, each written and synced (docs/benchmarks.md).
  {
    const std::string dir = c.dir + "/floor.lmdb";
    std::filesystem::create_directories(dir);
    MDB_env* env;
    auto check = [](int rc, const char* what) {
      if (rc != 0) Die(IOError(std::string(what) + ": " + mdb_strerror(rc)), "LMDB commit floor");
    };
    check(mdb_env_create(&env), "mdb_env_create");
    check(mdb_env_set_mapsize(env, 64 << 20), "mdb_env_set_mapsize");
    check(mdb_env_open(env, dir.c_str(), MDB_WRITEMAP | MDB_NOTLS, 0644), "mdb_env_open");
    const char value[48] = {};
    const uint64_t before = DeviceWriteBytes();
    for (uint64_t i = 0; i < 100; ++i) {
      MDB_txn* txn;
      MDB_dbi dbi;
      check(mdb_txn_begin(env, nullptr, 0, &txn), "mdb_txn_begin");
      check(mdb_dbi_open(txn, nullptr, 0, &dbi), "mdb_dbi_open");
      const uint64_t key = __builtin_bswap64(i);
      MDB_val k{8, const_cast<uint64_t*>(&key)}, v{sizeof value, const_cast<char*>(value)};
      check(mdb_put(txn, dbi, &k, &v, 0), "mdb_put");
      check(mdb_txn_commit(txn), "mdb_txn_commit");
    }
    const double per = static_cast<double>(DeviceWriteBytes() - before) / 100;
    mdb_env_close(env);
    Report("13 bare LMDB commit (floor)", "device bytes", Fmt("%.0f B/commit", per), "16384 B", "lmdb_commit_floor_bytes",
           per, "reference");
  }
}

// ---- scenario 8: HDF5 chunked dataset ---------------------------------------------------------
void Hdf5Scenario(const Config& c) {
#ifdef BIGARRAY_HAVE_HDF5
  const uint64_t bytes = (c.quick ? 256ull : 1024ull) << 20, chunk = 2 << 20, n = bytes / 8;
  auto pattern = Pattern(chunk / 8);
  // HDF5: chunked 1-d float64 dataset, 2 MiB chunks, written in 8 MiB pieces, then flushed.
  const std::string h5 = c.dir + "/data.h5";
  std::vector<double> piece(1 << 20);
  for (size_t i = 0; i < piece.size(); ++i) piece[i] = pattern[i % pattern.size()];
  double t_h5w, t_h5r, s_h5 = 0;
  {
    auto t0 = Clock::now();
    hid_t f = H5Fcreate(h5.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[1] = {n}, cdims[1] = {chunk / 8};
    hid_t space = H5Screate_simple(1, dims, nullptr);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, cdims);
    hid_t ds = H5Dcreate2(f, "a", H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    // Calls io(file space, memory space) for each 8 MiB piece of the dataset.
    auto each_piece = [&](auto io) {
      for (hsize_t off = 0; off < n; off += piece.size()) {
        hsize_t start[1] = {off}, count[1] = {piece.size()};
        hid_t fs = H5Dget_space(ds);
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, nullptr, count, nullptr);
        hid_t ms = H5Screate_simple(1, count, nullptr);
        io(fs, ms);
        H5Sclose(ms);
        H5Sclose(fs);
      }
    };
    each_piece([&](hid_t fs, hid_t ms) { H5Dwrite(ds, H5T_NATIVE_DOUBLE, ms, fs, H5P_DEFAULT, piece.data()); });
    H5Fflush(f, H5F_SCOPE_GLOBAL);
    t_h5w = Secs(t0);
    t0 = Clock::now();
    each_piece([&](hid_t fs, hid_t ms) {
      H5Dread(ds, H5T_NATIVE_DOUBLE, ms, fs, H5P_DEFAULT, piece.data());
      s_h5 += Sum(piece.data(), piece.size());
    });
    t_h5r = Secs(t0);
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(f);
  }
  // The ceiling of any reader of the page cache into a buffer: plain pread of as many bytes of the
  // HDF5 file, cached, in the same 8 MiB pieces into the same buffer, then summed as above.
  double t_pread;
  {
    const int fd = open(h5.c_str(), O_RDONLY);
    if (fd < 0) Die(IOError("open " + h5), "HDF5 pread ceiling");
    const size_t step = piece.size() * 8;
    double sum = 0;
    auto t0 = Clock::now();
    for (uint64_t off = 0; off < bytes; off += step) {
      if (pread(fd, piece.data(), step, static_cast<off_t>(off)) != static_cast<ssize_t>(step)) {
        Die(IOError("pread " + h5), "HDF5 pread ceiling");
      }
      sum += Sum(piece.data(), piece.size());
    }
    t_pread = Secs(t0);
    close(fd);
    volatile double keep = sum;  // the file's own metadata is summed too: only kept, not compared
    (void)keep;
  }
  // bigarray: the same bytes, relaxed commit (HDF5's flush does not fsync either).
  Options o;
  o.durability = Durability::kRelaxed;
  o.cache_bytes = bytes + (64ull << 20);
  double t_baw, t_baw_cold, t_bar = 0, s_ba = 0;
  auto write = [&](const std::string& name, bool warm) {
    Options wo = o;
    wo.prefault_cache = warm;
    auto db = Must(Database::Open(c.dir + "/h5cmp.db", wo), "open");
    auto v = Must(Must(db.Create(name, {static_cast<int64_t>(n)}, "f8"), "create").view(), "view");
    if (warm) WaitForRss(static_cast<double>(wo.cache_bytes >> 20));
    auto t0 = Clock::now();
    for (uint64_t off = 0; off < bytes; off += piece.size() * 8) std::memcpy(v.data() + off, piece.data(), piece.size() * 8);
    db.Commit().ThrowIfError();
    return Secs(t0);
  };
  t_baw_cold = write("cold", false);
  t_baw = write("a", true);
  // As H5Dread does: each 8 MiB piece read into the same buffer, then summed. A fresh handle
  // with the default options, reading with Array::Read (blocks straight from the store into the
  // buffer) or, for comparison, by copying from a view (Assign: faults, mappings, the cache).
  double t_bar_view = 0, s_ba_view = 0;
  for (const bool direct : {true, false}) {
    auto db = Must(Database::Open(c.dir + "/h5cmp.db", Options{}), "open");
    auto a = Must(db.Get("a"), "get");
    auto buf = Must(View::Wrap(piece.data(), DType::Of<double>(), {static_cast<int64_t>(piece.size())}), "wrap");
    double sum = 0;
    auto t0 = Clock::now();
    for (uint64_t off = 0; off < n; off += piece.size()) {
      const auto from = static_cast<int64_t>(off), to = static_cast<int64_t>(off + piece.size());
      if (direct) {
        a.Read({Slice{from, to, 1}}, buf).ThrowIfError();
      } else {
        buf.Assign(Must(a.Index({Slice{from, to, 1}}), "index")).ThrowIfError();
      }
      sum += Sum(piece.data(), piece.size());
    }
    (direct ? t_bar : t_bar_view) = Secs(t0);
    (direct ? s_ba : s_ba_view) = sum;
  }
  if (s_ba_view != s_ba) WrongData("Read and Assign sums differ (" + Fmt("%g", s_ba) + " vs " + Fmt("%g", s_ba_view) + ")");
  if (s_ba != s_h5) WrongData("HDF5 and bigarray sums differ (" + Fmt("%g", s_h5) + " vs " + Fmt("%g", s_ba) + ")");
  Report("8 write + flush vs HDF5", "throughput", GBs(bytes, t_baw), GBs(bytes, t_h5w) + " HDF5", "write_vs_hdf5",
         t_h5w / t_baw, ">= 1.00");
  Report("8 write, cold RAM pool", "throughput", GBs(bytes, t_baw_cold), GBs(bytes, t_h5w) + " HDF5",
         "write_cold_pool_vs_hdf5", t_h5w / t_baw_cold, "(info)");
  Report("8 read vs HDF5", "throughput", GBs(bytes, t_bar), GBs(bytes, t_h5r) + " HDF5", "read_vs_hdf5",
         t_h5r / t_bar, ">= 1.50");
  Report("8 read, plain pread (ceiling)", "throughput", GBs(bytes, t_pread), GBs(bytes, t_h5r) + " HDF5",
         "read_pread_vs_hdf5", t_h5r / t_pread, "(info)");
  Report("8 read from a view vs HDF5", "throughput", GBs(bytes, t_bar_view), GBs(bytes, t_h5r) + " HDF5",
         "read_view_vs_hdf5", t_h5r / t_bar_view, "(info)");
#else
  (void)c;
  std::printf("  8 HDF5: not built (libhdf5-dev missing)\n");
#endif
}

// ---- scenario 9: two writer processes vs one ---------------------------------------------------
void WritersScenario(const Config& c) {
  const int64_t n = (c.quick ? 256ll : 1024ll) << 20 >> 3;  // float64 elements
  const std::string path = c.dir + "/writers.db";
  {
    auto db = Must(Database::Open(path, Options{}), "open");
    Must(db.Create("a", {n}, "f8"), "create");
    db.Commit().ThrowIfError();
  }
  // Each worker computes its part (a little numerical work per element) in chunks of 16 MiB,
  // committing each chunk: a transactional batch job.
  auto work = [&](int64_t from, int64_t to) {
    auto db = Must(Database::Open(path, Options{}), "open");
    auto a = Must(db.Get("a"), "get");
    for (int64_t i = from; i < to; i += 2 << 20) {
      const int64_t end = std::min(to, i + (2 << 20));
      auto d = Must(Must(a.Index({Slice{i, end, 1}}), "index").Span<double>(), "span");
      for (int64_t k = 0; k < end - i; ++k) d[k] = std::sqrt(static_cast<double>(i + k)) * std::sin(0.001 * (i + k));
      Status st = db.Commit();
      if (!st.ok()) Die(st, "commit");
    }
  };
  auto run = [&](int procs) {
    auto t0 = Clock::now();
    std::vector<pid_t> pids;
    for (int p = 0; p < procs; ++p) {
      pid_t pid = fork();
      if (pid == 0) {
        work(n * p / procs, n * (p + 1) / procs);
        _exit(0);
      }
      pids.push_back(pid);
    }
    for (pid_t pid : pids) waitpid(pid, nullptr, 0);
    return Secs(t0);
  };
  const double t1 = run(1), t2 = run(2);
  Report("9 two writer processes", "time", Fmt("%.2f s two", t2), Fmt("%.2f s one", t1), "two_writers_speedup",
         t1 / t2, ">= 1.30");
}

// ---- scenario 11: following commits (Database::WaitForCommit) ------------------------------------
// A waiter process sleeps in WaitForCommit; this process commits one small block. Measured: from
// the start of Commit() to the waiter's return, on the steady clock (system-wide on Linux). It
// includes the commit itself up to the moment it lands, so it bounds commit-landed-to-wakeup
// from above; the commit's own duration is reported beside it.
struct WatchShared {
  std::atomic<int64_t> ready;  // the iteration the waiter waits for
  // followed by int64_t wake_ns[iterations]: when the waiter returned
};

int64_t NowNs() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }

// Runs the measurement on database `where`; returns {p50, p99, commit p50} in microseconds.
std::vector<double> MeasureWatch(const std::string& where, int iterations) {
  Options o;
  o.cache_bytes = 16 << 20;
  o.durability = Durability::kRelaxed;
  {
    auto db = Must(Database::Open(where, o), "open");
    if (Must(db.Contains("watchbench"), "contains")) db.Drop("watchbench").ThrowIfError();
    Must(db.Create("watchbench", {512}, "f8", ArrayOptions{Order::kC, 4096}), "create");
    db.Commit().ThrowIfError();
  }
  const size_t bytes = sizeof(WatchShared) + sizeof(int64_t) * static_cast<size_t>(iterations);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) Die(ErrnoStatus(errno, "mmap"), "watch scenario");
  auto* shared = new (mem) WatchShared{};
  shared->ready.store(-1);
  auto* wake_ns = reinterpret_cast<int64_t*>(static_cast<char*>(mem) + sizeof(WatchShared));
  const pid_t waiter = fork();
  if (waiter < 0) Die(ErrnoStatus(errno, "fork"), "watch scenario");
  if (waiter == 0) {
    int rc = 0;
    {
      auto db = Must(Database::Open(where, o), "open");
      for (int i = 0; i < iterations && rc == 0; ++i) {
        const uint64_t after = db.snapshot_commit();
        shared->ready.store(i);
        auto c = db.WaitForCommit(after, std::chrono::seconds(10));
        wake_ns[i] = NowNs();
        if (!c.ok() || !c->has_value()) rc = 1;
        db.Abort();
      }
    }  // closed before _exit: its handle leaves the board
    _exit(rc);
  }
  std::vector<int64_t> start(static_cast<size_t>(iterations));
  std::vector<double> commit_us;
  {
    auto db = Must(Database::Open(where, o), "open");
    auto v = Must(Must(db.Get("watchbench"), "get").view(), "view");
    for (int i = 0; i < iterations; ++i) {
      while (shared->ready.load() != i) std::this_thread::yield();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // the waiter is asleep by now
      reinterpret_cast<double*>(v.data())[i % 512] = i;
      start[static_cast<size_t>(i)] = NowNs();
      Status st = db.Commit();
      commit_us.push_back(static_cast<double>(NowNs() - start[static_cast<size_t>(i)]) / 1e3);
      if (!st.ok()) Die(st, "commit");
    }
  }
  int status = 0;
  if (waitpid(waiter, &status, 0) != waiter || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    Die(Internal("the waiter process failed"), "watch scenario");
  }
  std::vector<double> us;
  for (int i = 0; i < iterations; ++i) us.push_back(static_cast<double>(wake_ns[i] - start[static_cast<size_t>(i)]) / 1e3);
  munmap(mem, bytes);
  return {Percentile(us, 0.5), Percentile(us, 0.99), Percentile(commit_us, 0.5)};
}

void WatchScenario(const Config& c) {
  const int iterations = c.quick ? 200 : 1000;
  auto r = MeasureWatch(c.dir + "/watch.db", iterations);
  Report("11 commit-to-wakeup", "p50", Fmt("%.0f us", r[0]), Fmt("%.0f us commit", r[2]), "watch_latency_p50_us",
         r[0], "<= 200");
  Report("11 commit-to-wakeup", "p99", Fmt("%.0f us", r[1]), "", "watch_latency_p99_us", r[1], "<= 2000");
  if (!c.pg.empty()) {
    auto p = MeasureWatch(c.pg, c.quick ? 100 : 300);
    Report("11 PostgreSQL commit-to-wakeup", "p50", Fmt("%.0f us", p[0]), Fmt("%.0f us commit", p[2]),
           "watch_pg_latency_p50_us", p[0], "<= 5000");
    Report("11 PostgreSQL commit-to-wakeup", "p99", Fmt("%.0f us", p[1]), "", "watch_pg_latency_p99_us", p[1],
           "(info)");
  }
}

}  // namespace

// ---- PostgreSQL next to LMDB: the same fill + commit and cold scan through the Database API ----
static void PostgresScenario(const Config& c) {
  if (c.pg.empty()) {
    std::printf("  10 PostgreSQL: skipped (pass --pg postgresql://...; tests/postgres/pg_cluster.sh starts one)\n");
    return;
  }
  const uint64_t bytes = (c.quick ? 128ull : 512ull) << 20, n = bytes / 8;
  auto pattern = Pattern(1 << 20);
  auto run = [&](const std::string& where, double* commit_s, double* scan_s) {
    Options o;
    o.cache_bytes = bytes + (64ull << 20);
    o.prefault_cache = true;
    {
      auto db = Must(Database::Open(where, o), "open");
      if (Must(db.Contains("pgbench"), "contains")) db.Drop("pgbench").ThrowIfError();
      auto v = Must(Must(db.Create("pgbench", {static_cast<int64_t>(n)}, "f8"), "create").view(), "view");
      WaitForRss(static_cast<double>(o.cache_bytes >> 20));
      auto t0 = Clock::now();
      for (uint64_t off = 0; off < bytes; off += pattern.size() * 8) std::memcpy(v.data() + off, pattern.data(), pattern.size() * 8);
      db.Commit().ThrowIfError();
      *commit_s = Secs(t0);
    }
    auto db = Must(Database::Open(where, o), "open");
    auto v = Must(Must(db.Get("pgbench"), "get").view(), "view");
    WaitForRss(static_cast<double>(o.cache_bytes >> 20));
    auto t0 = Clock::now();
    volatile double sink = Sum(reinterpret_cast<const double*>(v.data()), n);
    (void)sink;
    *scan_s = Secs(t0);
    db.Drop("pgbench").ThrowIfError();
    db.Commit().ThrowIfError();
  };
  double pc, ps, lc, ls;
  run(c.pg, &pc, &ps);
  run(c.dir + "/pgcmp.db", &lc, &ls);
  Report("10 PostgreSQL: fill + commit", "throughput", GBs(bytes, pc), GBs(bytes, lc) + " LMDB", "pg_commit_vs_lmdb",
         lc / pc, "(info)");
  Report("10 PostgreSQL: cold scan", "throughput", GBs(bytes, ps), GBs(bytes, ls) + " LMDB", "pg_scan_vs_lmdb",
         ls / ps, "(info)");
}

static constexpr const char* kScenarioNames = "scan,ooc,random,cold,shared,commit,grow,hdf5,writers,pg,watch,space";

int main(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      c.quick = true;
    } else if (a == "--json" && i + 1 < argc) {
      c.json = argv[++i];
    } else if (a == "--pg" && i + 1 < argc) {
      c.pg = argv[++i];
    } else if (a == "--dir" && i + 1 < argc) {
      c.dir = argv[++i];
    } else if (a == "--only" && i + 1 < argc) {
      std::stringstream ss(argv[++i]);
      for (std::string s; std::getline(ss, s, ',');) c.only.insert(s);
    } else {
      std::fprintf(stderr, "usage: bigarray-bench [--quick] [--json FILE] [--dir DIR] [--pg URI] [--only %s]\n", kScenarioNames);
      return 2;
    }
  }
  for (const std::string& name : c.only) {
    if (("," + std::string(kScenarioNames) + ",").find("," + name + ",") == std::string::npos) {
      std::fprintf(stderr, "bigarray-bench: --only: no scenario '%s' (the scenarios: %s)\n", name.c_str(), kScenarioNames);
      return 2;
    }
  }
  std::filesystem::remove_all(c.dir);
  std::filesystem::create_directories(c.dir);
  std::printf("bigarray-bench%s: %ld cores; data in %s; %s\n", c.quick ? " --quick" : "", sysconf(_SC_NPROCESSORS_ONLN),
              c.dir.c_str(), CachePages().c_str());
  std::printf("  %-28s %-14s %-16s %-16s %6s  %s\n", "scenario", "measure", "bigarray", "reference", "ratio", "target");
  auto run = [&](const char* name, void (*fn)(const Config&)) {
    if (c.only.empty() || c.only.count(name)) fn(c);
  };
  run("scan", ScanScenarios);
  run("ooc", OocScenario);
  run("random", RandomScenario);
  run("cold", ColdScenario);
  run("shared", SharedScanScenario);
  run("commit", CommitScenario);
  run("grow", GrowScenarios);
  run("hdf5", Hdf5Scenario);
  run("writers", WritersScenario);
  run("pg", PostgresScenario);
  run("watch", WatchScenario);
  run("space", SmallWriteScenario);
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
  if (g_wrong_data) {
    std::fprintf(stderr, "bigarray-bench: some reads returned wrong data (above)\n");
    return 1;
  }
  return 0;
}
