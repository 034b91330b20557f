// bigarray-bench: bigarray side by side with its references, on the same data in one run
// (docs/benchmarks.md). Prints a table of throughputs and ratios; --json FILE writes the ratios.
//
//   bigarray-bench [--quick] [--json FILE] [--dir DIR] [--only NAME[,NAME...]]
//
// Scenarios: scan (first scan vs mmap, hot scan vs memory), ooc (4x the cache vs mmap, peak
// RSS), random (fault latency), commit (vs pwrite+fsync and raw LMDB), append, resize, hdf5,
// writers (two processes vs one), watch (commit-to-wakeup of a follower in another process).
#include <fcntl.h>
#include <lmdb.h>
#include <sys/mman.h>
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

// The same bytes as a bigarray array ("a" in db_path) and as a plain file, both in the page cache.
void PrepareScanData(const std::string& db_path, const std::string& plain, uint64_t bytes) {
  auto pattern = Pattern(1 << 20);  // 8 MiB
  MakeArray(db_path, "a", bytes, pattern);
  WritePlainFile(plain, pattern, bytes);
  WarmFile(db_path + "/data.mdb");
  WarmFile(plain);
}

// One summing pass over an mmap of `plain`: returns the seconds, stores the sum.
double TimeMmapSum(const std::string& plain, uint64_t bytes, double* sum) {
  int fd = open(plain.c_str(), O_RDONLY);
  void* m = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  auto t0 = Clock::now();
  *sum = Sum(static_cast<const double*>(m), bytes / 8);
  const double t = Secs(t0);
  munmap(m, bytes);
  close(fd);
  return t;
}

// ---- scenario 1 and 2: first scan vs mmap, hot scan vs memory ----------------------------------
void ScanScenarios(const Config& c) {
  const uint64_t bytes = (c.quick ? 512ull : 2048ull) << 20;
  const std::string db_path = c.dir + "/scan.db", plain = c.dir + "/scan.plain";
  PrepareScanData(db_path, plain, bytes);
  double s_mmap;
  const double t_mmap = TimeMmapSum(plain, bytes, &s_mmap);
  Clock::time_point t0;

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
  WaitForRss(static_cast<double>(o.cache_bytes >> 20));  // the cache's RAM, allocated in the background
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
  PrepareScanData(db_path, plain, bytes);
  double s_mmap;
  const double t_mmap = TimeMmapSum(plain, bytes, &s_mmap);

  Options o;
  o.cache_bytes = budget;
  auto db = Must(Database::Open(db_path, o), "open");
  auto v = Must(Must(db.Get("a"), "get").view(), "view");
  ResetPeakRss();
  auto t0 = Clock::now();
  double s = Sum(reinterpret_cast<const double*>(v.data()), bytes / 8);
  const double t = Secs(t0);
  const double rss = PeakRssMib();
  if (s != s_mmap) std::fprintf(stderr, "bigarray-bench: ooc sums differ!\n");
  Report("3 out-of-core scan (4x cache)", "throughput", GBs(bytes, t), GBs(bytes, t_mmap) + " mmap",
         "scan_ooc_vs_mmap", t_mmap / t, ">= 0.50");
  Report("3 out-of-core scan (4x cache)", "peak RSS", Fmt("%.0f MiB", rss), Fmt("%.0f MiB budget", budget / 1048576.0),
         "ooc_peak_rss_over_budget_mib", rss - budget / 1048576.0, "<= 64 MiB over");
}

// ---- scenario 4: random access fault latency ---------------------------------------------------
void RandomScenario(const Config& c) {
  const uint64_t bytes = (c.quick ? 512ull : 2048ull) << 20;
  const std::string db_path = c.dir + "/scan.db", plain = c.dir + "/scan.plain";
  if (std::filesystem::exists(db_path)) {  // left by the scan scenario
    WarmFile(db_path + "/data.mdb");
    WarmFile(plain);
  } else {
    PrepareScanData(db_path, plain, bytes);
  }
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
  o.prefault_cache = true;  // a fault copies into warm memory (a cold pool adds ~1.5 ms first touch)
  auto db = Must(Database::Open(db_path, o), "open");
  auto v = Must(Must(db.Get("a"), "get").view(), "view");
  WaitForRss(static_cast<double>(o.cache_bytes >> 20));
  auto [p50, p99] = measure(reinterpret_cast<const volatile double*>(v.data()));
  int fd = open(plain.c_str(), O_RDONLY);
  void* m = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  auto [m50, m99] = measure(static_cast<const volatile double*>(m));
  munmap(m, bytes);
  close(fd);
  Report("4 random block access", "fault p50", Fmt("%.0f us", p50), Fmt("%.1f us mmap", m50), "fault_p50_us", p50, "(2 MiB copy)");
  Report("4 random block access", "fault p99", Fmt("%.0f us", p99), Fmt("%.1f us mmap", m99), "fault_p99_us", p99, "");
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
  // bigarray: the same bytes, relaxed commit (HDF5's flush does not fsync either).
  Options o;
  o.durability = Durability::kRelaxed;
  o.cache_bytes = bytes + (64ull << 20);
  double t_baw, t_baw_cold, t_bar, s_ba;
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
  {
    Options ro = o;
    ro.prefault_cache = true;
    auto db = Must(Database::Open(c.dir + "/h5cmp.db", ro), "open");
    auto v = Must(Must(db.Get("a"), "get").view(), "view");
    WaitForRss(static_cast<double>(ro.cache_bytes >> 20));
    auto t0 = Clock::now();
    s_ba = Sum(reinterpret_cast<const double*>(v.data()), n);
    t_bar = Secs(t0);
  }
  if (s_ba != s_h5) std::fprintf(stderr, "bigarray-bench: HDF5 and bigarray sums differ (%g vs %g)\n", s_h5, s_ba);
  Report("8 write + flush vs HDF5", "throughput", GBs(bytes, t_baw), GBs(bytes, t_h5w) + " HDF5", "write_vs_hdf5",
         t_h5w / t_baw, ">= 1.00");
  Report("8 write, cold RAM pool", "throughput", GBs(bytes, t_baw_cold), GBs(bytes, t_h5w) + " HDF5",
         "write_cold_pool_vs_hdf5", t_h5w / t_baw_cold, "(info)");
  Report("8 read vs HDF5", "throughput", GBs(bytes, t_bar), GBs(bytes, t_h5r) + " HDF5", "read_vs_hdf5",
         t_h5r / t_bar, ">= 1.00");
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

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

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
      std::fprintf(stderr, "usage: bigarray-bench [--quick] [--json FILE] [--dir DIR] [--pg URI] [--only scan,ooc,random,commit,grow,hdf5,writers,pg,watch,space]\n");
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
  return 0;
}
