// Disk space (bigarray/space.h, bigarray/storage/lmdb_space.h; docs/format.md "Space"): the
// figures of Database::Space, and Compact: what it gives back, that it keeps content and commit
// ids, that it refuses while the database is open anywhere, that openers during a compaction
// wait and then use the new file, and that a failure at any step leaves the database whole.
// Kills at random moments are in crash_test.cc.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "bigarray/database.h"
#include "bigarray/space.h"
#include "bigarray/storage/lmdb_space.h"
#include "test_util.h"

using namespace bigarray;
using bigarray::testing::TempDir;

namespace {

constexpr uint64_t kMiB = 1 << 20;

// What du counts for the files of `dir` (not recursive: a database has no subdirectories).
uint64_t Du(const std::string& dir) {
  uint64_t total = 0;
  DIR* d = opendir(dir.c_str());
  REQUIRE(d);
  while (dirent* e = readdir(d)) {
    struct stat st;
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..") &&
        stat((dir + "/" + e->d_name).c_str(), &st) == 0) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  closedir(d);
  return total;
}

ino_t Inode(const std::string& file) {
  struct stat st;
  REQUIRE(stat(file.c_str(), &st) == 0);
  return st.st_ino;
}

bool Exists(const std::string& file) {
  struct stat st;
  return stat(file.c_str(), &st) == 0;
}

uint8_t Byte(uint64_t seed, uint64_t i) { return static_cast<uint8_t>(1 + (seed * 131 + i * 7 + (i >> 9)) % 251); }

// A u1 array of `bytes` bytes, none of them zero (so each block stores all its bytes).
void WriteArray(Database& db, const std::string& name, uint64_t bytes, uint64_t seed) {
  Array a = db.Contains(name).value() ? db.Get(name).value() : db.Create(name, {static_cast<int64_t>(bytes)}, "u1").value();
  if (a.size() != static_cast<int64_t>(bytes)) REQUIRE(a.Resize({static_cast<int64_t>(bytes)}).ok());
  auto d = a.view().value().Span<uint8_t>().value();
  for (uint64_t i = 0; i < bytes; ++i) d[i] = Byte(seed, i);
}

// Whether array `name` holds exactly WriteArray(bytes, seed).
bool Holds(Database& db, const std::string& name, uint64_t bytes, uint64_t seed) {
  auto a = db.Get(name);
  if (!a.ok() || a->size() != static_cast<int64_t>(bytes)) return false;
  auto v = a->view().value();
  if (!v.Load().ok()) return false;
  auto d = v.Span<uint8_t>().value();
  for (uint64_t i = 0; i < bytes; ++i) {
    if (d[i] != Byte(seed, i)) return false;
  }
  return true;
}

uint64_t Commit(Database& db) {
  REQUIRE(db.Commit().ok());
  return db.snapshot_commit();
}

// The live bytes of a fresh read of `path`.
SpaceReport SpaceOf(const std::string& path) {
  Options o;
  o.read_only = true;
  auto db = Database::Open(path, o).value();
  return db.Space().value();
}

}  // namespace

TEST_CASE("Space: stored bytes per array, live bytes, the file's figures, and what an old snapshot pins") {
  TempDir dir;
  const std::string path = dir / "db";
  auto db = Database::Open(path).value();
  WriteArray(db, "a", 5 * kMiB + 123, 1);  // 3 blocks of 2 MiB, the last partly stored
  WriteArray(db, "b", 8 * kMiB, 2);
  db.Create("zeros", {1 << 20}, "f8").value();
  {
    // A block whose tail is zeros stores only up to its last non-zero byte.
    auto t = db.Create("tail", {4096}, "u1").value();
    t.view().value().Span<uint8_t>().value()[99] = 7;
  }
  Commit(db);
  SpaceReport r = db.Space().value();
  CHECK(r.commit == db.snapshot_commit());
  CHECK(r.latest_commit == r.commit);
  REQUIRE(r.arrays.size() == 4);
  // Stored bytes: up to the last non-zero byte; a payload of 2 KiB or more keeps whole pages
  // (docs/format.md, "blocks").
  CHECK(r.arrays[0].name == "a");
  CHECK(r.arrays[0].blocks_stored == 3);
  CHECK(r.arrays[0].stored_bytes == 5 * kMiB + 4096);
  CHECK(r.arrays[1].stored_bytes == 8 * kMiB);
  CHECK(r.arrays[2].name == "tail");
  CHECK(r.arrays[2].stored_bytes == 100);
  CHECK(r.arrays[3].blocks_stored == 0);
  CHECK(r.live_bytes == 13 * kMiB + 4096 + 100);
  REQUIRE(r.file);
  const FileSpace f = *r.file;
  CHECK(f.page_size == static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
  // Blocks of more than 1 MiB are in slots of blocks.dat (a's 3, b's 4), the rest in data.mdb.
  CHECK(f.slots == 7);
  // Stored in key order (array id, then block): the last slot holds b's last block, or a's
  // partly stored one (then the file ends where its payload does), as their random ids fall.
  CHECK((f.slot_file_bytes == 7 * 2 * kMiB || f.slot_file_bytes == 6 * 2 * kMiB + kMiB + 4096));
  CHECK(f.slot_allocated_bytes >= 13 * kMiB + 4096);
  CHECK(f.slot_allocated_bytes <= 13 * kMiB + 4096 + 7 * 64 * 1024);  // file system blocks
  CHECK(f.free_slots == 0);
  CHECK(f.pinned_slots == 0);
  CHECK(f.compact_bytes >= 100);
  CHECK(f.compact_bytes <= kMiB);  // B-trees and the tail's 100 bytes
  CHECK(f.used_bytes >= f.compact_bytes + f.free_bytes);
  CHECK(f.file_bytes >= f.used_bytes);
  CHECK(f.allocated_bytes >= f.compact_bytes);
  CHECK(f.reclaimable_bytes == f.allocated_bytes - f.compact_bytes);
  CHECK(f.leftover_bytes == 0);
  CHECK_FALSE(r.oldest_snapshot);
  {
    // Another handle reads on at this commit while b is dropped: its pages stay pinned.
    Options ro;
    ro.read_only = true;
    auto reader = Database::Open(path, ro).value();
    const uint64_t pinned_commit = reader.snapshot_commit();
    REQUIRE(db.Drop("b").ok());
    const uint64_t after_drop = Commit(db);
    WriteArray(db, "a", 5 * kMiB + 123, 3);  // and a new version of a: the old one is freed
    const uint64_t latest = Commit(db);
    r = db.Space().value();
    CHECK(r.latest_commit == latest);
    CHECK(r.live_bytes == 5 * kMiB + 4096 + 100);  // the new version is as large as the old
    REQUIRE(r.oldest_snapshot);
    CHECK(r.oldest_snapshot->pid == getpid());
    CHECK(r.oldest_snapshot->commit == pinned_commit);
    CHECK(r.oldest_snapshot->commits_behind == latest - pinned_commit);
    REQUIRE(r.oldest_snapshot->age_s);
    CHECK(*r.oldest_snapshot->age_s >= 0);
    CHECK(*r.oldest_snapshot->age_s < 600);
    CHECK(r.oldest_snapshot->process.size() > 0);
    // b's 4 slots and the old version's 3 are freed but none reusable while the reader is open.
    CHECK(r.file->pinned_slots == 7);
    CHECK(r.file->free_slots == 0);
    CHECK(r.file->slots == 10);
    CHECK(r.file->pinned_bytes <= r.file->free_bytes);
    CHECK(after_drop < latest);
  }
  // The reader is gone: the next commit reuses b's slots (and gives back their space); those of
  // a's old version, freed by the latest commit, stay as long as it is the latest (LMDB's rule:
  // the state before the latest commit is kept whole, its fallback).
  r = db.Space().value();
  CHECK_FALSE(r.oldest_snapshot);
  CHECK(r.file->free_slots == 4);
  CHECK(r.file->pinned_slots == 3);
  const uint64_t allocated = r.file->slot_allocated_bytes;
  WriteArray(db, "small", 100, 4);
  Commit(db);
  r = db.Space().value();
  CHECK(r.file->free_slots == 7);
  CHECK(r.file->pinned_slots == 0);
  // b's 8 MiB are punched out (a's old slots, freed by the commit before, are punched by the next
  // one). The file system may allocate a block of its own for the now fragmented extent map
  // (ext4 counts extent-tree blocks in st_blocks), hence the slack.
  CHECK(r.file->slot_allocated_bytes + 8 * kMiB <= allocated + 64 * 1024);
  // The free slots are reused, lowest first, before the file grows.
  WriteArray(db, "b2", 8 * kMiB, 5);
  Commit(db);
  r = db.Space().value();
  CHECK(r.file->free_slots == 3);
  CHECK(r.file->slots == 10);
  CHECK(Holds(db, "a", 5 * kMiB + 123, 3));
  CHECK(Holds(db, "b2", 8 * kMiB, 5));
}

TEST_CASE("Space of databases without a file: arrays only") {
  auto db = Database::Open("memory:").value();
  WriteArray(db, "a", 3000, 1);
  REQUIRE(db.Commit().ok());
  SpaceReport r = db.Space().value();
  CHECK(r.live_bytes == 3000);
  CHECK_FALSE(r.file);
  CHECK_FALSE(r.oldest_snapshot);
  CHECK(Compact("memory:").status().code() == Code::kUnsupported);
}

TEST_CASE("Compact after rm of most data: du at most 1.1 x live + 1 MiB; content and commit ids kept") {
  TempDir dir;
  const std::string path = dir / "db";
  uint64_t commit = 0;
  {
    auto db = Database::Open(path).value();
    WriteArray(db, "keep", 6 * kMiB + 4000, 1);
    WriteArray(db, "big", 40 * kMiB, 2);
    WriteArray(db, "days", 365 * 65536, 3);  // a year of days, 64 KiB each
    Commit(db);
    WriteArray(db, "keep", 6 * kMiB + 4000, 4);  // an old version
    Commit(db);
    REQUIRE(db.Drop("big").ok());
    REQUIRE(db.Get("days").value().Resize({30 * 65536}).ok());  // 365 days -> 30
    commit = Commit(db);
  }
  const SpaceReport before = SpaceOf(path);
  // The bound is on the data itself, whatever the records holding it (deltas included).
  const uint64_t data = 6 * kMiB + 4000 + 30 * 65536;
  const uint64_t live = before.live_bytes;
  CHECK(live >= data);
  const uint64_t bound = data + data / 10 + kMiB;
  const uint64_t du_before = Du(path);
  CHECK(du_before > bound);  // so that the check below means something
  CHECK(before.file->free_slots + before.file->pinned_slots >= 20);  // big's 40 MiB
  const ino_t old_inode = Inode(path + "/data.mdb");

  CompactReport c = Compact(path).value();
  CHECK(c.commit == commit);
  CHECK(c.before_slot_allocated_bytes >= 40 * kMiB);
  CHECK(c.after_slot_allocated_bytes <= data + data / 10);
  CHECK(c.after_allocated_bytes <= before.file->compact_bytes + kMiB);
  CHECK(c.after_file_bytes == before.file->compact_bytes);
  CHECK(Inode(path + "/data.mdb") != old_inode);
  CHECK_FALSE(Exists(path + "/" + std::string(storage::kCompactTempName)));
  const uint64_t du_after = Du(path);
  MESSAGE("space_test: data " << data << " B, live " << live << " B; du " << du_before << " B before compact, " << du_after << " B after");
  CHECK(du_after <= bound);

  const SpaceReport after = SpaceOf(path);
  CHECK(after.commit == commit);
  CHECK(after.live_bytes == live);
  CHECK(after.file->free_bytes == 0);
  CHECK(after.file->reclaimable_bytes <= kMiB);
  {
    auto db = Database::Open(path).value();
    CHECK(db.snapshot_commit() == commit);
    CHECK(Holds(db, "keep", 6 * kMiB + 4000, 4));
    CHECK_FALSE(db.Contains("big").value());
    auto days = db.Get("days").value();
    CHECK(days.size() == 30 * 65536);
    auto d = days.view().value().Span<uint8_t>().value();
    for (uint64_t i = 0; i < d.size(); i += 997) REQUIRE(d[i] == Byte(3, i));
    // Commits go on from the same id; the database works as before.
    WriteArray(db, "new", 3 * kMiB, 5);
    CHECK(Commit(db) > commit);
    CHECK(db.ArraysChangedSince(commit).value() == std::vector<std::string>{"new"});
  }
  auto db = Database::Open(path).value();
  CHECK(Holds(db, "new", 3 * kMiB, 5));
  CHECK(Holds(db, "keep", 6 * kMiB + 4000, 4));
}

TEST_CASE("a compacted database keeps its sealed records: the commit record, the tallies and the change log verify") {
  // The compacting copy renumbers LMDB's pages and writes both meta pages itself: the records the
  // verifier and the open's structural check rely on (the commit record naming LMDB's transaction,
  // each class's tally, the change log up to the commit) must come through unchanged.
  TempDir dir;
  const std::string path = dir / "db";
  uint64_t commit = 0;
  {
    auto db = Database::Open(path).value();
    WriteArray(db, "a", 3 * kMiB + 100, 1);
    WriteArray(db, "b", 2 * kMiB, 2);
    REQUIRE(db.Create("group/c", {1000}, "f8").ok());
    REQUIRE(db.attrs().SetJson("units", "\"K\"").ok());
    Commit(db);
    WriteArray(db, "a", 3 * kMiB + 100, 3);
    REQUIRE(db.Drop("b").ok());
    commit = Commit(db);
  }
  REQUIRE(Compact(path).value().commit == commit);
  auto db = Database::Open(path).value();
  CHECK(db.snapshot_commit() == commit);
  std::vector<std::string> damaged;
  REQUIRE(db.VerifyRecords([&](const Status& s) { damaged.push_back(s.message()); }).ok());
  CHECK(damaged.empty());
  const std::vector<std::string> names = db.Names().value();
  CHECK(names == std::vector<std::string>{"a", "group/c"});
  for (const std::string& name : names) {
    uint64_t bad = 0;
    REQUIRE(db.Get(name).value().Verify([&](uint64_t, const Status&) { ++bad; }).ok());
    CHECK_MESSAGE(bad == 0, name);
  }
  CHECK(Holds(db, "a", 3 * kMiB + 100, 3));
  const std::vector<std::string> changed = db.ArraysChangedSince(commit - 1).value();  // the log reads
  CHECK(std::find(changed.begin(), changed.end(), "a") != changed.end());
  // Commits go on, and the next compaction finds the records as a fresh database has them.
  WriteArray(db, "d", kMiB, 4);
  const uint64_t next = Commit(db);
  db = Database::Open(dir / "other").value();  // closes the handle on `path`
  REQUIRE(Compact(path).value().commit == next);
  auto again = Database::Open(path).value();
  REQUIRE(again.VerifyRecords([&](const Status& s) { damaged.push_back(s.message()); }).ok());
  CHECK(damaged.empty());
  CHECK(Holds(again, "d", kMiB, 4));
}

TEST_CASE("a shrink stores the shorter block, not its zeroed tail: resize 365 -> 30 days + compact gives the tail back") {
  TempDir dir;
  const std::string path = dir / "db";
  constexpr uint64_t kDay = 23000;  // bytes: 30 days end inside the first 2 MiB block
  {
    auto db = Database::Open(path).value();
    auto a = db.Create("days", {365, static_cast<int64_t>(kDay)}, "u1").value();
    auto d = a.view().value().Span<uint8_t>().value();
    for (uint64_t i = 0; i < d.size(); ++i) d[i] = Byte(1, i);
    Commit(db);
    REQUIRE(a.Resize({30, static_cast<int64_t>(kDay)}).ok());
    Commit(db);
    // The last block keeps 30 days, in whole pages; a delta of the zeroed 1.4 MB would double it.
    const ArraySpace s = a.Stored().value();
    CHECK(s.blocks_stored == 1);
    CHECK(s.stored_bytes == (30 * kDay + 4095) / 4096 * 4096);
    // And rewriting all of a partial block is one whole record, not a delta as large.
    for (uint64_t i = 0; i < 30 * kDay; ++i) d[i] = Byte(2, i);
    Commit(db);
    CHECK(a.Stored().value().stored_bytes == (30 * kDay + 4095) / 4096 * 4096);
  }
  REQUIRE(Compact(path).ok());
  const uint64_t data = 30 * kDay;
  MESSAGE("space_test: 30 days of " << kDay << " B after 365: du " << Du(path) << " B after compact");
  CHECK(Du(path) <= data + data / 10 + kMiB);
  auto db = Database::Open(path).value();
  auto d = db.Get("days").value().view().value().Span<uint8_t>().value();
  REQUIRE(d.size() == data);
  for (uint64_t i = 0; i < data; ++i) REQUIRE(d[i] == Byte(2, i));
}

TEST_CASE("Compact refuses while the database is open, in this process or another, naming the pids") {
  TempDir dir;
  const std::string path = dir / "db";
  {
    auto db = Database::Open(path).value();
    WriteArray(db, "a", 3 * kMiB, 1);
    Commit(db);
  }
  const ino_t inode = Inode(path + "/data.mdb");
  {
    auto db = Database::Open(path).value();
    auto r = Compact(path);
    CHECK(r.status().code() == Code::kFailedPrecondition);
    CHECK(r.status().message().find("open in this process") != std::string::npos);
    // And while the compaction holds the database, this process cannot open it.
  }
#ifdef BIGARRAY_TEST_UNDER_SANITIZER
  // The child below opens a database after fork() in a process with threads: under ASan its
  // allocator can be left locked by another thread at the fork, and the child hangs. The
  // release build runs this part.
  MESSAGE("space_test: the refusal naming another process is not checked under sanitizers");
  return;
#endif
  int ready[2], release[2];
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(release) == 0);
  const pid_t child = fork();
  if (child == 0) {
    auto db = Database::Open(path);
    char c = db.ok() ? 'y' : 'n';
    if (write(ready[1], &c, 1) != 1) _exit(2);
    if (read(release[0], &c, 1) != 1) _exit(3);
    _exit(0);
  }
  close(ready[1]);  // a child that dies before answering gives end of file, not a hang
  char c = 0;
  REQUIRE(read(ready[0], &c, 1) == 1);
  REQUIRE(c == 'y');
  auto r = Compact(path);
  CHECK(r.status().code() == Code::kFailedPrecondition);
  const std::string& m = r.status().message();
  INFO(m);
  CHECK(m.find("process " + std::to_string(child)) != std::string::npos);
  CHECK(m.find("handle reading commit") != std::string::npos);  // from the registry of handles
  CHECK(m.find("nothing was changed") != std::string::npos);
  CHECK(Inode(path + "/data.mdb") == inode);
  CHECK_FALSE(Exists(path + "/" + std::string(storage::kCompactTempName)));
  REQUIRE(write(release[1], "x", 1) == 1);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(Compact(path).ok());
  CHECK(Inode(path + "/data.mdb") != inode);
  for (int fd : {ready[0], ready[1], release[0], release[1]}) close(fd);
}

// A compaction runs in a child that pauses at step `pause_at`; meanwhile this process starts a
// reader (read-only) and a writer in other children, which must wait; once the compaction is
// done, both must work on the new file: the reader sees the writer's commit after Abort().
TEST_CASE("openers during a compaction wait, then use the compacted file") {
  for (const std::string pause_at : {"copy", "rename"}) {
    INFO("paused before " << pause_at);
    TempDir dir;
    const std::string path = dir / "db";
    uint64_t commit = 0;
    {
      auto db = Database::Open(path).value();
      WriteArray(db, "a", 2 * kMiB, 1);
      WriteArray(db, "junk", 6 * kMiB, 2);
      Commit(db);
      REQUIRE(db.Drop("junk").ok());
      commit = Commit(db);
    }
    int paused[2];
    REQUIRE(pipe(paused) == 0);
    const pid_t compactor = fork();
    if (compactor == 0) {
      storage::LmdbCompactOptions o;
      o.before_step = [&](std::string_view step) {
        if (step == pause_at) {
          if (write(paused[1], "p", 1) != 1) _exit(4);
          std::this_thread::sleep_for(std::chrono::milliseconds(400));
        }
        return Status::Ok();
      };
      _exit(storage::CompactLmdb(path, o).ok() ? 0 : 5);
    }
    char c;
    REQUIRE(read(paused[0], &c, 1) == 1);
    // The reader: opens read-only (it opens data.mdb, then waits for the lock), reports what it
    // read, waits for the writer's commit, and reads again after Abort().
    int to_reader[2], from_reader[2];
    REQUIRE(pipe(to_reader) == 0);
    REQUIRE(pipe(from_reader) == 0);
    const pid_t reader = fork();
    if (reader == 0) {
      Options ro;
      ro.read_only = true;
      auto db = Database::Open(path, ro);
      if (!db.ok()) _exit(6);
      const uint8_t first = db->Get("a").value().view().value().Span<uint8_t>().value()[0];
      const uint64_t seen = db->snapshot_commit();
      if (write(from_reader[1], &seen, sizeof seen) != sizeof seen) _exit(7);
      if (read(to_reader[0], &c, 1) != 1) _exit(8);
      db->Abort();
      const uint8_t now = db->Get("a").value().view().value().Span<uint8_t>().value()[0];
      db = Status(Code::kInternal, "closed");  // closes the handle before _exit
      _exit(first == Byte(1, 0) && now == 77 ? 0 : 9);
    }
    const pid_t writer = fork();
    if (writer == 0) {
      bool ok = false;
      {
        auto db = Database::Open(path);
        ok = db.ok() && db->snapshot_commit() == commit;
      }
      _exit(ok ? 0 : 7);
    }
    int status = 0;
    REQUIRE(waitpid(compactor, &status, 0) == compactor);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    REQUIRE(waitpid(writer, &status, 0) == writer);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    uint64_t seen = 0;
    REQUIRE(read(from_reader[0], &seen, sizeof seen) == sizeof seen);
    CHECK(seen == commit);
    {
      auto db = Database::Open(path).value();
      db.Get("a").value().view().value().Span<uint8_t>().value()[0] = 77;
      CHECK(Commit(db) > commit);
    }
    REQUIRE(write(to_reader[1], "g", 1) == 1);
    REQUIRE(waitpid(reader, &status, 0) == reader);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);  // 9: the reader read the replaced file
    for (int fd : {paused[0], paused[1], to_reader[0], to_reader[1], from_reader[0], from_reader[1]}) close(fd);
  }
}

TEST_CASE("a failure at any step: before the rename nothing changes, after it the database is compacted") {
  const std::vector<std::string> steps = {"lock",   "slots",  "copy",     "patch", "sync",
                                          "verify", "rename", "sync-dir", "reopen"};
  for (size_t k = 0; k < steps.size(); ++k) {
    INFO("failing step " << steps[k]);
    TempDir dir;
    const std::string path = dir / "db";
    uint64_t commit = 0;
    {
      auto db = Database::Open(path).value();
      WriteArray(db, "a", 3 * kMiB, 1);
      WriteArray(db, "junk", 2 * kMiB, 2);
      Commit(db);
      REQUIRE(db.Drop("junk").ok());
      commit = Commit(db);
    }
    const ino_t inode = Inode(path + "/data.mdb");
    storage::LmdbCompactOptions o;
    std::vector<std::string> seen;
    o.before_step = [&](std::string_view step) {
      seen.emplace_back(step);
      return step == steps[k] ? IOError("injected failure at " + std::string(step)) : Status::Ok();
    };
    auto r = storage::CompactLmdb(path, o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::kIOError);
    CHECK(r.status().message().find("injected failure at " + steps[k]) != std::string::npos);
    CHECK(seen.size() == k + 1);
    const bool replaced = k >= 7;  // the rename happened
    CHECK((Inode(path + "/data.mdb") != inode) == replaced);
    CHECK(r.status().message().find(replaced ? "replaced by its compacted copy" : "nothing was changed") !=
          std::string::npos);
    CHECK_FALSE(Exists(path + "/" + std::string(storage::kCompactTempName)));
    auto db = Database::Open(path).value();
    CHECK(db.snapshot_commit() == commit);
    CHECK(Holds(db, "a", 3 * kMiB, 1));
    CHECK_FALSE(db.Contains("junk").value());
    WriteArray(db, "b", kMiB, 3);
    CHECK(Commit(db) > commit);
  }
}

TEST_CASE("a leftover data.mdb.compacting is ignored by opens, reported, and removed by the next compaction") {
  TempDir dir;
  const std::string path = dir / "db";
  {
    auto db = Database::Open(path).value();
    WriteArray(db, "a", kMiB, 1);
    Commit(db);
  }
  const std::string temp = path + "/" + std::string(storage::kCompactTempName);
  {
    const int fd = open(temp.c_str(), O_WRONLY | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    std::vector<char> junk(kMiB, 'x');
    REQUIRE(write(fd, junk.data(), junk.size()) == static_cast<ssize_t>(junk.size()));
    close(fd);
  }
  {
    auto db = Database::Open(path).value();
    CHECK(Holds(db, "a", kMiB, 1));
    CHECK(db.Space().value().file->leftover_bytes >= kMiB);
  }
  REQUIRE(Compact(path).ok());
  CHECK_FALSE(Exists(temp));
  CHECK(SpaceOf(path).file->leftover_bytes == 0);
}

TEST_CASE("Compact: clear errors for what is not a compactable database") {
  TempDir dir;
  CHECK(Compact(dir / "none").status().code() == Code::kNotFound);
  REQUIRE(mkdir((dir / "empty").c_str(), 0755) == 0);
  auto r = Compact(dir / "empty");
  CHECK(r.status().code() == Code::kNotFound);
  CHECK(r.status().message().find("no data.mdb") != std::string::npos);
  // data.mdb as a symbolic link: the rename would replace the link, so it is refused.
  const std::string path = dir / "db";
  {
    auto db = Database::Open(path).value();
    WriteArray(db, "a", 4096, 1);
    Commit(db);
  }
  REQUIRE(rename((path + "/data.mdb").c_str(), (dir / "elsewhere.mdb").c_str()) == 0);
  REQUIRE(symlink((dir / "elsewhere.mdb").c_str(), (path + "/data.mdb").c_str()) == 0);
  r = Compact(path);
  CHECK(r.status().code() == Code::kUnsupported);
  CHECK(r.status().message().find("symbolic link") != std::string::npos);
  auto db = Database::Open(path).value();
  CHECK(Holds(db, "a", 4096, 1));
}

TEST_CASE("Compact on a file system too small for the copy: NoSpace, nothing changed") {
  TempDir dir;
  bigarray::testing::SmallTmpfs fs(dir.path(), "24m");
  if (!fs.ok()) {
    MESSAGE("space_test: " << fs.why() << "; skipped");
    return;
  }
  const std::string path = fs.path() + "/db";
  {
    auto db = Database::Open(path).value();
    // Blocks of 1 MiB stay in data.mdb (larger ones would go to blocks.dat, which compaction
    // does not copy): the copy would need 12 MiB more.
    ArrayOptions small_blocks;
    small_blocks.block_size = kMiB;
    REQUIRE(db.Create("a", {static_cast<int64_t>(12 * kMiB)}, "u1", small_blocks).ok());
    WriteArray(db, "a", 12 * kMiB, 1);
    Commit(db);
  }
  auto r = Compact(path);
  CHECK(r.status().code() == Code::kNoSpace);
  CHECK(r.status().message().find("nothing was changed") != std::string::npos);
  CHECK_FALSE(Exists(path + "/" + std::string(storage::kCompactTempName)));
  auto db = Database::Open(path).value();
  CHECK(Holds(db, "a", 12 * kMiB, 1));
}
