// bigarray/handles.h: which processes hold a database open (docs/transactions.md, "Following a
// growing dataset"; `bigarray stats DB --handles`).
//
// Every Database handle on a local (LMDB) database registers itself in a small shared-memory
// segment beside the database and updates its entry at each transaction boundary. A handle of a
// process that died is detected (pid and process start time) and dropped from the list.
//
// Thread contract: ListHandles may be called from any thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bigarray/status.h"

namespace bigarray {

struct HandleInfo {
  pid_t pid = 0;
  std::string process;          // the process name (/proc/PID/comm), at most 15 bytes
  uint64_t snapshot_commit = 0; // the commit its transaction reads
  int64_t since_ns = 0;         // when it began reading that snapshot (Unix time, ns)
  uint64_t cache_bytes = 0;     // RAM its page cache holds, as of its last boundary
  uint64_t dirty_bytes = 0;     // dirty data (resident or spilled), as of its last boundary
  uint64_t faults = 0;          // page faults it handled, as of its last boundary
};

// An open snapshot of any process, from LMDB's own reader table (the source of truth for what
// keeps old pages from being reused).
struct ReaderInfo {
  pid_t pid = 0;
  uint64_t snapshot_commit = 0;
};

struct HandlesReport {
  std::vector<HandleInfo> handles;  // in slot order
  // LMDB's reader table (slots of dead processes are cleared first); readers_complete is false
  // when it could not be read (then `readers` is empty).
  std::vector<ReaderInfo> readers;
  bool readers_complete = false;
};

// The live handles of the database at `path` (an LMDB database directory) and its reader
// table. No handles when no process has one open; kNotFound when there is no database.
Result<HandlesReport> ListHandles(const std::string& path);

}  // namespace bigarray
