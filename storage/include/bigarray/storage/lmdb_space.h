// bigarray/storage/lmdb_space.h: the disk space of an LMDB database: how it is used
// (MeasureLmdbSpace, lmdb_space.cc) and giving back what no commit needs (CompactLmdb,
// lmdb_compact.cc). docs/format.md, section "Space", defines every figure.
//
// Thread contract: both functions may be called from any thread. MeasureLmdbSpace works while
// the database is open anywhere; CompactLmdb refuses while any process has it open.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bigarray/storage/block_store.h"

namespace bigarray::storage {

// Pages of one B-tree of the environment.
struct LmdbTreePages {
  uint64_t entries = 0;
  uint64_t branch = 0, leaf = 0, overflow = 0;
  uint64_t pages() const { return branch + leaf + overflow; }
};

struct LmdbSpace {
  uint64_t page_size = 0;
  CommitId latest_commit = 0;
  // data.mdb: its apparent size (st_size; the map, sparse) and the bytes the file system
  // allocated for it (st_blocks * 512, what du counts).
  uint64_t file_bytes = 0;
  uint64_t allocated_bytes = 0;
  // Pages LMDB has used so far: (last page number + 1) * page size. Beyond them the file is
  // a hole or space reserved for the next commits.
  uint64_t used_bytes = 0;
  // Pages on LMDB's free list: freed by commits, reused by later ones.
  uint64_t free_bytes = 0;
  // Of those, the pages the next commit cannot reuse yet: freed by a commit at or after the
  // oldest open snapshot, or by the latest commit (LMDB keeps its predecessor as its fallback).
  uint64_t pinned_bytes = 0;
  // The size of a compacting copy: the two meta pages and every page of the B-trees below.
  uint64_t compact_bytes = 0;
  // allocated_bytes - compact_bytes (0 when negative): what CompactLmdb gives back.
  uint64_t reclaimable_bytes = 0;
  // Bytes allocated to data.mdb.compacting, left by a compaction that was killed (0: none);
  // the next CompactLmdb removes it.
  uint64_t leftover_bytes = 0;
  // blocks.dat (docs/format.md, "blocks.dat"): its apparent size and allocated bytes, its slots
  // (the high-water mark), the slots the next commit may reuse (holes already, or punched by
  // that commit), and the slots freed by commits that an open snapshot may still read, or by the
  // latest commit (their space comes back once no snapshot can: pinned).
  uint64_t slot_file_bytes = 0;
  uint64_t slot_allocated_bytes = 0;
  uint64_t slots = 0, free_slots = 0, pinned_slots = 0;
  LmdbTreePages main, meta, blocks, log, free_list;
  // LMDB's reader table: (pid, commit) of every open snapshot, dead processes' slots cleared.
  std::vector<std::pair<pid_t, CommitId>> readers;
};

// Measures the LMDB database in directory `path` through LMDB's own statistics (mdb_env_info,
// mdb_stat of each tree, the free list's records, the reader table): a few pages read, whatever
// the size of the database. kNotFound when there is no database.
Result<LmdbSpace> MeasureLmdbSpace(const std::string& path);

// The temporary file a compaction writes in the database directory.
inline constexpr std::string_view kCompactTempName = "data.mdb.compacting";

struct LmdbCompactOptions {
  // Called before each step, with its name: "lock", "copy", "patch", "sync", "verify",
  // "rename", "sync-dir", "reopen". An error stops the compaction there, as a failure of that
  // step would (tests inject faults and kills through it).
  std::function<Status(std::string_view step)> before_step;
  // Describes the processes that hold the database open, for the refusal's message (the
  // default lists their pids). Called with no lock held.
  std::function<std::string(const std::vector<pid_t>&)> describe_holders;
};

struct LmdbCompactResult {
  CommitId commit = 0;  // the commit the database is at, before and after (it is kept)
  uint64_t before_file_bytes = 0, before_allocated_bytes = 0;
  uint64_t after_file_bytes = 0, after_allocated_bytes = 0;
  // blocks.dat's bytes on disk before and after: the slots no block uses are given back.
  uint64_t before_slot_allocated_bytes = 0, after_slot_allocated_bytes = 0;
};

// Rewrites the LMDB database in directory `path` into the least space: LMDB's compacting copy
// (mdb_env_copyfd2 with MDB_CP_COMPACT) into data.mdb.compacting, whose meta pages then get
// the database's commit id back (the copy would restart it at 1), fsync, a check of the copy,
// then rename over data.mdb and fsync of the directory. Throughout, it holds lock.mdb's lock
// exclusively: a process that opens the database meanwhile waits until it is done.
//
// Killed at any instant, the database holds either the old file or the new one, with the same
// content and commit id; a leftover data.mdb.compacting is ignored by opens and removed by the
// next compaction. kFailedPrecondition, nothing changed, while any process (this one included)
// has the database open, naming the pids. kNoSpace when the file system cannot hold the copy.
Result<LmdbCompactResult> CompactLmdb(const std::string& path, const LmdbCompactOptions& options = {});

}  // namespace bigarray::storage
