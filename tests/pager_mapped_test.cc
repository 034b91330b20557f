// Pager tests of blocks mapped straight from their file (docs/pager.md, "Mapped blocks"), against
// a source that keeps each block in a file of its own layout: no storage, no LMDB.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "pager/check_choice.h"
#include "pager/fault_source.h"
#include "pager/file_ranges.h"
#include "pager/map_budget.h"
#include "pager/pager.h"
#include "page_cache_util.h"
#include "pager_test_util.h"
#include "test_util.h"

using namespace bigarray;
using namespace bigarray::pager;
using bigarray::testing::Eventually;
using bigarray::testing::ReadByte;
using bigarray::testing::WriteByte;

namespace {

// Built twice (tests/CMakeLists.txt): with blocks of 64 KiB at page-aligned offsets, and of 2 MiB
// (pager_slot_mapped_test), whose 2 MiB-aligned ranges take the paths of slots of blocks.dat:
// checked through a mapping of their own and mapped lazily (file_ranges.h).
#ifndef MAPPED_TEST_BLOCK
#define MAPPED_TEST_BLOCK (64 * 1024)
#endif
constexpr size_t kBlock = MAPPED_TEST_BLOCK;

std::byte Byte(uint32_t version, uint64_t b, size_t i) {
  return static_cast<std::byte>((version * 131 + b * 31 + i * 7 + 1) & 0xFF);
}

// Block b is `lengths[b]` bytes (a multiple of the page size, default the whole block) of a file,
// then zeros; the file holds each version of each block at an offset of its own. Blocks in
// `copied` are not offered for mapping; blocks in `damaged` fail their check.
class FileSource : public BlockSource {
 public:
  explicit FileSource(const std::string& path) {
    fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
  }
  ~FileSource() override { close(fd); }

  // Writes version `v` of block b at a new offset of the file and makes it current. `piece`:
  // written that many bytes at a time (the page cache then holds it in folios that small).
  void Store(uint64_t b, uint32_t v, size_t length = kBlock, size_t piece = kBlock) {
    std::vector<std::byte> bytes(length);
    for (size_t i = 0; i < length; ++i) bytes[i] = Byte(v, b, i);
    std::lock_guard lock(mu);
    for (size_t at = 0; at < length; at += piece) {
      const size_t n = std::min(piece, length - at);
      REQUIRE(pwrite(fd, bytes.data() + at, n, end + static_cast<off_t>(at)) == static_cast<ssize_t>(n));
    }
    where[b] = {end, length, v};
    end += static_cast<off_t>(kBlock);
  }

  Status LoadBlock(uint64_t block, std::span<std::byte> out) override {
    std::lock_guard lock(mu);
    ++loads;
    std::memset(out.data(), 0, out.size());
    auto it = where.find(block);
    if (it == where.end()) return Status::Ok();
    for (size_t i = 0; i < it->second.length; ++i) out[i] = Byte(it->second.version, block, i);
    return Status::Ok();
  }
  bool MapsBlocks() const override { return true; }
  Result<std::optional<FileRange>> MapBlock(uint64_t block) override {
    std::lock_guard lock(mu);
    ++maps;
    if (copied.count(block)) return std::optional<FileRange>();
    FileRange r;
    if (auto it = where.find(block); it != where.end()) r = FileRange{fd, it->second.offset, it->second.length, nullptr};
    if (beyond_end.count(block)) r.offset = end + 16 * static_cast<off_t>(kBlock);  // a read would raise SIGBUS
    if (unmappable_fd >= 0 && r.length > 0) r.fd = unmappable_fd;
    r.check = std::make_shared<Check>(this, block, r.length);
    return std::optional<FileRange>(std::move(r));
  }

  // Compares the pieces it is given with the block's bytes (Byte), and fails damaged blocks.
  class Check : public RangeCheck {
   public:
    Check(FileSource* source, uint64_t block, size_t length) : source_(source), block_(block), length_(length) {}
    // Takes the lock only to learn the version: the bytes are read without it, as a pager's check
    // through a mapping may be abandoned by a SIGBUS at any read of them (bus_guard.h).
    void Update(std::span<const std::byte> piece) noexcept override {
      uint32_t version = 0;
      {
        std::unique_lock lock(source_->mu);
        if (source_->where.count(block_)) version = source_->where[block_].version;
        if (seen_ == 0) {  // a check begins: counted, and held while the test says so (bounded)
          ++source_->in_check;
          source_->cv.notify_all();
          source_->cv.wait_for(lock, std::chrono::seconds(20), [&] { return !source_->held_checks.count(block_); });
          --source_->in_check;
        }
      }
      for (size_t i = 0; i < piece.size(); ++i) same_ &= piece[i] == Byte(version, block_, seen_ + i);
      seen_ += piece.size();
    }
    Status Finish() override {
      ++source_->checks;
      if (seen_ != length_ || !same_) return Internal("the check was not given the range's bytes");
      if (source_->damaged.count(block_)) return Corruption("checksum mismatch (the data on disk is damaged)");
      return Status::Ok();
    }

   private:
    FileSource* source_;
    uint64_t block_;
    size_t length_, seen_ = 0;
    bool same_ = true;
  };

  struct Where {
    off_t offset;
    size_t length;
    uint32_t version;
  };
  std::mutex mu;
  int fd = -1;
  off_t end = 0;
  std::map<uint64_t, Where> where;
  std::set<uint64_t> copied, damaged, beyond_end;
  int unmappable_fd = -1;  // answered instead of the file's (mmap fails)
  std::condition_variable cv;   // in_check changed, or held_checks
  std::set<uint64_t> held_checks;  // checks of these blocks wait in their first piece
  int in_check = 0;
  // Waits (bounded) until at least n checks are held or running at once.
  bool WaitInCheck(int n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(20), [&] { return in_check >= n; });
  }
  void ReleaseChecks() {
    std::lock_guard lock(mu);
    held_checks.clear();
    cv.notify_all();
  }
  int loads = 0, maps = 0;
  std::atomic<int> checks{0};
};

struct Fixture {
  // Checks through a mapping unless a case asks otherwise: which way is cheaper depends on the
  // machine (check_choice.h), and the guard's cases need the mapping.
  explicit Fixture(uint64_t cache_blocks = 64, unsigned readahead = 0, CheckWay way = CheckWay::kMapping) {
    SetCheckWayForTesting(way);
    pager = bigarray::testing::TestPager(cache_blocks * kBlock, readahead);
    source = std::make_shared<FileSource>(dir / "blocks");
    file = pager->OpenFile(source, kBlock, "array 'test'").value();
  }
  bigarray::testing::TempDir dir;
  std::shared_ptr<Pager> pager;
  std::shared_ptr<FileSource> source;
  std::shared_ptr<PagedFile> file;
};

// Whether the view's block shows version v of block b: `length` bytes, then zeros.
bool Shows(const std::byte* block, uint32_t v, uint64_t b, size_t length = kBlock) {
  for (size_t i = 0; i < kBlock; ++i) {
    if (ReadByte(block + i) != (i < length ? Byte(v, b, i) : std::byte{0})) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("mapped blocks: a read shows the file's bytes, then zeros; no page of the pool is used") {
  Fixture fx;
  fx.source->Store(0, 1);
  fx.source->Store(1, 1, kBlock / 4);  // trimmed: the rest reads as zeros
  // block 2 never stored: all zeros, nothing of the file mapped
  auto m = fx.file->Map(0, 3).value();
  CHECK(Shows(m->data(), 1, 0));
  CHECK(Shows(m->data() + kBlock, 1, 1, kBlock / 4));
  CHECK(Shows(m->data() + 2 * kBlock, 1, 2, 0));
  const PagerStats s = fx.pager->stats();
  CHECK(s.file_maps == 3);
  CHECK(s.loads == 0);
  CHECK(fx.source->loads == 0);
  CHECK(s.file_mapped_bytes == 3 * kBlock);
  CHECK(s.resident_bytes == 3 * kBlock);
  CHECK(s.dirty_blocks == 0);
  CHECK(fx.source->checks == 2);  // the all-zero block has nothing to check
  // The view shows the file's pages themselves: a change of the file shows through (which is
  // why the storage never changes a range it gave while its snapshot is open).
  const std::byte x{0x5A};
  REQUIRE(pwrite(fx.source->fd, &x, 1, fx.source->where[0].offset + 7) == 1);
  CHECK(ReadByte(m->data() + 7) == x);
}

TEST_CASE("mapped blocks: the first write copies the block into the pool; the file is untouched") {
  bigarray::testing::WithAndWithoutCpuAccessBit([] {
    Fixture fx;
    fx.source->Store(0, 1);
    fx.source->Store(1, 1, 2 * 4096);
    auto m = fx.file->Map(0, 2).value();
    CHECK(Shows(m->data(), 1, 0));
    CHECK(ReadByte(m->data() + kBlock) == Byte(1, 1, 0));
    WriteByte(m->data() + 10, std::byte{0xEE});
    WriteByte(m->data() + kBlock + 3 * 4096, std::byte{0xEF});  // in the zeros after the payload
    PagerStats s = fx.pager->stats();
    CHECK(s.dirty_blocks == 2);
    CHECK(s.loads == 2);
    CHECK(s.file_mapped_bytes == 0);
    CHECK(ReadByte(m->data() + 10) == std::byte{0xEE});
    CHECK(ReadByte(m->data() + 11) == Byte(1, 0, 11));
    CHECK(ReadByte(m->data() + kBlock + 3 * 4096) == std::byte{0xEF});
    CHECK(ReadByte(m->data() + kBlock + 1) == Byte(1, 1, 1));
    std::byte on_disk{};
    REQUIRE(pread(fx.source->fd, &on_disk, 1, fx.source->where[0].offset + 10) == 1);
    CHECK(on_disk == Byte(1, 0, 10));
    auto w = fx.pager->BeginWriteout().value();
    CHECK(w->entries().size() == 2);
    w->Finish(true);
    CHECK(fx.pager->stats().dirty_blocks == 0);
  });
}

TEST_CASE("mapped blocks: a block that fails its check is an error naming it, never shown") {
  Fixture fx;
  fx.source->Store(0, 1);
  fx.source->Store(1, 1);
  fx.source->damaged.insert(1);
  auto m = fx.file->Map(0, 2).value();
  Status st = m->Load(0, 2 * kBlock);
  CHECK(st.code() == Code::kCorruption);
  CHECK(st.message().find("array 'test' block 1") != std::string::npos);
  CHECK(st.message().find("checksum mismatch") != std::string::npos);
  CHECK(Shows(m->data(), 1, 0));  // the good block is there
  CHECK(fx.pager->stats().file_mapped_bytes == kBlock);
  // Kernel access to the damaged block still fails: it was never mapped.
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  CHECK(write(fds[1], m->data() + kBlock, 4096) == -1);
  CHECK(errno == EFAULT);
  close(fds[0]);
  close(fds[1]);
}

TEST_CASE("mapped blocks: invalidation drops them; the next read maps the new range") {
  Fixture fx;
  for (uint64_t b = 0; b < 4; ++b) fx.source->Store(b, 1);
  auto m = fx.file->Map(0, 4).value();
  auto other = fx.file->Map(2, 2).value();  // a second view of blocks 2 and 3
  for (uint64_t b = 0; b < 4; ++b) CHECK(Shows(m->data() + b * kBlock, 1, b));
  CHECK(Shows(other->data(), 1, 2));
  fx.source->Store(2, 2, kBlock / 2);
  fx.file->Invalidate(2);
  CHECK(Shows(m->data() + 2 * kBlock, 2, 2, kBlock / 2));
  CHECK(Shows(other->data(), 2, 2, kBlock / 2));
  CHECK(Shows(m->data() + 3 * kBlock, 1, 3));  // untouched
  fx.source->Store(3, 2);
  fx.file->Truncate(3);  // block 3 dropped with the shrink
  CHECK(Shows(other->data() + kBlock, 2, 3));
  CHECK(fx.pager->stats().loads == 0);
}

TEST_CASE("mapped blocks count in the budget: least recently used ones are dropped, nothing copied") {
  Fixture fx(/*cache_blocks=*/8);
  for (uint64_t b = 0; b < 64; ++b) fx.source->Store(b, 1, b % 3 == 0 ? kBlock : kBlock / 2);
  auto m = fx.file->Map(0, 64).value();
  for (int pass = 0; pass < 2; ++pass) {
    for (uint64_t b = 0; b < 64; ++b) {
      REQUIRE(Shows(m->data() + b * kBlock, 1, b, b % 3 == 0 ? kBlock : kBlock / 2));
      CHECK(fx.pager->stats().resident_bytes <= 8 * kBlock);
    }
  }
  const PagerStats s = fx.pager->stats();
  CHECK(s.evictions >= 2 * 64 - 8);
  CHECK(s.loads == 0);
  CHECK(s.file_maps == 128);
}

TEST_CASE("mapped blocks: blocks the file cannot show are copied; both kinds share the budget") {
  Fixture fx(/*cache_blocks=*/8);
  for (uint64_t b = 0; b < 32; ++b) {
    fx.source->Store(b, 3);
    if (b % 2) fx.source->copied.insert(b);
  }
  auto m = fx.file->Map(0, 32).value();
  for (uint64_t b = 0; b < 32; ++b) {
    REQUIRE(Shows(m->data() + b * kBlock, 3, b));
    CHECK(fx.pager->stats().resident_bytes <= 8 * kBlock);
  }
  const PagerStats s = fx.pager->stats();
  CHECK(s.loads == 16);
  CHECK(s.file_maps == 16);
}

TEST_CASE("mapped blocks: read-ahead maps the following blocks from the file") {
  Fixture fx(/*cache_blocks=*/64, /*readahead=*/4);
  for (uint64_t b = 0; b < 32; ++b) fx.source->Store(b, 1);
  auto m = fx.file->Map(0, 32).value();
  REQUIRE(Shows(m->data(), 1, 0));
  REQUIRE(Shows(m->data() + kBlock, 1, 1));  // a sequential run: blocks 2-5 are read ahead
  // The read-ahead runs on loader threads: wait for it (slow under sanitizers), at most 20 s, so
  // that the reader does not fault on blocks still being mapped.
  CHECK(Eventually([&] { return fx.pager->stats().readahead_loads >= 4; }));
  for (uint64_t b = 2; b < 32; ++b) REQUIRE(Shows(m->data() + b * kBlock, 1, b));
  const PagerStats s = fx.pager->stats();
  CHECK(s.readahead_loads >= 4);
  CHECK(s.faults < 32);  // blocks 2, 3 and 5 at least were mapped before the reader got there
  CHECK(s.loads == 0);
}

// Whether the page at `addr` has a page-table entry in this process (/proc/self/pagemap, bit 63).
bool Present(const std::byte* addr) {
  const int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  uint64_t entry = 0;
  const off_t at = static_cast<off_t>(reinterpret_cast<uintptr_t>(addr) / 4096 * sizeof entry);
  const bool read = pread(fd, &entry, sizeof entry, at) == static_cast<ssize_t>(sizeof entry);
  close(fd);
  REQUIRE(read);
  return (entry >> 63) & 1;
}

TEST_CASE("mapped blocks: read-ahead fills the page tables of the blocks it maps: the reader takes no fault there") {
  // A slot shown lazily is mapped into the view unpopulated; read-ahead then populates its
  // entries (MADV_POPULATE_READ), so that the reader's first access of each 2 MiB (24 us here)
  // or of each 64 KiB of a slot in small folios (1.1 ms per 2 MiB) takes no fault (docs/pager.md,
  // section 3b, step 3). Other ranges are mapped populated anyway (the 64 KiB build).
  Fixture fx(/*cache_blocks=*/64, /*readahead=*/8);
  for (uint64_t b = 0; b < 16; ++b) fx.source->Store(b, 1);
  if (!ShownLazily(FileRange{fx.source->fd, fx.source->where[2].offset, kBlock, nullptr})) return;
  auto m = fx.file->Map(0, 16).value();
  REQUIRE(Shows(m->data(), 1, 0));
  REQUIRE(Shows(m->data() + kBlock, 1, 1));  // a sequential run: blocks 2-9 are read ahead
  // All but the run's marker are mapped, each with its last page present though nobody read it.
  auto populated = [&] {
    int n = 0;
    for (uint64_t b = 2; b < 10; ++b) n += Present(m->data() + (b + 1) * kBlock - 4096);
    return n;
  };
  CHECK(Eventually([&] { return populated() == 7; }));
  for (uint64_t b = 2; b < 16; ++b) REQUIRE(Shows(m->data() + b * kBlock, 1, b));
}

TEST_CASE("mapped blocks: a fault on a block mapped from its file returns with all of its entries filled") {
  // The kernel's own fault would map 16 pages of a page cache in 4 KiB folios (fault-around):
  // 32 faults per 2 MiB, where one populate fills them all (docs/pager.md, section 3b, step 3).
  Fixture fx;
  for (uint64_t b = 0; b < 4; ++b) fx.source->Store(b, 1, kBlock, 4096);
  auto m = fx.file->Map(0, 4).value();
  REQUIRE(ReadByte(m->data() + 2 * kBlock) == Byte(1, 2, 0));  // one fault, at its first page
  CHECK(Present(m->data() + 3 * kBlock - 4096));                // its last page is there too
  CHECK(Shows(m->data() + 2 * kBlock, 1, 2));
}

namespace {
// A pager of 64 blocks reading 8 ahead, one loader at a time.
std::shared_ptr<Pager> OneReadAheadLoader() {
  PagerOptions o;
  o.cache_bytes = 64 * kBlock;
  o.readahead_blocks = 8;
  o.readahead_loaders = 1;
  return Pager::Create(o).value();
}
}  // namespace

TEST_CASE("mapped blocks: read-ahead checks slots in the page cache on readahead_loaders loaders; other reads overlap") {
  // A slot (2 MiB-aligned, this file's second build) in the page cache is checked by at most
  // readahead_loaders loaders at once; a range mapped populated (the 64 KiB build's blocks) is a
  // read that gives its turn up (docs/pager.md, section 8, "Read-ahead loaders").
  SetCheckWayForTesting(CheckWay::kMapping);
  auto pager = OneReadAheadLoader();
  bigarray::testing::TempDir dir;
  auto source = std::make_shared<FileSource>(dir / "blocks");
  for (uint64_t b = 0; b < 32; ++b) source->Store(b, 1);
  auto file = pager->OpenFile(source, kBlock, "array 'test'").value();
  auto m = file->Map(0, 32).value();
  {
    std::lock_guard lock(source->mu);
    for (uint64_t b = 2; b < 12; ++b) source->held_checks.insert(b);
  }
  const bool slots = ShownLazily(FileRange{source->fd, source->where[2].offset, kBlock, nullptr});
  REQUIRE(Shows(m->data(), 1, 0));
  REQUIRE(Shows(m->data() + kBlock, 1, 1));  // a sequential run: blocks 2-9 are read ahead
  if (slots) {
    REQUIRE(source->WaitInCheck(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // more would have started by now
    std::lock_guard lock(source->mu);
    CHECK(source->in_check == 1);
  } else {
    CHECK(source->WaitInCheck(2));
  }
  source->ReleaseChecks();
  CHECK(Eventually([&] { return pager->stats().readahead_loads >= 8; }));
  // (Checks of the reader's own faults, beside the read-ahead's, are not limited: no count here.)
  for (uint64_t b = 2; b < 12; ++b) REQUIRE(Shows(m->data() + b * kBlock, 1, b));
  SetCheckWayForTesting(CheckWay::kCheaper);
}

TEST_CASE("mapped blocks: read-ahead reads slots that are not in the page cache one after the other") {
  // A read-ahead that checks a slot keeps its turn while the slot is read from the disk: the
  // slots of a run are read in file order by one loader at a time, which the kernel's read-ahead
  // follows (docs/pager.md, section 8, "Read-ahead loaders"). Slots only (the 2 MiB build).
  SetCheckWayForTesting(CheckWay::kMapping);
  auto pager = OneReadAheadLoader();
  bigarray::testing::TempDir dir;
  auto source = std::make_shared<FileSource>(dir / "blocks");
  // Blocks 0 and 1, 16 blocks of another array, then blocks 2-11: the reads of blocks 0 and 1
  // (and the kernel's read-ahead after them) do not reach the others.
  source->Store(0, 1);
  source->Store(1, 1);
  for (uint64_t b = 100; b < 116; ++b) source->Store(b, 1);
  for (uint64_t b = 2; b < 12; ++b) source->Store(b, 1);
  const bool slots = ShownLazily(FileRange{source->fd, source->where[2].offset, kBlock, nullptr});
  REQUIRE(fdatasync(source->fd) == 0);
  REQUIRE(posix_fadvise(source->fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
  const bool dropped = !Cached(FileRange{source->fd, source->where[5].offset, kBlock, nullptr});
  if (!slots || !dropped) {  // the 64 KiB build, or a file system that keeps the pages (tmpfs)
    MESSAGE("skipped: " << (slots ? "the page cache could not be dropped" : "not slots"));
    SetCheckWayForTesting(CheckWay::kCheaper);
    return;
  }
  auto file = pager->OpenFile(source, kBlock, "array 'test'").value();
  auto m = file->Map(0, 12).value();
  {
    std::lock_guard lock(source->mu);
    for (uint64_t b = 2; b < 12; ++b) source->held_checks.insert(b);
  }
  REQUIRE(Shows(m->data(), 1, 0));
  REQUIRE(Shows(m->data() + kBlock, 1, 1));  // a sequential run: blocks 2-9 are read ahead
  REQUIRE(source->WaitInCheck(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // another would have started by now
  {
    std::lock_guard lock(source->mu);
    CHECK(source->in_check == 1);
  }
  source->ReleaseChecks();
  CHECK(Eventually([&] { return pager->stats().readahead_loads >= 8; }));
  for (uint64_t b = 2; b < 12; ++b) REQUIRE(Shows(m->data() + b * kBlock, 1, b));
  SetCheckWayForTesting(CheckWay::kCheaper);
}

namespace {
constexpr uint64_t kBlocks = 16;

// kBlocks blocks stored in order in a file in `dir`, dropped from the page cache; null (and
// why, said) where how slots are read cannot be tested: the 64 KiB build, tmpfs, no large folios.
std::shared_ptr<FileSource> ColdSlots(const bigarray::testing::TempDir& dir) {
  auto source = std::make_shared<FileSource>(dir / "blocks");
  for (uint64_t b = 0; b < kBlocks; ++b) source->Store(b, 1);
  if (!ShownLazily(FileRange{source->fd, source->where[3].offset, kBlock, nullptr})) return nullptr;
  if (!bigarray::testing::SlotReadsTestable(source->fd, dir.path())) return nullptr;
  return source;
}
}  // namespace

TEST_CASE("mapped blocks: faults on slots not in the page cache read those slots alone, each into one 2 MiB folio") {
  // A check reads its slot exactly through the file's window, and the view's populate starts no
  // read-ahead of the next slots; the view shows the slot with one PMD entry; faults on the same
  // slots again, from another pager, start none either (docs/pager.md, "Slots in 2 MiB folios").
  // Slots only (the 2 MiB build), where the kernel reads large folios.
  bigarray::testing::TempDir dir;
  auto source = ColdSlots(dir);
  if (!source) return;
  const int fd = source->fd;
  const size_t pages = kBlock / static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const std::set<uint64_t> faulted = {3, 9, 6, 12};
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    auto pager = bigarray::testing::TestPager(64 * kBlock, 0);  // no read-ahead: the faults alone
    auto file = pager->OpenFile(source, kBlock, "array 'test'").value();
    auto m = file->Map(0, kBlocks).value();
    const uint64_t read = bigarray::testing::ReadBytes();
    for (uint64_t b : faulted) {
      CAPTURE(b);
      REQUIRE(Shows(m->data() + b * kBlock, 1, b));
      CHECK((bigarray::testing::SmapsAt(m->data() + b * kBlock).fields["FilePmdMapped"] == "2048 kB" ||
             bigarray::testing::NoLargeFolioToBeHad(dir.path())));
      // The view's advice for the read is gone once its entries are filled (io.h, BeginExactRead).
      CHECK(bigarray::testing::SmapsAt(m->data() + b * kBlock).fields["VmFlags"].find(" rr") == std::string::npos);
    }
    CHECK(bigarray::testing::ReadBytes() - read == (round == 0 ? faulted.size() * kBlock : 0));  // nothing read on
    for (uint64_t b = 0; b < kBlocks; ++b) {
      CAPTURE(b);
      CHECK(bigarray::testing::ResidentPages(fd, source->where[b].offset, kBlock) == (faulted.count(b) ? pages : 0));
    }
  }
}

TEST_CASE("mapped blocks: a scan of slots not in the page cache leaves each of them in one 2 MiB folio") {
  // Read-ahead reads through the file's window in 2 MiB folios from the first slot on, where the
  // kernel, asked for nothing, reads the first tens of MiB of a sequential read in small folios:
  // every later scan of them, ours or a plain mmap's, would pay an entry per 4 KiB (docs/pager.md,
  // "Slots in 2 MiB folios"). Slots only (the 2 MiB build), where the kernel reads large folios.
  // The reader goes on to a block once read-ahead brought it in, and checks go through the
  // window: a fault that reads a slot while the kernel reads on into it, or a pread of it
  // (CheckChoice), may leave slots in small folios (a known limit).
  auto pager = OneReadAheadLoader();
  bigarray::testing::TempDir dir;
  auto source = ColdSlots(dir);
  if (!source) return;
  SetCheckWayForTesting(CheckWay::kMapping);
  const int fd = source->fd;
  auto file = pager->OpenFile(source, kBlock, "array 'test'").value();
  auto m = file->Map(0, kBlocks).value();
  const size_t pages = kBlock / static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (uint64_t b = 0; b < kBlocks; ++b) {
    CAPTURE(b);
    if (b >= 2) {  // the first two faults start the run
      REQUIRE(Eventually([&] { return bigarray::testing::ResidentPages(fd, source->where[b].offset, kBlock) == pages; }));
    }
    REQUIRE(Shows(m->data() + b * kBlock, 1, b));
  }
  for (uint64_t b = 0; b < kBlocks; ++b) {
    CAPTURE(b);
    CHECK((bigarray::testing::OneLargeFolio(fd, source->where[b].offset) ||
           bigarray::testing::NoLargeFolioToBeHad(dir.path())));
  }
  SetCheckWayForTesting(CheckWay::kCheaper);
}

TEST_CASE("mapped blocks: a reader that gets to a block read-ahead is checking waits for it without a fault of its own") {
  // The read-ahead announces the block's place in the view while it checks a slot in the page
  // cache; the reader polls for the end of it instead of posting a fault, which a loader would
  // only park on the page (docs/pager.md, section 6, "Announced loads"). Slots only (this file's
  // 2 MiB build): other ranges are mapped populated, with nothing to announce.
  SetCheckWayForTesting(CheckWay::kMapping);
  auto pager = OneReadAheadLoader();
  bigarray::testing::TempDir dir;
  auto source = std::make_shared<FileSource>(dir / "blocks");
  for (uint64_t b = 0; b < 16; ++b) source->Store(b, 1);
  if (!ShownLazily(FileRange{source->fd, source->where[2].offset, kBlock, nullptr}) ||
      !SignalFaultSource::PollsForTesting()) {
    SetCheckWayForTesting(CheckWay::kCheaper);
    return;  // not slots, or one CPU: nothing is announced
  }
  // The reader polls for as long as the test holds the check (the default, 200 us, is less than
  // a loaded machine may take between the release below and the block's mapping).
  SignalFaultSource::SetPollNsForTesting(int64_t{20} * 1000 * 1000 * 1000);
  auto file = pager->OpenFile(source, kBlock, "array 'test'").value();
  auto m = file->Map(0, 16).value();
  {
    std::lock_guard lock(source->mu);
    source->held_checks.insert(2);
  }
  REQUIRE(Shows(m->data(), 1, 0));
  REQUIRE(Shows(m->data() + kBlock, 1, 1));  // a sequential run: blocks 2-9 are read ahead
  REQUIRE(source->WaitInCheck(1));           // block 2's check, held
  const uint64_t faults = pager->stats().faults;
  std::atomic<bool> read{false};
  std::thread reader([&] {
    (void)ReadByte(m->data() + 2 * kBlock + 4096);
    read = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the reader faults, and waits
  CHECK(!read);
  source->ReleaseChecks();
  reader.join();
  CHECK(read);
  CHECK(pager->stats().faults == faults);  // no fault was posted for it
  CHECK(Shows(m->data() + 2 * kBlock, 1, 2));
  SignalFaultSource::SetPollNsForTesting(0);
  SetCheckWayForTesting(CheckWay::kCheaper);
}

TEST_CASE("mapped blocks: read-ahead never shows a block that fails its check") {
  Fixture fx(/*cache_blocks=*/64, /*readahead=*/4);
  for (uint64_t b = 0; b < 16; ++b) fx.source->Store(b, 1);
  fx.source->damaged.insert(6);
  auto m = fx.file->Map(0, 16).value();
  for (uint64_t b = 0; b < 6; ++b) REQUIRE(Shows(m->data() + b * kBlock, 1, b));  // read-ahead reaches block 6
  CHECK(fx.pager->stats().readahead_loads > 0);
  // The read-ahead that reached block 6 runs on a loader thread: wait for its check (slow under
  // sanitizers), at most 20 s.
  CHECK(Eventually([&] { return fx.source->checks.load() >= 7; }));
  // Block 6 was checked by the read-ahead and dropped: the kernel cannot read it, a load says why.
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  CHECK(write(fds[1], m->data() + 6 * kBlock, 4096) == -1);
  CHECK(errno == EFAULT);
  close(fds[0]);
  close(fds[1]);
  Status st = m->Load(6 * kBlock, kBlock);
  CHECK(st.code() == Code::kCorruption);
  CHECK(st.message().find("array 'test' block 6") != std::string::npos);
  for (uint64_t b = 7; b < 16; ++b) REQUIRE(Shows(m->data() + b * kBlock, 1, b));
}

TEST_CASE("mapped blocks: Load makes a view usable by the kernel; write(2) sends the right bytes") {
  Fixture fx;
  for (uint64_t b = 0; b < 3; ++b) fx.source->Store(b, 4, b == 1 ? 4096 : kBlock);
  auto m = fx.file->Map(0, 3).value();
  REQUIRE(m->Load(0, 3 * kBlock).ok());
  const std::string path = fx.dir / "out";
  const int out = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(out >= 0);
  CHECK(write(out, m->data(), 3 * kBlock) == static_cast<ssize_t>(3 * kBlock));
  std::vector<std::byte> back(3 * kBlock);
  REQUIRE(pread(out, back.data(), back.size(), 0) == static_cast<ssize_t>(back.size()));
  close(out);
  for (uint64_t b = 0; b < 3; ++b) CHECK(Shows(back.data() + b * kBlock, 4, b, b == 1 ? 4096 : kBlock));
  CHECK(fx.pager->stats().loads == 0);
}

TEST_CASE("mapped blocks stay within the map-entry budget") {
  struct Restore {
    ~Restore() { MapBudget::Get().SetLimitForTesting(0); }
  } restore;
  Fixture fx(/*cache_blocks=*/512);
  for (uint64_t b = 0; b < 400; ++b) fx.source->Store(b, 1, b % 2 ? kBlock : kBlock / 2);
  auto m = fx.file->Map(0, 400).value();
  MapBudget::Get().SetLimitForTesting(MapBudget::Get().used() + 300);
  for (uint64_t b = 0; b < 400; ++b) {
    REQUIRE(ReadByte(m->data() + b * kBlock + 1) == Byte(1, b, 1));
    CHECK(MapBudget::Get().used() <= MapBudget::Get().limit());
  }
  CHECK(fx.pager->stats().map_reclaims > 0);
  for (uint64_t b = 0; b < 400; b += 37) CHECK(Shows(m->data() + b * kBlock, 1, b, b % 2 ? kBlock : kBlock / 2));
}

TEST_CASE("mapped blocks: a range the kernel cannot map or read is loaded by copy instead, never a SIGBUS") {
  Fixture fx;
  for (uint64_t b = 0; b < 4; ++b) fx.source->Store(b, 5);
  // Blocks 1 and 2 point past the end of the file: mapping them works, reading would raise
  // SIGBUS; populating reports it, and the pager loads a copy (whose read reports real errors).
  fx.source->beyond_end = {1, 2};
  auto m = fx.file->Map(0, 4).value();
  for (uint64_t b = 0; b < 4; ++b) CHECK(Shows(m->data() + b * kBlock, 5, b));
  CHECK(fx.pager->stats().loads == 2);
  CHECK(fx.pager->stats().file_maps == 2);
  // A descriptor that cannot be mapped at all (a pipe: ENODEV) is copied as well.
  Fixture pipe_fx;
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  for (uint64_t b = 0; b < 3; ++b) pipe_fx.source->Store(b, 6);
  pipe_fx.source->unmappable_fd = fds[0];
  auto p = pipe_fx.file->Map(0, 3).value();
  for (uint64_t b = 0; b < 3; ++b) CHECK(Shows(p->data() + b * kBlock, 6, b));
  CHECK(pipe_fx.pager->stats().loads == 3);
  CHECK(pipe_fx.pager->stats().file_maps == 0);
  p.reset();
  close(fds[0]);
  close(fds[1]);
}

namespace {
// Four blocks: block 1's range lies past the file's end, block 2 is damaged. Loading them all
// must copy block 1, refuse block 2 naming it, and show the others from the file.
void PastEndCopiedDamageRefused(Fixture& fx) {
  for (uint64_t b = 0; b < 4; ++b) fx.source->Store(b, 7);
  fx.source->beyond_end = {1};
  fx.source->damaged = {2};
  auto m = fx.file->Map(0, 4).value();
  const Status st = m->Load(0, 4 * kBlock);
  CHECK(st.code() == Code::kCorruption);
  CHECK(st.message().find("array 'test' block 2") != std::string::npos);
  for (const uint64_t b : {0, 1, 3}) CHECK(Shows(m->data() + b * kBlock, 7, b));
  CHECK(fx.source->checks >= 3);
}

void ForeignBusHandler(int, siginfo_t*, void*) {
  static const char msg[] = "a loader's check raised SIGBUS outside the pager's guard\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(97);
}
}  // namespace

TEST_CASE("mapped blocks: with a SIGBUS handler installed after the pager's, checks read by pread; nothing changes") {
  Fixture fx;  // the pager's handler is installed (when the first pager started)
  struct Foreign {  // installed for the scope of the case, whatever ends it
    Foreign() {
      struct sigaction foreign;
      std::memset(&foreign, 0, sizeof foreign);
      foreign.sa_sigaction = ForeignBusHandler;
      foreign.sa_flags = SA_SIGINFO;
      sigemptyset(&foreign.sa_mask);
      installed = sigaction(SIGBUS, &foreign, &ours) == 0;
    }
    ~Foreign() {
      if (installed) sigaction(SIGBUS, &ours, nullptr);
    }
    struct sigaction ours;
    bool installed = false;
  } foreign;
  REQUIRE(foreign.installed);
  // A range past the file's end, which a check through a mapping would read with a SIGBUS, and a
  // damaged block: read by pread, the first is copied, the second refused.
  const auto before = CheckRangeCountsForTesting();
  PastEndCopiedDamageRefused(fx);
  CHECK(CheckRangeCountsForTesting().first == before.first);  // none through a mapping
}

TEST_CASE("mapped blocks: loaders started by a thread with every signal blocked still turn a SIGBUS of a check into a copy") {
  // Programs block signals before starting threads; loader threads inherit the mask of the thread
  // that starts the pager, and a SIGBUS raised by an access while blocked ends the process.
  // (In the 2 MiB build: there the range past the end is checked through a mapping of its own;
  // with 64 KiB blocks it is not 2 MiB-aligned, and its populate fails before any check.)
  bool blocked = false, loaded = false, shown = false;
  std::thread t([&] {
    sigset_t all;
    sigfillset(&all);
    blocked = pthread_sigmask(SIG_BLOCK, &all, nullptr) == 0;
    Fixture fx;
    for (uint64_t b = 0; b < 3; ++b) fx.source->Store(b, 8);
    fx.source->beyond_end = {1};
    auto m = fx.file->Map(0, 3).value();
    loaded = m->Load(0, 3 * kBlock).ok();
    if (pthread_sigmask(SIG_UNBLOCK, &all, nullptr) != 0) return;  // the loaders keep their mask
    shown = Shows(m->data(), 8, 0) && Shows(m->data() + kBlock, 8, 1) && Shows(m->data() + 2 * kBlock, 8, 2);
  });
  t.join();
  CHECK(blocked);
  CHECK(loaded);
  CHECK(shown);
}

TEST_CASE("CheckChoice: the cheaper way checks, the other one check in 16; a change of the costs is followed") {
  CheckChoice c;
  auto count_mapped = [&](int n) {
    int mapped = 0;
    for (int i = 0; i < n; ++i) mapped += c.Mapped();
    return mapped;
  };
  // Nothing measured: a mapping first (both cost 0), until it has a cost; then pread is tried.
  CHECK(c.Mapped());
  c.Record(true, 2 << 20, 65000);
  CHECK(c.CostPerMiB(true) == 32500);
  CHECK(!c.Mapped());
  c.Record(false, 2 << 20, 110000);
  // Mapping cheaper: 15 of 16 through a mapping, 1 by pread.
  CHECK(count_mapped(160) == 150);
  // The mapping becomes expensive (a machine where each new page-table entry costs): after a few
  // records pread wins, and the mapping is still probed one time in 16.
  for (int i = 0; i < 20; ++i) c.Record(true, 2 << 20, 800000);
  CHECK(c.CostPerMiB(true) > c.CostPerMiB(false));
  CHECK(count_mapped(160) == 10);
  // And back.
  for (int i = 0; i < 40; ++i) c.Record(true, 2 << 20, 60000);
  CHECK(count_mapped(160) == 150);
  // Within half again of pread's cost the mapping is kept (the two ways' averages cross back
  // and forth on a machine where both work, and scans through the mapping were faster there).
  for (int i = 0; i < 40; ++i) c.Record(true, 2 << 20, 80000);
  for (int i = 0; i < 40; ++i) c.Record(false, 2 << 20, 60000);
  CHECK(c.CostPerMiB(true) > c.CostPerMiB(false));
  CHECK(count_mapped(160) == 150);
  for (int i = 0; i < 40; ++i) c.Record(true, 2 << 20, 100000);
  CHECK(count_mapped(160) == 10);
  // Nonsense figures change nothing.
  const uint64_t before = c.CostPerMiB(false);
  c.Record(false, 0, 1000);
  c.Record(false, 4096, -5);
  CHECK(c.CostPerMiB(false) == before);
}

TEST_CASE("mapped blocks checked by pread (where it is the cheaper way): damage refused, a range past the end copied") {
  Fixture fx(64, 0, CheckWay::kPread);
  const auto before = CheckRangeCountsForTesting();
  PastEndCopiedDamageRefused(fx);
  const auto after = CheckRangeCountsForTesting();
  CHECK(after.first == before.first);   // none through a mapping
  CHECK(after.second > before.second);  // block 0 at least (2 MiB-aligned in either build)
  SetCheckWayForTesting(CheckWay::kMapping);
}
