// Pager tests against a fake block source (no storage): semantics.md P1-P11 and W1-W5.
// Concurrency is tested with barriers inside the source, never with timings.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "pager/fault_source.h"
#include "pager/map_budget.h"
#include "pager/pager.h"
#include "page_cache_util.h"
#include "pager_test_util.h"
#include "test_util.h"

using namespace bigarray;
using namespace bigarray::pager;
using bigarray::testing::Eventually;
using bigarray::testing::ReadByte;
using bigarray::testing::SmapsAt;
using bigarray::testing::SmapsEntry;
using bigarray::testing::WithAndWithoutCpuAccessBit;
using bigarray::testing::WriteByte;

namespace {

constexpr size_t kBlock = 64 * 1024;

// Block b, byte i holds Byte(version, b, i). Counts loads; can fail or hold chosen blocks.
class FakeSource : public BlockSource {
 public:
  static std::byte Byte(uint32_t version, uint64_t b, size_t i) {
    return static_cast<std::byte>((version * 131 + b * 31 + i * 7 + 1) & 0xFF);
  }

  Status LoadBlock(uint64_t block, std::span<std::byte> out) override {
    uint32_t v;
    {
      std::unique_lock lock(mu);
      ++loads[block];
      ++in_load;
      cv.notify_all();
      // Held blocks wait until released (bounded: a test that forgets fails, not hangs).
      cv.wait_for(lock, std::chrono::seconds(20), [&] { return !held.count(block); });
      --in_load;
      v = version;
      if (fail.count(block)) return IOError("injected read error");
    }
    for (size_t i = 0; i < out.size(); ++i) out[i] = Byte(v, block, i);
    return Status::Ok();
  }

  int Loads(uint64_t b) {
    std::lock_guard lock(mu);
    return loads[b];
  }
  // Waits (bounded) until at least n loads are in progress at once.
  bool WaitInLoad(int n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(20), [&] { return in_load >= n; });
  }
  void Hold(uint64_t b) {
    std::lock_guard lock(mu);
    held.insert(b);
  }
  void Fail(uint64_t b) {
    std::lock_guard lock(mu);
    fail.insert(b);
  }
  void Release(uint64_t b) {
    std::lock_guard lock(mu);
    held.erase(b);
    cv.notify_all();
  }
  void SetVersion(uint32_t to) {
    std::lock_guard lock(mu);
    version = to;
  }

  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, int> loads;
  std::set<uint64_t> held, fail;
  int in_load = 0;
  uint32_t version = 0;
};

struct Fixture {
  explicit Fixture(uint64_t cache_blocks = 64, unsigned readahead = 0)
      : Fixture(bigarray::testing::TestPager(cache_blocks * kBlock, readahead)) {}
  explicit Fixture(const PagerOptions& o) : Fixture(Pager::Create(o).value()) {}
  explicit Fixture(std::shared_ptr<Pager> p) : pager(std::move(p)) {
    source = std::make_shared<FakeSource>();
    file = pager->OpenFile(source, kBlock, "array 'test'").value();
  }
  std::shared_ptr<Pager> pager;
  std::shared_ptr<FakeSource> source;
  std::shared_ptr<PagedFile> file;
};

// Starts `n` threads, thread t reading byte t of block b through m; `ok` counts right values.
std::vector<std::thread> ReadersOf(const Mapping& m, uint64_t b, int n, std::atomic<int>& ok) {
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t) {
    threads.emplace_back([&m, &ok, b, t] {
      if (ReadByte(m.data() + b * kBlock + t) == FakeSource::Byte(0, b, static_cast<size_t>(t))) ++ok;
    });
  }
  return threads;
}

bool BlockMatches(const std::byte* block, uint32_t version, uint64_t b) {
  for (size_t i = 0; i < kBlock; ++i) {
    if (block[i] != FakeSource::Byte(version, b, i)) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("P1: mapping reserves address space only; nothing loads until touched") {
  Fixture fx;
  const uint64_t huge = bigarray::testing::kHugeBytes;  // 1 TiB (less under TSan)
  auto m = fx.file->Map(0, huge / kBlock).value();
  CHECK(m->size() == huge);
  CHECK(fx.pager->stats().loads == 0);
  CHECK(fx.pager->stats().resident_bytes == 0);
  // A block deep inside loads alone.
  const uint64_t deep = (huge - kBlock) / kBlock;
  CHECK(ReadByte(m->data() + deep * kBlock + 5) == FakeSource::Byte(0, deep, 5));
  CHECK(fx.pager->stats().loads == 1);
}

TEST_CASE("P2: the first read loads once; every byte is the committed content") {
  Fixture fx;
  auto m = fx.file->Map(0, 16).value();
  CHECK(BlockMatches(m->data() + 3 * kBlock, 0, 3));
  CHECK(BlockMatches(m->data() + 3 * kBlock, 0, 3));
  CHECK(fx.source->Loads(3) == 1);
  auto s = fx.pager->stats();
  CHECK(s.loads == 1);
  CHECK(s.dirty_blocks == 0);
  CHECK(s.resident_bytes == kBlock);
}

TEST_CASE("P3: the first write makes a block dirty; unwritten bytes keep their content") {
  Fixture fx;
  auto m = fx.file->Map(0, 4).value();
  std::byte* b1 = m->data() + kBlock;
  WriteByte(b1 + 100, std::byte{0xAB});  // write first, without a read before
  CHECK(fx.pager->stats().dirty_blocks == 1);
  CHECK(fx.source->Loads(1) == 1);
  for (size_t i = 0; i < kBlock; ++i) {
    if (i == 100) {
      CHECK(b1[i] == std::byte{0xAB});
    } else if (b1[i] != FakeSource::Byte(0, 1, i)) {
      FAIL("byte " << i << " lost its content");
    }
  }
  // A block read first and written later becomes dirty too.
  CHECK(ReadByte(m->data() + 2 * kBlock) == FakeSource::Byte(0, 2, 0));
  CHECK(fx.pager->stats().dirty_blocks == 1);
  WriteByte(m->data() + 2 * kBlock + 1, std::byte{1});
  CHECK(fx.pager->stats().dirty_blocks == 2);
}

TEST_CASE("P4: several mappings of the same bytes are coherent") {
  Fixture fx;
  auto a = fx.file->Map(0, 8).value();
  auto b = fx.file->Map(2, 4).value();  // blocks 2..5 at another address
  CHECK(ReadByte(b->data()) == FakeSource::Byte(0, 2, 0));
  WriteByte(a->data() + 3 * kBlock + 9, std::byte{0x77});
  CHECK(ReadByte(b->data() + kBlock + 9) == std::byte{0x77});
  WriteByte(b->data() + kBlock + 10, std::byte{0x66});
  CHECK(ReadByte(a->data() + 3 * kBlock + 10) == std::byte{0x66});
  CHECK(fx.source->Loads(3) == 1);
}

TEST_CASE("P5: clean pages are evicted least recently used first and reload identically") {
  Fixture fx(8);
  auto m = fx.file->Map(0, 64).value();
  for (uint64_t b = 0; b < 8; ++b) CHECK(ReadByte(m->data() + b * kBlock) == FakeSource::Byte(0, b, 0));
  // Touch block 0 again through a fault: invalidate its mapping by reading a new block after
  // re-reading 0 would not fault (it is mapped). So order is decided by faults: 1 is oldest.
  CHECK(ReadByte(m->data() + 8 * kBlock) == FakeSource::Byte(0, 8, 0));
  auto s = fx.pager->stats();
  CHECK(s.evictions >= 1);
  CHECK(s.resident_bytes <= 8 * kBlock);
  CHECK(ReadByte(m->data() + 0 * kBlock + 1) == FakeSource::Byte(0, 0, 1));
  CHECK(fx.source->Loads(0) == 2);  // block 0 was least recently used: evicted and reloaded
  // A sweep through many blocks stays within budget and every block reads back right.
  for (uint64_t b = 0; b < 64; ++b) CHECK(BlockMatches(m->data() + b * kBlock, 0, b));
  CHECK(fx.pager->stats().resident_bytes <= 8 * kBlock);
  for (uint64_t b = 0; b < 64; ++b) CHECK(BlockMatches(m->data() + b * kBlock, 0, b));
}

TEST_CASE("P6 and T8: dirty data beyond the budget spills; commit writes all of it; abort drops it") {
  Fixture fx(8);
  auto m = fx.file->Map(0, 40).value();
  for (uint64_t b = 0; b < 40; ++b) {
    std::memset(m->data() + b * kBlock, static_cast<int>(b + 1), kBlock / 2);
  }
  auto s = fx.pager->stats();
  CHECK(s.dirty_blocks == 40);
  CHECK(s.spills >= 32);
  CHECK(s.resident_bytes <= 8 * kBlock);
  // Every byte is still there, spilled or not.
  for (uint64_t b = 0; b < 40; ++b) {
    CHECK(m->data()[b * kBlock] == std::byte(b + 1));
    CHECK(m->data()[b * kBlock + kBlock / 2] == FakeSource::Byte(0, b, kBlock / 2));
  }
  {
    auto w = fx.pager->BeginWriteout().value();
    REQUIRE(w->entries().size() == 40);
    for (size_t i = 0; i < w->entries().size(); ++i) {
      uint64_t b = w->entries()[i].block;
      auto data = w->Data(i).value();
      REQUIRE(data.size() == kBlock);  // the tail bytes are nonzero: nothing trimmed
      CHECK(data[0] == std::byte(b + 1));
      CHECK(data[kBlock - 1] == FakeSource::Byte(0, b, kBlock - 1));
    }
    w->Finish(false);
  }
  CHECK(fx.pager->Abort().ok());
  CHECK(fx.pager->stats().dirty_blocks == 0);
  for (uint64_t b = 0; b < 40; ++b) CHECK(BlockMatches(m->data() + b * kBlock, 0, b));
}

TEST_CASE("scratch space: ReserveForWrite sets aside what the spills need; spills stay within it; no room is kNoSpace there") {
  // Regression (issue 13): a spill that found the disk full inside a write fault ended the
  // process with SIGBUS; the space is now allocated before pages become dirty, where the error
  // can be returned.
  bigarray::testing::TempDir spill;
  int rc = bigarray::testing::InChild([&] {
    PagerOptions o;
    o.cache_bytes = 8 * kBlock;
    o.readahead_blocks = 0;
    o.spill_dir = spill.path();
    auto pager = Pager::Create(o).value();
    auto source = std::make_shared<FakeSource>();
    auto file = pager->OpenFile(source, kBlock, "array 'test'").value();
    auto m = file->Map(0, 64).value();
    uint64_t reserved = 0;
    {
      // 8 blocks of cache keep 6 dirty ones (less a margin of 2): the other 58 may spill.
      auto r = file->ReserveForWrite(0, 64, 64);
      if (!r.ok()) return 10;
      reserved = pager->stats().scratch_reserved_bytes;
      if (reserved < 58 * kBlock) return 11;
      // The scratch file may not grow past what was reserved: a write beyond fails (EFBIG).
      signal(SIGXFSZ, SIG_IGN);
      struct rlimit limit{reserved, reserved};
      if (setrlimit(RLIMIT_FSIZE, &limit) != 0) return 12;
      for (uint64_t b = 0; b < 64; ++b) std::memset(m->data() + b * kBlock, static_cast<int>(b + 1), kBlock / 2);
      if (pager->stats().spills < 56 || pager->stats().dirty_blocks != 64) return 13;
      // Blocks already dirty need nothing more.
      if (!file->ReserveForWrite(0, 64, 64).ok() || pager->stats().scratch_reserved_bytes != reserved) return 14;
      // 960 more do not fit (what was reserved is rounded up to 16 MiB): refused, nothing written.
      auto more = file->ReserveForWrite(64, 1024, 960);
      if (more.ok() || more.status().code() != Code::kNoSpace) return 15;
      if (more.status().message().find("prepare to write 960 block(s) of array 'test': reserve ") != 0) {
        std::fprintf(stderr, "%s\n", more.status().ToString().c_str());
        return 16;
      }
      if (pager->stats().scratch_reserved_bytes != reserved || pager->stats().dirty_blocks != 64) return 17;
    }
    auto w = pager->BeginWriteout().value();
    if (w->entries().size() != 64) return 18;
    for (size_t i = 0; i < w->entries().size(); ++i) {
      const uint64_t b = w->entries()[i].block;
      auto data = w->Data(i).value();
      if (data[0] != std::byte(b + 1) || data[kBlock - 1] != FakeSource::Byte(0, b, kBlock - 1)) return 19;
    }
    w->Finish(true);
    return pager->stats().scratch_reserved_bytes == 0 ? 0 : 20;  // nothing dirty: the space goes back
  });
  CHECK(rc == 0);
}

TEST_CASE("P8: errno of the interrupted code is unchanged by a handled fault") {
  Fixture fx;
  auto m = fx.file->Map(0, 4).value();
  errno = EDOM;
  std::byte v = ReadByte(m->data() + kBlock);
  CHECK(errno == EDOM);
  errno = ERANGE;
  WriteByte(m->data() + 2 * kBlock, v);
  CHECK(errno == ERANGE);
}

TEST_CASE("P9: threads faulting the same block cause one load") {
  Fixture fx;
  auto m = fx.file->Map(0, 4).value();
  fx.source->Hold(2);
  std::atomic<int> ok{0};
  auto threads = ReadersOf(*m, 2, 8, ok);
  REQUIRE(fx.source->WaitInLoad(1));
  fx.source->Release(2);
  for (auto& t : threads) t.join();
  CHECK(ok == 8);
  CHECK(fx.source->Loads(2) == 1);
}

TEST_CASE("P9: faults on different blocks load in parallel and never wait behind another's I/O") {
  Fixture fx;
  auto m = fx.file->Map(0, 8).value();
  for (uint64_t b = 0; b < 4; ++b) fx.source->Hold(b);
  std::vector<std::thread> threads;
  for (uint64_t b = 0; b < 4; ++b) {
    threads.emplace_back([&, b] { (void)ReadByte(m->data() + b * kBlock); });
  }
  // All four loads are inside the source at once: none waits for another.
  CHECK(fx.source->WaitInLoad(4));
  // And while they are all stuck, another block still loads.
  CHECK(ReadByte(m->data() + 6 * kBlock) == FakeSource::Byte(0, 6, 0));
  for (uint64_t b = 0; b < 4; ++b) fx.source->Release(b);
  for (auto& t : threads) t.join();
}

TEST_CASE("P10: an explicit load returns the error naming the array and block") {
  Fixture fx;
  auto m = fx.file->Map(0, 8).value();
  fx.source->Fail(5);
  Status st = m->Load(4 * kBlock, 2 * kBlock);
  CHECK(st.code() == Code::kIOError);
  CHECK(st.message().find("array 'test' block 5") != std::string::npos);
  CHECK(st.message().find("injected read error") != std::string::npos);
  CHECK(m->Load(0, 4 * kBlock).ok());
  CHECK(fx.pager->stats().loads == 4 + 2);  // block 4 loaded, 5 failed, 0..3 loaded
}

TEST_CASE("P10: a load error inside a fault ends the process with SIGBUS and a message") {
  auto child = bigarray::testing::RunCapturingStderr([] {
    Fixture fx;
    auto m = fx.file->Map(0, 8).value();
    fx.source->Fail(3);
    (void)ReadByte(m->data() + 3 * kBlock);
  });
  INFO("child stderr: " << child.err);
  REQUIRE(WIFSIGNALED(child.status));
  CHECK(WTERMSIG(child.status) == SIGBUS);
  CHECK(child.err.find("array 'test' block 3") != std::string::npos);
  CHECK(child.err.find("injected read error") != std::string::npos);
}

TEST_CASE("kernel access to an unloaded page fails with EFAULT; Load makes it work") {
  Fixture fx;
  auto m = fx.file->Map(0, 4).value();
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  errno = 0;
  CHECK(write(fds[1], m->data() + kBlock, 100) == -1);
  CHECK(errno == EFAULT);
  REQUIRE(m->Load(kBlock, 100).ok());
  CHECK(write(fds[1], m->data() + kBlock, 100) == 100);
  char back[100];
  REQUIRE(read(fds[0], back, 100) == 100);
  CHECK(std::byte(back[7]) == FakeSource::Byte(0, 1, 7));
  close(fds[0]);
  close(fds[1]);
}

TEST_CASE("P11: sequential faults trigger read-ahead of the following blocks") {
  Fixture fx(64, 4);
  auto m = fx.file->Map(0, 32).value();
  for (uint64_t b = 0; b < 3; ++b) (void)ReadByte(m->data() + b * kBlock);
  // Blocks 3.. are being loaded ahead without being touched.
  CHECK(Eventually([&] { return fx.source->Loads(5) != 0; }));
  CHECK(fx.source->Loads(5) == 1);
  CHECK(fx.pager->stats().readahead_loads >= 3);
  // Touching them now loads nothing again.
  (void)ReadByte(m->data() + 4 * kBlock);
  (void)ReadByte(m->data() + 5 * kBlock);
  CHECK(fx.source->Loads(4) == 1);
  CHECK(fx.source->Loads(5) == 1);
  // Random access does not read ahead.
  Fixture rnd(64, 4);
  auto r = rnd.file->Map(0, 32).value();
  for (uint64_t b : {20, 3, 11, 27}) (void)ReadByte(r->data() + b * kBlock);
  CHECK(rnd.pager->stats().readahead_loads == 0);
  // Nor do short jumps forward, within the window, over blocks that are not resident: random
  // access over a small array (once, each such jump started a window; the fault latency measured
  // on random blocks was that of the blocks read ahead).
  Fixture jumps(64, 8);
  auto j = jumps.file->Map(0, 32).value();
  for (uint64_t b : {0, 2, 5, 9, 12}) (void)ReadByte(j->data() + b * kBlock);
  CHECK(jumps.pager->stats().readahead_loads == 0);
}

TEST_CASE("P11: read-ahead that copies from its source overlaps, whatever readahead_loaders; faults are served beside it") {
  // readahead_loaders bounds the loaders checking slots in the page cache (pager_mapped_test); a
  // copy reads its source (a disk, a server) and gives its turn up: such reads overlap.
  PagerOptions o;
  o.cache_bytes = 64 * kBlock;
  o.readahead_blocks = 8;
  o.readahead_loaders = 1;
  Fixture fx(o);
  auto m = fx.file->Map(0, 32).value();
  for (uint64_t b = 2; b < 12; ++b) fx.source->Hold(b);
  (void)ReadByte(m->data());
  (void)ReadByte(m->data() + kBlock);  // a sequential run: blocks 2-9 are read ahead, and held
  CHECK(fx.source->WaitInLoad(2));
  // A fault on another block is served beside the read-ahead, which still waits.
  CHECK(ReadByte(m->data() + 20 * kBlock) == FakeSource::Byte(0, 20, 0));
  for (uint64_t b = 2; b < 12; ++b) fx.source->Release(b);
  CHECK(Eventually([&] { return fx.pager->stats().readahead_loads >= 8; }));
  for (uint64_t b = 2; b < 10; ++b) CHECK(BlockMatches(m->data() + b * kBlock, 0, b));
}

TEST_CASE("P11: the read-ahead window is at most a quarter of the budget: no block is loaded twice by a scan") {
  // 64 blocks ahead asked for, a budget of 16: a window of 64 would have its prefetches evict one
  // another's blocks before the reader gets to them, and the scan would load those again.
  Fixture fx(16, 64);
  auto m = fx.file->Map(0, 64).value();
  (void)ReadByte(m->data());
  (void)ReadByte(m->data() + kBlock);  // a sequential run: read-ahead starts
  // Let the read-ahead settle: no prefetch for 100 ms.
  for (uint64_t seen = UINT64_MAX, i = 0; i < 100; ++i) {
    const uint64_t now = fx.pager->stats().readahead_loads;
    if (now == seen) break;
    seen = now;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(fx.pager->stats().readahead_loads <= 4);
  for (uint64_t b = 0; b < 64; ++b) REQUIRE(ReadByte(m->data() + b * kBlock + 3) == FakeSource::Byte(0, b, 3));
  for (uint64_t b = 0; b < 64; ++b) CHECK_MESSAGE(fx.source->Loads(b) == 1, "block " << b);
}

TEST_CASE("P11: each thread's sequential run reads ahead, however the threads' faults interleave") {
  // Six threads scan six parts of one file in turns: the file's faults go round them, and each
  // thread's own run still starts (one run per file saw only jumps; four, round-robin, lost
  // each thread's run to the next four threads' first faults).
  Fixture fx(64, 4);
  auto m = fx.file->Map(0, 64).value();
  constexpr int kThreads = 6;
  std::mutex mu;
  std::condition_variable cv;
  int turn = 0;
  auto scan = [&](int me) {
    for (uint64_t b = 10 * me; b < 10 * me + 3u; ++b) {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return turn % kThreads == me; });
      (void)ReadByte(m->data() + b * kBlock);
      ++turn;
      cv.notify_all();
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(scan, t);
  for (std::thread& t : threads) t.join();
  for (uint64_t t = 0; t < kThreads; ++t) {
    CHECK_MESSAGE(Eventually([&] { return fx.source->Loads(10 * t + 4) == 1; }), "thread " << t);
  }
}

TEST_CASE("P11: the fault on a run's marker continues the run even if blocks before it were evicted") {
  Fixture fx(32, 8);  // a window of 8 blocks
  auto m = fx.file->Map(0, 64).value();
  (void)ReadByte(m->data());
  (void)ReadByte(m->data() + kBlock);  // a run: 2..9 read ahead, 6 its marker, left unmapped
  REQUIRE(m->Load(2 * kBlock, 8 * kBlock).ok());  // waits for them (a load in flight is not evictable)
  for (uint64_t b = 2; b < 10; ++b) REQUIRE(fx.source->Loads(b) == 1);
  // Another part of the file fills the budget: every block of the run is evicted.
  REQUIRE(m->Load(32 * kBlock, 32 * kBlock).ok());
  REQUIRE(fx.pager->stats().evictions >= 10);
  (void)ReadByte(m->data() + 6 * kBlock);  // the marker: the run goes on past it
  CHECK(Eventually([&] { return fx.source->Loads(12) == 1; }));
}

TEST_CASE("W1: writeout stores dirty blocks; they become clean, resident, write-protected") {
  Fixture fx;
  auto m = fx.file->Map(0, 8).value();
  WriteByte(m->data() + 1 * kBlock, std::byte{9});
  std::memset(m->data() + 2 * kBlock, 0, kBlock);  // all zero: trims to nothing
  CHECK(ReadByte(m->data() + 3 * kBlock) == FakeSource::Byte(0, 3, 0));  // clean: not written out
  auto w = fx.pager->BeginWriteout().value();
  REQUIRE(w->entries().size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    auto data = w->Data(i).value();  // whole blocks: the store drops trailing zeros
    CHECK(data.size() == kBlock);
    if (w->entries()[i].block == 2) CHECK(bigarray::testing::AllZero(data));
    if (w->entries()[i].block == 1) CHECK(data[0] == std::byte{9});
  }
  w->Finish(true);
  auto s = fx.pager->stats();
  CHECK(s.dirty_blocks == 0);
  CHECK(ReadByte(m->data() + kBlock) == std::byte{9});
  CHECK(fx.source->Loads(1) == 1);  // still resident: no reload
  WriteByte(m->data() + kBlock + 1, std::byte{8});  // write-protected: faults, dirty again
  CHECK(fx.pager->stats().dirty_blocks == 1);
}

TEST_CASE("W2: a failed writeout leaves every page dirty and abortable") {
  Fixture fx;
  auto m = fx.file->Map(0, 4).value();
  WriteByte(m->data(), std::byte{1});
  WriteByte(m->data() + kBlock, std::byte{2});
  {
    auto w = fx.pager->BeginWriteout().value();
    CHECK(w->entries().size() == 2);
  }  // destroyed unfinished: as Finish(false)
  CHECK(fx.pager->stats().dirty_blocks == 2);
  WriteByte(m->data() + 5, std::byte{5});  // still writable after the failed writeout
  CHECK(ReadByte(m->data()) == std::byte{1});
  CHECK(fx.pager->Abort().ok());
  CHECK(ReadByte(m->data()) == FakeSource::Byte(0, 0, 0));
}

TEST_CASE("W3: abort drops dirty pages; dirty-abort-dirty-abort repeats cleanly") {
  Fixture fx;
  auto m = fx.file->Map(0, 4).value();
  CHECK(ReadByte(m->data() + 3 * kBlock) == FakeSource::Byte(0, 3, 0));
  for (int round = 0; round < 5; ++round) {
    WriteByte(m->data() + kBlock + 7, std::byte(0xF0 + round));
    CHECK(ReadByte(m->data() + kBlock + 7) == std::byte(0xF0 + round));
    CHECK(fx.pager->stats().dirty_blocks == 1);
    CHECK(fx.pager->Abort().ok());
    CHECK(fx.pager->stats().dirty_blocks == 0);
    CHECK(ReadByte(m->data() + kBlock + 7) == FakeSource::Byte(0, 1, 7));
  }
  CHECK(fx.source->Loads(3) == 1);  // clean pages survive aborts
}

TEST_CASE("W4: invalidation of absent, clean and dirty blocks") {
  Fixture fx;
  auto m = fx.file->Map(0, 4).value();
  fx.file->Invalidate(2);  // not resident: nothing happens
  CHECK(fx.pager->stats().loads == 0);
  CHECK(ReadByte(m->data()) == FakeSource::Byte(0, 0, 0));
  WriteByte(m->data() + kBlock, std::byte{0xEE});
  fx.source->SetVersion(1);
  fx.file->Invalidate(0);
  fx.file->Invalidate(1);
  CHECK(fx.pager->stats().dirty_blocks == 0);  // the dirty page lost its changes
  CHECK(BlockMatches(m->data(), 1, 0));
  CHECK(BlockMatches(m->data() + kBlock, 1, 1));
  CHECK(fx.source->Loads(0) == 2);
}

TEST_CASE("W5: an invalidation during a load discards it; the access sees the new content") {
  Fixture fx;
  auto m = fx.file->Map(0, 4).value();
  fx.source->Hold(1);
  std::byte seen{};
  std::thread reader([&] { seen = ReadByte(m->data() + kBlock + 3); });
  REQUIRE(fx.source->WaitInLoad(1));
  fx.source->SetVersion(7);
  fx.file->Invalidate(1);
  fx.source->Release(1);
  reader.join();
  CHECK(seen == FakeSource::Byte(7, 1, 3));
  CHECK(fx.source->Loads(1) == 2);
}

TEST_CASE("Truncate drops pages at and past the end, dirty ones included") {
  Fixture fx;
  auto m = fx.file->Map(0, 8).value();
  for (uint64_t b = 0; b < 6; ++b) WriteByte(m->data() + b * kBlock, std::byte{0x11});
  fx.file->Truncate(3);
  CHECK(fx.pager->stats().dirty_blocks == 3);
  CHECK(ReadByte(m->data() + 4 * kBlock) == FakeSource::Byte(0, 4, 0));
  CHECK(ReadByte(m->data() + 2 * kBlock) == std::byte{0x11});
}

TEST_CASE("many threads write disjoint blocks; writeout sees every byte") {
  Fixture fx(16);
  auto m = fx.file->Map(0, 64).value();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t b = t; b < 64; b += 4) std::memset(m->data() + b * kBlock, int(b) + 1, kBlock);
    });
  }
  for (auto& t : threads) t.join();
  auto w = fx.pager->BeginWriteout().value();
  REQUIRE(w->entries().size() == 64);
  for (size_t i = 0; i < 64; ++i) {
    uint64_t b = w->entries()[i].block;
    auto data = w->Data(i).value();
    REQUIRE(data.size() == kBlock);
    CHECK(data[0] == std::byte(b + 1));
    CHECK(data[kBlock - 1] == std::byte(b + 1));
  }
  w->Finish(true);
  CHECK(fx.pager->stats().dirty_blocks == 0);
}

TEST_CASE("a mapping stays valid after its file handle is dropped") {
  Fixture fx;
  auto m = fx.file->Map(0, 4).value();
  fx.file.reset();
  CHECK(ReadByte(m->data() + kBlock) == FakeSource::Byte(0, 1, 0));
}

namespace {
// Whether the kernel gives a memfd's mapping huge pages when asked (MADV_HUGEPAGE).
bool ShmemHugePagesOnRequest() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
  std::string line;
  std::getline(f, line);
  for (const char* on : {"[always]", "[within_size]", "[advise]", "[force]"}) {
    if (line.find(on) != std::string::npos) return true;
  }
  return false;
}
}  // namespace

TEST_CASE("the RAM pool of 2 MiB blocks asks for huge pages; where the kernel gives them, a block is one PMD entry") {
  auto pager = bigarray::testing::TestPager(16 * kHuge, 0);
  auto source = std::make_shared<FakeSource>();
  auto file = pager->OpenFile(source, kHuge, "array 'huge'").value();
  auto m = file->Map(0, 4).value();
  WriteByte(m->data() + kHuge + 7, std::byte{42});  // loads block 1 into a slot, moved here
  CHECK(ReadByte(m->data() + kHuge + 8) == FakeSource::Byte(0, 1, 8));
  CHECK(ReadByte(m->data() + kHuge + 7) == std::byte{42});
  SmapsEntry view = SmapsAt(m->data() + kHuge);
  CHECK(view.start % kHuge == 0);
  CHECK(view.name.find("bigarray-cache") != std::string::npos);
  CHECK(view.fields["VmFlags"].find(" hg") != std::string::npos);  // moved with the slot
  if (ShmemHugePagesOnRequest()) {
    CHECK(view.fields["ShmemPmdMapped"] == "2048 kB");
  } else {
    MESSAGE("transparent_hugepage/shmem_enabled gives a memfd no huge pages here: the pool has 4 KiB pages");
  }
}

TEST_CASE("block sizes must be multiples of the page size") {
  Fixture fx;
  CHECK(fx.pager->OpenFile(fx.source, 1000, "x").status().code() == Code::kInvalidArgument);
}

TEST_CASE("a read in another mapping during a writeout does not let writes slip through") {
  Fixture fx;
  auto a = fx.file->Map(0, 4).value();
  WriteByte(a->data() + kBlock, std::byte{1});
  auto w = fx.pager->BeginWriteout().value();
  REQUIRE(w->entries().size() == 1);
  auto b = fx.file->Map(0, 4).value();
  CHECK(ReadByte(b->data() + kBlock) == std::byte{1});  // maps the page into b, read-only
  std::thread writer([&] { WriteByte(b->data() + kBlock, std::byte{2}); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // give a wrong write time to land
  CHECK(w->Data(0).value()[0] == std::byte{1});  // the writeout sees the state it began with
  w->Finish(true);
  writer.join();  // the parked write proceeds in the next transaction
  CHECK(ReadByte(a->data() + kBlock) == std::byte{2});
  CHECK(fx.pager->stats().dirty_blocks == 1);
}

TEST_CASE("files of two block sizes spill side by side without overwriting each other") {
  PagerOptions o;
  o.cache_bytes = 8 * kBlock;
  auto pager = Pager::Create(o).value();
  auto source = std::make_shared<FakeSource>();
  auto small = pager->OpenFile(source, kBlock, "small").value();
  auto large = pager->OpenFile(source, 2 * kBlock, "large").value();
  auto ms = small->Map(0, 16).value();
  auto ml = large->Map(0, 16).value();
  for (uint64_t b = 0; b < 16; ++b) {
    std::memset(ms->data() + b * kBlock, int(b) + 1, kBlock);
    std::memset(ml->data() + b * 2 * kBlock, int(b) + 101, 2 * kBlock);
  }
  CHECK(pager->stats().spills > 0);
  auto w = pager->BeginWriteout().value();
  REQUIRE(w->entries().size() == 32);
  for (size_t i = 0; i < 32; ++i) {
    const auto& e = w->entries()[i];
    auto data = w->Data(i).value();
    const bool is_small = e.file == small;
    REQUIRE(data.size() == (is_small ? kBlock : 2 * kBlock));
    const std::byte want{static_cast<unsigned char>(e.block + (is_small ? 1 : 101))};
    CHECK(data.front() == want);
    CHECK(data.back() == want);
  }
  w->Finish(true);
  CHECK(pager->stats().dirty_blocks == 0);
}

TEST_CASE("streaming writes racing read-ahead are never lost (a page is never writable while clean)") {
  // Regression: read-ahead moved a page into the mapping with write access and protected it
  // only afterwards; a writer arriving at that instant wrote a page still believed clean.
  for (int round = 0; round < 20; ++round) {
    Fixture fx(64, 8);
    auto m = fx.file->Map(0, 64).value();
    for (uint64_t b = 0; b < 64; ++b) {
      for (size_t i = 0; i < kBlock; i += 512) m->data()[b * kBlock + i] = std::byte(b + 1);
    }
    auto w = fx.pager->BeginWriteout().value();
    REQUIRE(w->entries().size() == 64);
    for (size_t i = 0; i < 64; ++i) {
      auto data = w->Data(i).value();
      REQUIRE(data[0] == std::byte(w->entries()[i].block + 1));
    }
  }
}

TEST_CASE("reads never dirty a block: faults that find their page already mapped read-only") {
  // Regression: a read fault that found its page mapped read-only in its own mapping (another
  // thread's fault or read-ahead had mapped it meanwhile) was taken as a write: the page
  // became dirty, was stored again at commit, and conflicted with other writers.
  WithAndWithoutCpuAccessBit([] {
    Fixture fx(64, 4);
    auto m = fx.file->Map(0, 32).value();
    fx.source->Hold(2);
    std::atomic<int> ok{0};
    auto threads = ReadersOf(*m, 2, 8, ok);
    // Every thread's fault is in before the load ends: 7 of them find the page mapped after it.
    REQUIRE(Eventually([&] { return fx.pager->stats().faults >= 8; }));
    fx.source->Release(2);
    for (auto& t : threads) t.join();
    threads.clear();
    CHECK(ok == 8);
    // Sequential runs from several threads at once: read-ahead maps pages under their faults.
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (uint64_t b = 0; b < 32; ++b) {
          if (ReadByte(m->data() + b * kBlock + 9) == FakeSource::Byte(0, b, 9)) ++ok;
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK(ok == 8 + 4 * 32);
    CHECK(fx.pager->stats().dirty_blocks == 0);
    auto w = fx.pager->BeginWriteout().value();
    CHECK(w->entries().empty());
    w->Finish(true);
  });
}

TEST_CASE("writes are writes: after a read, to an unloaded page, and to a page another thread mapped") {
  WithAndWithoutCpuAccessBit([] {
    Fixture fx(64, 0);
    auto m = fx.file->Map(0, 8).value();
    (void)ReadByte(m->data() + 1 * kBlock);       // mapped read-only by a read
    WriteByte(m->data() + 1 * kBlock, std::byte{0xA1});
    WriteByte(m->data() + 3 * kBlock + 5, std::byte{0xA3});  // never loaded before
    (void)ReadByte(m->data() + 5 * kBlock);       // this thread maps it read-only...
    std::thread([&] { WriteByte(m->data() + 5 * kBlock + 7, std::byte{0xA5}); }).join();  // ...another writes
    CHECK(fx.pager->stats().dirty_blocks == 3);
    auto w = fx.pager->BeginWriteout().value();
    std::map<uint64_t, std::byte> written;
    for (size_t i = 0; i < w->entries().size(); ++i) {
      const uint64_t b = w->entries()[i].block;
      const size_t at = b == 1 ? 0 : b == 3 ? 5 : 7;
      written[b] = w->Data(i).value()[at];
    }
    w->Finish(true);
    CHECK(written == std::map<uint64_t, std::byte>{{1, std::byte{0xA1}}, {3, std::byte{0xA3}}, {5, std::byte{0xA5}}});
  });
}

TEST_CASE("read-ahead stops at the file's extent, not at the end of its mapping") {
  // Regression: a 10-block array mapped with room to grow loaded 8 blocks past its end.
  Fixture fx(64, 8);
  auto m = fx.file->Map(0, 32).value();
  fx.file->SetExtent(10);
  for (uint64_t b = 0; b < 10; ++b) CHECK(ReadByte(m->data() + b * kBlock) == FakeSource::Byte(0, b, 0));
  int loads = 0;
  for (const auto& [block, n] : fx.source->loads) {
    CHECK(block < 10);
    loads += n;
  }
  CHECK(loads == 10);
  CHECK(fx.pager->stats().readahead_loads > 0);
}

TEST_CASE("map entries stay within the budget: least recently used pages are unmapped, nothing lost") {
  // A budget of 400 map entries, for ~100 mapped pages; 600 blocks are read, then written.
  MapBudget::Get().SetLimitForTesting(MapBudget::Get().used() + 400);
  {
    Fixture fx(1024, 0);
    auto m = fx.file->Map(0, 600).value();
    for (uint64_t b = 0; b < 600; ++b) REQUIRE(ReadByte(m->data() + b * kBlock + 3) == FakeSource::Byte(0, b, 3));
    CHECK(fx.pager->stats().map_entries <= 400);
    CHECK(fx.pager->stats().map_reclaims > 0);
    CHECK(fx.pager->stats().loads == 600);  // unmapped pages stay resident: no reloads
    for (uint64_t b = 0; b < 600; ++b) WriteByte(m->data() + b * kBlock + 3, std::byte{0x5A});
    for (uint64_t b = 0; b < 600; ++b) REQUIRE(ReadByte(m->data() + b * kBlock + 3) == std::byte{0x5A});
    CHECK(fx.pager->stats().map_entries <= 400);
    CHECK(fx.pager->stats().loads == 600);
    auto w = fx.pager->BeginWriteout().value();
    REQUIRE(w->entries().size() == 600);
    for (size_t i = 0; i < w->entries().size(); ++i) {
      auto data = w->Data(i).value();
      CHECK(data[3] == std::byte{0x5A});
      CHECK(data[4] == FakeSource::Byte(0, w->entries()[i].block, 4));
    }
    w->Finish(true);
  }
  MapBudget::Get().SetLimitForTesting(0);
  CHECK(MapBudget::LimitFor(65530) == 65530 - 16382);
  CHECK(MapBudget::LimitFor(10000) == 10000 - 4096);
  CHECK(MapBudget::LimitFor(6000) == 3000);
}

TEST_CASE("no thread to be had: faults go on with the loaders there are, never a crash") {
  // Regression: std::system_error escaped PagerImpl::BeginIo on a loader thread (SIGABRT) when
  // another loader could not be created (ulimit -u, ulimit -v).
  int rc = bigarray::testing::InChild([] {
    PagerOptions o;
    o.cache_bytes = 64 * kBlock;
    o.loader_threads = 1;
    o.readahead_blocks = 0;
    auto pager = Pager::Create(o).value();
    auto source = std::make_shared<FakeSource>();
    auto file = pager->OpenFile(source, kBlock, "array 'test'").value();
    auto m = file->Map(0, 4).value();
    source->Hold(1);
    std::atomic<int> go{0}, ok{0};
    std::vector<std::thread> threads;  // started before the limit: only loaders are refused
    for (uint64_t b : {1, 2}) {
      threads.emplace_back([&, b] {
        while (go < static_cast<int>(b)) std::this_thread::yield();
        if (ReadByte(m->data() + b * kBlock) == FakeSource::Byte(0, b, 0)) ++ok;
      });
    }
    // No more processes for this user: root is exempt from RLIMIT_NPROC, so become nobody.
    if (getuid() == 0 && setuid(65534) != 0) return 10;
    struct rlimit none{0, 0};
    if (setrlimit(RLIMIT_NPROC, &none) != 0) return 11;
    go = 1;  // block 1's load holds the only loader, which tries to start a second one
    if (!source->WaitInLoad(1)) return 12;
    go = 2;  // block 2's fault waits for a loader: the one there is, once block 1 is loaded
    if (!Eventually([&] { return pager->stats().faults >= 2; })) return 13;
    source->Release(1);
    for (auto& t : threads) t.join();
    if (pager->stats().loader_threads != 1) return 14;  // the refused loader was really refused
    return ok == 2 ? 0 : 15;
  });
  CHECK(rc == 0);
}

TEST_CASE("no thread to be had: Create says which error, and prefault_cache goes on without its thread") {
  // Regression: a prefault thread that could not be created threw std::system_error out of
  // OpenFile (the tool reported it as "Internal"); and the refusal to start any loader did not
  // name the error.
  int rc = bigarray::testing::InChild([] {
    PagerOptions o;
    o.cache_bytes = 64 * kBlock;
    o.loader_threads = 1;
    o.prefault_cache = true;
    auto pager = Pager::Create(o).value();  // its loader starts before the limit
    if (getuid() == 0 && setuid(65534) != 0) return 10;  // root is exempt from RLIMIT_NPROC
    struct rlimit none{0, 0};
    if (setrlimit(RLIMIT_NPROC, &none) != 0) return 11;
    auto refused = Pager::Create(o);
    if (refused.ok() || refused.status().code() != Code::kResourceExhausted) return 12;
    const std::string m = refused.status().message();
    if (m.find("could not create a thread for the pager's loader: Resource temporarily unavailable (EAGAIN)") ==
        std::string::npos) {
      std::fprintf(stderr, "%s\n", m.c_str());
      return 13;
    }
    auto source = std::make_shared<FakeSource>();
    auto file = pager->OpenFile(source, kBlock, "array 'test'");  // threw before
    if (!file.ok()) return 14;
    auto m2 = (*file)->Map(0, 2).value();
    return ReadByte(m2->data() + kBlock) == FakeSource::Byte(0, 1, 0) ? 0 : 15;
  });
  CHECK(rc == 0);
}
