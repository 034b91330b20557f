// watch.cc: `bigarray watch` and `bigarray stats DB --handles` (docs/cli.md).
//
// watch waits with Database::WaitForCommit in slices of kSlice, so that SIGINT and SIGTERM (which
// only set a flag here) end it within a slice; every slice that times out rechecks the store once.
#include "human.h"
#include "json_text.h"
#include "shell_quote.h"
#include "watch.h"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <vector>

#include "bigarray/database.h"
#include "bigarray/handles.h"

namespace bigarray::cli {

namespace {

constexpr std::chrono::milliseconds kSlice{250};

volatile sig_atomic_t g_stop = 0;
extern "C" void OnStopSignal(int) { g_stop = 1; }

// Installs OnStopSignal for SIGINT and SIGTERM; restores the previous handlers when destroyed.
class StopSignals {
 public:
  StopSignals() {
    struct sigaction sa = {};
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    installed_ = sigaction(SIGINT, &sa, &old_int_) == 0 && sigaction(SIGTERM, &sa, &old_term_) == 0;
  }
  ~StopSignals() {
    if (!installed_) return;
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  bool installed() const { return installed_; }

 private:
  bool installed_ = false;
  struct sigaction old_int_ = {}, old_term_ = {};
};

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Result<uint64_t> ParseCount(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || text[0] < '0' || text[0] > '9' || *end != '\0' || errno != 0) {
    return InvalidArgument("--count: '" + text + "' is not a number of commits");
  }
  return static_cast<uint64_t>(n);
}

Status Watch(const WatchOptions& o) {
  Options opts;
  opts.cache_bytes = o.cache_bytes;
  opts.logger = o.logger;
  opts.create_if_missing = false;
  opts.read_only = true;
  BA_ASSIGN_OR_RETURN(Database db, Database::Open(o.path, opts));
  if (o.name) BA_RETURN_IF_ERROR(db.Get(*o.name).status());  // a typo is an error, not silence
  g_stop = 0;
  StopSignals signals;
  if (!signals.installed()) return ErrnoStatus(errno, "install the SIGINT handler");
  uint64_t printed = 0;
  while (!g_stop && (!o.count || printed < *o.count)) {
    const uint64_t before = db.snapshot_commit();
    BA_ASSIGN_OR_RETURN(std::optional<uint64_t> commit, db.WaitForCommit(before, kSlice));
    if (!commit) continue;
    db.Abort();  // the boundary: reads the newest commit from here on
    const uint64_t now = db.snapshot_commit();
    if (now == before) {
      return IOError("commit " + std::to_string(*commit) + " of " + o.path + " exists but the handle could not move to it");
    }
    BA_ASSIGN_OR_RETURN(std::vector<std::string> changed, db.ArraysChangedSince(before));
    if (o.name && std::find(changed.begin(), changed.end(), *o.name) == changed.end()) continue;
    std::vector<std::pair<std::string, std::vector<int64_t>>> arrays;
    for (const std::string& n : changed) {
      if (o.name && n != *o.name) continue;
      BA_ASSIGN_OR_RETURN(Array a, db.Get(n));
      arrays.emplace_back(n, a.shape());
    }
    std::string line;
    if (o.json) {
      line = fmt::format("{{\"commit\": {}, \"previous_commit\": {}, \"time\": {:.6f}, \"arrays\": [", now, before,
                         static_cast<double>(NowNs()) / 1e9);
      for (size_t i = 0; i < arrays.size(); ++i) {
        line += fmt::format("{}{{\"name\": {}, \"shape\": {}}}", i ? ", " : "", JsonString(arrays[i].first),
                            JsonList(arrays[i].second));
      }
      line += "]}\n";
    } else {
      line = fmt::format("commit {}", now);
      for (const auto& [n, shape] : arrays) line += fmt::format("\t{} {}", ShellQuote(n), ShapeString(shape));
      if (arrays.empty()) line += "\t(no array changed)";
      line += "\n";
    }
    std::fputs(line.c_str(), stdout);
    if (std::fflush(stdout) != 0) return ErrnoStatus(errno, "write to stdout");
    ++printed;
  }
  return Status::Ok();
}

Status PrintHandles(const std::string& path, bool json) {
  BA_ASSIGN_OR_RETURN(HandlesReport report, ListHandles(path));
  // This process's own look at the latest commit, after listing (so it does not list itself).
  uint64_t latest = 0;
  {
    Options opts;
    opts.create_if_missing = false;
    opts.read_only = true;
    opts.cache_bytes = 1 << 20;
    opts.loader_threads = 1;
    BA_ASSIGN_OR_RETURN(Database db, Database::Open(path, opts));
    latest = db.snapshot_commit();
  }
  const int64_t now = NowNs();
  // The oldest snapshot: LMDB's reader table decides (it is what holds old pages); the registry
  // adds the age when one of its handles reads that commit.
  std::optional<uint64_t> oldest;
  std::optional<pid_t> oldest_pid;
  std::optional<int64_t> oldest_since;
  for (const auto& r : report.readers) {
    if (!oldest || r.snapshot_commit < *oldest) oldest = r.snapshot_commit, oldest_pid = r.pid;
  }
  if (!report.readers_complete) {  // no reader table: the registry alone
    for (const auto& h : report.handles) {
      if (!oldest || h.snapshot_commit < *oldest) oldest = h.snapshot_commit, oldest_pid = h.pid;
    }
  }
  for (const auto& h : report.handles) {
    if (oldest && h.snapshot_commit == *oldest && (!oldest_since || h.since_ns < *oldest_since)) {
      oldest_since = h.since_ns;
      oldest_pid = h.pid;
    }
  }
  if (json) {
    std::string out = fmt::format("{{\"latest_commit\": {}, \"handles\": [", latest);
    for (size_t i = 0; i < report.handles.size(); ++i) {
      const HandleInfo& h = report.handles[i];
      out += fmt::format(
          "{}{{\"pid\": {}, \"process\": {}, \"snapshot_commit\": {}, \"since\": {:.6f}, \"age_s\": {:.3f}, "
          "\"cache_bytes\": {}, \"dirty_bytes\": {}, \"faults\": {}}}",
          i ? ", " : "", h.pid, JsonString(h.process), h.snapshot_commit, static_cast<double>(h.since_ns) / 1e9,
          static_cast<double>(std::max<int64_t>(now - h.since_ns, 0)) / 1e9, h.cache_bytes, h.dirty_bytes, h.faults);
    }
    out += "], \"readers\": ";
    if (report.readers_complete) {
      out += "[";
      for (size_t i = 0; i < report.readers.size(); ++i) {
        out += fmt::format("{}{{\"pid\": {}, \"snapshot_commit\": {}}}", i ? ", " : "", report.readers[i].pid,
                           report.readers[i].snapshot_commit);
      }
      out += "]";
    } else {
      out += "null";
    }
    out += ", \"oldest_snapshot\": ";
    if (oldest) {
      out += fmt::format("{{\"commit\": {}, \"pid\": {}, \"age_s\": {}, \"commits_behind\": {}}}", *oldest,
                         *oldest_pid,
                         oldest_since ? fmt::format("{:.3f}", static_cast<double>(now - *oldest_since) / 1e9) : "null",
                         latest >= *oldest ? latest - *oldest : 0);
    } else {
      out += "null";
    }
    out += "}\n";
    std::fputs(out.c_str(), stdout);
    return Status::Ok();
  }
  fmt::print("{} handle{} open on {} (latest commit {})\n", report.handles.size(),
             report.handles.size() == 1 ? "" : "s", path, latest);
  if (!report.handles.empty()) {
    fmt::print("{:>8}  {:<15}  {:>10}  {:>14}  {:>10}  {:>10}  {:>10}\n", "pid", "process", "snapshot", "age", "cache",
               "dirty", "faults");
    for (const HandleInfo& h : report.handles) {
      fmt::print("{:>8}  {:<15}  {:>10}  {:>14}  {:>10}  {:>10}  {:>10}\n", h.pid, ShellQuote(h.process), h.snapshot_commit,
                 Age(now - h.since_ns), Bytes(h.cache_bytes), Bytes(h.dirty_bytes), h.faults);
    }
  }
  if (oldest) {
    fmt::print("oldest snapshot: commit {} (pid {}), {}, {} commit{} behind\n", *oldest, *oldest_pid,
               oldest_since ? Age(now - *oldest_since) + " old" : std::string("age unknown (not a bigarray handle)"),
               latest - std::min(latest, *oldest), latest - std::min(latest, *oldest) == 1 ? "" : "s");
  } else {
    fmt::print("oldest snapshot: none open\n");
  }
  if (!report.readers_complete) fmt::print("LMDB reader table: could not be read\n");
  return Status::Ok();
}

}  // namespace bigarray::cli
