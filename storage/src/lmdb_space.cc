// lmdb_space.cc: MeasureLmdbSpace (bigarray/storage/lmdb_space.h; docs/format.md, "Space").
//
// Everything comes from LMDB's public API on one read transaction: mdb_stat of each B-tree
// (pages by kind), the free list's records (FREE_DBI, key: the id of the commit that freed the
// pages, value: a page-number list whose first word is its length, as mdb_stat -f reads it),
// mdb_env_info and the reader table; and the slot records of blocks.dat (lmdb_slots.h). Cost: the
// free list's pages and the slot records, not the data.
#include <errno.h>
#include <lmdb.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "bigarray/storage/lmdb_space.h"
#include "lmdb_internal.h"
#include "lmdb_records.h"
#include "lmdb_slots.h"
#include "lmdb_status.h"

namespace bigarray::storage {
namespace {

using internal::LmdbStatus;

constexpr MDB_dbi kFreeDbi = 0;  // LMDB's FREE_DBI
constexpr MDB_dbi kMainDbi = 1;  // LMDB's MAIN_DBI: the names of the named databases
constexpr uint64_t kMetaPages = 2;

Status TreePages(MDB_txn* txn, MDB_dbi dbi, const char* name, LmdbTreePages* out) {
  MDB_stat st;
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_stat(txn, dbi, &st), std::string("measure the ") + name + " tree"));
  out->entries = st.ms_entries;
  out->branch = st.ms_branch_pages;
  out->leaf = st.ms_leaf_pages;
  out->overflow = st.ms_overflow_pages;
  return Status::Ok();
}

// The slot records of blocks.dat (lmdb_slots.h). The next commit reclaims the slots freed by
// commits before `oldest` (the oldest snapshot's, or the latest): those count as free.
Status MeasureSlots(const internal::LmdbReadView& v, const std::string& path, CommitId oldest, LmdbSpace* s) {
  MDB_val key{internal::SlotTableKey().size(), const_cast<char*>(internal::SlotTableKey().data())}, val;
  int rc = mdb_get(v.txn, v.meta, &key, &val);
  if (rc == MDB_SUCCESS) {
    const std::string_view sealed(static_cast<const char*>(val.mv_data), val.mv_size);
    BA_ASSIGN_OR_RETURN(std::string_view body, internal::OpenRecord(internal::SlotTableKey(), sealed, "slot table"));
    BA_ASSIGN_OR_RETURN(internal::SlotTable t, internal::SlotTable::Decode(body, path + ": the slot table"));
    s->slots = t.high_water;
    s->free_slots = t.free.size();
  } else if (rc == MDB_NOTFOUND) {
    return Corruption(path + ": the slot table is missing (data.mdb is damaged)");
  } else {
    return LmdbStatus(rc, "read the slot table of " + path);
  }
  MDB_cursor* cur;
  BA_RETURN_IF_ERROR(LmdbStatus(mdb_cursor_open(v.txn, v.meta, &cur), "read the freed slots of " + path));
  const std::string_view prefix = internal::FreedSlotsPrefix();
  key = MDB_val{prefix.size(), const_cast<char*>(prefix.data())};
  for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
       rc == MDB_SUCCESS && std::string_view(static_cast<const char*>(key.mv_data), key.mv_size).starts_with(prefix);
       rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
    const uint64_t n = val.mv_size >= 8 ? (val.mv_size - 8) / 8 : 0;  // u64 each, after the 8-byte seal
    const CommitId freed_by = key.mv_size == prefix.size() + 8
                                  ? internal::GetBE64(static_cast<const unsigned char*>(key.mv_data) + prefix.size())
                                  : 0;
    (freed_by < oldest ? s->free_slots : s->pinned_slots) += n;
  }
  mdb_cursor_close(cur);
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return LmdbStatus(rc, "read the freed slots of " + path);
  return Status::Ok();
}

}  // namespace

Result<LmdbSpace> MeasureLmdbSpace(const std::string& path) {
  LmdbOptions o;
  o.create_if_missing = false;
  o.read_only = true;
  BA_ASSIGN_OR_RETURN(std::shared_ptr<BlockStore> store, OpenLmdbStore(path, o));
  LmdbSpace s;
  BA_ASSIGN_OR_RETURN(s.readers, ListLmdbReaders(path));
  Status st = internal::WithLmdbRead(*store, [&](const internal::LmdbReadView& v) -> Status {
    MDB_stat est;
    BA_RETURN_IF_ERROR(LmdbStatus(mdb_env_stat(v.env, &est), "measure " + path));
    MDB_envinfo info;
    BA_RETURN_IF_ERROR(LmdbStatus(mdb_env_info(v.env, &info), "measure " + path));
    s.page_size = est.ms_psize;
    s.latest_commit = mdb_txn_id(v.txn);
    s.used_bytes = (static_cast<uint64_t>(info.me_last_pgno) + 1) * s.page_size;
    BA_RETURN_IF_ERROR(TreePages(v.txn, kMainDbi, "main", &s.main));
    BA_RETURN_IF_ERROR(TreePages(v.txn, v.meta, "meta", &s.meta));
    BA_RETURN_IF_ERROR(TreePages(v.txn, v.blocks, "blocks", &s.blocks));
    BA_RETURN_IF_ERROR(TreePages(v.txn, v.log, "log", &s.log));
    BA_RETURN_IF_ERROR(TreePages(v.txn, kFreeDbi, "free list", &s.free_list));
    // What the next commit may not reuse: LMDB's mdb_page_alloc takes a free-list record only
    // when its commit id is below both every reader's snapshot and the latest commit.
    CommitId oldest = s.latest_commit;
    for (const auto& [pid, commit] : s.readers) oldest = std::min(oldest, commit);
    MDB_cursor* cur;
    BA_RETURN_IF_ERROR(LmdbStatus(mdb_cursor_open(v.txn, kFreeDbi, &cur), "read the free list of " + path));
    MDB_val key, val;
    int rc;
    uint64_t free_pages = 0, pinned_pages = 0;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
      uint64_t freed_by, count;
      if (key.mv_size != sizeof freed_by || val.mv_size < sizeof count || val.mv_size % sizeof count != 0) {
        rc = MDB_CORRUPTED;
        break;
      }
      std::memcpy(&freed_by, key.mv_data, sizeof freed_by);
      std::memcpy(&count, val.mv_data, sizeof count);
      if (count != val.mv_size / sizeof count - 1) {
        rc = MDB_CORRUPTED;
        break;
      }
      free_pages += count;
      if (freed_by >= oldest) pinned_pages += count;
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) return LmdbStatus(rc, "read the free list of " + path);
    s.free_bytes = free_pages * s.page_size;
    s.pinned_bytes = pinned_pages * s.page_size;
    // LMDB's compacting copy writes the meta pages, then every page reachable from the main
    // tree (itself, the named trees and their overflow pages), and drops the free list.
    s.compact_bytes =
        (kMetaPages + s.main.pages() + s.meta.pages() + s.blocks.pages() + s.log.pages()) * s.page_size;
    return MeasureSlots(v, path, oldest, &s);
  });
  BA_RETURN_IF_ERROR(st);
  struct stat fst;
  const std::string data_file = path + "/data.mdb";
  if (stat(data_file.c_str(), &fst) != 0) return ErrnoStatus(errno, "stat " + data_file);
  s.file_bytes = static_cast<uint64_t>(fst.st_size);
  s.allocated_bytes = static_cast<uint64_t>(fst.st_blocks) * 512;
  s.reclaimable_bytes = s.allocated_bytes > s.compact_bytes ? s.allocated_bytes - s.compact_bytes : 0;
  const std::string slot_file = path + "/" + std::string(kSlotsFile);
  if (stat(slot_file.c_str(), &fst) == 0) {
    s.slot_file_bytes = static_cast<uint64_t>(fst.st_size);
    s.slot_allocated_bytes = static_cast<uint64_t>(fst.st_blocks) * 512;
  } else if (errno != ENOENT) {
    return ErrnoStatus(errno, "stat " + slot_file);
  }
  const std::string temp = path + "/" + std::string(kCompactTempName);
  if (stat(temp.c_str(), &fst) == 0) {
    s.leftover_bytes = static_cast<uint64_t>(fst.st_blocks) * 512;
  } else if (errno != ENOENT) {
    return ErrnoStatus(errno, "stat " + temp);
  }
  return s;
}

}  // namespace bigarray::storage
