// pager.h: the userspace pager (docs/pager.md holds its invariants and state machine).
//
// A Pager keeps blocks of "files" (one file per array) in a bounded pool of RAM pages and shows
// them through Mappings: reserved address ranges in which an access to a block that is not
// there faults, and a loader thread loads the block from the file's BlockSource and maps its
// RAM page in. Writes make pages dirty; Writeout hands all dirty blocks to the caller (who
// commits them to storage) and then marks them clean; Abort drops them.
//
// The pager knows nothing of the storage, arrays or transactions: it reaches its data only
// through BlockSource, which it defines here.
//
// Thread contract: every method may be called from any thread. Many threads may fault on the
// mappings at once. BeginWriteout, Abort, Invalidate and Truncate are the transaction's
// boundaries: call them while no other thread writes through a mapping (writes that race with
// them land on one side of the boundary or the other, never half).
#pragma once

#include <spdlog/logger.h>

#include <cstddef>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bigarray/status.h"

namespace bigarray::pager {

class PagerImpl;
class FileState;

// Checks the bytes of a FileRange before any view shows them. The pager hands them over in
// order, in one piece or several (file_ranges.h: through a mapping of the range, or read with
// pread in pieces). Update may be abandoned at any read of the piece (a SIGBUS turned into "could
// not be read" by the guard, bus_guard.h; the check is then thrown away): while it reads the
// bytes it holds no lock and owns nothing that needs releasing.
class RangeCheck {
 public:
  virtual ~RangeCheck() = default;
  virtual void Update(std::span<const std::byte> piece) noexcept = 0;
  virtual Status Finish() = 0;  // after the last piece: the verdict
};

// A clean block shown straight from a file instead of a page of the pool (docs/pager.md,
// "Mapped blocks"): `length` bytes of `fd` from `offset`, then zeros up to the block size.
struct FileRange {
  int fd = -1;
  off_t offset = 0;    // a multiple of the page size
  size_t length = 0;   // a multiple of the page size, at most the block size; 0: all zeros
  std::shared_ptr<RangeCheck> check;  // null: shown unchecked
};

// Where a file's blocks come from. Called on loader threads, concurrently for different blocks.
class BlockSource {
 public:
  virtual ~BlockSource() = default;
  // Fills all of `out` (block size bytes) with the block: a copy into a page of the pool.
  virtual Status LoadBlock(uint64_t block, std::span<std::byte> out) = 0;
  // Whether MapBlock may answer with a range; false: every block is loaded with LoadBlock.
  virtual bool MapsBlocks() const { return false; }
  // Where a clean block can be mapped read-only from, without a copy; nullopt: load it. The
  // range must show the block's bytes until the pager is told that the block changed
  // (PagedFile::Invalidate and friends), or the file is closed.
  virtual Result<std::optional<FileRange>> MapBlock(uint64_t block) {
    (void)block;
    return std::optional<FileRange>();
  }
};

struct PagerOptions {
  // Bytes of pages the pager keeps resident: clean and dirty pages of the pool, and blocks
  // mapped from their file (they count in the process's RSS while a view shows them). Clean pages
  // beyond it are evicted least recently used first; dirty pages beyond it are spilled to a
  // scratch file.
  // At least 8 blocks of the largest block size in use are always allowed.
  uint64_t cache_bytes = 1ull << 30;
  unsigned loader_threads = 4;
  unsigned readahead_blocks = 64;  // blocks loaded ahead of a sequential run of faults (at most a
                                   // quarter of the budget)
  // Loader threads that may work on read-ahead at once (faults are served beside them by the
  // others). 0: one less than the CPUs the process may use (at least 1), so that a scanning
  // reader keeps a CPU to itself (docs/pager.md, section 8, "Read-ahead loaders").
  unsigned readahead_loaders = 0;
  std::string spill_dir = "/tmp";
  // Allocate the cache's RAM in the background as soon as a block size is first used, instead of
  // on each page's first load (fresh memory costs ~1.2 GB/s to fault in here): loads then copy
  // into allocated memory from the start, at the price of holding each pool's RAM (the budget,
  // per block size in use) from then on. docs/pager.md says what it does not warm.
  bool prefault_cache = false;
  std::shared_ptr<spdlog::logger> logger;  // used on loader threads only; null: no logging
};

struct PagerStats {
  uint64_t faults = 0;          // faults handled (read and write)
  uint64_t loads = 0;           // blocks loaded from a BlockSource
  uint64_t readahead_loads = 0; // of which started by read-ahead
  uint64_t evictions = 0;       // clean pages dropped for room
  uint64_t spills = 0;          // dirty pages written to the scratch file
  uint64_t file_maps = 0;       // blocks mapped from their file instead of loaded (MapBlock)
  uint64_t resident_bytes = 0;  // pages in use now: of the pool, and of files shown in views
  uint64_t file_mapped_bytes = 0;  // of which blocks mapped from their file (no RAM of the pool)
  uint64_t dirty_blocks = 0;    // dirty pages, resident or spilled
  uint64_t dirty_bytes = 0;     // their bytes
  uint64_t map_entries = 0;     // memory map entries this pager's mappings may cost (MapBudget)
  uint64_t map_reclaims = 0;    // pages unmapped (kept resident) to stay within the map budget
  uint64_t loader_threads = 0;  // loader threads running now
  uint64_t scratch_reserved_bytes = 0;  // scratch file allocated ahead for spills (docs/pager.md)
};

class PagedFile;

// Scratch space set aside for dirty data that a caller is about to write (ReserveForWrite): the
// write faults that make those blocks dirty, and the spills that follow, then need no new disk
// space. Destroying it ends the announcement; the space itself stays with the pager until no
// dirty data is left (docs/pager.md, "Scratch space").
class WriteReservation {
 public:
  WriteReservation() = default;
  WriteReservation(WriteReservation&& other) noexcept;
  WriteReservation& operator=(WriteReservation&& other) noexcept;
  WriteReservation(const WriteReservation&) = delete;
  WriteReservation& operator=(const WriteReservation&) = delete;
  ~WriteReservation();

 private:
  friend class PagerImpl;
  std::shared_ptr<PagerImpl> pager_;
  uint64_t bytes_ = 0;  // announced dirty bytes
};

// A reserved address range showing blocks [first_block, first_block + block_count) of a file.
// Destroying it releases the range. Keeps its file (and so the pager) alive.
class Mapping {
 public:
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  std::byte* data() const { return base_; }
  size_t size() const { return size_; }
  uint64_t first_block() const { return first_block_; }
  const std::shared_ptr<PagedFile>& file() const { return file_; }

  // Loads every block overlapping [offset, offset + length) of this mapping and maps it here,
  // so that the bytes can be read (and, for dirty blocks, written) without faulting, e.g. by
  // write(2). Errors are returned (the fault path would terminate the process instead).
  Status Load(size_t offset, size_t length);

  // Reads block `block` of this mapping (its index here, from 0) into `out` (block size bytes)
  // straight from its BlockSource when the pager has no page for it (neither resident, mapped,
  // loading, dirty nor spilled), and makes none: a copy out of the file that will not be
  // repeated costs no page fault, page-table change or cache room. Returns whether it did;
  // false: the block is (or is becoming) a page, read it through the mapping.
  Result<bool> ReadAbsent(uint64_t block, std::span<std::byte> out);

 private:
  friend class PagerImpl;
  Mapping() = default;
  std::shared_ptr<PagedFile> file_;
  std::byte* base_ = nullptr;
  size_t size_ = 0;
  uint64_t first_block_ = 0;
  unsigned index_ = 0;  // this mapping's bit in its file's pages' mapped masks
};

// One paged file (an array's blocks). Created by Pager::OpenFile.
class PagedFile : public std::enable_shared_from_this<PagedFile> {
 public:
  ~PagedFile();
  size_t block_size() const { return block_size_; }
  const std::string& name() const { return name_; }

  // Reserves address space for `block_count` blocks starting at `first_block`; touches nothing.
  // kResourceExhausted when the address space cannot hold it.
  Result<std::shared_ptr<Mapping>> Map(uint64_t first_block, uint64_t block_count);

  // W4/W5: drops the block's page, whatever its state; a dirty page loses its changes; a load
  // in progress is discarded and retried.
  void Invalidate(uint64_t block);
  void InvalidateRange(uint64_t first, uint64_t end);  // blocks [first, end); cost ~ resident pages
  void InvalidateAll();
  // Drops every page at or past `block_count` (dirty ones included): used when an array shrinks.
  void Truncate(uint64_t block_count);
  // The number of blocks the file has now: read-ahead never loads at or past it. Default: no limit.
  void SetExtent(uint64_t block_count);

  // Announces writes to at most `max_blocks` of the blocks [first, end) and sets aside the
  // scratch space that making them dirty may need (blocks already dirty need none): once the
  // transaction's dirty data outgrows the cache, pages are spilled, and a disk that cannot hold
  // them is reported here (kNoSpace, nothing changed) instead of inside a page fault, which
  // would end the process. Keep the result alive while writing.
  Result<WriteReservation> ReserveForWrite(uint64_t first, uint64_t end, uint64_t max_blocks);

 private:
  friend class PagerImpl;
  friend class Mapping;
  PagedFile() = default;
  std::shared_ptr<PagerImpl> pager_;
  std::shared_ptr<BlockSource> source_;
  size_t block_size_ = 0;
  std::string name_;
  FileState* state_ = nullptr;  // guarded by the pager's mutex; owned by the pager
};

// The dirty blocks of every file, write-protected while the caller stores them.
class Writeout {
 public:
  struct Entry {
    std::shared_ptr<PagedFile> file;
    uint64_t block;
  };
  ~Writeout();  // Finish(false) unless finished
  Writeout(const Writeout&) = delete;
  Writeout& operator=(const Writeout&) = delete;

  const std::vector<Entry>& entries() const { return entries_; }
  // The bytes of entry i (a whole block); valid until the next Data call or Finish.
  Result<std::span<const std::byte>> Data(size_t i);
  // committed: the pages become clean (still resident, write-protected); otherwise they stay
  // dirty, as if Writeout had not begun.
  void Finish(bool committed);

 private:
  friend class PagerImpl;
  Writeout() = default;
  std::shared_ptr<PagerImpl> pager_;
  std::vector<Entry> entries_;
  std::vector<void*> pages_;  // the pager's page records, pinned until Finish
  bool finished_ = false;
  std::vector<std::shared_ptr<Mapping>> held_;  // mappings Data reads pages through
  std::vector<std::byte> buffer_;               // Data of a spilled page
};

class Pager {
 public:
  static Result<std::shared_ptr<Pager>> Create(const PagerOptions& options);
  ~Pager();

  Result<std::shared_ptr<PagedFile>> OpenFile(std::shared_ptr<BlockSource> source,
                                              size_t block_size, std::string name);

  // Write-protects every dirty page and returns them for storing (W1). Fails, with every page
  // still dirty, when a page cannot be write-protected, or when a page an Abort or Invalidate had
  // to drop is still shown by a view (map entries exhausted: docs/pager.md, "Map entries").
  Result<std::unique_ptr<Writeout>> BeginWriteout();
  // Drops every dirty page of every file (W3); clean pages stay. Fails (kResourceExhausted) when
  // a page could not be unmapped: it stays, is retried at the next boundary, and commits are
  // refused until then.
  Status Abort();

  PagerStats stats() const;

 private:
  explicit Pager(std::shared_ptr<PagerImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<PagerImpl> impl_;
};

}  // namespace bigarray::pager
