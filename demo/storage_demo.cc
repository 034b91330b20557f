// bigarray-storage-demo: the block store on its own. Commits blocks in batches, reads them
// back through a snapshot while another commit lands, and shows a conflict being refused.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "bigarray/storage/block_store.h"

using namespace bigarray;
using namespace bigarray::storage;

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "demo-data/storage-demo.db";
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  auto store = OpenLmdbStore(path, LmdbOptions{}).value();

  constexpr size_t kBlock = 2 << 20;
  constexpr int kBlocks = 128;  // 256 MiB
  std::vector<std::byte> block(kBlock);
  auto t0 = std::chrono::steady_clock::now();
  auto snapshot = store->OpenSnapshot().value();
  for (int batch = 0; batch < 4; ++batch) {
    WriteBatch b(snapshot->commit_id());
    for (int i = batch * kBlocks / 4; i < (batch + 1) * kBlocks / 4; ++i) {
      std::fill(block.begin(), block.end(), std::byte(i + 1));
      b.PutBlock(1, i, block);
    }
    store->Commit(b).value();
    snapshot = store->OpenSnapshot().value();
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("committed %d blocks of 2 MiB in 4 durable commits: %.0f MB/s\n", kBlocks,
              kBlocks * kBlock / secs / 1e6);

  auto old = store->OpenSnapshot().value();
  WriteBatch change(old->commit_id());
  std::fill(block.begin(), block.end(), std::byte{0xEE});
  change.PutBlock(1, 0, block);
  store->Commit(change).value();
  std::vector<std::byte> out(kBlock);
  old->ReadBlock(1, 0, out).ThrowIfError();
  std::printf("old snapshot still reads block 0 as %d; ", int(out[0]));
  store->OpenSnapshot().value()->ReadBlock(1, 0, out).ThrowIfError();
  std::printf("a new one reads %d\n", int(out[0]));

  WriteBatch late(old->commit_id());
  late.PutBlock(1, 0, block);
  Status st = store->Commit(late).status();
  std::printf("a second writer of block 0 from the old snapshot: %s\n", st.ToString().c_str());
  return st.code() == Code::kConflict ? 0 : 1;
}
