// postgres_bench: commit and read throughput of the PostgreSQL block store (docs/distributed.md,
// "Measured"). Not a test; run by hand against a server:
//   postgres_bench URI [block_bytes=2097152] [blocks_per_commit=16] [commits=8] [readers=4]
// Each run uses a fresh schema (dropped at the end). Payloads are incompressible.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "bigarray/storage/block_store.h"
#include "pg_test_util.h"
#include "test_util.h"

using namespace bigarray::storage;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s URI [block_bytes] [blocks_per_commit] [commits] [readers]\n", argv[0]);
    return 2;
  }
  setenv("BIGARRAY_PG_URI", argv[1], 1);
  const size_t block = argc > 2 ? std::strtoull(argv[2], nullptr, 0) : 2u << 20;
  const int per_commit = argc > 3 ? std::atoi(argv[3]) : 16;
  const int commits = argc > 4 ? std::atoi(argv[4]) : 8;
  const int readers = argc > 5 ? std::atoi(argv[5]) : 4;
  bigarray::testing::PgSchema schema;
  auto store = OpenPostgresStore(schema.uri(), {}).value();
  std::vector<std::vector<std::byte>> data;
  for (int i = 0; i < per_commit; ++i) data.push_back(bigarray::testing::Pattern(block, i));

  CommitId c = 0;
  auto t0 = Clock::now();
  for (int k = 0; k < commits; ++k) {
    WriteBatch b(c);
    for (int i = 0; i < per_commit; ++i) b.PutBlock(1, static_cast<BlockIndex>(k * per_commit + i), data[i]);
    c = store->Commit(b).value();
  }
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double mib = static_cast<double>(block) * per_commit * commits / (1 << 20);
  std::printf("commit: %d commits x %d blocks of %zu bytes: %.0f MiB in %.2f s = %.0f MiB/s, %.1f ms/commit\n",
              commits, per_commit, block, mib, s, mib / s, 1000 * s / commits);

  // Small commits: latency of a one-block, 4 KiB commit.
  auto small = bigarray::testing::Pattern(4096, 9);
  t0 = Clock::now();
  constexpr int kSmall = 200;
  for (int k = 0; k < kSmall; ++k) {
    WriteBatch b(c);
    b.PutBlock(2, static_cast<BlockIndex>(k), small);
    c = store->Commit(b).value();
  }
  s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("small commits (one 4 KiB block): %.2f ms/commit\n", 1000 * s / kSmall);

  t0 = Clock::now();
  for (int k = 0; k < kSmall; ++k) (void)store->OpenSnapshot().value();
  s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("open+close snapshot: %.2f ms\n", 1000 * s / kSmall);

  for (int threads : {1, readers}) {
    auto snap = store->OpenSnapshot().value();
    const int total = per_commit * commits;
    t0 = Clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        std::vector<std::byte> out(block);
        for (int i = t; i < total; i += threads) {
          if (!snap->ReadBlock(1, static_cast<BlockIndex>(i), out).ok()) std::abort();
        }
      });
    }
    for (auto& t : ts) t.join();
    s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("read, %d thread(s) on one snapshot: %.0f MiB/s\n", threads, mib / s);
  }
  {
    const int total = per_commit * commits;
    t0 = Clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < readers; ++t) {
      ts.emplace_back([&, t] {
        auto snap = store->OpenSnapshot().value();
        std::vector<std::byte> out(block);
        for (int i = t; i < total; i += readers) {
          if (!snap->ReadBlock(1, static_cast<BlockIndex>(i), out).ok()) std::abort();
        }
      });
    }
    for (auto& t : ts) t.join();
    s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("read, %d threads with a snapshot each: %.0f MiB/s\n", readers, mib / s);
  }
  std::printf("table size: %s\n",
              schema.Exec("SELECT pg_size_pretty(pg_total_relation_size('bigarray_blocks'))").c_str());
  return 0;
}
