// commit_board.h: a small shared-memory segment per database on one host, through which
// committers wake the processes that wait for commits, and which lists the live handles
// (docs/transactions.md, "Following a growing dataset").
//
// Layout (kBoardVersion 1): one POSIX shared-memory object, named from the device and inode of
// the database's data file ("/bigarray-1-<dev>-<ino>", see BoardName), holding a header and
// kBoardSlots handle slots. All of it is plain memory used through atomics: no lock lives in the
// segment, so a process killed at any instant can neither block nor corrupt the others.
//
//  - Zero-filled memory is a valid empty board: the creator has nothing to initialize but the
//    magic word, set by compare-and-swap from 0, so creation may race between processes and a
//    creator killed half-way leaves a usable board.
//  - Commits: a committer raises `latest_commit` (atomic max), increments the 32-bit `sequence`
//    and FUTEX_WAKEs every waiter on it (shared futex, not private). A waiter reads `sequence`,
//    checks for a newer commit, then FUTEX_WAITs on the value it read: a commit in between
//    changes the word and the wait returns at once, so no wakeup is lost.
//  - Handle slots: a slot is claimed by CAS of its `owner` word from 0 to (state, pid, process
//    start time). The start time (field 22 of /proc/PID/stat) tells a live process from a later
//    one that reused the pid. Readers check each owner: a slot whose process is gone is freed by
//    CAS from the exact owner value seen (so two cleaners, or a cleaner and a new claimer, cannot
//    both win). The other fields are relaxed atomic stores: a reader may see a mix of two
//    boundaries' figures, never a torn number.
//  - Removal: the last handle to leave removes the segment's name (so /dev/shm does not fill
//    with the boards of deleted databases). It writes its owner word into `closing` by CAS from
//    0, then scans the slots: if any is held by a live process, it resets `closing` and keeps the
//    segment; otherwise it unlinks the name. A joining handle claims its slot first and reads
//    `closing` after: with sequentially consistent atomics either the leaver sees the slot or the
//    joiner sees `closing` (it then leaves and opens the name again, getting a new segment once
//    the name is gone). A `closing` word whose process died is reset by the next joiner if the
//    name still leads to this segment (the closer died before removing it); if the name is gone
//    or leads elsewhere, the joiner opens it again.
//
// Thread contract: every method may be called from any thread; a Handle (a claimed slot) is
// updated by its owner only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bigarray/handles.h"
#include "bigarray/status.h"

namespace bigarray::internal {

inline constexpr uint32_t kBoardVersion = 1;
inline constexpr size_t kBoardSlots = 256;

struct BoardHeader;
struct BoardSlot;

class CommitBoard {
 public:
  // The segment of the database whose data file is `data_file` (created if missing).
  // kNotFound when `create` is false and no process has created it.
  static Result<std::shared_ptr<CommitBoard>> OpenForFile(const std::string& data_file, bool create);
  // A board in this process's memory only (databases no other process can open: "memory:").
  static std::shared_ptr<CommitBoard> Private();
  // The segment name for a data file: "/bigarray-<version>-<dev hex>-<ino hex>".
  static Result<std::string> BoardName(const std::string& data_file);

  ~CommitBoard();
  CommitBoard(const CommitBoard&) = delete;
  CommitBoard& operator=(const CommitBoard&) = delete;

  // After commit `id` landed: records it and wakes every waiter.
  void Publish(uint64_t id);
  // The highest commit id published (0: none since the segment exists).
  uint64_t latest() const;
  // The current value of the wakeup word; pass it to Sleep.
  uint32_t sequence() const;
  // Sleeps until the wakeup word differs from `seen` or `timeout` passes (a signal may end the
  // sleep early too). Returns false on timeout.
  Result<bool> Sleep(uint32_t seen, std::chrono::nanoseconds timeout);

  // A claimed slot; released when destroyed (by the process that claimed it).
  class Handle {
   public:
    ~Handle();
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    // At a transaction boundary: what the handle now reads and its cache figures.
    void Update(uint64_t snapshot_commit, uint64_t cache_bytes, uint64_t dirty_bytes, uint64_t faults);
    // The board this handle is registered in.
    const std::shared_ptr<CommitBoard>& board() const { return board_; }

   private:
    friend class CommitBoard;
    Handle(std::shared_ptr<CommitBoard> board, BoardSlot* slot, uint64_t owner, pid_t pid)
        : board_(std::move(board)), slot_(slot), owner_(owner), pid_(pid) {}
    std::shared_ptr<CommitBoard> board_;
    BoardSlot* slot_;
    uint64_t owner_;
    pid_t pid_;  // a forked child's copy of the handle does not release the parent's slot
  };
  // Claims a slot for a handle of this process. kResourceExhausted when all slots are held by
  // live processes.
  Result<std::unique_ptr<Handle>> Register(std::shared_ptr<CommitBoard> self, uint64_t snapshot_commit);

  // Opens (or creates) the board of `data_file` and registers a handle in it, following the
  // removal protocol above. The handle's board is the board to publish and wait on.
  static Result<std::unique_ptr<Handle>> Join(const std::string& data_file, uint64_t snapshot_commit);

  // The live handles; slots of dead processes are freed on the way.
  std::vector<HandleInfo> Live();

 private:
  CommitBoard() = default;
  // After a handle left: removes the segment's name if no live handle remains (see above).
  void RemoveIfUnused();
  // Whether the segment's name still leads to this segment.
  bool StillNamed() const;
  struct Mapping;
  std::unique_ptr<Mapping> mapping_;  // the shared segment (null for a private board)
  BoardHeader* header_ = nullptr;
  BoardSlot* slots_ = nullptr;
  bool shared_ = false;
};

// The start time of process `pid` in clock ticks after boot (field 22 of /proc/PID/stat);
// nullopt when the process does not exist or has exited (a zombie not yet reaped).
std::optional<uint64_t> ProcessStartTime(pid_t pid);

}  // namespace bigarray::internal
