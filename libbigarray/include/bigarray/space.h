// bigarray/space.h: disk space: what a database holds and what it could give back
// (Database::Space), and giving it back (Compact). docs/format.md, section "Space", defines
// every figure; docs/cli.md shows them (`bigarray info DB`, `bigarray compact DB`).
//
// Thread contract: Compact may be called from any thread; Database::Space as any other call
// of its handle.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bigarray/status.h"

namespace bigarray {

// The blocks an array has stored (blocks of zeros are not stored).
struct ArraySpace {
  std::string name;
  uint64_t blocks_stored = 0;
  uint64_t stored_bytes = 0;  // the payload bytes of their records (docs/format.md, "blocks")
};

// The file of a local (LMDB) database.
struct FileSpace {
  uint64_t page_size = 0;
  uint64_t file_bytes = 0;         // data.mdb's apparent size: LMDB's map, a sparse file
  uint64_t allocated_bytes = 0;    // the bytes the file system allocated to data.mdb (du)
  uint64_t used_bytes = 0;         // pages LMDB has used: up to its last page
  uint64_t free_bytes = 0;         // pages on LMDB's free list, which later commits reuse
  uint64_t pinned_bytes = 0;       // of those, pages the next commit cannot reuse yet
  uint64_t compact_bytes = 0;      // the size of data.mdb after Compact
  uint64_t reclaimable_bytes = 0;  // allocated_bytes - compact_bytes: what Compact gives back
  uint64_t leftover_bytes = 0;     // data.mdb.compacting of a killed compaction (Compact removes it)
  // blocks.dat, the slots of large blocks (docs/format.md): its size and bytes on disk, its slots,
  // the free ones (holes already), and those freed while a snapshot may still read them.
  uint64_t slot_file_bytes = 0;
  uint64_t slot_allocated_bytes = 0;
  uint64_t slots = 0, free_slots = 0, pinned_slots = 0;
};

// The oldest snapshot held open by any process: it keeps the pages freed after it from being
// reused, so the file grows while it stays open.
struct OldestSnapshot {
  pid_t pid = 0;
  std::string process;           // its name, when a bigarray handle on this host reads it
  uint64_t commit = 0;
  uint64_t commits_behind = 0;   // latest_commit - commit
  std::optional<double> age_s;   // since the handle began reading it; unknown for other readers
};

struct SpaceReport {
  uint64_t commit = 0;         // the snapshot the arrays are described at (the handle's)
  uint64_t latest_commit = 0;  // the newest commit, which the file figures describe
  uint64_t live_bytes = 0;     // stored bytes of every array
  std::vector<ArraySpace> arrays;  // by name
  // nullopt for databases without a local file (memory:, PostgreSQL).
  std::optional<FileSpace> file;
  // nullopt when no snapshot older than the latest commit is open (or no reader table).
  std::optional<OldestSnapshot> oldest_snapshot;
};

struct CompactReport {
  uint64_t commit = 0;  // the database's commit, the same before and after
  uint64_t before_file_bytes = 0, before_allocated_bytes = 0;
  uint64_t after_file_bytes = 0, after_allocated_bytes = 0;
  // blocks.dat on disk before and after (Compact gives back the slots no block uses).
  uint64_t before_slot_allocated_bytes = 0, after_slot_allocated_bytes = 0;
  double seconds = 0;
};

// Rewrites the database at `path` into the least space (LMDB's compacting copy, then an atomic
// rename over data.mdb): dropped arrays, shrunk tails and old versions give their space back.
// The content and the commit id stay the same. Processes that open the database meanwhile wait
// until it is done. Killed at any instant, the database is intact, old or new.
// kFailedPrecondition (nothing changed) while any process, this one included, has the database
// open: the message names the processes (pid, name, the commit they read). kNoSpace when the
// file system cannot hold the copy. kUnsupported for memory: and PostgreSQL databases.
Result<CompactReport> Compact(const std::string& path);

}  // namespace bigarray
