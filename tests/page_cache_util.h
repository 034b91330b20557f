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
#include <fstream>
#include <map>
#include <string>
#include <vector>

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
// folio: a 2 MiB-aligned mapping of them, populated, is one PMD entry.
inline bool OneLargeFolio(int fd, off_t offset) {
  void* m = pager::MapAligned(pager::kHuge, PROT_READ, MAP_SHARED, fd, offset);
  REQUIRE(m != MAP_FAILED);
  REQUIRE(madvise(m, pager::kHuge, 22 /* MADV_POPULATE_READ */) == 0);
  const bool one = SmapsAt(m).fields["FilePmdMapped"] == "2048 kB";
  REQUIRE(munmap(m, pager::kHuge) == 0);
  return one;
}

// Whether this kernel reads a file in `dir` into 2 MiB folios where a mapping asks for them
// (MADV_HUGEPAGE): large folios for the file system, transparent huge pages. Tests of what the
// pager reads that way are skipped where it does not.
inline bool ReadsLargeFolios(const std::string& dir) {
  const std::string path = dir + "/large_folio_probe";
  const int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  std::vector<char> bytes(pager::kHuge, 'x');
  REQUIRE(pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
  bool large = false;
  if (DropFromPageCache(fd)) {
    void* m = pager::MapAligned(pager::kHuge, PROT_READ, MAP_SHARED, fd, 0);
    REQUIRE(m != MAP_FAILED);
    if (madvise(m, pager::kHuge, MADV_HUGEPAGE) == 0 && madvise(m, pager::kHuge, 22) == 0) {
      large = SmapsAt(m).fields["FilePmdMapped"] == "2048 kB";
    }
    REQUIRE(munmap(m, pager::kHuge) == 0);
  }
  close(fd);
  unlink(path.c_str());
  return large;
}

}  // namespace bigarray::testing
