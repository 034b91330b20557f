// map_lost_test: LMDB losing its map of data.mdb (docs/reliability.md). LMDB grows its map by
// unmapping it and mapping it again at the new size; when that mmap fails it is left with no
// map. The store checks for address space first (resource_test), but another thread may take it
// in between: then no transaction may read through the map any more, those of snapshots begun
// before included. This executable interposes mmap (LMDB calls it through the PLT) to make the
// new map fail on demand.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>

#include "bigarray/storage/block_store.h"
#include "test_util.h"

using namespace bigarray;
using bigarray::testing::TempDir;

#ifndef BIGARRAY_TEST_UNDER_SANITIZER
namespace {
std::atomic<bool> g_fail_next_map{false};  // the next shared mapping of a file at offset 0 fails
constexpr size_t kBlock = 1 << 20;
}  // namespace

extern "C" void* mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
  if (fd >= 0 && (flags & MAP_SHARED) && !(flags & MAP_FIXED) && offset == 0 && g_fail_next_map.exchange(false)) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  return reinterpret_cast<void*>(syscall(SYS_mmap, addr, length, prot, flags, fd, offset));
}
#endif

TEST_CASE("a map LMDB lost while growing fails every read, of snapshots begun before too, and loses nothing committed") {
#ifdef BIGARRAY_TEST_UNDER_SANITIZER
  MESSAGE("not under a sanitizer: it intercepts mmap itself");
#else
  TempDir dir;
  const std::string db = dir / "db";
  // In a child: without the check, reading through the lost map is a SIGSEGV.
  const int exit_code = testing::InChild([&] {
    int failed = 0;
    {
      auto store = storage::OpenLmdbStore(db, {}).value();  // a map of 64 MiB
      storage::WriteBatch first(store->OpenSnapshot().value()->commit_id());
      first.PutBlock(1, 0, testing::Pattern(kBlock, 1));
      const auto committed = store->Commit(first);
      failed |= !committed.ok();
      auto before = store->OpenSnapshot();  // begun before the map is lost, still open after
      std::vector<std::byte> out(kBlock);
      failed |= (!before.ok() || !(*before)->ReadBlock(1, 0, out).ok()) << 1;

      storage::WriteBatch big(committed.ok() ? *committed : 0);  // 96 MiB: the map must grow
      const auto bytes = testing::Pattern(kBlock, 2);
      for (int i = 0; i < 96; ++i) big.PutBlock(2, static_cast<uint64_t>(i), bytes);
      g_fail_next_map = true;
      auto lost = store->Commit(big);
      failed |= (lost.ok() || lost.status().message().find("open it again") == std::string::npos) << 2;
      failed |= g_fail_next_map.load() << 3;  // the failure was used: LMDB did try to map again

      // Every read now fails with that error, through the snapshot begun before as through new ones.
      const Status old_read = before.ok() ? (*before)->ReadBlock(1, 0, out) : Status::Ok();
      failed |= (old_read.ok() || old_read.message().find("open it again") == std::string::npos) << 4;
      auto meta = before.ok() ? (*before)->GetMeta("x") : Result<std::optional<std::string>>(std::nullopt);
      failed |= meta.ok() << 5;
      failed |= store->OpenSnapshot().ok() << 6;
      // So does the next commit (it reads the meta pages to size itself: a SIGSEGV before).
      storage::WriteBatch again(committed.ok() ? *committed : 0);
      again.PutBlock(1, 1, testing::Pattern(kBlock, 3));
      auto retried = store->Commit(again);
      failed |= (retried.ok() || retried.status().message().find("open it again") == std::string::npos) << 7;
    }
    return failed;
  });
  INFO("exit code " << exit_code << " (bits of failed steps, or 128 + a signal)");
  CHECK(exit_code == 0);
  // Opened again, the database holds the first commit and nothing of the one that failed.
  auto store = storage::OpenLmdbStore(db, {}).value();
  auto snap = store->OpenSnapshot().value();
  std::vector<std::byte> out(kBlock);
  REQUIRE(snap->ReadBlock(1, 0, out).ok());
  CHECK(out == testing::Pattern(kBlock, 1));
  REQUIRE(snap->ReadBlock(2, 0, out).ok());
  CHECK(out == std::vector<std::byte>(kBlock));  // never written: zeros
#endif
}
