// lmdb_slots.h: the slots of blocks.dat, as one commit sees and changes them (docs/format.md,
// "blocks.dat").
//
// blocks.dat holds large whole blocks, each in a slot of kSlotBytes at a slot-aligned offset.
// Which slots exist and which are free is kept in data.mdb, so it changes atomically with the
// records that use the slots. A slot a commit frees (its block rewritten, deleted or dropped) is
// not reused at once: a snapshot of any process may still read it, or have it mapped. The
// commit records it under its own id ("\0freed/<id>"); a later commit whose floor (the oldest
// commit any reader reads, from LMDB's reader table, or the latest commit) is past that id makes
// it free for reuse and punches it out of the file, so its disk space goes back to the file
// system without a compaction. That is LMDB's own rule for its free pages: the state before the
// latest commit, LMDB's fallback, keeps its blocks too. Slots are taken lowest first, and free
// slots at the end of the file are cut off (ftruncate).
//
// Crash safety: a commit writes payloads only into slots that no committed state uses (free or
// past the high-water mark), and LMDB's commit makes them used; killed before it, the slots are
// still free. The payloads are written (and, durable, synced) before LMDB's commit. Holes are
// punched, and the file cut, only where no committed state and no snapshot uses a slot, so
// whether the commit lands or not changes nothing for them.
//
// Thread contract: one SlotLedger belongs to one write transaction (LMDB serializes those).
#pragma once

#include <lmdb.h>

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "bigarray/storage/block_store.h"
#include "lmdb_records.h"

namespace bigarray::storage::internal {

class SlotLedger {
 public:
  // Writes (or deletes, nullopt) a sealed store record in the transaction.
  using PutSealed = std::function<Status(std::string_view key, const std::optional<std::string>& body)>;

  // `fd`: blocks.dat opened for writing; `file`: its path, for messages; `id`: the commit's id.
  SlotLedger(MDB_txn* txn, MDB_dbi meta, int fd, std::string file, CommitId id, PutSealed put)
      : txn_(txn), meta_(meta), fd_(fd), file_(std::move(file)), id_(id), put_(std::move(put)) {}

  // Makes the slots freed by commits before `floor` free for reuse, punching them out of the
  // file. `floor`: min(the latest commit, the oldest commit any snapshot of any process reads).
  Status Reclaim(CommitId floor);
  // A slot for a payload of this commit: the lowest free one, or a new one at the end.
  Result<uint64_t> Allocate();
  // The slot of a record this commit deletes; reusable once no snapshot can see it.
  Status Free(uint64_t slot);
  // Writes the changed records and cuts free slots off the end of the file.
  Status Finish();

 private:
  Status Load();

  MDB_txn* const txn_;
  const MDB_dbi meta_;
  const int fd_;
  const std::string file_;
  const CommitId id_;
  const PutSealed put_;
  std::optional<SlotTable> table_;  // loaded on first use
  std::set<uint64_t> freed_;        // by this commit
  bool changed_ = false;
};

// With no process on the database (compaction holds LMDB's exclusive lock, so no snapshot
// exists): gives back the disk space of every slot no block record of `txn` names, free and
// freed alike, and cuts the file after the last slot in use. The slot records are left as they
// are (the next commit finds those slots' holes punched already). A block record that cannot be
// decoded stops it, nothing punched: its slot might be in use.
Status PunchUnusedSlots(MDB_txn* txn, MDB_dbi blocks, int fd, const std::string& file);

// Meta keys of the slot records.
std::string_view SlotTableKey();
std::string FreedSlotsKey(CommitId commit);
std::string_view FreedSlotsPrefix();

}  // namespace bigarray::storage::internal
