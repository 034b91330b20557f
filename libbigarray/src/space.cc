// space.cc: Database::Space and Compact (bigarray/space.h): the array layer's side of disk space.
// The figures of the file and the compaction itself are the storage's (storage/src/lmdb_space.cc,
// lmdb_compact.cc); this file adds what only the array layer knows (the names of the arrays,
// the handles of the registry) and works through the public API otherwise.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "bigarray/database.h"
#include "bigarray/handles.h"
#include "bigarray/space.h"
#include "bigarray/storage/lmdb_space.h"

namespace bigarray {
namespace {

bool IsLocalPath(const std::string& path) {
  return path != "memory:" && !path.starts_with("postgresql://") && !path.starts_with("postgres://");
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Result<SpaceReport> Database::Space() {
  SpaceReport report;
  report.commit = snapshot_commit();
  report.latest_commit = report.commit;
  BA_ASSIGN_OR_RETURN(std::vector<std::string> names, Names());
  for (const std::string& name : names) {
    BA_ASSIGN_OR_RETURN(Array a, Get(name));
    BA_ASSIGN_OR_RETURN(ArraySpace s, a.Stored());
    report.live_bytes += s.stored_bytes;
    report.arrays.push_back(std::move(s));
  }
  if (!IsLocalPath(path())) return report;

  BA_ASSIGN_OR_RETURN(storage::LmdbSpace lmdb, storage::MeasureLmdbSpace(path()));
  FileSpace& f = report.file.emplace();
  f.page_size = lmdb.page_size;
  f.file_bytes = lmdb.file_bytes;
  f.allocated_bytes = lmdb.allocated_bytes;
  f.used_bytes = lmdb.used_bytes;
  f.free_bytes = lmdb.free_bytes;
  f.pinned_bytes = lmdb.pinned_bytes;
  f.compact_bytes = lmdb.compact_bytes;
  f.reclaimable_bytes = lmdb.reclaimable_bytes;
  f.leftover_bytes = lmdb.leftover_bytes;
  f.slot_file_bytes = lmdb.slot_file_bytes;
  f.slot_allocated_bytes = lmdb.slot_allocated_bytes;
  f.slots = lmdb.slots;
  f.free_slots = lmdb.free_slots;
  f.pinned_slots = lmdb.pinned_slots;
  report.latest_commit = std::max(report.commit, lmdb.latest_commit);

  // The oldest snapshot behind the latest commit (one at the latest commit holds nothing yet).
  // LMDB's reader table decides; the handle registry tells the process and since when.
  std::optional<std::pair<pid_t, uint64_t>> oldest;
  for (const auto& [pid, commit] : lmdb.readers) {
    if (commit < report.latest_commit && (!oldest || commit < oldest->second)) oldest.emplace(pid, commit);
  }
  if (oldest) {
    OldestSnapshot& o = report.oldest_snapshot.emplace();
    o.pid = oldest->first;
    o.commit = oldest->second;
    o.commits_behind = report.latest_commit - o.commit;
    auto handles = ListHandles(path());
    if (handles.ok()) {
      const int64_t now = NowNs();
      for (const HandleInfo& h : handles->handles) {
        if (h.pid != o.pid || h.snapshot_commit != o.commit) continue;
        o.process = h.process;
        const double age = static_cast<double>(std::max<int64_t>(now - h.since_ns, 0)) / 1e9;
        o.age_s = std::max(o.age_s.value_or(0.0), age);
      }
    }
  }
  return report;
}

Result<CompactReport> Compact(const std::string& path) {
  if (!IsLocalPath(path)) {
    return Unsupported("compact " + path + ": only local (LMDB) databases are compacted; PostgreSQL gives space "
                       "back with VACUUM FULL");
  }
  storage::LmdbCompactOptions o;
  o.describe_holders = [&path](const std::vector<pid_t>& pids) {
    // Each pid, with what the registry of handles knows of it.
    std::map<pid_t, std::vector<const HandleInfo*>> by_pid;
    auto report = ListHandles(path);
    if (report.ok()) {
      for (const HandleInfo& h : report->handles) by_pid[h.pid].push_back(&h);
    }
    // The lock holders, then handles and LMDB readers that /proc/locks did not show (another pid
    // namespace shows them as 0).
    std::vector<pid_t> all = pids;
    auto add = [&](pid_t pid) {
      if (pid > 0 && pid != getpid() && std::find(all.begin(), all.end(), pid) == all.end()) all.push_back(pid);
    };
    for (const auto& [pid, hs] : by_pid) add(pid);
    if (report.ok()) {
      for (const ReaderInfo& r : report->readers) add(r.pid);
    }
    if (all.empty()) return std::string("another process (its pid is not visible here)");
    std::string s = all.size() == 1 ? "process " : std::to_string(all.size()) + " processes: ";
    for (size_t i = 0; i < all.size(); ++i) {
      s += (i ? ", " : "") + std::to_string(all[i]);
      auto it = by_pid.find(all[i]);
      if (it == by_pid.end()) continue;
      s += " (" + it->second.front()->process + ", " + std::to_string(it->second.size()) + " handle" +
           (it->second.size() == 1 ? "" : "s") + " reading commit";
      for (size_t k = 0; k < it->second.size(); ++k) s += (k ? ", " : " ") + std::to_string(it->second[k]->snapshot_commit);
      s += ")";
    }
    return s;
  };
  const auto start = std::chrono::steady_clock::now();
  BA_ASSIGN_OR_RETURN(storage::LmdbCompactResult r, storage::CompactLmdb(path, o));
  CompactReport out;
  out.commit = r.commit;
  out.before_file_bytes = r.before_file_bytes;
  out.before_allocated_bytes = r.before_allocated_bytes;
  out.after_file_bytes = r.after_file_bytes;
  out.after_allocated_bytes = r.after_allocated_bytes;
  out.before_slot_allocated_bytes = r.before_slot_allocated_bytes;
  out.after_slot_allocated_bytes = r.after_slot_allocated_bytes;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace bigarray
