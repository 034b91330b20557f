// The storage conformance suite: every BlockStore implementation passes the same tests
// (semantics.md S1-S6). Backends: memory, LMDB, and the forwarding wrapper over each. Built a
// second time with BIGARRAY_CONFORMANCE_POSTGRES (storage_conformance_pg_test, tests/postgres/)
// for the PostgreSQL backend, each test in a fresh schema of the test server.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <random>
#include <thread>

#include "bigarray/storage/block_store.h"
#include "test_util.h"
#ifdef BIGARRAY_CONFORMANCE_POSTGRES
#include "pg_test_util.h"
#endif

using namespace bigarray;
using namespace bigarray::storage;
using bigarray::testing::AllZero;
using bigarray::testing::Pattern;
using bigarray::testing::TempDir;

namespace {

struct MemoryBackend {
  std::shared_ptr<BlockStore> store = NewMemoryStore();
};

struct LmdbBackend {
  TempDir dir;
  std::shared_ptr<BlockStore> store = OpenLmdbStore(dir / "db", LmdbOptions{}).value();
};

struct ForwardingMemoryBackend {
  std::shared_ptr<BlockStore> store = std::make_shared<ForwardingStore>(NewMemoryStore());
};

// Wraps snapshots too, so the forwarding snapshot's every method is exercised.
class WrappingStore : public ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;

 protected:
  std::shared_ptr<Snapshot> WrapSnapshot(std::shared_ptr<Snapshot> s) override {
    return std::make_shared<ForwardingSnapshot>(std::move(s));
  }
};

struct ForwardingLmdbBackend {
  TempDir dir;
  std::shared_ptr<BlockStore> store =
      std::make_shared<WrappingStore>(OpenLmdbStore(dir / "db", LmdbOptions{}).value());
};

#ifdef BIGARRAY_CONFORMANCE_POSTGRES
struct PostgresBackend {
  bigarray::testing::PgSchema schema;
  std::shared_ptr<BlockStore> store = OpenPostgresStore(schema.uri(), PostgresOptions{}).value();
};

struct ForwardingPostgresBackend {
  bigarray::testing::PgSchema schema;
  std::shared_ptr<BlockStore> store =
      std::make_shared<WrappingStore>(OpenPostgresStore(schema.uri(), PostgresOptions{}).value());
};
#endif

constexpr size_t kBlock = 64 * 1024;

std::vector<std::byte> Read(Snapshot& s, ArrayId a, BlockIndex i, size_t n = kBlock) {
  std::vector<std::byte> out(n, std::byte{0x5A});
  Status st = s.ReadBlock(a, i, out);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  return out;
}

std::shared_ptr<Snapshot> Snap(BlockStore& store) { return store.OpenSnapshot().value(); }

CommitId Put(BlockStore& store, CommitId base, ArrayId a, BlockIndex i,
             const std::vector<std::byte>& data) {
  WriteBatch b(base);
  b.PutBlock(a, i, data);
  return store.Commit(b).value();
}

}  // namespace

#ifdef BIGARRAY_CONFORMANCE_POSTGRES
#define BACKENDS PostgresBackend, ForwardingPostgresBackend
#else
#define BACKENDS MemoryBackend, LmdbBackend, ForwardingMemoryBackend, ForwardingLmdbBackend
#endif

TEST_CASE_TEMPLATE("S1: never-written blocks read as zeros of the requested size", B, BACKENDS) {
  B b;
  auto s = Snap(*b.store);
  for (size_t n : {size_t{4096}, kBlock, size_t{2} << 20}) {
    auto data = Read(*s, 1, 12345, n);
    CHECK(data.size() == n);
    CHECK(AllZero(data));
  }
}

TEST_CASE_TEMPLATE("S1: payloads round-trip; trailing zeros are trimmed; zero blocks are not stored",
                   B, BACKENDS) {
  B b;
  auto data = Pattern(kBlock, 7);
  std::fill(data.begin() + 1000, data.end(), std::byte{0});
  WriteBatch batch(Snap(*b.store)->commit_id());
  batch.PutBlock(1, 0, data);
  std::vector<std::byte> zeros(kBlock);
  batch.PutBlock(1, 1, zeros);
  auto full = Pattern(kBlock, 8);
  batch.PutBlock(1, 2, full);
  CommitId c = b.store->Commit(batch).value();

  auto s = Snap(*b.store);
  CHECK(s->commit_id() == c);
  CHECK(Read(*s, 1, 0) == data);
  CHECK(AllZero(Read(*s, 1, 1)));
  CHECK(Read(*s, 1, 2) == full);
  std::vector<BlockInfo> infos;
  REQUIRE(s->ForEachBlock(1, [&](const BlockInfo& i) { infos.push_back(i); return true; }).ok());
  REQUIRE(infos.size() == 2);
  CHECK(infos[0].index == 0);
  CHECK(infos[0].stored_bytes == 1000);
  CHECK(infos[0].commit == c);
  CHECK(infos[1].index == 2);
  CHECK(infos[1].stored_bytes == kBlock);
}

TEST_CASE_TEMPLATE("S1: a payload longer than the read buffer is corruption, not truncation", B,
                   BACKENDS) {
  B b;
  Put(*b.store, 0, 3, 0, Pattern(kBlock, 1));
  std::vector<std::byte> small(kBlock / 2);
  Status st = Snap(*b.store)->ReadBlock(3, 0, small);
  CHECK(st.code() == Code::kCorruption);
  CHECK(st.message().find("array #3 block 0") != std::string::npos);
}

TEST_CASE_TEMPLATE("S2: a batch that fails midway leaves nothing visible", B, BACKENDS) {
  B b;
  CommitId c0 = Put(*b.store, 0, 1, 0, Pattern(kBlock, 1));
  auto base = Snap(*b.store);
  WriteBatch batch(c0);
  auto good = Pattern(kBlock, 2);
  batch.PutBlock(1, 0, good);
  batch.PutMeta("k", "v");
  batch.PutBlock(1, 1, kBlock, []() -> Result<std::span<const std::byte>> {
    return IOError("injected");
  });
  auto r = b.store->Commit(batch);
  CHECK(r.status().code() == Code::kIOError);
  auto s = Snap(*b.store);
  CHECK(s->commit_id() == c0);
  CHECK(Read(*s, 1, 0) == Pattern(kBlock, 1));
  CHECK_FALSE(s->GetMeta("k").value().has_value());
}

TEST_CASE_TEMPLATE("S3: a snapshot keeps its state while others commit", B, BACKENDS) {
  B b;
  CommitId c1 = Put(*b.store, 0, 1, 0, Pattern(kBlock, 1));
  auto old = Snap(*b.store);
  CommitId c2 = Put(*b.store, c1, 1, 0, Pattern(kBlock, 2));
  WriteBatch del(c2);
  del.DeleteBlock(1, 0);
  del.PutMeta("m", "x");
  CommitId c3 = b.store->Commit(del).value();
  CHECK(c1 < c2);
  CHECK(c2 < c3);
  CHECK(old->commit_id() == c1);
  CHECK(Read(*old, 1, 0) == Pattern(kBlock, 1));
  CHECK_FALSE(old->GetMeta("m").value().has_value());
  auto now = Snap(*b.store);
  CHECK(AllZero(Read(*now, 1, 0)));
  CHECK(*now->GetMeta("m").value() == "x");
}

TEST_CASE_TEMPLATE("S4: the later of two writers of one block gets Conflict and writes nothing", B,
                   BACKENDS) {
  B b;
  CommitId base = Put(*b.store, 0, 1, 0, Pattern(kBlock, 1));
  auto s1 = Snap(*b.store);
  auto s2 = Snap(*b.store);
  CommitId w1 = Put(*b.store, s1->commit_id(), 1, 5, Pattern(kBlock, 10));

  WriteBatch loser(s2->commit_id());
  auto data = Pattern(kBlock, 20);
  loser.PutBlock(1, 5, data);
  loser.PutBlock(1, 6, data);
  loser.PutMeta("other", "x");
  auto r = b.store->Commit(loser);
  REQUIRE(r.status().code() == Code::kConflict);
  CHECK(r.status().message().find("array #1 block 5") != std::string::npos);
  auto s = Snap(*b.store);
  CHECK(s->commit_id() == w1);
  CHECK(Read(*s, 1, 5) == Pattern(kBlock, 10));
  CHECK(AllZero(Read(*s, 1, 6)));
  CHECK_FALSE(s->GetMeta("other").value().has_value());
  // Retrying from the new snapshot succeeds.
  WriteBatch retry(s->commit_id());
  retry.PutBlock(1, 5, data);
  CHECK(b.store->Commit(retry).ok());
  (void)base;
}

TEST_CASE_TEMPLATE("S4: writers of different blocks both commit", B, BACKENDS) {
  B b;
  auto s1 = Snap(*b.store);
  auto s2 = Snap(*b.store);
  Put(*b.store, s1->commit_id(), 1, 0, Pattern(kBlock, 1));
  Put(*b.store, s2->commit_id(), 1, 1, Pattern(kBlock, 2));
  Put(*b.store, s2->commit_id(), 2, 0, Pattern(kBlock, 3));
  auto s = Snap(*b.store);
  CHECK(Read(*s, 1, 0) == Pattern(kBlock, 1));
  CHECK(Read(*s, 1, 1) == Pattern(kBlock, 2));
  CHECK(Read(*s, 2, 0) == Pattern(kBlock, 3));
}

TEST_CASE_TEMPLATE("S4: metadata writes, checked keys and deleted ranges conflict too", B, BACKENDS) {
  B b;
  auto base_snapshot = Snap(*b.store);  // writers hold their snapshot until they commit
  auto base = base_snapshot->commit_id();
  Put(*b.store, base, 1, 3, Pattern(kBlock, 1));
  WriteBatch m(base);
  m.PutMeta("shape/1", "10");
  CommitId c = b.store->Commit(m).value();

  WriteBatch meta_writer(base);
  meta_writer.PutMeta("shape/1", "20");
  CHECK(b.store->Commit(meta_writer).status().code() == Code::kConflict);

  WriteBatch checker(base);
  checker.CheckMeta("shape/1");
  checker.PutBlock(1, 100, Pattern(kBlock, 9));
  auto r = b.store->Commit(checker);
  CHECK(r.status().code() == Code::kConflict);
  CHECK(r.status().message().find("shape/1") != std::string::npos);

  WriteBatch truncator(base);
  truncator.DeleteBlocks(1, 2, 1000);
  CHECK(b.store->Commit(truncator).status().code() == Code::kConflict);

  WriteBatch unrelated(base);
  unrelated.CheckMeta("shape/2");
  unrelated.DeleteBlocks(1, 4, 1000);
  CHECK(b.store->Commit(unrelated).ok());
  (void)c;
}

TEST_CASE_TEMPLATE("S4: a checked key prefix conflicts with any key under it, also one created after base", B, BACKENDS) {
  B b;
  auto base_snapshot = Snap(*b.store);
  const CommitId base = base_snapshot->commit_id();
  WriteBatch adder(base);
  adder.PutMeta("t/0001/new", "x");  // a key the checker's snapshot does not have
  REQUIRE(b.store->Commit(adder).ok());

  WriteBatch checker(base);
  checker.CheckMetaPrefix("t/0001/");
  checker.DeleteMeta("a/0001");
  auto r = b.store->Commit(checker);
  CHECK(r.status().code() == Code::kConflict);
  CHECK(r.status().message().find("t/0001/new") != std::string::npos);

  WriteBatch other(base);  // a prefix nothing changed under, and one that is only a prefix of it
  other.CheckMetaPrefix("t/0002/");
  other.CheckMetaPrefix("t/0001/newer");
  other.DeleteMeta("a/0002");
  CHECK(b.store->Commit(other).ok());
}

TEST_CASE_TEMPLATE("S5: ChangesSince lists what changed between two commits", B, BACKENDS) {
  B b;
  auto keep = Snap(*b.store);  // keeps the log from being trimmed
  CommitId c0 = keep->commit_id();
  CommitId c1 = Put(*b.store, c0, 1, 0, Pattern(kBlock, 1));
  WriteBatch batch(c1);
  batch.PutBlock(2, 7, Pattern(kBlock, 2));
  batch.PutBlock(2, 8, Pattern(kBlock, 3));
  batch.DeleteBlocks(3, 10, 20);
  batch.PutMeta("a", "1");
  CommitId c2 = b.store->Commit(batch).value();
  auto s = Snap(*b.store);

  ChangeSet all = s->ChangesSince(c0).value();
  CHECK(all.complete);
  CHECK(all.from == c0);
  CHECK(all.to == c2);
  CHECK(all.BlockChanged(1, 0));
  CHECK(all.BlockChanged(2, 7));
  CHECK(all.BlockChanged(2, 8));
  CHECK_FALSE(all.BlockChanged(2, 9));
  CHECK(all.BlockChanged(3, 15));
  CHECK_FALSE(all.BlockChanged(3, 20));
  CHECK(all.MetaChanged("a"));
  CHECK_FALSE(all.MetaChanged("b"));

  ChangeSet last = s->ChangesSince(c1).value();
  CHECK_FALSE(last.BlockChanged(1, 0));
  CHECK(last.BlockChanged(2, 7));

  ChangeSet none = s->ChangesSince(c2).value();
  CHECK(none.complete);
  CHECK(none.blocks.empty());
  CHECK(none.meta_keys.empty());
}

TEST_CASE_TEMPLATE("S5: the change log is trimmed once no snapshot needs it", B, BACKENDS) {
  B b;
  CommitId c0 = Snap(*b.store)->commit_id();
  CommitId c = c0;
  for (int i = 0; i < 3; ++i) c = Put(*b.store, c, 1, i, Pattern(kBlock, i));
  auto s = Snap(*b.store);
  c = Put(*b.store, c, 1, 9, Pattern(kBlock, 9));
  // No snapshot at c0 was alive: its changes may be gone, and then the set says so.
  ChangeSet old = Snap(*b.store)->ChangesSince(c0).value();
  if (!old.complete) CHECK(old.BlockChanged(42, 42));
  // Changes after a live snapshot are always complete.
  ChangeSet recent = Snap(*b.store)->ChangesSince(s->commit_id()).value();
  CHECK(recent.complete);
  CHECK(recent.BlockChanged(1, 9));
  CHECK_FALSE(recent.BlockChanged(1, 0));
}

TEST_CASE_TEMPLATE("metadata: put, get, delete, prefix scan", B, BACKENDS) {
  B b;
  WriteBatch w(0);
  w.PutMeta("a/1", "one");
  w.PutMeta("a/2", std::string("t\0o", 3));
  w.PutMeta("b/1", "x");
  CommitId c = b.store->Commit(w).value();
  auto s = Snap(*b.store);
  CHECK(*s->GetMeta("a/1").value() == "one");
  CHECK(*s->GetMeta("a/2").value() == std::string("t\0o", 3));
  std::vector<std::string> keys;
  REQUIRE(s->ForEachMeta("a/", [&](std::string_view k, std::string_view) {
              keys.emplace_back(k);
              return true;
            }).ok());
  CHECK(keys == std::vector<std::string>{"a/1", "a/2"});
  WriteBatch d(c);
  d.DeleteMeta("a/1");
  d.DeleteMeta("never-there");
  REQUIRE(b.store->Commit(d).ok());
  CHECK_FALSE(Snap(*b.store)->GetMeta("a/1").value().has_value());
}

TEST_CASE_TEMPLATE("metadata: a scan from a key, across the stores' batches, stopped anywhere", B, BACKENDS) {
  B b;
  WriteBatch w(0);
  auto key = [](int i) {
    char k[16];
    std::snprintf(k, sizeof k, "x/%04d", i);
    return std::string(k);
  };
  for (int i = 0; i < 700; ++i) w.PutMeta(key(i), std::to_string(i));  // more than two batches of 256
  w.PutMeta("x", "not below x/");
  w.PutMeta("y/0", "after");
  REQUIRE(b.store->Commit(w).ok());
  auto s = Snap(*b.store);
  auto scan = [&](std::string_view from, size_t stop_after) {
    std::vector<std::string> keys;
    REQUIRE(s->ForEachMetaFrom("x/", from, [&](std::string_view k, std::string_view v) {
                CHECK(v == std::to_string(std::stoi(std::string(k.substr(2)))));
                keys.emplace_back(k);
                return keys.size() < stop_after;
              }).ok());
    return keys;
  };
  std::vector<std::string> all = scan("x/", SIZE_MAX);
  REQUIRE(all.size() == 700);
  for (int i = 0; i < 700; ++i) CHECK(all[i] == key(i));
  CHECK(scan("", SIZE_MAX) == all);  // a `from` below the prefix: from the prefix
  std::vector<std::string> tail = scan(key(300) + '\0', SIZE_MAX);  // strictly after x/0300
  REQUIRE(tail.size() == 399);
  CHECK(tail.front() == key(301));
  CHECK(tail.back() == key(699));
  CHECK(scan("x/0550a", SIZE_MAX).front() == key(551));  // between two keys
  CHECK(scan("x/9", SIZE_MAX).empty());
  for (size_t stop : {size_t{1}, size_t{256}, size_t{257}, size_t{600}}) {
    std::vector<std::string> some = scan("x/", stop);
    REQUIRE(some.size() == stop);
    CHECK(some.back() == key(static_cast<int>(stop) - 1));
  }
}

TEST_CASE_TEMPLATE("DeleteBlocks removes exactly the range", B, BACKENDS) {
  B b;
  WriteBatch w(0);
  std::vector<std::vector<std::byte>> data;
  for (int i = 0; i < 10; ++i) data.push_back(Pattern(4096, i));
  for (int i = 0; i < 10; ++i) w.PutBlock(4, i, data[i]);
  w.PutBlock(5, 3, data[3]);
  CommitId c = b.store->Commit(w).value();
  WriteBatch d(c);
  d.DeleteBlocks(4, 3, 7);
  REQUIRE(b.store->Commit(d).ok());
  auto s = Snap(*b.store);
  for (int i = 0; i < 10; ++i) {
    auto got = Read(*s, 4, i, 4096);
    if (i >= 3 && i < 7) {
      CHECK(AllZero(got));
    } else {
      CHECK(got == data[i]);
    }
  }
  CHECK(Read(*s, 5, 3, 4096) == data[3]);
}

TEST_CASE_TEMPLATE("snapshots serve concurrent readers while commits proceed", B, BACKENDS) {
  B b;
  constexpr int kBlocks = 16;
  WriteBatch w(0);
  std::vector<std::vector<std::byte>> data;
  for (int i = 0; i < kBlocks; ++i) data.push_back(Pattern(kBlock, i));
  for (int i = 0; i < kBlocks; ++i) w.PutBlock(1, i, data[i]);
  CommitId c = b.store->Commit(w).value();
  auto s = Snap(*b.store);
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      std::vector<std::byte> buf(kBlock);
      for (int round = 0; round < 20; ++round) {
        int i = (t * 7 + round) % kBlocks;
        if (!s->ReadBlock(1, i, buf).ok() || buf != data[i]) ++bad;
      }
    });
  }
  for (int round = 0; round < 10; ++round) {
    c = Put(*b.store, c, 1, round % kBlocks, Pattern(kBlock, 100 + round));
  }
  for (auto& t : readers) t.join();
  CHECK(bad == 0);
}

TEST_CASE_TEMPLATE("deleted ranges apply before puts in one batch", B, BACKENDS) {
  B b;
  WriteBatch w(0);
  for (int i = 0; i < 6; ++i) w.PutBlock(7, i, Pattern(4096, i));
  CommitId c = b.store->Commit(w).value();
  auto keep = Snap(*b.store);
  WriteBatch shrink_regrow(c);
  shrink_regrow.DeleteBlocks(7, 2, UINT64_MAX);
  shrink_regrow.PutBlock(7, 4, Pattern(4096, 40));
  REQUIRE(b.store->Commit(shrink_regrow).ok());
  auto s = Snap(*b.store);
  CHECK(Read(*s, 7, 1, 4096) == Pattern(4096, 1));
  CHECK(AllZero(Read(*s, 7, 2, 4096)));
  CHECK(Read(*s, 7, 4, 4096) == Pattern(4096, 40));
  CHECK(AllZero(Read(*s, 7, 5, 4096)));
}

TEST_CASE_TEMPLATE("small changes of stored blocks read back exactly, in every snapshot, across folds", B, BACKENDS) {
  // Commits of a few changed bytes (stored as deltas by stores that have them), appends that
  // grow a block's used prefix, shrinks to zeros and whole rewrites, against a model; older
  // snapshots keep reading their own state.
  B b;
  std::mt19937_64 rng(bigarray::testing::TestSeed("conformance small changes"));
  std::vector<std::vector<std::byte>> model(3, std::vector<std::byte>(kBlock));
  std::vector<std::pair<std::shared_ptr<Snapshot>, std::vector<std::vector<std::byte>>>> held;
  size_t tail = 0;  // appended prefix of block 2
  for (int step = 0; step < 300; ++step) {
    BlockIndex i = rng() % 3;
    auto& m = model[i];
    switch (rng() % 8) {
      case 0: m = Pattern(kBlock, rng()); break;                                  // whole rewrite
      case 1: std::fill(m.begin(), m.end(), std::byte{0}); break;                 // to zeros
      case 2: {                                                                   // append
        i = 2;
        const size_t n = 1 + rng() % 5000;
        for (size_t k = 0; k < n && tail < kBlock; ++k) model[2][tail++] = static_cast<std::byte>(1 + rng() % 255);
        if (tail == kBlock) tail = 0;
        break;
      }
      default: {                                                                  // a few bytes
        const int runs = 1 + static_cast<int>(rng() % 4);
        for (int r = 0; r < runs; ++r) {
          const size_t at = rng() % kBlock, len = 1 + rng() % 64;
          for (size_t k = at; k < std::min(kBlock, at + len); ++k) m[k] = static_cast<std::byte>(rng());
        }
      }
    }
    Put(*b.store, Snap(*b.store)->commit_id(), 1, i, model[i]);
    if (step % 50 == 0) held.emplace_back(Snap(*b.store), model);
    auto s = Snap(*b.store);
    for (BlockIndex j = 0; j < 3; ++j) REQUIRE_MESSAGE(Read(*s, 1, j) == model[j], "step " << step << " block " << j);
  }
  for (auto& [snap, state] : held) {
    for (BlockIndex j = 0; j < 3; ++j) CHECK(Read(*snap, 1, j) == state[j]);
  }
  auto s = Snap(*b.store);
  auto checked = s->VerifyBlocks(1, kBlock, [](BlockIndex i, const Status& st) { FAIL("block " << i << ": " << st.ToString()); });
  REQUIRE(checked.ok());
}
