// commit_board.cc: the shared-memory commit board (see commit_board.h for the design).
#include "commit_board.h"

#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <new>

namespace bigarray::internal {

namespace bip = boost::interprocess;

// "BIGARRAY" in ASCII, then the layout version: a segment of another layout is refused.
constexpr uint64_t kBoardMagic = 0x5941525241474942ull;

// The segment's header, then kBoardSlots slots. Each field is accessed through std::atomic_ref.
struct alignas(64) BoardHeader {
  uint64_t magic;          // kBoardMagic once initialized (CAS from 0)
  uint32_t version;        // kBoardVersion
  uint32_t sequence;       // the futex word: +1 per published commit
  uint64_t latest_commit;  // atomic max of published commit ids
  uint64_t closing;        // 0, or the owner word of a handle removing the segment's name
};

// owner: 0 = free; else state (2 bits) | pid (22 bits) | process start time (40 bits).
struct alignas(64) BoardSlot {
  uint64_t owner;
  uint64_t snapshot_commit;
  int64_t since_ns;
  uint64_t cache_bytes;
  uint64_t dirty_bytes;
  uint64_t faults;
  char process[16];  // written once while the slot is claimed, before it is published live
};

static_assert(std::atomic_ref<uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<uint32_t>::is_always_lock_free);
static_assert(sizeof(BoardHeader) == 64 && sizeof(BoardSlot) == 64);
// Linux pids are below 2^22 (PID_MAX_LIMIT); start times in clock ticks (100 Hz) fit in 40 bits
// for more than 300 years of uptime.
constexpr int kPidBits = 22, kStartBits = 40;
constexpr uint64_t kClaiming = 1, kLive = 2;
constexpr size_t kBoardBytes = sizeof(BoardHeader) + kBoardSlots * sizeof(BoardSlot);

namespace {

template <typename T>
std::atomic_ref<T> A(T& v) {
  return std::atomic_ref<T>(v);
}

uint64_t EncodeOwner(uint64_t state, pid_t pid, uint64_t start) {
  return state << (kPidBits + kStartBits) | (static_cast<uint64_t>(pid) << kStartBits) |
         (start & ((1ull << kStartBits) - 1));
}
uint64_t OwnerState(uint64_t o) { return o >> (kPidBits + kStartBits); }
pid_t OwnerPid(uint64_t o) { return static_cast<pid_t>((o >> kStartBits) & ((1ull << kPidBits) - 1)); }
uint64_t OwnerStart(uint64_t o) { return o & ((1ull << kStartBits) - 1); }

// Whether the process that claimed a slot as `owner` still runs.
bool OwnerAlive(uint64_t owner) {
  const pid_t pid = OwnerPid(owner);
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;  // EPERM: it exists (another user's)
  auto start = ProcessStartTime(pid);
  if (!start) return false;  // gone between the two checks
  return (*start & ((1ull << kStartBits) - 1)) == OwnerStart(owner);
}

int64_t NowNs() {
  timespec ts;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0;
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::string OwnProcessName() {
  std::ifstream in("/proc/self/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

}  // namespace

std::optional<uint64_t> ProcessStartTime(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  std::ifstream in(path);
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  // "pid (comm) state ...": comm may hold spaces and parentheses; fields count from the last ')'.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  const char* p = text.c_str() + close + 1;
  while (*p == ' ') ++p;
  if (*p == 'Z' || *p == 'X') return std::nullopt;  // exited, not yet reaped: gone
  // After ')' come fields 3 (state) .. ; the start time is field 22: skip 19 fields.
  for (int field = 3; field < 22; ++field) {
    while (*p == ' ') ++p;
    while (*p && *p != ' ') ++p;
  }
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(p, &end, 10);
  if (end == p || errno != 0) return std::nullopt;
  return v;
}

struct CommitBoard::Mapping {
  std::string name;
  bip::shared_memory_object shm;
  bip::mapped_region region;
};

Result<std::string> CommitBoard::BoardName(const std::string& data_file) {
  struct stat st;
  if (stat(data_file.c_str(), &st) != 0) return ErrnoStatus(errno, "stat " + data_file);
  char name[96];
  std::snprintf(name, sizeof name, "bigarray-%u-%llx-%llx", kBoardVersion,
                static_cast<unsigned long long>(st.st_dev), static_cast<unsigned long long>(st.st_ino));
  return std::string(name);
}

Result<std::shared_ptr<CommitBoard>> CommitBoard::OpenForFile(const std::string& data_file, bool create) {
  BA_ASSIGN_OR_RETURN(std::string name, BoardName(data_file));
  auto m = std::make_unique<Mapping>();
  m->name = name;
  const std::string what = "the commit board /dev/shm/" + name + " of " + data_file;
  try {
    if (create) {
      // Readable and writable by everyone the umask allows: handles of other users register too.
      m->shm = bip::shared_memory_object(bip::open_or_create, name.c_str(), bip::read_write,
                                         bip::permissions(0666));
    } else {
      m->shm = bip::shared_memory_object(bip::open_only, name.c_str(), bip::read_write);
    }
    bip::offset_t size = 0;
    if (!m->shm.get_size(size)) return IOError("cannot read the size of " + what);
    // A racing creator may not have sized it yet: sizing to the same length is idempotent.
    if (size == 0) {
      m->shm.truncate(static_cast<bip::offset_t>(kBoardBytes));
      if (!m->shm.get_size(size)) return IOError("cannot read the size of " + what);
    }
    if (static_cast<size_t>(size) != kBoardBytes) {
      return Unsupported(what + " is " + std::to_string(size) + " bytes, not " + std::to_string(kBoardBytes) +
                         ": it belongs to another version of bigarray");
    }
    m->region = bip::mapped_region(m->shm, bip::read_write, 0, kBoardBytes);
  } catch (const bip::interprocess_exception& e) {
    if (!create && e.get_error_code() == bip::not_found_error) return NotFound(what + " does not exist");
    const int err = e.get_native_error();
    return err != 0 ? ErrnoStatus(err, what) : IOError(what + ": " + e.what());
  }
  std::shared_ptr<CommitBoard> board(new CommitBoard());
  board->header_ = static_cast<BoardHeader*>(m->region.get_address());
  board->slots_ = reinterpret_cast<BoardSlot*>(static_cast<char*>(m->region.get_address()) + sizeof(BoardHeader));
  board->mapping_ = std::move(m);
  board->shared_ = true;
  BoardHeader& h = *board->header_;
  uint64_t magic = 0;
  if (!A(h.magic).compare_exchange_strong(magic, kBoardMagic) && magic != kBoardMagic) {
    return Corruption(what + " has no bigarray header (magic " + std::to_string(magic) + ")");
  }
  // The version word is 0 until the creator writes it; any other value than ours is refused.
  uint32_t version = 0;
  if (!A(h.version).compare_exchange_strong(version, kBoardVersion) && version != kBoardVersion) {
    return Unsupported(what + " has layout version " + std::to_string(version) + ", this build uses " +
                       std::to_string(kBoardVersion));
  }
  return board;
}

std::shared_ptr<CommitBoard> CommitBoard::Private() {
  std::shared_ptr<CommitBoard> board(new CommitBoard());
  void* mem = ::operator new(kBoardBytes, std::align_val_t{64});
  std::memset(mem, 0, kBoardBytes);
  board->header_ = static_cast<BoardHeader*>(mem);
  board->slots_ = reinterpret_cast<BoardSlot*>(static_cast<char*>(mem) + sizeof(BoardHeader));
  board->header_->magic = kBoardMagic;
  board->header_->version = kBoardVersion;
  return board;
}

CommitBoard::~CommitBoard() {
  if (!shared_ && header_ != nullptr) ::operator delete(header_, std::align_val_t{64});
}

void CommitBoard::Publish(uint64_t id) {
  auto latest = A(header_->latest_commit);
  uint64_t cur = latest.load();
  while (cur < id && !latest.compare_exchange_weak(cur, id)) {
  }
  A(header_->sequence).fetch_add(1);
  // Wake every waiter. A failure here (only EFAULT/EINVAL, which would be bugs) leaves waiters
  // to their timeout, which rechecks the store: report nothing, lose nothing.
  syscall(SYS_futex, &header_->sequence, shared_ ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

uint64_t CommitBoard::latest() const { return A(header_->latest_commit).load(); }
uint32_t CommitBoard::sequence() const { return A(header_->sequence).load(); }

Result<bool> CommitBoard::Sleep(uint32_t seen, std::chrono::nanoseconds timeout) {
  if (timeout <= std::chrono::nanoseconds::zero()) return A(header_->sequence).load() != seen;
  timespec ts;
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(timeout);
  // Longer than a day: sleep a day at a time (the caller loops).
  ts.tv_sec = static_cast<time_t>(std::min<int64_t>(secs.count(), 86400));
  ts.tv_nsec = secs.count() > 86400 ? 0 : static_cast<long>((timeout - secs).count());
  const long rc = syscall(SYS_futex, &header_->sequence, shared_ ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, seen, &ts,
                          nullptr, 0);
  if (rc == 0) return true;
  switch (errno) {
    case EAGAIN:  // the word changed before we slept
      return true;
    case EINTR:  // a signal: the caller checks and loops
      return true;
    case ETIMEDOUT:
      return false;
    default:
      return ErrnoStatus(errno, "wait for a commit (futex)");
  }
}

Result<std::unique_ptr<CommitBoard::Handle>> CommitBoard::Register(std::shared_ptr<CommitBoard> self,
                                                                   uint64_t snapshot_commit) {
  const pid_t pid = getpid();
  auto start = ProcessStartTime(pid);
  if (!start) return IOError("cannot read the start time of this process from /proc/self/stat");
  const std::string name = OwnProcessName();
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < kBoardSlots; ++i) {
      BoardSlot& s = slots_[i];
      uint64_t owner = A(s.owner).load();
      if (owner != 0) {
        // Second pass: free the slots of dead processes, then try them.
        if (pass == 0 || OwnerAlive(owner) || !A(s.owner).compare_exchange_strong(owner, 0)) continue;
        owner = 0;
      }
      const uint64_t claiming = EncodeOwner(kClaiming, pid, *start);
      if (!A(s.owner).compare_exchange_strong(owner, claiming)) continue;
      char process[16] = {};
      std::memcpy(process, name.data(), std::min(name.size(), sizeof process - 1));
      for (size_t k = 0; k < sizeof process; ++k) A(s.process[k]).store(process[k], std::memory_order_relaxed);
      A(s.snapshot_commit).store(snapshot_commit, std::memory_order_relaxed);
      A(s.since_ns).store(NowNs(), std::memory_order_relaxed);
      A(s.cache_bytes).store(0, std::memory_order_relaxed);
      A(s.dirty_bytes).store(0, std::memory_order_relaxed);
      A(s.faults).store(0, std::memory_order_relaxed);
      const uint64_t live = EncodeOwner(kLive, pid, *start);
      A(s.owner).store(live);  // release: the fields above are visible to whoever sees it live
      return std::unique_ptr<Handle>(new Handle(std::move(self), &s, live, pid));
    }
  }
  return ResourceExhausted("all " + std::to_string(kBoardSlots) +
                           " handle slots of the commit board are held by live processes");
}

CommitBoard::Handle::~Handle() {
  if (getpid() != pid_) return;  // a forked child's copy: the slot is the parent's
  uint64_t owner = owner_;
  if (A(slot_->owner).compare_exchange_strong(owner, 0)) board_->RemoveIfUnused();
}

// Whether any slot is held by a live process (the slots of dead ones are freed on the way).
static bool AnySlotHeld(BoardSlot* slots) {
  for (size_t i = 0; i < kBoardSlots; ++i) {
    uint64_t owner = A(slots[i].owner).load();
    if (owner == 0) continue;
    if (OwnerAlive(owner)) return true;
    A(slots[i].owner).compare_exchange_strong(owner, 0);
  }
  return false;
}

bool CommitBoard::StillNamed() const {
  if (!shared_) return true;
  try {
    bip::shared_memory_object named(bip::open_only, mapping_->name.c_str(), bip::read_only);
    struct stat a, b;
    if (fstat(named.get_mapping_handle().handle, &a) != 0) return false;
    if (fstat(mapping_->shm.get_mapping_handle().handle, &b) != 0) return false;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
  } catch (const bip::interprocess_exception&) {
    return false;  // gone (or unreadable): do not trust this segment
  }
}

void CommitBoard::RemoveIfUnused() {
  if (!shared_ || AnySlotHeld(slots_)) return;
  auto start = ProcessStartTime(getpid());
  if (!start) return;  // cannot name itself: keep the segment (harmless)
  const uint64_t me = EncodeOwner(kLive, getpid(), *start);
  uint64_t expected = 0;
  if (!A(header_->closing).compare_exchange_strong(expected, me)) return;  // another leaver
  if (AnySlotHeld(slots_)) {  // a joiner came in between: it stays
    A(header_->closing).compare_exchange_strong(expected = me, 0);
    return;
  }
  // Joiners that see `closing` now open the name again. An error here (the name is already
  // gone) changes nothing for anyone.
  bip::shared_memory_object::remove(mapping_->name.c_str());
}

Result<std::unique_ptr<CommitBoard::Handle>> CommitBoard::Join(const std::string& data_file, uint64_t snapshot_commit) {
  // A leaver unlinks within microseconds of setting `closing`; a few thousand tries at 50 us
  // cover any scheduling delay, and a dead leaver's mark is cleared at once.
  for (int attempt = 0; attempt < 4000; ++attempt) {
    BA_ASSIGN_OR_RETURN(std::shared_ptr<CommitBoard> board, OpenForFile(data_file, /*create=*/true));
    BA_ASSIGN_OR_RETURN(std::unique_ptr<Handle> handle, board->Register(board, snapshot_commit));
    uint64_t closing = A(board->header_->closing).load();
    if (closing == 0) return handle;
    // A closer that died either left the name in place (then the mark is stale: clear it) or
    // had already removed it (then this segment is an orphan: open the name again). Nobody
    // else can remove the name while the mark stands, so checking it now is enough.
    if (!OwnerAlive(closing) && board->StillNamed() &&
        A(board->header_->closing).compare_exchange_strong(closing, 0)) {
      return handle;
    }
    // Being removed: leave without triggering a removal of our own, then open the name again.
    uint64_t owner = handle->owner_;
    A(handle->slot_->owner).compare_exchange_strong(owner, 0);
    handle->pid_ = -1;  // released already
    handle.reset();
    usleep(50);
  }
  return ResourceExhausted("the commit board of " + data_file + " stayed in removal for 0.2 s and more");
}

void CommitBoard::Handle::Update(uint64_t snapshot_commit, uint64_t cache_bytes, uint64_t dirty_bytes,
                                 uint64_t faults) {
  if (getpid() != pid_) return;
  if (A(slot_->snapshot_commit).load(std::memory_order_relaxed) != snapshot_commit) {
    A(slot_->since_ns).store(NowNs(), std::memory_order_relaxed);
    A(slot_->snapshot_commit).store(snapshot_commit, std::memory_order_relaxed);
  }
  A(slot_->cache_bytes).store(cache_bytes, std::memory_order_relaxed);
  A(slot_->dirty_bytes).store(dirty_bytes, std::memory_order_relaxed);
  A(slot_->faults).store(faults, std::memory_order_relaxed);
}

std::vector<HandleInfo> CommitBoard::Live() {
  std::vector<HandleInfo> out;
  for (size_t i = 0; i < kBoardSlots; ++i) {
    BoardSlot& s = slots_[i];
    uint64_t owner = A(s.owner).load();
    if (owner == 0) continue;
    if (!OwnerAlive(owner)) {
      A(s.owner).compare_exchange_strong(owner, 0);  // lost the race: someone else freed it
      continue;
    }
    if (OwnerState(owner) != kLive) continue;  // being claimed: its fields are not written yet
    HandleInfo h;
    h.pid = OwnerPid(owner);
    char process[16];
    for (size_t k = 0; k < sizeof process; ++k) process[k] = A(s.process[k]).load(std::memory_order_relaxed);
    process[15] = '\0';
    h.process = process;
    h.snapshot_commit = A(s.snapshot_commit).load(std::memory_order_relaxed);
    h.since_ns = A(s.since_ns).load(std::memory_order_relaxed);
    h.cache_bytes = A(s.cache_bytes).load(std::memory_order_relaxed);
    h.dirty_bytes = A(s.dirty_bytes).load(std::memory_order_relaxed);
    h.faults = A(s.faults).load(std::memory_order_relaxed);
    // The slot may have been released and claimed again while it was read: skip such a mix.
    if (A(s.owner).load() != owner) continue;
    out.push_back(std::move(h));
  }
  return out;
}

}  // namespace bigarray::internal
