// page_cache_util.h: what the page cache holds of a file, for tests that check how the pager reads
// (docs/pager.md, "Slots in 2 MiB folios"): pages resident, pages dropped, entries of a mapping.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "pager/file_ranges.h"
#include "pager/io.h"

namespace bigarray::testing {

// The entry of /proc/self/smaps that maps `addr`: its start, its name and its fields
// ("FilePmdMapped" -> "2048 kB", "VmFlags" -> "rd sh mr mw me ms hg").
struct SmapsEntry {
  uintptr_t start = 0;
  std::string name;
  std::map<std::string, std::string> fields;
};
inline SmapsEntry SmapsAt(const void* addr) {
  std::ifstream smaps("/proc/self/smaps");
  const auto a = reinterpret_cast<uintptr_t>(addr);
  SmapsEntry e;
  bool in = false;
  for (std::string line; std::getline(smaps, line);) {
    const size_t colon = line.find(':');
    const size_t dash = line.find('-');
    if (dash != std::string::npos && dash < line.find(' ') && (colon == std::string::npos || dash < colon)) {
      if (in) break;  // the entry after ours
      const uintptr_t start = std::stoull(line.substr(0, dash), nullptr, 16);
      const uintptr_t end = std::stoull(line.substr(dash + 1), nullptr, 16);
      in = start <= a && a < end;
      if (in) {
        e.start = start;
        const size_t slash = line.find('/');
        e.name = slash == std::string::npos ? "" : line.substr(slash);
      }
    } else if (in && colon != std::string::npos) {
      const size_t value = line.find_first_not_of(' ', colon + 1);
      e.fields[line.substr(0, colon)] = value == std::string::npos ? "" : line.substr(value);
    }
  }
  return e;
}

// The bytes this process has asked the disk for so far (/proc/self/io: counted when a read is
// submitted, read-ahead included, whichever thread submits it).
inline uint64_t ReadBytes() {
  std::ifstream io("/proc/self/io");
  for (std::string line; std::getline(io, line);) {
    if (line.rfind("read_bytes:", 0) == 0) return std::stoull(line.substr(11));
  }
  FAIL("no read_bytes in /proc/self/io");
  return 0;
}

// How many pages of [offset, offset + length) of fd's file the page cache holds (mincore of a
// mapping made for it: reads nothing).
inline size_t ResidentPages(int fd, off_t offset, size_t length) {
  void* m = mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, offset);
  REQUIRE(m != MAP_FAILED);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in((length + page - 1) / page);
  REQUIRE(mincore(m, length, in.data()) == 0);
  REQUIRE(munmap(m, length) == 0);
  size_t n = 0;
  for (unsigned char b : in) n += b & 1;
  return n;
}

// Writes fd's file back and drops it from the page cache; false where the pages stay (tmpfs).
inline bool DropFromPageCache(int fd) {
  REQUIRE(fdatasync(fd) == 0);
  REQUIRE(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
  struct stat st;
  REQUIRE(fstat(fd, &st) == 0);
  return st.st_size == 0 || ResidentPages(fd, 0, static_cast<size_t>(st.st_size)) == 0;
}

// Whether the 2 MiB at `offset` (2 MiB-aligned, in the page cache) of fd's file are one 2 MiB
// folio: a 2 MiB-aligned mapping of them, populated, is one PMD entry. The mapping asks for no
// read-ahead (MADV_RANDOM): a read-ahead mark on the folio would start one.
inline bool OneLargeFolio(int fd, off_t offset) {
  void* m = pager::MapAligned(pager::kHuge, PROT_READ, MAP_SHARED, fd, offset);
  REQUIRE(m != MAP_FAILED);
  REQUIRE(madvise(m, pager::kHuge, MADV_RANDOM) == 0);
  REQUIRE(madvise(m, pager::kHuge, pager::kPopulateRead) == 0);
  const bool one = SmapsAt(m).fields["FilePmdMapped"] == "2048 kB";
  REQUIRE(munmap(m, pager::kHuge) == 0);
  return one;
}

// Whether this kernel reads a file in `dir` into 2 MiB folios, exactly, where a mapping asks for
// it (MADV_HUGEPAGE and MADV_RANDOM, as pager/io.h does): large folios for the file system,
// transparent huge pages, Linux 5.18 or later.
inline bool ReadsLargeFolios(const std::string& dir) {
  std::string path = dir + "/large_folio_probe_XXXXXX";
  const int fd = mkstemp(path.data());
  REQUIRE(fd >= 0);
  std::vector<char> bytes(pager::kHuge, 'x');
  REQUIRE(pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
  bool large = false;
  if (DropFromPageCache(fd)) {
    void* m = pager::MapAligned(pager::kHuge, PROT_READ, MAP_SHARED, fd, 0);
    REQUIRE(m != MAP_FAILED);
    // The advice of pager/io.h, asked here without the pager's code: a test of that code must not
    // be skipped because of it.
    if (madvise(m, pager::kHuge, MADV_HUGEPAGE) == 0 && madvise(m, pager::kHuge, MADV_RANDOM) == 0 &&
        madvise(m, pager::kHuge, pager::kPopulateRead) == 0) {
      large = SmapsAt(m).fields["FilePmdMapped"] == "2048 kB";
    }
    REQUIRE(munmap(m, pager::kHuge) == 0);
  }
  close(fd);
  unlink(path.c_str());
  return large;
}

// Whether the kernel reads 2 MiB folios in `dir` at this moment, for a check of a folio that
// failed: it falls back to small ones, whatever the advice, when it finds no free 2 MiB of memory
// (fragmented, e.g. right after a build). Says so when it does not.
inline bool NoLargeFolioToBeHad(const std::string& dir) {
  if (ReadsLargeFolios(dir)) return false;
  MESSAGE("the kernel reads no 2 MiB folios just now (no free 2 MiB of memory?): folio sizes not checked");
  return true;
}

// Whether the tests of how slots are read can run on fd's file in `dir`: its pages can be dropped
// from the page cache (not tmpfs), the pager can tell what is cached without reading
// (cachestat(2), Linux 6.5), and this kernel reads 2 MiB folios (ReadsLargeFolios). Says why not.
inline bool SlotReadsTestable(int fd, const std::string& dir) {
  if (!DropFromPageCache(fd)) {
    MESSAGE("skipped: the page cache keeps this file's pages (tmpfs?)");
    return false;
  }
  if (!pager::CachedLooksOnly(fd)) {
    MESSAGE("skipped: no cachestat(2) here; Cached's one-byte read starts the kernel's read-ahead");
    return false;
  }
  if (!ReadsLargeFolios(dir)) {
    MESSAGE("skipped: this kernel reads no 2 MiB folios of a file here (before Linux 5.18, no large folios for the file system, or no transparent huge pages)");
    return false;
  }
  return true;
}

}  // namespace bigarray::testing
