// Database, Array: the one place that joins the storage and the pager (docs/architecture.md).
//
// A Session is one Database handle: its store, its pager (its own page cache) and the snapshot
// its transaction reads. Every array it touches has an ArrayState: the array's metadata as
// committed and as changed in this transaction, its PagedFile and its current whole-array
// mapping. Blocks load from the session's current snapshot through ArraySource.
//
// Catalog (docs/format.md, "Array layer records"): meta key "n/<name>" -> array id (16 hex
// digits); "a/<id>" -> the array's record ("dtype=<f8;order=C;block_size=2097152;shape=3,4").
// Attributes (attrs.cc) are meta records too; a transaction keeps its changes to them in
// Session::attr_changes until Commit.
//
// Locking: Session::mu_ serializes the transaction-level calls; ArrayState::mu guards an
// array's metadata for readers on other threads (order: Session::mu_, then ArrayState::mu).
// SnapshotHolder::mu guards the current snapshot pointer, read by loader threads.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <unordered_map>

#include "attr_access.h"
#include "bigarray/database.h"
#include "bigarray/storage/block_store.h"
#include "bigarray/utf8.h"
#include "commit_board.h"
#include "database_internal.h"
#include "layout.h"
#include "pager/pager.h"

namespace bigarray {
namespace internal {

namespace {

constexpr uint64_t kNoZeroFrom = UINT64_MAX;
constexpr uint64_t kMaxBlockSize = 1ull << 30;
constexpr size_t kMaxNameBytes = 255;

std::string Hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

// `s` for an error message: printable ASCII as is, every other byte as \xHH, so that a message
// about a bad name is itself valid UTF-8 and shows what the bytes are.
std::string Escaped(std::string_view s) {
  constexpr size_t kShown = 80;
  std::string out;
  for (unsigned char c : s.substr(0, kShown)) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char b[5];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    }
  }
  return s.size() > kShown ? out + "..." : out;
}

// Why `name` cannot name a new array ("" when it can): 1 to 255 bytes of UTF-8 without NUL
// (names reach JSON output, terminals and Python's str, which all need text; arrays named before
// this rule keep working), and, since '/' separates groups, no empty group or array part (no
// leading or trailing '/', no "//").
std::string BrokenNameRule(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameBytes) return "must be 1 to 255 bytes, not " + std::to_string(name.size());
  if (const size_t nul = name.find('\0'); nul != std::string::npos) {
    return "contains a NUL byte (at byte " + std::to_string(nul) + ")";
  }
  if (const size_t bad = InvalidUtf8At(name); bad != std::string_view::npos) {
    return "is not valid UTF-8 (at byte " + std::to_string(bad) + ")";
  }
  if (name.front() == '/' || name.back() == '/' || name.find("//") != std::string::npos) {
    return "'/' separates groups, so it may not begin or end a name or follow another '/'";
  }
  return "";
}

Status CheckNewName(const std::string& name) {
  const std::string why = BrokenNameRule(name);
  return why.empty() ? Status::Ok() : InvalidArgument("array name '" + Escaped(name) + "': " + why);
}

}  // namespace

Status CheckGroupName(const std::string& group) {
  if (group.empty()) return Status::Ok();  // the database's
  const std::string why = group.size() + 2 > kMaxNameBytes
                              ? "must be at most " + std::to_string(kMaxNameBytes - 2) + " bytes, not " +
                                    std::to_string(group.size())
                              : BrokenNameRule(group + "/x");
  return why.empty() ? Status::Ok() : InvalidArgument("group name '" + Escaped(group) + "': " + why);
}

namespace {

// A path handed to the system as a C string: one with a NUL would be cut short there and name
// another file (Python's os.stat refuses it the same way).
Status CheckPath(const std::string& path, std::string_view what) {
  if (const size_t nul = path.find('\0'); nul != std::string::npos) {
    return InvalidArgument(std::string(what) + " '" + Escaped(path) + "': embedded null byte (at byte " +
                           std::to_string(nul) + ")");
  }
  return Status::Ok();
}

std::string ArrayKey(uint64_t id) { return "a/" + Hex(id); }
std::string NameKey(const std::string& name) { return "n/" + name; }

struct ArrayMeta {
  DType dtype = DType::Of<double>();
  Order order = Order::kC;
  uint64_t block_size = 0;
  std::vector<int64_t> shape;
};

// A number that is the whole of `s` in `base`: no sign, space or trailing character ("2:0000"
// is not 2), or nullopt. Catalog records are parsed with it, never with the forgiving stoll.
std::optional<uint64_t> ParseWhole(std::string_view s, int base) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// The array id of a name record's value (16 hex digits), or kCorruption naming the name.
Result<uint64_t> NameRecordId(std::string_view name, std::string_view value) {
  auto id = ParseWhole(value, 16);
  if (!id || value.size() != 16) {
    return Corruption("the catalog entry of array '" + std::string(name) + "' is malformed");
  }
  return *id;
}

std::string EncodeMeta(const ArrayMeta& m) {
  std::string s = "dtype=" + m.dtype.str() + ";order=" + static_cast<char>(m.order) +
                  ";block_size=" + std::to_string(m.block_size) + ";shape=";
  for (size_t i = 0; i < m.shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(m.shape[i]);
  }
  return s;
}

Result<ArrayMeta> DecodeMeta(std::string_view s, const std::string& what) {
  auto bad = [&](const std::string& why) { return Corruption(what + ": malformed array record (" + why + ")"); };
  ArrayMeta m;
  bool have_dtype = false, have_order = false, have_bs = false, have_shape = false;
  while (!s.empty()) {
    size_t end = s.find(';');
    std::string_view field = s.substr(0, end);
    s = end == std::string_view::npos ? std::string_view() : s.substr(end + 1);
    size_t eq = field.find('=');
    if (eq == std::string_view::npos) return bad("field without '='");
    std::string_view key = field.substr(0, eq), value = field.substr(eq + 1);
    if (key == "dtype") {
      auto d = DType::Parse(value);
      if (!d.ok()) return bad(d.status().message());
      m.dtype = *d;
      have_dtype = true;
    } else if (key == "order") {
      if (value != "C" && value != "F") return bad("order");
      m.order = value == "C" ? Order::kC : Order::kF;
      have_order = true;
    } else if (key == "block_size") {
      auto bs = ParseWhole(value, 10);
      if (!bs) return bad("block_size '" + std::string(value) + "'");
      m.block_size = *bs;
      have_bs = true;
    } else if (key == "shape") {
      while (!value.empty()) {
        size_t comma = value.find(',');
        std::string_view extent = value.substr(0, comma);
        auto n = ParseWhole(extent, 10);
        if (!n || *n > static_cast<uint64_t>(INT64_MAX)) return bad("shape extent '" + std::string(extent) + "'");
        m.shape.push_back(static_cast<int64_t>(*n));
        value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
        if (comma != std::string_view::npos && value.empty()) return bad("shape ends with ','");
      }
      have_shape = true;
    } else {
      return bad("unknown field '" + std::string(key) + "'");
    }
  }
  if (!have_dtype || !have_order || !have_bs || !have_shape) return bad("missing field");
  const long page = sysconf(_SC_PAGESIZE);
  if (m.block_size == 0 || m.block_size % page != 0 || m.block_size > kMaxBlockSize) {
    return bad("block size " + std::to_string(m.block_size));
  }
  auto nbytes = CheckedNbytes(m.shape, m.dtype.itemsize());
  if (!nbytes.ok()) return bad(nbytes.status().message());
  return m;
}

uint64_t BlockCount(const ArrayMeta& m) {
  int64_t n = *CheckedNbytes(m.shape, m.dtype.itemsize());  // validated on creation and decoding
  return (static_cast<uint64_t>(n) + m.block_size - 1) / m.block_size;
}

// The snapshot a session's transaction reads; loader threads read it concurrently.
class SnapshotHolder {
 public:
  std::shared_ptr<storage::Snapshot> Get() const {
    std::lock_guard lock(mu_);
    return snapshot_;
  }
  void Set(std::shared_ptr<storage::Snapshot> s) {
    std::lock_guard lock(mu_);
    snapshot_ = std::move(s);
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<storage::Snapshot> snapshot_;
};

// Loads an array's blocks from the session's current snapshot, or shows them straight from the
// store's file (Options::map_reads; docs/pager.md, "Mapped blocks").
class ArraySource final : public pager::BlockSource {
 public:
  // `map`: the store can map blocks and the options want it; `verify`: Options::verify_reads.
  ArraySource(std::shared_ptr<SnapshotHolder> snapshots, uint64_t id, uint64_t block_size, bool map, bool verify)
      : snapshots_(std::move(snapshots)), id_(id), block_size_(block_size), map_(map), verify_(verify) {}
  Status LoadBlock(uint64_t block, std::span<std::byte> out) override {
    if (block >= zero_from.load(std::memory_order_acquire)) {  // released by a shrink
      std::memset(out.data(), 0, out.size());
      return Status::Ok();
    }
    return Unprefixed(block, snapshots_->Get()->ReadBlock(id_, block, out));
  }
  bool MapsBlocks() const override { return map_; }
  Result<std::optional<pager::FileRange>> MapBlock(uint64_t block) override {
    std::optional<pager::FileRange> none;
    if (block >= zero_from.load(std::memory_order_acquire)) return none;  // a copy: zeros of this transaction
    // The session releases a snapshot only after it has dropped the blocks changed since
    // (Session::Refresh), so the range stays valid for as long as the pager shows it.
    const std::shared_ptr<storage::Snapshot> snap = snapshots_->Get();
    Result<std::optional<storage::BlockFileRange>> found = snap->MappableBlock(id_, block, block_size_);
    if (!found.ok()) return Unprefixed(block, found.status());
    if (!*found) return none;
    pager::FileRange r{(*found)->fd, (*found)->offset, (*found)->length, nullptr};
    if (verify_ && r.length > 0) r.check = std::make_shared<Check>(this, block, snap, std::move(**found));
    return std::optional<pager::FileRange>(std::move(r));
  }
  // Blocks at or past this read as zeros: the array shrank below them in this transaction,
  // and the commit will delete them from storage.
  std::atomic<uint64_t> zero_from{kNoZeroFrom};

 private:
  // A mapped block's check. It holds the snapshot: the pages it reads cannot be reused until it
  // is done.
  class Check : public pager::RangeCheck {
   public:
    Check(const ArraySource* source, uint64_t block, std::shared_ptr<storage::Snapshot> snap, storage::BlockFileRange range)
        : source_(source), block_(block), snap_(std::move(snap)), checker_(std::move(range)) {}
    void Update(std::span<const std::byte> piece) noexcept override { checker_.Update(piece); }
    Status Finish() override { return source_->Unprefixed(block_, checker_.Finish()); }

   private:
    const ArraySource* source_;
    uint64_t block_;
    std::shared_ptr<storage::Snapshot> snap_;
    storage::BlockRangeChecker checker_;
  };

  // The pager names the array and the block; drops the store's "array #id block n: " prefix.
  Status Unprefixed(uint64_t block, Status st) const {
    if (st.ok()) return st;
    const std::string prefix = "array #" + std::to_string(id_) + " block " + std::to_string(block) + ": ";
    if (st.message().starts_with(prefix)) return Status(st.code(), st.message().substr(prefix.size()));
    return st;
  }

  std::shared_ptr<SnapshotHolder> snapshots_;
  uint64_t id_;
  uint64_t block_size_;
  bool map_, verify_;
};

class MappingBacking final : public Backing {
 public:
  explicit MappingBacking(std::shared_ptr<pager::Mapping> m) : mapping_(std::move(m)) {}
  Status Load(const std::byte* begin, const std::byte* end) const override {
    if (begin == end) return Status::Ok();
    return mapping_->Load(static_cast<size_t>(begin - mapping_->data()), static_cast<size_t>(end - begin));
  }
  // Copies the bytes [begin, end) of the mapping to `dst` (View::ReadInto): each whole block that
  // the pager has no page for is read straight from the store into `dst`; the rest is loaded
  // (errors returned) and copied from the mapping.
  Status CopyOut(const std::byte* begin, const std::byte* end, std::byte* dst) const override {
    const size_t bs = mapping_->file()->block_size();
    for (size_t off = static_cast<size_t>(begin - mapping_->data()), stop = static_cast<size_t>(end - mapping_->data());
         off < stop;) {
      const size_t n = std::min(stop, (off / bs + 1) * bs) - off;
      bool read = false;
      if (n == bs) {
        BA_ASSIGN_OR_RETURN(read, mapping_->ReadAbsent(off / bs, std::span<std::byte>(dst, bs)));
      }
      if (!read) {
        BA_RETURN_IF_ERROR(mapping_->Load(off, n));
        std::memcpy(dst, mapping_->data() + off, n);
      }
      dst += n;
      off += n;
    }
    return Status::Ok();
  }
  Result<WriteReservation> ReserveWrite(const std::byte* begin, const std::byte* end, int64_t elements) const override {
    if (begin == end || elements <= 0) return WriteReservation();
    // An element never straddles two blocks (block sizes are multiples of 4096, item sizes
    // divide it), so `elements` bounds the blocks written.
    const uint64_t bs = mapping_->file()->block_size();
    const uint64_t first = mapping_->first_block() + static_cast<uint64_t>(begin - mapping_->data()) / bs;
    const uint64_t last = mapping_->first_block() + (static_cast<uint64_t>(end - mapping_->data()) - 1) / bs;
    BA_ASSIGN_OR_RETURN(pager::WriteReservation r,
                        mapping_->file()->ReserveForWrite(first, last + 1, static_cast<uint64_t>(elements)));
    return WriteReservation(std::make_shared<pager::WriteReservation>(std::move(r)));
  }

 private:
  std::shared_ptr<pager::Mapping> mapping_;
};

}  // namespace

class ArrayState {
 public:
  uint64_t id = 0;
  std::shared_ptr<ArraySource> source;
  std::shared_ptr<pager::PagedFile> file;
  std::weak_ptr<Session> session;

  mutable std::mutex mu;  // guards the fields below
  std::string name, committed_name;
  ArrayMeta meta, committed;
  bool exists = true, committed_exists = false, created = false, meta_dirty = false;
  // The whole-array mapping: blocks [0, size / block_size). Held by the views made from it and,
  // while it is among the recently made ones, by the Session (Session::KeepMapping).
  std::weak_ptr<pager::Mapping> whole;

  // Sets the shape and tells the pager where the array ends (read-ahead stops there).
  // REQUIRES: mu held.
  void SetMeta(const ArrayMeta& m) {
    meta = m;
    file->SetExtent(BlockCount(meta));
  }

  Status CheckExists() const {
    if (!exists) {
      return NotFound("array '" + name + "' no longer exists (dropped, or created in an aborted transaction)");
    }
    return Status::Ok();
  }
};

struct NextState;

class Session {
 public:
  std::string path;
  Options options;
  std::shared_ptr<storage::BlockStore> store;
  std::shared_ptr<pager::Pager> pager;
  std::shared_ptr<SnapshotHolder> snapshots = std::make_shared<SnapshotHolder>();

  std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<ArrayState>> arrays;  // every array this handle touched
  // Every name an array of `arrays` has had (possibly stale: Find checks), so that Find costs
  // O(1) and not O(arrays touched). Every assignment of a name adds to it (IndexName).
  std::unordered_multimap<std::string, uint64_t> name_index;
  void IndexName(const std::string& name, uint64_t id) {
    auto [lo, hi] = name_index.equal_range(name);
    for (auto it = lo; it != hi; ++it) {
      if (it->second == id) return;
    }
    name_index.emplace(name, id);
  }
  Status failed;  // sticky: a conflict ends the transaction until Abort
  // The attribute records this transaction set or deleted (attr_access.h).
  AttrChanges attr_changes;
  // The groups DropGroup dropped: a name or an attribute that another transaction puts below
  // one meanwhile makes this commit conflict, so that none outlives its group unseen.
  std::set<std::string> dropped_groups;
  // A commit landed but the next snapshot could not be opened: the handle still reads its
  // old snapshot, and only Abort (a successful Refresh) brings it up to date.
  bool stale = false;
  std::mt19937_64 ids{std::random_device{}()};

  // Following commits (docs/transactions.md, "Following a growing dataset"): the board that
  // wakes waiters (shared for a database on a local file, private otherwise) and this handle's
  // entry in it. Set once at open. board_error: why the shared board could not be opened
  // (WaitForCommit reports it).
  std::shared_ptr<CommitBoard> board;
  std::unique_ptr<CommitBoard::Handle> board_entry;
  Status board_error;
  // Updates this handle's entry after a boundary (cheap relaxed stores).
  void Announce();

  // Keeps `m` alive, among the kKeptMappings most recently made whole-array mappings, so that
  // the next views of its array reuse it. Older ones are released when no view holds them: each
  // costs a memory map entry and a fault range, and a handle may touch any number of arrays.
  void KeepMapping(std::shared_ptr<pager::Mapping> m);
  std::shared_ptr<ArraySource> NewSource(uint64_t id, uint64_t block_size) {
    return std::make_shared<ArraySource>(snapshots, id, block_size, options.map_reads && store->MapsBlocks(),
                                         options.verify_reads);
  }
  static constexpr size_t kKeptMappings = 256;
  std::mutex kept_mu_;  // a leaf lock: guards kept_
  std::deque<std::shared_ptr<pager::Mapping>> kept_;

  // REQUIRES: mu_ held.
  Result<std::shared_ptr<ArrayState>> Find(const std::string& name);
  Result<std::shared_ptr<ArrayState>> Load(uint64_t id, const std::string& name);
  // A boundary: the latest snapshot, with the cache and metadata brought up to it. All or
  // nothing: on failure the handle keeps its old snapshot.
  Status Refresh();
  Result<NextState> PrepareRefresh(const storage::WriteBatch* own, storage::CommitId own_id);
  void ApplyRefresh(const NextState& next);
  void AbortLocked();
  void MarkCommitted();
};

void Session::KeepMapping(std::shared_ptr<pager::Mapping> m) {
  std::shared_ptr<pager::Mapping> released;  // destroyed after kept_mu_ is unlocked
  std::lock_guard lock(kept_mu_);
  kept_.push_back(std::move(m));
  if (kept_.size() > kKeptMappings) {
    released = std::move(kept_.front());
    kept_.pop_front();
  }
}

Result<std::shared_ptr<ArrayState>> Session::Load(uint64_t id, const std::string& name) {
  auto snap = snapshots->Get();
  BA_ASSIGN_OR_RETURN(auto record, snap->GetMeta(ArrayKey(id)));
  if (!record) return Corruption("array '" + name + "' is in the catalog but its record " + ArrayKey(id) + " is missing");
  BA_ASSIGN_OR_RETURN(ArrayMeta meta, DecodeMeta(*record, "array '" + name + "'"));
  auto state = std::make_shared<ArrayState>();
  state->id = id;
  state->name = state->committed_name = name;
  IndexName(name, id);
  state->committed = meta;
  state->committed_exists = true;
  state->source = NewSource(id, meta.block_size);
  BA_ASSIGN_OR_RETURN(state->file, pager->OpenFile(state->source, meta.block_size, "array '" + name + "'"));
  state->SetMeta(meta);
  arrays[id] = state;
  return state;
}

Result<std::shared_ptr<ArrayState>> Session::Find(const std::string& name) {
  auto [lo, hi] = name_index.equal_range(name);
  for (auto it = lo; it != hi;) {
    auto a = arrays.find(it->second);
    if (a == arrays.end()) {  // no longer touched by this handle
      it = name_index.erase(it);
      continue;
    }
    std::lock_guard lock(a->second->mu);
    if (a->second->exists && a->second->name == name) return a->second;
    ++it;
  }
  auto snap = snapshots->Get();
  BA_ASSIGN_OR_RETURN(auto idstr, snap->GetMeta(NameKey(name)));
  if (!idstr) return NotFound("no array named '" + name + "' in " + path);
  BA_ASSIGN_OR_RETURN(const uint64_t id, NameRecordId(name, *idstr));
  if (arrays.count(id)) {  // renamed or dropped in this transaction
    return NotFound("no array named '" + name + "' in this transaction (renamed or dropped)");
  }
  return Load(id, name);
}

// The next transaction's state, read in full before any of it is applied: a read that fails
// leaves the handle in its old state, which is consistent (a half-applied boundary would leave
// stale blocks, shapes or names cached for good, since the next boundary diffs from the new
// snapshot).
struct NextState {
  std::shared_ptr<storage::Snapshot> snap;
  storage::ChangeSet changes;
  std::set<std::pair<uint64_t, uint64_t>> mine;             // own blocks whose cached pages stay
  std::map<uint64_t, std::optional<ArrayMeta>> metas;        // reloaded records; nullopt: dropped
  std::optional<std::map<uint64_t, std::string>> names;      // every array's name, when any changed
};

// `own`: the batch this handle just committed as `own_id`. Its blocks are cached as of own_id,
// which is correct unless another writer changed them in (own_id, new snapshot]: other
// commits land between this handle's commit and its OpenSnapshot.
Result<NextState> Session::PrepareRefresh(const storage::WriteBatch* own, storage::CommitId own_id) {
  NextState next;
  BA_ASSIGN_OR_RETURN(next.snap, store->OpenSnapshot());
  BA_ASSIGN_OR_RETURN(next.changes, next.snap->ChangesSince(snapshots->Get()->commit_id()));
  const storage::ChangeSet& changes = next.changes;
  if (own) {
    BA_ASSIGN_OR_RETURN(storage::ChangeSet since_own, next.snap->ChangesSince(own_id));
    if (since_own.complete) {
      for (const auto& p : own->puts()) {
        if (!since_own.BlockChanged(p.array, p.index)) next.mine.emplace(p.array, p.index);
      }
    }
  }
  for (const auto& [id, s] : arrays) {
    if (changes.complete && !changes.MetaChanged(ArrayKey(id))) continue;
    BA_ASSIGN_OR_RETURN(auto record, next.snap->GetMeta(ArrayKey(id)));
    std::optional<ArrayMeta>& meta = next.metas[id];
    if (record) {
      std::lock_guard lock(s->mu);
      BA_ASSIGN_OR_RETURN(meta, DecodeMeta(*record, "array '" + s->name + "'"));
    }
  }
  bool names_changed = !changes.complete;
  for (const std::string& k : changes.meta_keys) names_changed |= k.starts_with("n/");
  if (names_changed) {  // renames by others: find each array's current name
    auto& names = next.names.emplace();
    Status bad;
    BA_RETURN_IF_ERROR(next.snap->ForEachMeta("n/", [&](std::string_view k, std::string_view v) {
      Result<uint64_t> id = NameRecordId(k.substr(2), v);
      if (!id.ok()) {
        bad = id.status();
        return false;
      }
      names[*id] = std::string(k.substr(2));
      return true;
    }));
    BA_RETURN_IF_ERROR(bad);
  }
  return next;
}

// Brings the cache and metadata to `next` (whose snapshot is current already); cannot fail.
void Session::ApplyRefresh(const NextState& next) {
  const storage::ChangeSet& changes = next.changes;
  for (auto it = arrays.begin(); it != arrays.end();) {
    const auto keep = it->second;  // alive while its lock is held, even when erased from the map
    ArrayState& s = *keep;
    if (!changes.complete) {
      s.file->InvalidateAll();
    } else {
      for (const storage::BlockRange& r : changes.blocks) {
        if (r.array != s.id) continue;
        if (r.end - r.first <= 1024) {
          for (uint64_t b = r.first; b < r.end; ++b) {
            if (!next.mine.count({s.id, b})) s.file->Invalidate(b);
          }
        } else {
          s.file->InvalidateRange(r.first, r.end);  // a deleted range: cost ~ resident pages
        }
      }
    }
    if (auto m = next.metas.find(s.id); m != next.metas.end()) {
      std::lock_guard lock(s.mu);
      if (!m->second) {  // dropped by another transaction
        s.exists = s.committed_exists = false;
        s.file->InvalidateAll();
        it = arrays.erase(it);
        continue;
      }
      s.committed = *m->second;
      s.SetMeta(s.committed);
      s.file->Truncate(BlockCount(s.meta));
    }
    if (next.names) {
      std::lock_guard lock(s.mu);
      if (auto n = next.names->find(s.id); n != next.names->end()) {
        s.name = s.committed_name = n->second;
        IndexName(s.name, s.id);
      }
    }
    ++it;
  }
}

Status Session::Refresh() {
  BA_ASSIGN_OR_RETURN(NextState next, PrepareRefresh(nullptr, 0));
  // Blocks mapped from the store's file stay valid while the snapshot they came from is open:
  // it is released only once the blocks changed since are dropped (docs/pager.md, "Mapped blocks").
  const std::shared_ptr<storage::Snapshot> old = snapshots->Get();
  snapshots->Set(next.snap);  // first: reloads from here on read the new state (W5)
  ApplyRefresh(next);
  stale = false;
  Announce();
  return Status::Ok();
}

void Session::Announce() {
  if (!board_entry) return;
  const pager::PagerStats st = pager->stats();
  board_entry->Update(snapshots->Get()->commit_id(), st.resident_bytes, st.dirty_bytes, st.faults);
}

// After a successful commit: what the transaction did is now the committed state.
void Session::MarkCommitted() {
  for (auto it = arrays.begin(); it != arrays.end();) {
    const auto keep = it->second;  // alive while its lock is held, even when erased from the map
    ArrayState& a = *keep;
    a.source->zero_from.store(kNoZeroFrom);
    std::lock_guard l(a.mu);
    if (!a.exists) {
      a.committed_exists = false;
      a.file->InvalidateAll();
      it = arrays.erase(it);
      continue;
    }
    a.file->Truncate(BlockCount(a.meta));  // stale writes past the end were not stored
    a.committed = a.meta;
    a.committed_name = a.name;
    a.committed_exists = true;
    a.created = a.meta_dirty = false;
    ++it;
  }
  attr_changes.clear();
  dropped_groups.clear();
}

void Session::AbortLocked() {
  // W3: dirty pages dropped. A page that could not be unmapped (map entries exhausted) stays
  // and is retried at the next boundary; commits are refused until then.
  const Status dropped = pager->Abort();
  for (auto it = arrays.begin(); it != arrays.end();) {
    const auto keep = it->second;  // alive while its lock is held, even when erased from the map
    ArrayState& s = *keep;
    const uint64_t zf = s.source->zero_from.exchange(kNoZeroFrom);
    if (zf != kNoZeroFrom) s.file->Truncate(zf);  // cached zeros past a shrink are not committed data
    std::lock_guard lock(s.mu);
    if (s.created) {
      s.exists = false;
      s.file->InvalidateAll();
      it = arrays.erase(it);
      continue;
    }
    s.SetMeta(s.committed);
    s.name = s.committed_name;
    s.exists = s.committed_exists;
    s.meta_dirty = false;
    ++it;
  }
  attr_changes.clear();
  dropped_groups.clear();
  failed = dropped.WithContext("abort");
}

}  // namespace internal

using internal::ArrayMeta;
using internal::ArrayState;
using internal::Session;

namespace {

// The store names arrays by id ("array #123"): put the names this handle knows in.
Status NameArrays(const Status& st, Session& s) {
  std::string m = st.message();
  for (auto& [id, state] : s.arrays) {
    const std::string key = "array #" + std::to_string(id);
    for (size_t at = m.find(key); at != std::string::npos; at = m.find(key, at)) {
      // Only whole ids: the next character must not be a digit.
      if (at + key.size() < m.size() && std::isdigit(static_cast<unsigned char>(m[at + key.size()]))) {
        at += key.size();
        continue;
      }
      std::lock_guard l(state->mu);
      const std::string name = "array '" + state->name + "'";
      m.replace(at, key.size(), name);
      at += name.size();
    }
  }
  return Status(st.code(), m);
}

// kFailedPrecondition for a change on a handle opened with Options::read_only.
Status CheckWritable(const Session& s, const std::string& what) {
  if (!s.options.read_only) return Status::Ok();
  return FailedPrecondition(what + ": " + s.path + " was opened read-only (Options::read_only)");
}

}  // namespace

// ---- Attributes (attr_access.h) ---------------------------------------------------------------

Status internal::WithAttrContext(const std::weak_ptr<Session>& session, const std::shared_ptr<ArrayState>& array,
                                 const std::string& group, bool write, const std::string& what,
                                 const std::function<Status(AttrContext&)>& fn) {
  auto s = session.lock();
  if (!s) return FailedPrecondition("the database handle was closed");
  AttrContext ctx;
  if (array) {
    std::lock_guard l(array->mu);
    BA_RETURN_IF_ERROR(array->CheckExists());
    ctx.owner = "array '" + array->name + "'";
    ctx.array = array->id;
  } else {
    ctx.owner = group.empty() ? "database " + s->path : "group '" + group + "'";
  }
  if (write) BA_RETURN_IF_ERROR(CheckWritable(*s, what + " of " + ctx.owner));
  std::lock_guard lock(s->mu_);
  if (array) {  // again under the handle's lock: a Drop may have come in between
    std::lock_guard l(array->mu);
    BA_RETURN_IF_ERROR(array->CheckExists());
  }
  ctx.snapshot = s->snapshots->Get();
  ctx.changes = &s->attr_changes;
  ctx.dropped_groups = &s->dropped_groups;
  return fn(ctx);
}

Attrs Array::attrs() const {
  return Attrs(state_->session, state_, internal::ArrayAttrPrefix(state_->id), "");
}

Attrs Database::attrs() { return Attrs(session_, nullptr, internal::GroupAttrPrefix(""), ""); }

Attrs Database::GroupAttrs(std::string_view group) {
  std::string g(group);
  while (!g.empty() && g.front() == '/') g.erase(g.begin());
  while (!g.empty() && g.back() == '/') g.pop_back();
  return Attrs(session_, nullptr, internal::GroupAttrPrefix(g), g);
}

// ---- Database --------------------------------------------------------------------------------

Result<Database> Database::Open(const std::string& path, const Options& options) {
  BA_RETURN_IF_ERROR(internal::CheckPath(path, "database path"));
  BA_RETURN_IF_ERROR(internal::CheckPath(options.spill_dir, "spill_dir"));
  std::shared_ptr<storage::BlockStore> store;
  const bool postgres = path.starts_with("postgresql://") || path.starts_with("postgres://");
  if (path == "memory:") {
    store = storage::NewMemoryStore();
  } else if (postgres) {
    storage::PostgresOptions po;
    po.durable = options.durability == Durability::kDurable;
    po.create_if_missing = options.create_if_missing;
    po.read_only = options.read_only;
    BA_ASSIGN_OR_RETURN(store, storage::OpenPostgresStore(path, po));
  } else {
    storage::LmdbOptions lo;
    lo.durable = options.durability == Durability::kDurable;
    lo.create_if_missing = options.create_if_missing;
    lo.read_only = options.read_only;
    BA_ASSIGN_OR_RETURN(store, storage::OpenLmdbStore(path, lo));
  }
  Options o = options;
  if (o.spill_dir.empty()) o.spill_dir = path == "memory:" || postgres ? "/tmp" : path;
  BA_ASSIGN_OR_RETURN(Database db, internal::OpenDatabaseOnStore(std::move(store), path, o));
  if (path != "memory:" && !postgres) {
    // Other processes on this host commit to the same file: share the board with them.
    Session& s = *db.session_;
    const std::string data_file = path + "/data.mdb";
    auto entry = internal::CommitBoard::Join(data_file, db.snapshot_commit());
    if (entry.ok()) {
      s.board_entry = std::move(*entry);
      s.board = s.board_entry->board();
      s.Announce();
    } else {
      if (o.logger) {
        o.logger->warn("{}: this handle is not listed among the database's handles: {}", path,
                       entry.status().ToString());
      }
      // Still wake and wait with the others (all slots may be taken by live handles).
      auto board = internal::CommitBoard::OpenForFile(data_file, /*create=*/true);
      if (board.ok()) {
        s.board = *board;
      } else {
        s.board = nullptr;  // a private board would never hear of other processes' commits
        s.board_error = board.status().WithContext("follow commits of " + path);
        if (o.logger) o.logger->warn("{}", s.board_error.ToString());
      }
    }
  }
  return db;
}

Result<Database> internal::OpenDatabaseOnStore(std::shared_ptr<storage::BlockStore> store,
                                               const std::string& name, const Options& options) {
  auto s = std::make_shared<Session>();
  s->path = name;
  s->options = options;
  s->store = std::move(store);
  pager::PagerOptions po;
  po.cache_bytes = options.cache_bytes;
  po.loader_threads = options.loader_threads;
  po.readahead_blocks = options.readahead_blocks;
  po.spill_dir = options.spill_dir.empty() ? "/tmp" : options.spill_dir;
  po.logger = options.logger;
  po.prefault_cache = options.prefault_cache;
  BA_ASSIGN_OR_RETURN(s->pager, pager::Pager::Create(po));
  BA_ASSIGN_OR_RETURN(auto snap, s->store->OpenSnapshot());
  s->snapshots->Set(std::move(snap));
  // Only this process can reach the store given here: a board of its own wakes its waiters.
  s->board = CommitBoard::Private();
  return Database(std::move(s));
}

Database::Database(Database&&) noexcept = default;
Database& Database::operator=(Database&& other) noexcept {
  if (this != &other) {
    if (session_) Abort();
    session_ = std::move(other.session_);
  }
  return *this;
}
Database::~Database() {
  if (session_) Abort();
}

const std::string& Database::path() const { return session_->path; }

uint64_t Database::snapshot_commit() const { return session_->snapshots->Get()->commit_id(); }

CacheStats Database::cache_stats() const {
  auto p = session_->pager->stats();
  return CacheStats{p.faults,         p.loads,        p.readahead_loads, p.evictions,        p.spills,
                    p.resident_bytes, p.dirty_blocks, p.file_maps,       p.file_mapped_bytes};
}

Result<Array> Database::Create(const std::string& name, std::vector<int64_t> shape,
                               std::string_view dtype, const ArrayOptions& options) {
  BA_ASSIGN_OR_RETURN(DType d, DType::Parse(dtype));
  return Create(name, std::move(shape), d, options);
}

Result<Array> Database::Create(const std::string& name, std::vector<int64_t> shape, const DType& dtype,
                               const ArrayOptions& options) {
  Session& s = *session_;
  BA_RETURN_IF_ERROR(CheckWritable(s, "create array '" + name + "'"));
  BA_RETURN_IF_ERROR(internal::CheckNewName(name));
  BA_RETURN_IF_ERROR(CheckedNbytes(shape, dtype.itemsize()).status());
  const long page = sysconf(_SC_PAGESIZE);
  if (options.block_size == 0 || options.block_size % page != 0 || options.block_size > internal::kMaxBlockSize) {
    return InvalidArgument("block size " + std::to_string(options.block_size) +
                           ": must be a multiple of the page size (" + std::to_string(page) +
                           ") and at most 1 GiB");
  }
  if (options.order != Order::kC && options.order != Order::kF) return InvalidArgument("order must be C or F");
  std::lock_guard lock(s.mu_);
  auto existing = s.Find(name);
  if (existing.ok()) return AlreadyExists("an array named '" + name + "' already exists in " + s.path);
  if (existing.status().code() != Code::kNotFound) return existing.status();
  auto snap = s.snapshots->Get();
  uint64_t id = 0;
  for (;;) {  // a random id no array has
    id = s.ids();
    if (id == 0 || s.arrays.count(id)) continue;
    BA_ASSIGN_OR_RETURN(auto taken, snap->GetMeta(internal::ArrayKey(id)));
    if (!taken) break;
  }
  auto state = std::make_shared<ArrayState>();
  state->id = id;
  state->session = session_;
  state->name = name;
  s.IndexName(name, id);
  state->created = state->meta_dirty = true;
  state->source = s.NewSource(id, options.block_size);
  BA_ASSIGN_OR_RETURN(state->file, s.pager->OpenFile(state->source, options.block_size, "array '" + name + "'"));
  state->SetMeta(ArrayMeta{dtype, options.order, options.block_size, std::move(shape)});
  s.arrays[id] = state;
  return Array(state);
}

Result<Array> Database::Get(const std::string& name) {
  std::lock_guard lock(session_->mu_);
  BA_ASSIGN_OR_RETURN(auto state, session_->Find(name));
  state->session = session_;
  return Array(state);
}

Result<bool> Database::Contains(const std::string& name) {
  std::lock_guard lock(session_->mu_);
  auto r = session_->Find(name);
  if (r.ok()) return true;
  if (r.status().code() == Code::kNotFound) return false;
  return r.status();
}

Result<std::vector<std::string>> Database::Names() { return Names(""); }

Result<std::vector<std::string>> Database::Names(std::string_view prefix) {
  Session& s = *session_;
  std::lock_guard lock(s.mu_);
  std::set<std::string> names;
  Status bad;
  BA_RETURN_IF_ERROR(s.snapshots->Get()->ForEachMeta("n/" + std::string(prefix), [&](std::string_view k, std::string_view v) {
    Result<uint64_t> id = internal::NameRecordId(k.substr(2), v);
    if (!id.ok()) {
      bad = id.status();
      return false;
    }
    if (!s.arrays.count(*id)) names.emplace(k.substr(2));
    return true;
  }));
  BA_RETURN_IF_ERROR(bad);
  for (auto& [id, st] : s.arrays) {
    std::lock_guard l(st->mu);
    if (st->exists && st->name.starts_with(prefix)) names.insert(st->name);
  }
  return std::vector<std::string>(names.begin(), names.end());
}

Result<std::vector<Database::GroupEntry>> Database::ListLevel(const std::string& prefix, size_t limit) {
  Session& s = *session_;
  std::lock_guard lock(s.mu_);
  std::set<std::pair<std::string, bool>> entries;
  // Adds the entry of `rel` (a name relative to the prefix); returns its sub-group, if any.
  auto add = [&](std::string_view rel) -> std::optional<std::string> {
    const size_t slash = rel.find('/');
    if (slash == std::string_view::npos) {
      entries.emplace(std::string(rel), false);
      return std::nullopt;
    }
    std::string sub(rel.substr(0, slash));
    entries.emplace(sub, true);
    return sub;
  };
  auto full = [&] { return limit != 0 && entries.size() >= limit; };
  // This handle's arrays as this transaction has them (created, renamed, dropped).
  for (auto& [id, st] : s.arrays) {
    std::lock_guard l(st->mu);
    if (st->exists && st->name.starts_with(prefix)) add(std::string_view(st->name).substr(prefix.size()));
  }
  // The snapshot's other names. Past a sub-group "sub/" the scan starts again at "sub0" ('0'
  // follows '/'), so that the names inside it are not read. It starts one past the prefix
  // itself: a listing of one level is not a listing of the whole "n/" class, which the store
  // reads whole to check against its tally.
  const std::string key_prefix = internal::NameKey(prefix);
  std::string from = key_prefix + '\0';
  for (bool again = !full(); again;) {
    again = false;
    Status bad;
    BA_RETURN_IF_ERROR(s.snapshots->Get()->ForEachMetaFrom(key_prefix, from, [&](std::string_view k, std::string_view v) {
      Result<uint64_t> id = internal::NameRecordId(k.substr(2), v);
      if (!id.ok()) {
        bad = id.status();
        return false;
      }
      if (s.arrays.count(*id)) return true;  // listed above, under its current name
      const std::optional<std::string> sub = add(k.substr(key_prefix.size()));
      if (full()) return false;
      if (sub) {
        from = key_prefix + *sub + '0';
        again = true;
        return false;
      }
      return true;
    }));
    BA_RETURN_IF_ERROR(bad);
  }
  std::vector<GroupEntry> out;
  out.reserve(entries.size());
  for (const auto& [name, is_group] : entries) out.push_back(GroupEntry{name, is_group});
  return out;
}

Status Database::Drop(const std::string& name) {
  BA_RETURN_IF_ERROR(CheckWritable(*session_, "drop array '" + name + "'"));
  std::lock_guard lock(session_->mu_);
  BA_ASSIGN_OR_RETURN(auto state, session_->Find(name));
  std::lock_guard l(state->mu);
  state->exists = false;
  return Status::Ok();
}

Status Database::Rename(const std::string& from, const std::string& to) {
  Session& s = *session_;
  BA_RETURN_IF_ERROR(CheckWritable(s, "rename array '" + from + "'"));
  BA_RETURN_IF_ERROR(internal::CheckNewName(to));
  std::lock_guard lock(s.mu_);
  BA_ASSIGN_OR_RETURN(auto state, s.Find(from));
  if (from == to) return Status::Ok();
  auto clash = s.Find(to);
  if (clash.ok()) return AlreadyExists("an array named '" + to + "' already exists");
  if (clash.status().code() != Code::kNotFound) return clash.status();
  std::lock_guard l(state->mu);
  state->name = to;
  s.IndexName(to, state->id);
  state->meta_dirty = true;
  return Status::Ok();
}

Status Database::Commit() {
  Session& s = *session_;
  std::lock_guard lock(s.mu_);
  if (!s.failed.ok()) {
    return FailedPrecondition("the transaction failed (" + s.failed.ToString() + "); abort it first");
  }
  auto snap = s.snapshots->Get();
  // The attributes of the arrays dropped in this transaction, as of its snapshot (listed before
  // the writeout begins: a failure here leaves everything as it was).
  std::set<uint64_t> gone, dropped;  // not existing in this transaction; of those, committed before
  std::vector<std::string> dropped_attrs;
  for (auto& [id, sp] : s.arrays) {
    std::lock_guard l(sp->mu);
    if (sp->exists) continue;
    gone.insert(id);
    if (!sp->committed_exists) continue;
    dropped.insert(id);
    BA_RETURN_IF_ERROR(snap->ForEachMeta(internal::ArrayAttrPrefix(id), [&](std::string_view k, std::string_view) {
      dropped_attrs.emplace_back(k);
      return true;
    }).WithContext("commit to " + s.path + ": list the attributes of dropped array '" + sp->committed_name + "'"));
  }
  BA_ASSIGN_OR_RETURN(auto writeout, s.pager->BeginWriteout());
  storage::WriteBatch batch(snap->commit_id());
  std::map<const pager::PagedFile*, ArrayState*> by_file;
  bool changed = false;
  // Catalog deletions first, then insertions: a transaction that drops (or renames away) one
  // array and gives its name to another must end with the name, whatever the arrays' ids.
  std::vector<std::pair<std::string, std::string>> name_puts;
  for (auto& [id, sp] : s.arrays) {
    ArrayState& a = *sp;
    std::lock_guard l(a.mu);
    by_file[a.file.get()] = &a;
    if (!a.exists) {
      if (a.committed_exists) {
        batch.DeleteMeta(internal::ArrayKey(id));
        batch.DeleteMeta(internal::NameKey(a.committed_name));
        batch.DeleteBlocks(id, 0, UINT64_MAX);
        changed = true;
      }
      continue;
    }
    if (a.created || a.meta_dirty) {
      batch.PutMeta(internal::ArrayKey(id), internal::EncodeMeta(a.meta));
      if (a.created || a.name != a.committed_name) {
        if (a.committed_exists) batch.DeleteMeta(internal::NameKey(a.committed_name));
        name_puts.emplace_back(internal::NameKey(a.name), internal::Hex(id));
      }
      changed = true;
    }
    const uint64_t zf = a.source->zero_from.load();
    if (zf != internal::kNoZeroFrom && a.committed_exists && zf < internal::BlockCount(a.committed)) {
      batch.DeleteBlocks(id, zf, UINT64_MAX);
      changed = true;
    }
  }
  for (auto& [key, value] : name_puts) batch.PutMeta(std::move(key), std::move(value));
  // Attributes. A dropped array's go with it: those of the snapshot are deleted, and one that
  // another transaction adds meanwhile makes this commit conflict (the prefix check); the
  // other side conflicts on the array's record. Changes to a live array's attributes check its
  // record, so that they conflict with a concurrent drop.
  for (const std::string& key : dropped_attrs) batch.DeleteMeta(key);
  for (uint64_t id : dropped) batch.CheckMetaPrefix(internal::ArrayAttrPrefix(id));
  for (const std::string& group : s.dropped_groups) {
    batch.CheckMetaPrefix(internal::NameKey(group + "/"));
    batch.CheckMetaPrefix(internal::GroupAttrPrefix(group));
    batch.CheckMetaPrefix(internal::SubGroupAttrPrefix(group));
  }
  std::set<uint64_t> attrs_changed;
  for (const auto& [key, change] : s.attr_changes) {
    if (change.array != 0 && gone.count(change.array)) continue;
    if (change.value) {
      batch.PutMeta(key, *change.value);
    } else {
      batch.DeleteMeta(key);
    }
    if (change.array != 0) attrs_changed.insert(change.array);
    changed = true;
  }
  for (uint64_t id : attrs_changed) batch.CheckMeta(internal::ArrayKey(id));
  std::set<uint64_t> written;
  size_t orphans = 0;  // blocks written through views of an array this handle no longer has
  const pager::PagedFile* orphan = nullptr;
  for (size_t i = 0; i < writeout->entries().size(); ++i) {
    const auto& e = writeout->entries()[i];
    auto it = by_file.find(e.file.get());
    if (it == by_file.end()) {
      ++orphans;
      orphan = e.file.get();
      continue;
    }
    ArrayState& a = *it->second;
    std::lock_guard l(a.mu);
    if (!a.exists || e.block >= internal::BlockCount(a.meta)) continue;  // past the end: dropped
    pager::Writeout* w = writeout.get();
    batch.PutBlock(a.id, e.block, a.meta.block_size, [w, i] { return w->Data(i); });
    written.insert(a.id);
    changed = true;
  }
  for (uint64_t id : written) batch.CheckMeta(internal::ArrayKey(id));  // a concurrent resize conflicts
  if (orphans > 0) {  // refused, not dropped silently: the writer believes they are stored
    writeout->Finish(false);
    s.failed = FailedPrecondition(std::to_string(orphans) + " block(s) were written through views of an array that " +
                                  "no longer exists (" + orphan->name() + " when its views were taken; dropped by a " +
                                  "commit, or created in an aborted transaction): they cannot be stored");
    return s.failed;
  }

  if (!changed) {  // nothing to store: the boundary alone
    writeout->Finish(true);
    s.MarkCommitted();
    return s.Refresh().WithContext("begin the next transaction");
  }
  auto r = s.store->Commit(batch);
  if (!r.ok()) {
    writeout->Finish(false);  // W2: everything stays dirty
    Status st = NameArrays(r.status(), s).WithContext("commit to " + s.path);
    if (st.code() == Code::kConflict) s.failed = st;
    if (s.options.logger) s.options.logger->warn("{}", st.ToString());
    return st;
  }
  s.board->Publish(*r);  // wake the followers first: they only read the store
  if (s.options.logger) {
    s.options.logger->debug("committed {} blocks to {} as commit {}", batch.puts().size(), s.path, *r);
  }
  // The commit landed; from here on Commit reports success. The next snapshot becomes current
  // before Finish: until then a load of a written page waits (I10), so no page of this commit
  // can be loaded from the old snapshot and then kept as current.
  Result<internal::NextState> next = s.PrepareRefresh(&batch, *r);
  const std::shared_ptr<storage::Snapshot> old = s.snapshots->Get();  // released last (Refresh)
  if (next.ok()) s.snapshots->Set(next->snap);
  for (auto& [id, a] : s.arrays) a->source->zero_from.store(internal::kNoZeroFrom);  // deleted now
  writeout->Finish(true);
  s.MarkCommitted();
  if (next.ok()) {
    s.ApplyRefresh(*next);
    s.Announce();
    return Status::Ok();
  }
  // The handle cannot move on: it keeps reading its old snapshot, so nothing of this commit
  // may stay cached; Abort tries again. Commits are refused meanwhile.
  for (auto& [id, a] : s.arrays) a->file->InvalidateAll();
  s.stale = true;
  s.failed = next.status().WithContext("commit " + std::to_string(*r) + " to " + s.path +
                                       " landed, but the next transaction could not begin");
  if (s.options.logger) s.options.logger->error("{}", s.failed.ToString());
  return Status::Ok();
}

void Database::Abort() {
  Session& s = *session_;
  std::lock_guard lock(s.mu_);
  s.AbortLocked();
  Status st = s.Refresh();
  if (st.ok()) return;
  // The handle keeps its snapshot, still consistent, unless a landed commit made it stale.
  if (s.stale) s.failed = st.WithContext("abort: the next transaction could not begin");
  if (s.options.logger) s.options.logger->error("abort: {}", st.ToString());
}

Status Database::Sync() { return session_->store->Sync(); }

Result<std::vector<std::string>> Database::ChangedArrays() {
  Session& s = *session_;
  std::lock_guard lock(s.mu_);
  std::set<std::string> names;
  std::map<const pager::PagedFile*, ArrayState*> by_file;
  std::set<uint64_t> attrs_changed;
  for (const auto& [key, change] : s.attr_changes) {
    if (change.array != 0) {
      attrs_changed.insert(change.array);
    } else {
      names.insert(internal::AttrKeyGroup(key) + "/");  // "/": the database's
    }
  }
  for (auto& [id, sp] : s.arrays) {
    ArrayState& a = *sp;
    std::lock_guard l(a.mu);
    by_file[a.file.get()] = &a;
    if (!a.exists) {
      if (a.committed_exists) names.insert(a.committed_name);  // dropped
      continue;
    }
    const uint64_t zf = a.source->zero_from.load();
    const bool shrunk = zf != internal::kNoZeroFrom && a.committed_exists && zf < internal::BlockCount(a.committed);
    if (a.created || a.meta_dirty || shrunk || attrs_changed.count(id)) names.insert(a.name);
  }
  if (s.pager->stats().dirty_blocks > 0) {
    // The dirty blocks, as a commit would list them; Finish(false) leaves them dirty.
    BA_ASSIGN_OR_RETURN(auto writeout, s.pager->BeginWriteout());
    for (const auto& e : writeout->entries()) {
      auto it = by_file.find(e.file.get());
      if (it == by_file.end()) continue;
      ArrayState& a = *it->second;
      std::lock_guard l(a.mu);
      if (a.exists && e.block < internal::BlockCount(a.meta)) names.insert(a.name);
    }
    writeout->Finish(false);
  }
  return std::vector<std::string>(names.begin(), names.end());
}

namespace {

Result<uint64_t> LatestCommit(storage::BlockStore& store) {
  BA_ASSIGN_OR_RETURN(auto snap, store.OpenSnapshot());
  return snap->commit_id();
}

}  // namespace

Result<std::optional<uint64_t>> Database::WaitForCommit(uint64_t after, std::chrono::nanoseconds timeout) const {
  // Not under mu_: only the store and the board are used, both safe from any thread, so this
  // may wait on one thread while another works with the handle.
  Session& s = *session_;
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto deadline = timeout >= Clock::time_point::max() - start ? Clock::time_point::max() : start + timeout;
  // A store shared between hosts notifies by itself (PostgreSQL: LISTEN/NOTIFY).
  Result<std::optional<uint64_t>> by_store = s.store->WaitForCommit(after, timeout);
  if (by_store.ok() || by_store.status().code() != Code::kUnsupported) return by_store;
  if (!s.board) return s.board_error;
  // The store is the truth: commits made before the board existed, by a process killed before it
  // published, or recorded in a stale board of a recreated file are all seen through it.
  uint32_t seen = s.board->sequence();
  BA_ASSIGN_OR_RETURN(uint64_t latest, LatestCommit(*s.store));
  if (latest > after) return std::optional<uint64_t>(latest);
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline) {
      // One last look, for a committer that died between its commit and its wakeup.
      BA_ASSIGN_OR_RETURN(latest, LatestCommit(*s.store));
      if (latest > after) return std::optional<uint64_t>(latest);
      return std::optional<uint64_t>();
    }
    BA_ASSIGN_OR_RETURN(bool woke, s.board->Sleep(seen, deadline - now));
    (void)woke;
    const uint32_t seq = s.board->sequence();
    if (seq == seen) continue;  // a signal, or the timeout: checked above
    seen = seq;
    BA_ASSIGN_OR_RETURN(latest, LatestCommit(*s.store));
    if (latest > after) return std::optional<uint64_t>(latest);
  }
}

Result<std::vector<std::string>> Database::ArraysChangedSince(uint64_t commit) {
  Session& s = *session_;
  std::lock_guard lock(s.mu_);
  auto snap = s.snapshots->Get();
  if (commit >= snap->commit_id()) return std::vector<std::string>();
  BA_ASSIGN_OR_RETURN(storage::ChangeSet changes, snap->ChangesSince(commit));
  // id -> name from the catalog of this snapshot.
  std::map<uint64_t, std::string> names;
  Status bad;
  Status st = snap->ForEachMeta("n/", [&](std::string_view key, std::string_view value) {
    Result<uint64_t> id = internal::NameRecordId(key.substr(2), value);
    if (!id.ok()) {
      bad = id.status();
      return false;
    }
    names[*id] = std::string(key.substr(2));
    return true;
  });
  BA_RETURN_IF_ERROR(st);
  BA_RETURN_IF_ERROR(bad);
  std::set<std::string> changed;
  if (!changes.complete) {  // the log no longer reaches back: every array may have changed
    for (auto& [id, name] : names) changed.insert(name);
    return std::vector<std::string>(changed.begin(), changed.end());
  }
  auto by_id = [&](uint64_t id) {
    auto it = names.find(id);
    if (it != names.end()) changed.insert(it->second);  // else dropped since
  };
  for (const auto& r : changes.blocks) by_id(r.array);
  for (const auto& key : changes.meta_keys) {
    if (key.starts_with("a/")) {
      if (auto id = internal::ParseWhole(std::string_view(key).substr(2), 16)) by_id(*id);
    }
    if (key.starts_with("t/") && key.size() > 18) {  // an attribute: "t/<16 hex digits>/<key>"
      if (auto id = internal::ParseWhole(std::string_view(key).substr(2, 16), 16)) by_id(*id);
    }
    if (key.starts_with("n/")) {  // a rename: the name now in the catalog changed
      const std::string name = key.substr(2);
      for (auto& [id, n] : names) {
        if (n == name) changed.insert(name);
      }
    }
  }
  return std::vector<std::string>(changed.begin(), changed.end());
}

Result<HandlesReport> ListHandles(const std::string& path) {
  if (path.starts_with("postgresql://") || path.starts_with("postgres://") || path == "memory:") {
    return Unsupported("the registry of handles is kept for local (LMDB) databases only; on PostgreSQL, the "
                       "server's pg_stat_activity lists the clients (application_name 'bigarray')");
  }
  BA_RETURN_IF_ERROR(internal::CheckPath(path, "database path"));
  HandlesReport report;
  const std::string data_file = path + "/data.mdb";
  struct stat st;
  if (stat(data_file.c_str(), &st) != 0) {
    return errno == ENOENT ? NotFound("no bigarray database at " + path + " (no data.mdb)")
                           : ErrnoStatus(errno, "stat " + data_file);
  }
  auto board = internal::CommitBoard::OpenForFile(data_file, /*create=*/false);
  if (board.ok()) {
    report.handles = (*board)->Live();
  } else if (board.status().code() != Code::kNotFound) {
    return board.status();
  }
  auto readers = storage::ListLmdbReaders(path);
  if (readers.ok()) {
    for (const auto& [pid, commit] : *readers) report.readers.push_back(ReaderInfo{pid, commit});
    report.readers_complete = true;
  }
  return report;
}

// ---- Array -----------------------------------------------------------------------------------

const std::string& Array::name() const { return state_->name; }
const DType& Array::dtype() const { return state_->meta.dtype; }
Order Array::order() const { return state_->meta.order; }
uint64_t Array::block_size() const { return state_->meta.block_size; }

std::vector<int64_t> Array::shape() const {
  std::lock_guard l(state_->mu);
  return state_->meta.shape;
}
std::vector<int64_t> Array::strides() const {
  std::lock_guard l(state_->mu);
  return ContiguousStrides(state_->meta.shape, state_->meta.dtype.itemsize(), state_->meta.order == Order::kF);
}
int Array::ndim() const { return static_cast<int>(shape().size()); }
int64_t Array::size() const {
  int64_t n = 1;
  for (int64_t d : shape()) n *= d;
  return n;
}
int64_t Array::itemsize() const { return state_->meta.dtype.itemsize(); }
int64_t Array::nbytes() const { return size() * itemsize(); }
Result<int64_t> Array::len() const {
  auto s = shape();
  if (s.empty()) return InvalidArgument("len() of a 0-d array");
  return s[0];
}

namespace {

// The whole-array mapping, grown when the array outgrew it (old views keep the old one).
// REQUIRES: a.mu held.
Result<std::shared_ptr<pager::Mapping>> WholeMapping(ArrayState& a) {
  const uint64_t blocks = std::max<uint64_t>(internal::BlockCount(a.meta), 1);
  auto whole = a.whole.lock();
  if (whole && whole->size() / a.meta.block_size >= blocks) return whole;
  // Room to grow: appends then reuse the mapping (and the views' addresses stay put).
  uint64_t want = blocks + std::max<uint64_t>(blocks / 2, 16);
  auto m = a.file->Map(0, want);
  if (!m.ok()) m = a.file->Map(0, blocks);
  if (!m.ok()) return m.status();
  a.whole = *m;
  if (auto session = a.session.lock()) session->KeepMapping(*m);
  return *m;
}

}  // namespace

Result<View> Array::view() const {
  ArrayState& a = *state_;
  std::lock_guard l(a.mu);
  BA_RETURN_IF_ERROR(a.CheckExists());
  auto m = WholeMapping(a);
  if (!m.ok()) {
    return Status(m.status().code(), "array '" + a.name + "' (" + std::to_string(*CheckedNbytes(a.meta.shape, itemsize())) +
                                         " bytes) does not fit the address space: " + m.status().message() +
                                         "; index a part of it instead");
  }
  View v;
  v.backing_ = std::make_shared<internal::MappingBacking>(*m);
  v.data_ = (*m)->data();
  v.dtype_ = a.meta.dtype;
  v.shape_ = a.meta.shape;
  v.strides_ = ContiguousStrides(a.meta.shape, a.meta.dtype.itemsize(), a.meta.order == Order::kF);
  return v;
}

Result<View> Array::Index(std::span<const IndexItem> index) const {
  ArrayState& a = *state_;
  std::lock_guard l(a.mu);
  BA_RETURN_IF_ERROR(a.CheckExists());
  const int64_t isz = a.meta.dtype.itemsize();
  internal::Layout base{0, a.meta.shape, ContiguousStrides(a.meta.shape, isz, a.meta.order == Order::kF)};
  BA_ASSIGN_OR_RETURN(internal::Layout lay, internal::ApplyIndex(base, index));
  std::shared_ptr<pager::Mapping> m;
  int64_t first_byte = 0;
  if (auto whole = WholeMapping(a); whole.ok()) {
    m = *whole;
  } else {
    // Too large to map whole: map just the blocks this view covers (A4).
    auto [lo, hi] = internal::LayoutExtent(lay, isz);
    const uint64_t bs = a.meta.block_size;
    const uint64_t first = static_cast<uint64_t>(lo) / bs;
    const uint64_t end = std::max<uint64_t>((static_cast<uint64_t>(hi) + bs - 1) / bs, first + 1);
    auto part = a.file->Map(first, end - first);
    if (!part.ok()) {
      return Status(part.status().code(), "a view of " + std::to_string(hi - lo) + " bytes of array '" +
                                              a.name + "': " + part.status().message());
    }
    m = *part;
    first_byte = static_cast<int64_t>(first * bs);
  }
  View v;
  v.backing_ = std::make_shared<internal::MappingBacking>(m);
  v.data_ = m->data() + (lay.offset - first_byte);
  v.dtype_ = a.meta.dtype;
  v.shape_ = std::move(lay.shape);
  v.strides_ = std::move(lay.strides);
  return v;
}

Status Array::Read(std::span<const IndexItem> index, const View& out) const {
  BA_ASSIGN_OR_RETURN(View src, Index(index));
  return src.ReadInto(out);
}

Status Array::Resize(std::vector<int64_t> shape) {
  auto session = state_->session.lock();
  if (!session) return FailedPrecondition("the database handle of array '" + name() + "' was closed");
  BA_RETURN_IF_ERROR(CheckWritable(*session, "resize array '" + name() + "'"));
  std::lock_guard lock(session->mu_);
  ArrayState& a = *state_;
  std::unique_lock l(a.mu);
  BA_RETURN_IF_ERROR(a.CheckExists());
  const int64_t isz = a.meta.dtype.itemsize();
  BA_ASSIGN_OR_RETURN(int64_t new_bytes, CheckedNbytes(shape, isz));
  const int64_t old_bytes = *CheckedNbytes(a.meta.shape, isz);
  const uint64_t bs = a.meta.block_size;
  if (new_bytes < old_bytes) {
    // Release the blocks past the new end (storage deletes them at commit) and zero the rest of
    // the new last block, so that growing again reads zeros (A7).
    const uint64_t keep = (static_cast<uint64_t>(new_bytes) + bs - 1) / bs;
    // What can fail comes first, so that a failed resize changes nothing: the new last block
    // (below `keep`), loaded before anything is released.
    std::shared_ptr<pager::Mapping> last_block;
    pager::WriteReservation reserved;
    const size_t from = static_cast<size_t>(new_bytes % static_cast<int64_t>(bs));
    if (from != 0) {
      const uint64_t block = static_cast<uint64_t>(new_bytes) / bs;
      BA_ASSIGN_OR_RETURN(last_block, a.file->Map(block, 1));
      BA_RETURN_IF_ERROR(last_block->Load(from, bs - from));  // load errors come back here, not as a fault
      BA_ASSIGN_OR_RETURN(reserved, a.file->ReserveForWrite(block, block + 1, 1));  // and a full disk
    }
    // zero_from before Truncate: a load that starts between the two then reads zeros.
    a.source->zero_from.store(std::min(a.source->zero_from.load(), keep));
    a.file->Truncate(keep);
    if (last_block) std::memset(last_block->data() + from, 0, bs - from);
  }
  ArrayMeta resized = a.meta;
  resized.shape = std::move(shape);
  a.SetMeta(resized);
  a.meta_dirty = true;
  return Status::Ok();
}

Status Array::Append(const View& values) {
  std::vector<int64_t> old_shape;
  int axis;
  {
    std::lock_guard l(state_->mu);
    BA_RETURN_IF_ERROR(state_->CheckExists());
    old_shape = state_->meta.shape;
    axis = state_->meta.order == Order::kC ? 0 : static_cast<int>(old_shape.size()) - 1;
    if (old_shape.empty()) return InvalidArgument("append: array '" + state_->name + "' is 0-d");
    if (!(values.dtype() == state_->meta.dtype)) {
      return InvalidArgument("append to array '" + state_->name + "': values are " + values.dtype().str() +
                             ", the array is " + state_->meta.dtype.str());
    }
    bool match = values.shape().size() == old_shape.size();
    for (size_t k = 0; match && k < old_shape.size(); ++k) {
      if (static_cast<int>(k) != axis && values.shape()[k] != old_shape[k]) match = false;
    }
    if (!match) {
      return InvalidArgument("append to array '" + state_->name + "': values of shape " +
                             ShapeString(values.shape()) + " do not match the array's shape " +
                             ShapeString(old_shape) + " except along axis " + std::to_string(axis));
    }
  }
  if (values.shape()[axis] == 0) return Status::Ok();
  std::vector<int64_t> new_shape = old_shape;
  new_shape[axis] += values.shape()[axis];
  BA_RETURN_IF_ERROR(Resize(new_shape));
  std::vector<IndexItem> index(new_shape.size(), All());
  index[axis] = Slice{old_shape[axis], std::nullopt, 1};
  auto tail = Index(index);
  Status st = tail.ok() ? tail->Assign(values) : tail.status();
  if (!st.ok()) (void)Resize(old_shape);  // nothing changes
  return st;
}

Result<uint64_t> Array::BlocksStored() const {
  auto session = state_->session.lock();
  if (!session) return FailedPrecondition("the database handle of array '" + name() + "' was closed");
  uint64_t n = 0;
  BA_RETURN_IF_ERROR(session->snapshots->Get()->ForEachBlock(state_->id, [&](const storage::BlockInfo&) {
    ++n;
    return true;
  }));
  return n;
}

Result<ArraySpace> Array::Stored() const {
  auto session = state_->session.lock();
  if (!session) return FailedPrecondition("the database handle of array '" + name() + "' was closed");
  ArraySpace s;
  s.name = name();
  BA_RETURN_IF_ERROR(session->snapshots->Get()->ForEachBlock(state_->id, [&](const storage::BlockInfo& b) {
    ++s.blocks_stored;
    s.stored_bytes += b.stored_bytes;
    return true;
  }));
  return s;
}

Result<std::vector<uint64_t>> Array::StoredBlocks() const {
  auto session = state_->session.lock();
  if (!session) return FailedPrecondition("the database handle of array '" + name() + "' was closed");
  std::vector<uint64_t> blocks;
  BA_RETURN_IF_ERROR(session->snapshots->Get()->ForEachBlock(state_->id, [&](const storage::BlockInfo& b) {
    blocks.push_back(b.index);
    return true;
  }));
  return blocks;
}

Result<uint64_t> Array::Verify(const std::function<void(uint64_t block, const Status&)>& damaged) const {
  auto session = state_->session.lock();
  if (!session) return FailedPrecondition("the database handle of array '" + name() + "' was closed");
  return session->snapshots->Get()->VerifyBlocks(state_->id, block_size(), damaged);
}

Status Database::VerifyRecords(const std::function<void(const Status&)>& damaged) {
  return session_->snapshots->Get()->VerifyRecords(damaged);
}

}  // namespace bigarray
