// MemoryStore: the block store in RAM, for fast deterministic tests.
//
// The committed state is an immutable State shared by snapshots; a commit builds a new State
// (copying the maps, sharing the block payloads) and swaps it in under mu_. The change log is
// trimmed to what the oldest live snapshot may still ask for.
#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "bigarray/storage/block_store.h"
#include "change_log.h"

namespace bigarray::storage {
namespace {

struct StoredBlock {
  CommitId commit;
  std::shared_ptr<const std::vector<std::byte>> payload;
};

struct State {
  CommitId commit = 0;
  std::map<std::pair<ArrayId, BlockIndex>, StoredBlock> blocks;
  std::map<std::string, std::string, std::less<>> meta;
};

class MemoryStore final : public BlockStore, public std::enable_shared_from_this<MemoryStore> {
 public:
  Result<std::shared_ptr<Snapshot>> OpenSnapshot() override;
  Result<CommitId> Commit(const WriteBatch& batch) override;
  Status Sync() override { return Status::Ok(); }
  std::string Describe() const override { return "memory store"; }

  Result<ChangeSet> Changes(CommitId from, CommitId to);
  void ReleaseSnapshot(CommitId id);

 private:
  std::mutex mu_;
  std::shared_ptr<const State> state_ = std::make_shared<State>();  // guarded by mu_
  std::map<CommitId, std::string> log_;                              // guarded by mu_
  CommitId log_floor_ = 0;            // entries <= floor were trimmed; guarded by mu_
  std::multiset<CommitId> live_;      // commit ids of open snapshots; guarded by mu_
};

class MemorySnapshot final : public Snapshot {
 public:
  MemorySnapshot(std::shared_ptr<MemoryStore> store, std::shared_ptr<const State> state)
      : store_(std::move(store)), state_(std::move(state)) {}
  ~MemorySnapshot() override { store_->ReleaseSnapshot(state_->commit); }

  CommitId commit_id() const override { return state_->commit; }

  Status ReadBlock(ArrayId a, BlockIndex i, std::span<std::byte> out) override {
    auto it = state_->blocks.find({a, i});
    size_t n = 0;
    if (it != state_->blocks.end()) {
      const auto& p = *it->second.payload;
      if (p.size() > out.size()) {
        return Corruption("array #" + std::to_string(a) + " block " + std::to_string(i) +
                          ": stored payload of " + std::to_string(p.size()) +
                          " bytes is larger than the block size " + std::to_string(out.size()));
      }
      std::memcpy(out.data(), p.data(), p.size());
      n = p.size();
    }
    std::memset(out.data() + n, 0, out.size() - n);
    return Status::Ok();
  }

  Status ForEachBlock(ArrayId a, const std::function<bool(const BlockInfo&)>& fn) override {
    for (auto it = state_->blocks.lower_bound({a, 0});
         it != state_->blocks.end() && it->first.first == a; ++it) {
      if (!fn(BlockInfo{it->first.second, it->second.commit, it->second.payload->size()})) break;
    }
    return Status::Ok();
  }

  Result<std::optional<std::string>> GetMeta(std::string_view key) override {
    auto it = state_->meta.find(key);
    if (it == state_->meta.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }

  Status ForEachMetaFrom(std::string_view prefix, std::string_view from,
                         const std::function<bool(std::string_view, std::string_view)>& fn) override {
    for (auto it = state_->meta.lower_bound(std::max(prefix, from));
         it != state_->meta.end() && std::string_view(it->first).starts_with(prefix); ++it) {
      if (!fn(it->first, it->second)) break;
    }
    return Status::Ok();
  }

  Result<ChangeSet> ChangesSince(CommitId from) override {
    return store_->Changes(from, state_->commit);
  }

 private:
  std::shared_ptr<MemoryStore> store_;
  std::shared_ptr<const State> state_;
};

Result<std::shared_ptr<Snapshot>> MemoryStore::OpenSnapshot() {
  std::shared_ptr<const State> state;
  {
    std::lock_guard lock(mu_);
    state = state_;
    live_.insert(state->commit);
  }
  return std::shared_ptr<Snapshot>(std::make_shared<MemorySnapshot>(shared_from_this(), state));
}

void MemoryStore::ReleaseSnapshot(CommitId id) {
  std::lock_guard lock(mu_);
  live_.erase(live_.find(id));
}

Result<ChangeSet> MemoryStore::Changes(CommitId from, CommitId to) {
  ChangeSet cs;
  cs.from = from;
  cs.to = to;
  std::lock_guard lock(mu_);
  if (from < log_floor_) {
    cs.complete = false;
    return cs;
  }
  for (auto it = log_.upper_bound(from); it != log_.end() && it->first <= to; ++it) {
    BA_RETURN_IF_ERROR(internal::DecodeChanges(it->second, cs));
  }
  return cs;
}

Result<CommitId> MemoryStore::Commit(const WriteBatch& batch) {
  std::lock_guard lock(mu_);
  const CommitId current = state_->commit;
  if (batch.base() < current) {
    ChangeSet cs;
    cs.from = batch.base();
    cs.to = current;
    if (batch.base() < log_floor_) {
      cs.complete = false;
    } else {
      for (auto it = log_.upper_bound(batch.base()); it != log_.end(); ++it) {
        BA_RETURN_IF_ERROR(internal::DecodeChanges(it->second, cs));
      }
    }
    if (auto what = batch.FindConflict(cs)) {
      return ConflictError(*what);
    }
  }
  auto next = std::make_shared<State>(*state_);
  const CommitId id = current + 1;
  next->commit = id;
  for (const BlockRange& r : batch.deletes()) {
    auto it = next->blocks.lower_bound({r.array, r.first});
    while (it != next->blocks.end() && it->first.first == r.array && it->first.second < r.end) {
      it = next->blocks.erase(it);
    }
  }
  for (const auto& p : batch.puts()) {
    if (p.size == 0) {
      next->blocks.erase({p.array, p.index});
      continue;
    }
    BA_ASSIGN_OR_RETURN(std::span<const std::byte> data, p.data());
    data = data.first(TrimmedSize(data));
    if (data.size() > p.size) {
      return Internal("array #" + std::to_string(p.array) + " block " + std::to_string(p.index) +
                      ": data function returned more bytes than announced");
    }
    if (data.empty()) {
      next->blocks.erase({p.array, p.index});
      continue;
    }
    next->blocks[{p.array, p.index}] =
        StoredBlock{id, std::make_shared<const std::vector<std::byte>>(data.begin(), data.end())};
  }
  for (const auto& [k, v] : batch.meta()) {
    if (v) {
      next->meta[k] = *v;
    } else {
      next->meta.erase(k);
    }
  }
  log_[id] = internal::EncodeChanges(batch);
  state_ = std::move(next);
  // Trim the log: no snapshot older than the oldest live one can ask for earlier changes.
  const CommitId oldest = live_.empty() ? id : std::min(*live_.begin(), id);
  log_.erase(log_.begin(), log_.upper_bound(oldest));
  log_floor_ = std::max(log_floor_, oldest);
  return id;
}

}  // namespace

std::shared_ptr<BlockStore> NewMemoryStore() { return std::make_shared<MemoryStore>(); }

}  // namespace bigarray::storage
