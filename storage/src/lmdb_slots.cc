#include "lmdb_slots.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <vector>

#include "lmdb_status.h"

namespace bigarray::storage::internal {

namespace {
constexpr char kSlotTableKey[] = "\0slots";
constexpr char kFreedPrefix[] = "\0freed/";

std::string_view ValStr(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }
}  // namespace

std::string_view SlotTableKey() { return {kSlotTableKey, sizeof kSlotTableKey - 1}; }
std::string_view FreedSlotsPrefix() { return {kFreedPrefix, sizeof kFreedPrefix - 1}; }
std::string FreedSlotsKey(CommitId commit) {
  std::string key(FreedSlotsPrefix());
  key.resize(key.size() + 8);
  PutBE64(reinterpret_cast<unsigned char*>(key.data() + key.size() - 8), commit);
  return key;
}

Status SlotLedger::Load() {
  if (table_) return Status::Ok();
  MDB_val k{SlotTableKey().size(), const_cast<char*>(SlotTableKey().data())}, v;
  const int rc = mdb_get(txn_, meta_, &k, &v);
  // Every database has one from its creation: a missing table is damage, never "no slot used"
  // (which would hand out slots in use and cut the file under them).
  if (rc == MDB_NOTFOUND) return Corruption(file_ + ": the slot table is missing (data.mdb is damaged)");
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "read the slot table of " + file_);
  BA_ASSIGN_OR_RETURN(std::string_view body, OpenRecord(SlotTableKey(), ValStr(v), "slot table"));
  BA_ASSIGN_OR_RETURN(SlotTable t, SlotTable::Decode(body, file_ + ": the slot table"));
  table_ = std::move(t);
  return Status::Ok();
}

Status SlotLedger::Reclaim(CommitId floor) {
  // The records in commit order; each batch is read whole before any is deleted (the cursor
  // would not survive the deletes).
  for (;;) {
    MDB_cursor* cur;
    int rc = mdb_cursor_open(txn_, meta_, &cur);
    if (rc != MDB_SUCCESS) return LmdbStatus(rc, "read the freed slots of " + file_);
    MDB_val k{FreedSlotsPrefix().size(), const_cast<char*>(FreedSlotsPrefix().data())}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    std::string key, sealed;
    if (rc == MDB_SUCCESS) key = std::string(ValStr(k)), sealed = std::string(ValStr(v));
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND || (rc == MDB_SUCCESS && !std::string_view(key).starts_with(FreedSlotsPrefix()))) {
      return Status::Ok();
    }
    if (rc != MDB_SUCCESS) return LmdbStatus(rc, "read the freed slots of " + file_);
    if (key.size() != FreedSlotsPrefix().size() + 8) return Corruption(file_ + ": a freed-slots record has a malformed key");
    const CommitId commit = GetBE64(reinterpret_cast<const unsigned char*>(key.data()) + FreedSlotsPrefix().size());
    if (commit >= floor) return Status::Ok();
    BA_ASSIGN_OR_RETURN(std::string_view body, OpenRecord(key, sealed, "freed slots"));
    BA_ASSIGN_OR_RETURN(std::vector<uint64_t> slots, DecodeSlotList(body, file_ + ": the slots freed by commit " + std::to_string(commit)));
    BA_RETURN_IF_ERROR(Load());
    for (uint64_t slot : slots) {
      if (slot >= table_->high_water || !table_->free.insert(slot).second) {
        return Corruption(file_ + ": slot " + std::to_string(slot) + ", freed by commit " + std::to_string(commit) +
                          ", is past the end or free already (the slot records are damaged)");
      }
      // Its disk space goes back now: nothing reads it any more.
      if (fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(slot * kSlotBytes),
                    static_cast<off_t>(kSlotBytes)) != 0 &&
          errno != EOPNOTSUPP) {
        return ErrnoStatus(errno, "give back the disk space of slot " + std::to_string(slot) + " of " + file_);
      }
    }
    changed_ = true;
    BA_RETURN_IF_ERROR(put_(key, std::nullopt));
  }
}

Result<uint64_t> SlotLedger::Allocate() {
  BA_RETURN_IF_ERROR(Load());
  changed_ = true;
  if (!table_->free.empty()) {
    const uint64_t slot = *table_->free.begin();
    table_->free.erase(table_->free.begin());
    return slot;
  }
  return table_->high_water++;
}

Status SlotLedger::Free(uint64_t slot) {
  BA_RETURN_IF_ERROR(Load());
  if (slot >= table_->high_water || table_->free.count(slot) || !freed_.insert(slot).second) {
    return Corruption(file_ + ": a block record names slot " + std::to_string(slot) +
                      ", which is past the end or free (the slot records are damaged)");
  }
  return Status::Ok();
}

Status SlotLedger::Finish() {
  if (!freed_.empty()) {
    BA_RETURN_IF_ERROR(put_(FreedSlotsKey(id_), EncodeSlotList(std::vector<uint64_t>(freed_.begin(), freed_.end()))));
  }
  if (!changed_) return Status::Ok();
  // Free slots at the end of the file are cut off: nothing uses them (see the head comment).
  while (!table_->free.empty() && *table_->free.rbegin() + 1 == table_->high_water) {
    table_->free.erase(std::prev(table_->free.end()));
    --table_->high_water;
  }
  struct stat st;
  if (fstat(fd_, &st) != 0) return ErrnoStatus(errno, "stat " + file_);
  const auto end = static_cast<off_t>(table_->high_water * kSlotBytes);
  if (st.st_size > end && ftruncate(fd_, end) != 0) return ErrnoStatus(errno, "shrink " + file_);
  return put_(SlotTableKey(), table_->Encode());
}

Status PunchUnusedSlots(MDB_txn* txn, MDB_dbi blocks, int fd, const std::string& file) {
  std::set<uint64_t> used;
  MDB_cursor* cur;
  int rc = mdb_cursor_open(txn, blocks, &cur);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "list the block records for " + file);
  MDB_val k, v;
  Status status;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    // Every record is decoded: one that cannot be (a damaged size, key or header) might name a
    // slot, which must not be punched.
    Result<BlockHeader> h = k.mv_size != 16 && k.mv_size != 24
                                ? Result<BlockHeader>(Corruption("a block record has a malformed key"))
                            : v.mv_size < kShortHeader
                                ? Result<BlockHeader>(Corruption("a block record is too short for a header"))
                                : DecodeBlockHeader(static_cast<const unsigned char*>(v.mv_data),
                                                    std::min<size_t>(v.mv_size, kSlotHeader), v.mv_size, "a block record");
    if (!h.ok()) {
      status = h.status().WithContext(file + ": no slot was given back (run bigarray verify)");
      break;
    }
    if (h->slotted()) used.insert(h->slot);
  }
  mdb_cursor_close(cur);
  if (!status.ok()) return status;
  if (rc != MDB_NOTFOUND) return LmdbStatus(rc, "list the block records for " + file);
  const uint64_t end = used.empty() ? 0 : *used.rbegin() + 1;
  for (uint64_t slot = 0; slot < end; ++slot) {
    if (used.count(slot)) continue;
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(slot * kSlotBytes),
                  static_cast<off_t>(kSlotBytes)) != 0) {
      if (errno == EOPNOTSUPP) break;
      return ErrnoStatus(errno, "give back the disk space of slot " + std::to_string(slot) + " of " + file);
    }
  }
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat " + file);
  if (st.st_size > static_cast<off_t>(end * kSlotBytes) && ftruncate(fd, static_cast<off_t>(end * kSlotBytes)) != 0) {
    return ErrnoStatus(errno, "shrink " + file);
  }
  return Status::Ok();
}

}  // namespace bigarray::storage::internal
