// The windows loaders check slots through (pager/check_window.h): slots hashed where they lie,
// page-table entries dropped in batches, a reused descriptor or a grown file mapped anew, a file
// cut below a slot reported as unreadable.
#include "pager/check_window.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pager/bus_guard.h"
#include "pager/file_ranges.h"
#include "pager/io.h"
#include "pager/map_budget.h"
#include "page_cache_util.h"
#include "test_util.h"

using namespace bigarray;
using namespace bigarray::pager;
using bigarray::testing::Eventually;

namespace {

constexpr size_t kSlot = kHuge;

// Expects every byte of the range to be `want`.
class ByteCheck : public RangeCheck {
 public:
  ByteCheck(std::byte want, size_t length) : want_(want), length_(length) {}
  void Update(std::span<const std::byte> piece) noexcept override {
    for (std::byte b : piece) same_ &= b == want_;
    seen_ += piece.size();
  }
  Status Finish() override {
    if (seen_ != length_) return Internal("the check was not given the range's bytes");
    return same_ ? Status::Ok() : Corruption("checksum mismatch");
  }

 private:
  const std::byte want_;
  const size_t length_;
  size_t seen_ = 0;
  bool same_ = true;
};

std::string TempBase() { return std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp"; }

// A file of `slots` slots, slot i filled with byte `first + i`, open for reading and writing;
// closed and removed with the object.
struct SlotFile {
  SlotFile(const std::string& name, size_t slots, int first)
      : path(TempBase() + "/check_window_" + std::to_string(getpid()) + "_" + name),
        fd(open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600)) {
    REQUIRE(fd >= 0);
    std::vector<std::byte> slot(kSlot);
    for (size_t i = 0; i < slots; ++i) {
      std::fill(slot.begin(), slot.end(), static_cast<std::byte>(first + static_cast<int>(i)));
      REQUIRE(pwrite(fd, slot.data(), kSlot, static_cast<off_t>(i * kSlot)) == static_cast<ssize_t>(kSlot));
    }
  }
  ~SlotFile() {
    close(fd);
    unlink(path.c_str());
  }
  const std::string path;
  const int fd;
};

FileRange Slot(int fd, size_t i, int byte) {
  return FileRange{fd, static_cast<off_t>(i * kSlot), kSlot, std::make_shared<ByteCheck>(static_cast<std::byte>(byte), kSlot)};
}

// Whether this process's page tables map the page at `p` (/proc/self/pagemap, bit 63).
bool Present(const std::byte* p) {
  const int fd = open("/proc/self/pagemap", O_RDONLY);
  REQUIRE(fd >= 0);
  uint64_t entry = 0;
  const auto at = static_cast<off_t>(reinterpret_cast<uintptr_t>(p) / static_cast<uintptr_t>(sysconf(_SC_PAGESIZE)) * 8);
  REQUIRE(pread(fd, &entry, sizeof entry, at) == static_cast<ssize_t>(sizeof entry));
  close(fd);
  return (entry >> 63) & 1;
}

}  // namespace

TEST_CASE("check windows: a slot is checked where it lies; entries of checked slots are dropped in batches") {
  InstallBusGuard();
  REQUIRE(BusGuardInstalled());
  const size_t batch = CheckWindows::kDropBatch / kSlot;
  const SlotFile file("batches", batch + 4, 1);
  const int fd = file.fd;
  CheckWindows windows;
  CheckWindows::WindowInfo info;
  CHECK_FALSE(windows.MappedForTesting(fd, 0, &info));
  for (size_t i = 0; i < batch + 4; ++i) {
    Status error;
    REQUIRE(windows.Check(Slot(fd, i, 1 + static_cast<int>(i)), SlotRead{.cached = true}, &error) == GuardedRead::kDone);
    CHECK(error.ok());
    REQUIRE(windows.MappedForTesting(fd, 0, &info));
    if (i + 1 < batch) {
      CHECK(info.undropped == (i + 1) * kSlot);
      CHECK(Present(info.base + i * kSlot));  // the hash mapped it; not dropped yet
    }
  }
  // The first batch was dropped at once, the rest is still mapped.
  CHECK(info.undropped == 4 * kSlot);
  for (size_t i = 0; i < batch; ++i) CHECK_FALSE(Present(info.base + i * kSlot));
  for (size_t i = batch; i < batch + 4; ++i) CHECK(Present(info.base + i * kSlot));

  // Damage is the check's verdict, as through any other way.
  Status error;
  REQUIRE(windows.Check(Slot(fd, 2, 99), SlotRead{.cached = true}, &error) == GuardedRead::kDone);
  CHECK(error.code() == Code::kCorruption);
}

TEST_CASE("check windows: a descriptor reused for another file is checked against that file") {
  InstallBusGuard();
  const SlotFile a("a", 2, 10), b("b", 2, 20);
  const int fd = a.fd;
  CheckWindows windows;
  Status error;
  REQUIRE(windows.Check(Slot(fd, 1, 11), SlotRead{.cached = true}, &error) == GuardedRead::kDone);
  CHECK(error.ok());
  // Same descriptor number, another file: its bytes, not those of the old window.
  REQUIRE(dup2(b.fd, fd) == fd);
  REQUIRE(windows.Check(Slot(fd, 1, 21), SlotRead{.cached = true}, &error) == GuardedRead::kDone);
  CHECK(error.ok());
}

TEST_CASE("check windows: a slot past the end of the window is checked through a larger one") {
  InstallBusGuard();
  const SlotFile file("grow", 1, 5);
  const int fd = file.fd;
  CheckWindows windows;
  Status error;
  REQUIRE(windows.Check(Slot(fd, 0, 5), SlotRead{.cached = true}, &error) == GuardedRead::kDone);
  CheckWindows::WindowInfo first;
  REQUIRE(windows.MappedForTesting(fd, 0, &first));
  const size_t slots = first.size / kSlot + 3;  // the file grows past the window
  std::vector<std::byte> slot(kSlot, std::byte{7});
  REQUIRE(pwrite(fd, slot.data(), kSlot, static_cast<off_t>((slots - 1) * kSlot)) == static_cast<ssize_t>(kSlot));
  REQUIRE(windows.Check(Slot(fd, slots - 1, 7), SlotRead{.cached = true}, &error) == GuardedRead::kDone);
  CHECK(error.ok());
  CheckWindows::WindowInfo grown;
  REQUIRE(windows.MappedForTesting(fd, 0, &grown));
  CHECK(grown.size >= slots * kSlot);
  REQUIRE(windows.Check(Slot(fd, 0, 5), SlotRead{.cached = true}, &error) == GuardedRead::kDone);  // the old slots too
  CHECK(error.ok());
}

TEST_CASE("check windows: a large file is shown in chunks, by a few windows at most") {
  InstallBusGuard();
  const SlotFile file("chunks", 1, 30);
  const int fd = file.fd;
  // A sparse file of 6 chunks and a slot: one slot written in each chunk, at its middle.
  const size_t chunks = 6;
  std::vector<std::byte> slot(kSlot);
  for (size_t c = 0; c < chunks; ++c) {
    std::fill(slot.begin(), slot.end(), static_cast<std::byte>(40 + c));
    const off_t at = static_cast<off_t>(c * CheckWindows::kChunk + CheckWindows::kChunk / 2);
    REQUIRE(pwrite(fd, slot.data(), kSlot, at) == static_cast<ssize_t>(kSlot));
  }
  CheckWindows windows;
  for (int round = 0; round < 2; ++round) {
    for (size_t c = 0; c < chunks; ++c) {
      CAPTURE(c);
      const off_t at = static_cast<off_t>(c * CheckWindows::kChunk + CheckWindows::kChunk / 2);
      Status error;
      FileRange r{fd, at, kSlot, std::make_shared<ByteCheck>(static_cast<std::byte>(40 + c), kSlot)};
      REQUIRE(windows.Check(r, SlotRead{.cached = true}, &error) == GuardedRead::kDone);
      CHECK(error.ok());
      CheckWindows::WindowInfo info;
      REQUIRE(windows.MappedForTesting(fd, at, &info));
      CHECK(info.start == static_cast<off_t>(c * CheckWindows::kChunk));
      CHECK(info.size <= CheckWindows::kChunk);
      CHECK(windows.CountForTesting() <= CheckWindows::kMaxWindows);
    }
  }
}

TEST_CASE("check windows: a window is a map entry of the budget; none is made when it is spent") {
  InstallBusGuard();
  const SlotFile file("budget", 2, 60);
  const int fd = file.fd;
  MapBudget& budget = MapBudget::Get();
  const uint64_t before = budget.used();
  {
    CheckWindows windows;
    budget.Charge(1);  // somebody else's entry, and the limit reached (0 would mean "computed")
    budget.SetLimitForTesting(before + 1);
    Status error;
    CHECK(windows.Check(Slot(fd, 0, 60), SlotRead{.cached = true}, &error) == GuardedRead::kUnguarded);  // by pread instead
    CHECK(windows.CountForTesting() == 0);
    budget.SetLimitForTesting(0);
    budget.Release(1);
    REQUIRE(windows.Check(Slot(fd, 1, 61), SlotRead{.cached = true}, &error) == GuardedRead::kDone);
    CHECK(error.ok());
    CHECK(budget.used() == before + 1);
  }
  CHECK(budget.used() == before);  // given back with the window
}

TEST_CASE("check windows: a file cut below a slot is reported as unreadable, the process goes on") {
  InstallBusGuard();
  const SlotFile file("cut", 4, 1);
  const int fd = file.fd;
  CheckWindows windows;
  Status error;
  REQUIRE(windows.Check(Slot(fd, 0, 1), SlotRead{.cached = true}, &error) == GuardedRead::kDone);  // the window maps 4 slots
  REQUIRE(ftruncate(fd, static_cast<off_t>(kSlot)) == 0);
  CHECK(windows.Check(Slot(fd, 3, 4), SlotRead{.cached = true}, &error) == GuardedRead::kBus);
}

TEST_CASE("check windows: a slot not in the page cache is read in whole, then checked; a cut file is still unreadable") {
  InstallBusGuard();
  const SlotFile file("cold", 4, 1);
  const int fd = file.fd;
  REQUIRE(fdatasync(fd) == 0);
  REQUIRE(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
  CheckWindows windows;
  Status error;
  REQUIRE(windows.Check(Slot(fd, 1, 2), SlotRead{.fault = true}, &error) == GuardedRead::kDone);
  CHECK(error.ok());
  CHECK(Cached(FileRange{fd, static_cast<off_t>(kSlot), kSlot, nullptr}));
  // The read before the hash fails past the end of the file; the hash's read reports it.
  REQUIRE(ftruncate(fd, static_cast<off_t>(kSlot)) == 0);
  CHECK(windows.Check(Slot(fd, 3, 4), SlotRead{.fault = true}, &error) == GuardedRead::kBus);
  REQUIRE(windows.Check(Slot(fd, 0, 1), SlotRead{.fault = true}, &error) == GuardedRead::kDone);
  CHECK(error.ok());
}

TEST_CASE("check windows: a slot read for a fault is read alone, in one 2 MiB folio; one read for a run reads on") {
  // docs/pager.md, "Slots in 2 MiB folios".
  using bigarray::testing::ResidentPages;
  InstallBusGuard();
  const SlotFile file("exact", 8, 1);
  const int fd = file.fd;
  if (!bigarray::testing::SlotReadsTestable(fd, TempBase())) return;
  const size_t pages = kSlot / static_cast<size_t>(sysconf(_SC_PAGESIZE));
  auto one_folio = [&](size_t slot) {
    return bigarray::testing::OneLargeFolio(fd, static_cast<off_t>(slot * kSlot)) ||
           bigarray::testing::NoLargeFolioToBeHad(TempBase());
  };
  using bigarray::testing::ReadBytes;
  {
    CheckWindows windows;
    Status error;
    const uint64_t used = MapBudget::Get().used(), read = ReadBytes();
    REQUIRE(windows.Check(Slot(fd, 3, 4), SlotRead{.fault = true}, &error) == GuardedRead::kDone);
    CHECK(error.ok());
    CHECK(ReadBytes() - read == kSlot);  // the slot and no more, read-ahead included
    CHECK(ResidentPages(fd, 3 * kSlot, kSlot) == pages);
    CHECK(one_folio(3));
    // The window is one map entry again, without the exact read's advice; its charge alone stays.
    CheckWindows::WindowInfo info;
    REQUIRE(windows.MappedForTesting(fd, 0, &info));
    const auto entry = bigarray::testing::SmapsAt(info.base + 3 * kSlot);
    CHECK(entry.start == reinterpret_cast<uintptr_t>(info.base));
    CHECK(entry.fields.at("VmFlags").find(" rr") == std::string::npos);
    CHECK(entry.fields.at("VmFlags").find(" hg") != std::string::npos);
    CHECK(MapBudget::Get().used() == used + 1);
  }
  {
    // Checked again for a fault, through a window of its own (populated afresh): the kernel's
    // read-ahead mark on the slot starts nothing either.
    CheckWindows windows;
    Status error;
    const uint64_t read = ReadBytes();
    REQUIRE(windows.Check(Slot(fd, 3, 4), SlotRead{.cached = true, .fault = true}, &error) == GuardedRead::kDone);
    CHECK(error.ok());
    CHECK(ReadBytes() == read);
  }
  CheckWindows windows;
  Status error;
  // A run's read lets the kernel read on, in 2 MiB folios: the next slot comes in meanwhile.
  uint64_t read = ReadBytes();
  REQUIRE(windows.Check(Slot(fd, 5, 6), SlotRead{}, &error) == GuardedRead::kDone);
  CHECK(error.ok());
  CHECK(ReadBytes() - read > kSlot);
  CHECK(one_folio(5));
  CHECK(Eventually([&] { return ResidentPages(fd, 6 * kSlot, kSlot) == pages; }));
  CHECK(one_folio(6));
  // A read-ahead without a check reads through the window the same way (readahead(2) would read
  // small folios).
  read = ReadBytes();
  REQUIRE(windows.Read(FileRange{fd, 0, kSlot, nullptr}));
  CHECK(ReadBytes() - read >= kSlot);
  CHECK(ResidentPages(fd, 0, kSlot) == pages);
  CHECK(one_folio(0));
}

TEST_CASE("Cached: a slot's pages are looked up, not read") {
  const SlotFile file("lookup", 4, 1);
  const int fd = file.fd;
  if (!bigarray::testing::DropFromPageCache(fd)) {
    MESSAGE("skipped: the page cache keeps this file's pages (tmpfs?)");
    return;
  }
  if (!CachedLooksOnly(fd)) {
    MESSAGE("skipped: no cachestat(2) here: Cached reads a byte with RWF_NOWAIT");
    return;
  }
  const uint64_t read = bigarray::testing::ReadBytes();
  CHECK_FALSE(Cached(FileRange{fd, static_cast<off_t>(kSlot), kSlot, nullptr}));
  CHECK(bigarray::testing::ReadBytes() == read);
  std::vector<char> slot(kSlot);
  REQUIRE(pread(fd, slot.data(), kSlot, static_cast<off_t>(kSlot)) == static_cast<ssize_t>(kSlot));
  CHECK(Cached(FileRange{fd, static_cast<off_t>(kSlot), kSlot, nullptr}));
}
