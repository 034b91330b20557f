// PostgresStore: the block store on a PostgreSQL server, through libpq (docs/distributed.md).
//
// Tables (created on first open in the schema the connection creates in, i.e. the first schema
// of its search_path; every statement names them unqualified):
//   bigarray_head   one row (id = 1): commit_id, the latest commit, and log_floor (log records
//                   <= it were trimmed). Every commit locks it FOR UPDATE first: that serializes
//                   commits across all clients and allocates their ids (head + 1).
//   bigarray_meta   key bytea PRIMARY KEY, value bytea. Holds "\0format" as LMDB does.
//   bigarray_blocks (array_id, block_index) PRIMARY KEY, commit_id, checksum, payload bytea
//                   (STORAGE EXTERNAL: out of line, uncompressed). u64 values are stored as the
//                   bigint with the same bits.
//   bigarray_log    commit_id PRIMARY KEY, token (random, identifies the writer), changes bytea
//                   (change_log.h).
//
// Snapshots: a Snapshot holds its own connection with an open REPEATABLE READ READ ONLY
// transaction for its whole life, so MVCC gives it one committed state; its first statement
// reads the head row (its commit id and log floor, consistent with every row it will read) and
// takes a shared transaction-level advisory lock (the "pin": key 1 is the head table's OID, key
// 2 the commit id mod 2^31) that committers read from pg_locks to know which log records open
// snapshots still need. Calls on one snapshot are serialized by Snapshot::mu (one connection
// runs one statement at a time); loader threads therefore load one block at a time per
// snapshot. Idle connections are pooled by the store.
//
// Commits: one PostgreSQL transaction, in two round trips (libpq pipeline mode):
//   1. BEGIN; lock the head row; read the log after batch.base(); read the pins.
//   2. (conflict: ROLLBACK) deletes, block upserts (binary bytea parameters, the payload copied
//      once into libpq's buffer and streamed), metadata, the log record, the log trim, the head
//      update, COMMIT; Sync.
// A connection lost after COMMIT was sent leaves the outcome open: a fresh connection then
// takes the head row lock (which waits for the lost transaction to end on the server) and looks
// for this commit's log record (by id and token) to tell.
//
// Following commits (docs/distributed.md): every commit also runs pg_notify on the channel
// "bigarray_<head table OID>" (unique per database and schema on a server) with the commit id
// as payload, delivered by the server when the transaction commits. WaitForCommit LISTENs on a
// connection of its own, reads the head row (commits before the LISTEN), then poll()s the
// socket for notifications; the connection UNLISTENs before it goes back to its pool, so an
// idle connection never holds back the server's notification queue.
//
// Pool: idle connections are checked (a non-blocking read) when taken; a snapshot, commit or
// sync that fails because a pooled connection had died meanwhile is tried once more on a new
// connection.
//
// Forks: a connection belongs to the process that opened it; a forked child never uses or
// closes (PQfinish would end the parent's session) a connection it inherited.
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <vector>

#include "bigarray/storage/block_store.h"
#include "change_log.h"
#include "checksum.h"
#include "postgres_status.h"

namespace bigarray::storage {

// The format version of PostgreSQL schemas (docs/distributed.md); LMDB databases have their own.
constexpr uint32_t kPostgresFormatVersion = 1;
namespace {

using internal::PgConnectStatus;
using internal::PgConnError;
using internal::PgResultStatus;

constexpr char kFormatKey[] = "\0format";
constexpr std::string_view kFormatMagic = "bigarray";
constexpr int64_t kSchemaLockKey = 0x6269676172726179;  // "bigarray": serializes table creation
constexpr uint64_t kPinModulus = uint64_t{1} << 31;
// A bytea value, with its header, and the Bind message that carries it must stay below 1 GB
// (MaxAllocSize); keep a margin for the message's other fields.
constexpr size_t kMaxPayloadBytes = (size_t{1} << 30) - 4096;
constexpr size_t kPollBytes = size_t{1} << 20;  // a commit looks for early errors this often
constexpr Oid kInt8Oid = 20;
constexpr Oid kByteaOid = 17;

std::string_view FormatKey() { return {kFormatKey, sizeof kFormatKey - 1}; }

void PutBE64(char* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
uint64_t GetBE64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string BlockName(ArrayId a, BlockIndex i) {
  return "array #" + std::to_string(a) + " block " + std::to_string(i);
}

// The URI without its password (userinfo "user:secret@" and "password=..." parameters).
std::string RedactUri(const std::string& uri) {
  std::string s = uri;
  if (size_t scheme = s.find("://"); scheme != std::string::npos) {
    const size_t start = scheme + 3;
    const size_t end = std::min(s.find_first_of("/?", start), s.size());
    const size_t at = s.rfind('@', end);
    if (at != std::string::npos && at >= start) {
      const size_t colon = s.find(':', start);
      if (colon != std::string::npos && colon < at) s.replace(colon + 1, at - colon - 1, "***");
    }
  }
  for (size_t pos = 0; (pos = s.find("password=", pos)) != std::string::npos;) {
    pos += 9;
    size_t end = s.find_first_of("& ", pos);
    if (end == std::string::npos) end = s.size();
    s.replace(pos, end - pos, "***");
  }
  return s;
}

// ---- libpq plumbing ----------------------------------------------------------------------------

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

// Parameters of one statement, all in binary format: bigint as 8 bytes big-endian, bytea raw.
// Byte parameters point at the caller's memory, which must outlive the send.
class Params {
 public:
  Params& U64(uint64_t v) {
    PutBE64(ints_[n_], v);
    return Add(ints_[n_], 8);
  }
  Params& Bytes(const void* p, size_t n) { return Add(p ? static_cast<const char*>(p) : "", n); }
  Params& Str(std::string_view s) { return Bytes(s.data(), s.size()); }

  int size() const { return n_; }
  const char* const* values() const { return values_; }
  const int* lengths() const { return lengths_; }
  const int* formats() const { return formats_; }

 private:
  static constexpr int kMax = 6;
  Params& Add(const char* p, size_t n) {
    values_[n_] = p;
    lengths_[n_] = static_cast<int>(n);
    formats_[n_] = 1;
    ++n_;
    return *this;
  }
  char ints_[kMax][8] = {};
  const char* values_[kMax] = {};
  int lengths_[kMax] = {};
  int formats_[kMax] = {};
  int n_ = 0;
};

// One connection, owned by the process that opened it.
class Conn {
 public:
  explicit Conn(PGconn* pg) : pg_(pg), pid_(getpid()) {}
  ~Conn() {
    if (pg_ && pid_ == getpid()) PQfinish(pg_);  // in a forked child: leak, never close
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  PGconn* get() const { return pg_; }
  bool Mine() const { return pid_ == getpid(); }
  // Taken from the pool: it may have died while idle without our knowing.
  bool reused() const { return reused_; }
  void set_reused(bool r) { reused_ = r; }
  // A reused connection found dead: the call may be retried once on a new one.
  bool Stale() const { return reused_ && PQstatus(pg_) == CONNECTION_BAD; }
  // Connected, in this process, not in a transaction nor in pipeline mode: fit for reuse.
  bool Reusable() const {
    return Mine() && PQstatus(pg_) == CONNECTION_OK && PQtransactionStatus(pg_) == PQTRANS_IDLE &&
           PQpipelineStatus(pg_) == PQ_PIPELINE_OFF;
  }

 private:
  PGconn* pg_;
  pid_t pid_;
  bool reused_ = false;
};

// Reads an 8-byte binary bigint field.
Result<uint64_t> U64Field(const PGresult* r, int row, int col, std::string_view what) {
  if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8) {
    return Corruption(std::string(what) + ": malformed row (expected a bigint)");
  }
  return GetBE64(PQgetvalue(r, row, col));
}
std::string_view BytesField(const PGresult* r, int row, int col) {
  return {PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col))};
}

// Statements sent in libpq's pipeline mode; results come back in order. Records the first
// failure: a send that failed, or a statement's error; statements after an error are skipped
// by the server until the next Sync.
class Pipeline {
 public:
  explicit Pipeline(PGconn* c) : c_(c) {}

  Status Enter() {
    if (!PQenterPipelineMode(c_)) return PgConnError(c_, "enter pipeline mode");
    return Status::Ok();
  }
  void Sql(const char* sql, std::string what) {
    if (send_failed_) return;
    Sent(PQsendQueryParams(c_, sql, 0, nullptr, nullptr, nullptr, nullptr, 1), std::move(what));
  }
  void Prepared(const char* stmt, const Params& p, std::string what) {
    if (send_failed_) return;
    Sent(PQsendQueryPrepared(c_, stmt, p.size(), p.values(), p.lengths(), p.formats(), 1),
         std::move(what));
  }
  // Asks the server to send the results so far and sends everything queued.
  Status Flush() {
    if (!send_failed_ && (!PQsendFlushRequest(c_) || PQflush(c_) != 0)) SendFailed("send");
    return error_;
  }
  // Ends the pipeline's implicit batch: the server answers everything, then "sync".
  Status Sync() {
    if (!send_failed_ && !PQpipelineSync(c_)) SendFailed("send");
    synced_ = !send_failed_;
    return error_;
  }
  // The next statement's result, blocking until it arrives (after Flush or Sync). After a
  // failed send nothing more is read (the server may never answer): the connection is unusable
  // and the pool closes it, which rolls its transaction back.
  Result<PgResult> Next() {
    if (pending_.empty()) return Internal("pipeline: no statement pending");
    if (send_failed_) {
      pending_.clear();
      return error_;
    }
    const std::string what = std::move(pending_.front());
    pending_.pop_front();
    PgResult r(PQgetResult(c_));
    if (r && PQresultStatus(r.get()) != PGRES_PIPELINE_SYNC) {
      PgResult end(PQgetResult(c_));  // each statement's results end with a null
    }
    Status st = PgResultStatus(r.get(), c_, what);
    if (!st.ok()) {
      if (!r || PQresultStatus(r.get()) != PGRES_PIPELINE_ABORTED) Fail(st);
      return error_.ok() ? st : error_;
    }
    return r;
  }
  // Consumes the results that have already arrived, without blocking.
  Status Poll() {
    if (send_failed_) return error_;
    if (!PQconsumeInput(c_)) {
      Fail(PgConnError(c_, "read"));
      return error_;
    }
    while (!pending_.empty() && !PQisBusy(c_)) (void)Next();
    return error_;
  }
  // Syncs (if not yet), drains every result and leaves pipeline mode. The first failure.
  Status Finish() {
    if (!synced_) (void)Sync();
    while (!pending_.empty()) (void)Next();
    if (synced_) {
      PgResult r(PQgetResult(c_));
      if (!r || PQresultStatus(r.get()) != PGRES_PIPELINE_SYNC) {
        Status st = PgResultStatus(r.get(), c_, "pipeline sync");
        Fail(st.ok() ? PgConnError(c_, "pipeline sync") : st);
      }
      synced_ = false;
    }
    if (PQpipelineStatus(c_) != PQ_PIPELINE_OFF && !PQexitPipelineMode(c_) && error_.ok()) {
      Fail(PgConnError(c_, "leave pipeline mode"));
    }
    return error_;
  }

  const Status& error() const { return error_; }

 private:
  void Sent(int ok, std::string what) {
    if (!ok) {
      SendFailed(what);
      return;
    }
    pending_.push_back(std::move(what));
  }
  void SendFailed(std::string_view what) {
    Fail(PgConnError(c_, what));
    send_failed_ = true;
  }
  void Fail(Status st) {
    if (error_.ok()) error_ = std::move(st);
  }

  PGconn* c_;
  std::deque<std::string> pending_;
  Status error_;
  bool send_failed_ = false;
  bool synced_ = false;
};

// Ends a transaction that failed or was refused: leaves pipeline mode and rolls back. A
// connection that cannot be brought back to idle is left for the pool to close (closing it
// rolls the transaction back on the server).
void RollBack(Conn& c, Pipeline& pl) {
  (void)pl.Finish();
  PGconn* pg = c.get();
  if (PQstatus(pg) == CONNECTION_OK && PQpipelineStatus(pg) == PQ_PIPELINE_OFF &&
      PQtransactionStatus(pg) != PQTRANS_IDLE) {
    PgResult r(PQexec(pg, "ROLLBACK"));
  }
}

// ---- the store's shared state ----------------------------------------------------------------

struct StatementDef {
  const char* name;
  std::string sql;
  std::vector<Oid> types;
};

class Shared {
 public:
  Shared(std::string uri, PostgresOptions options)
      : uri_(std::move(uri)), describe_(RedactUri(uri_)), options_(options) {}

  const std::string& describe() const { return describe_; }
  const PostgresOptions& options() const { return options_; }

  // A new connection; `prepare`: with the statements prepared (the tables must exist).
  Result<std::unique_ptr<Conn>> Connect(bool prepare) {
    const char* keys[] = {"dbname", "fallback_application_name", nullptr};
    const char* values[] = {uri_.c_str(), "bigarray", nullptr};
    auto conn = std::make_unique<Conn>(PQconnectdbParams(keys, values, 1));
    if (conn->get() == nullptr) return ResourceExhausted("connect to " + describe_ + ": out of memory");
    BA_RETURN_IF_ERROR(PgConnectStatus(conn->get(), "connect to " + describe_));
    // Server notices ("relation exists, skipping", ...) would go to stderr: drop them.
    PQsetNoticeProcessor(conn->get(), [](void*, const char*) {}, nullptr);
    if (prepare) BA_RETURN_IF_ERROR(Prepare(*conn));
    return conn;
  }

  // An idle connection from the pool (`reused()`), or a new one; `fresh`: always a new one.
  Result<std::unique_ptr<Conn>> Acquire(bool fresh = false) {
    for (;;) {
      std::unique_ptr<Conn> c;
      {
        std::lock_guard lock(mu_);
        if (pid_ != getpid()) {  // forked: the inherited connections are the parent's
          for (auto& inherited : idle_) (void)inherited.release();  // leaked on purpose, never closed here
          idle_.clear();
          pid_ = getpid();
        }
        if (fresh || idle_.empty()) break;
        c = std::move(idle_.back());
        idle_.pop_back();
      }
      // An idle connection has nothing to read unless the server ended it (restart,
      // pg_terminate_backend): reading, without blocking, finds that out.
      if (PQconsumeInput(c->get()) && c->Reusable()) {
        c->set_reused(true);
        return c;
      }
    }
    return Connect(true);
  }

  void Release(std::unique_ptr<Conn> c) {
    if (!c) return;
    if (!c->Mine()) {
      (void)c.release();
      return;
    }
    if (!c->Reusable()) return;  // closed: a broken or mid-transaction connection
    std::lock_guard lock(mu_);
    if (pid_ == getpid() && idle_.size() < options_.max_idle_connections) idle_.push_back(std::move(c));
  }

  uint64_t Token() {
    std::lock_guard lock(mu_);
    return rng_();
  }

  // Builds the statements once the head table's OID (the pin key) is known.
  void DefineStatements(uint32_t head_oid);
  // The NOTIFY channel of commits (set by DefineStatements).
  const std::string& channel() const { return channel_; }

  // A connection that LISTENs on channel() (from its own pool, or new), with nothing pending.
  Result<std::unique_ptr<Conn>> AcquireListener();
  // UNLISTENs and pools it (or closes it when that fails).
  void ReleaseListener(std::unique_ptr<Conn> c);

  std::string Where() const { return " (" + describe_ + ")"; }

  // Prepares every statement on `c` (DefineStatements first).
  Status Prepare(Conn& c);

 private:
  const std::string uri_;
  const std::string describe_;
  const PostgresOptions options_;
  std::vector<StatementDef> statements_;
  std::string channel_;

  std::mutex mu_;  // guards the fields below
  pid_t pid_ = getpid();
  std::vector<std::unique_ptr<Conn>> idle_;
  std::vector<std::unique_ptr<Conn>> idle_listeners_;  // UNLISTENed, for the next wait
  std::mt19937_64 rng_{std::random_device{}()};
};

Result<std::unique_ptr<Conn>> Shared::AcquireListener() {
  std::unique_ptr<Conn> c;
  {
    std::lock_guard lock(mu_);
    if (pid_ != getpid()) {  // forked: the inherited connections are the parent's
      for (auto& inherited : idle_) (void)inherited.release();
      for (auto& inherited : idle_listeners_) (void)inherited.release();
      idle_.clear();
      idle_listeners_.clear();
      pid_ = getpid();
    }
    if (!idle_listeners_.empty()) {
      c = std::move(idle_listeners_.back());
      idle_listeners_.pop_back();
    }
  }
  if (c && !(PQconsumeInput(c->get()) && c->Reusable())) c.reset();  // died while idle
  if (!c) {
    BA_ASSIGN_OR_RETURN(c, Connect(false));
  }
  const std::string listen = "LISTEN " + channel_;
  PgResult r(PQexec(c->get(), listen.c_str()));
  BA_RETURN_IF_ERROR(PgResultStatus(r.get(), c->get(), "listen for commits" + Where()));
  // Notifications from before this LISTEN (a previous wait's leftovers) mean nothing now.
  while (PGnotify* n = PQnotifies(c->get())) PQfreemem(n);
  return c;
}

void Shared::ReleaseListener(std::unique_ptr<Conn> c) {
  if (!c) return;
  if (!c->Mine()) {
    (void)c.release();
    return;
  }
  if (!c->Reusable()) return;
  PgResult r(PQexec(c->get(), "UNLISTEN *"));
  if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) return;  // closed
  while (PGnotify* n = PQnotifies(c->get())) PQfreemem(n);
  std::lock_guard lock(mu_);
  if (pid_ == getpid() && idle_listeners_.size() < 2) idle_listeners_.push_back(std::move(c));
}

void Shared::DefineStatements(uint32_t head_oid) {
  const std::string pin_key1 = std::to_string(static_cast<int32_t>(head_oid));
  channel_ = "bigarray_" + std::to_string(head_oid);
  const std::vector<Oid> none, i8{kInt8Oid}, i8x2{kInt8Oid, kInt8Oid}, i8x3{kInt8Oid, kInt8Oid, kInt8Oid},
      by{kByteaOid}, byx2{kByteaOid, kByteaOid};
  statements_ = {
      {"ba_snap",
       "SELECT commit_id, log_floor, pg_advisory_xact_lock_shared(" + pin_key1 +
           ", (commit_id & 2147483647)::int4)::text FROM bigarray_head WHERE id = 1",
       none},
      {"ba_read", "SELECT commit_id, checksum, payload FROM bigarray_blocks WHERE array_id = $1 AND block_index = $2",
       i8x2},
      {"ba_list",
       "SELECT block_index, commit_id, octet_length(payload)::int8 FROM bigarray_blocks WHERE array_id = $1 "
       "ORDER BY block_index",
       i8},
      {"ba_get_meta", "SELECT value FROM bigarray_meta WHERE key = $1", by},
      // Listings read in batches (the LIMIT, PgSnapshot::ForEachMetaFrom), so that one that
      // stops early reads little.
      {"ba_scan_meta", "SELECT key, value FROM bigarray_meta WHERE key >= $1 ORDER BY key LIMIT $2", {kByteaOid, kInt8Oid}},
      {"ba_scan_meta_to", "SELECT key, value FROM bigarray_meta WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3",
       {kByteaOid, kByteaOid, kInt8Oid}},
      {"ba_log", "SELECT changes FROM bigarray_log WHERE commit_id > $1 AND commit_id <= $2 ORDER BY commit_id",
       i8x2},
      {"ba_lock_head", "SELECT commit_id, log_floor FROM bigarray_head WHERE id = 1 FOR UPDATE", none},
      {"ba_notify", "SELECT pg_notify('" + channel_ + "', $1::text)", i8},
      {"ba_log_after", "SELECT changes FROM bigarray_log WHERE commit_id > $1 ORDER BY commit_id", i8},
      {"ba_pins",
       "SELECT DISTINCT objid::int8 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND classid = " +
           std::to_string(head_oid) +
           "::oid AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
       none},
      {"ba_del_range", "DELETE FROM bigarray_blocks WHERE array_id = $1 AND block_index BETWEEN $2 AND $3", i8x3},
      {"ba_del_block", "DELETE FROM bigarray_blocks WHERE array_id = $1 AND block_index = $2", i8x2},
      {"ba_put_block",
       "INSERT INTO bigarray_blocks (array_id, block_index, commit_id, checksum, payload) "
       "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (array_id, block_index) DO UPDATE SET "
       "commit_id = EXCLUDED.commit_id, checksum = EXCLUDED.checksum, payload = EXCLUDED.payload",
       {kInt8Oid, kInt8Oid, kInt8Oid, kInt8Oid, kByteaOid}},
      {"ba_put_meta",
       "INSERT INTO bigarray_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
       byx2},
      {"ba_del_meta", "DELETE FROM bigarray_meta WHERE key = $1", by},
      {"ba_put_log", "INSERT INTO bigarray_log (commit_id, token, changes) VALUES ($1, $2, $3)",
       {kInt8Oid, kInt8Oid, kByteaOid}},
      {"ba_trim_log", "DELETE FROM bigarray_log WHERE commit_id <= $1", i8},
      {"ba_set_head", "UPDATE bigarray_head SET commit_id = $1, log_floor = $2 WHERE id = 1", i8x2},
      {"ba_find_log", "SELECT token FROM bigarray_log WHERE commit_id = $1", i8},
  };
}

Status Shared::Prepare(Conn& c) {
  Pipeline pl(c.get());
  BA_RETURN_IF_ERROR(pl.Enter());
  // PQsendPrepare is not a query of Pipeline's kind: send directly, then collect the results.
  size_t sent = 0;
  Status st;
  for (const StatementDef& s : statements_) {
    if (!PQsendPrepare(c.get(), s.name, s.sql.c_str(), static_cast<int>(s.types.size()), s.types.data())) {
      st = PgConnError(c.get(), std::string("prepare ") + s.name + Where());
      break;
    }
    ++sent;
  }
  if (!PQpipelineSync(c.get()) && st.ok()) st = PgConnError(c.get(), "prepare statements" + Where());
  for (size_t i = 0; i < sent; ++i) {
    PgResult r(PQgetResult(c.get()));
    if (r) PgResult end(PQgetResult(c.get()));
    Status s = PgResultStatus(r.get(), c.get(), std::string("prepare ") + statements_[i].name + Where());
    if (st.ok() && !s.ok() && (!r || PQresultStatus(r.get()) != PGRES_PIPELINE_ABORTED)) st = s;
  }
  PgResult sync(PQgetResult(c.get()));
  if (!PQexitPipelineMode(c.get()) && st.ok()) st = PgConnError(c.get(), "prepare statements" + Where());
  return st;
}

// Runs a prepared statement outside pipeline mode, binary results.
Result<PgResult> Exec(Conn& c, const char* stmt, const Params& p, const std::string& what) {
  PgResult r(PQexecPrepared(c.get(), stmt, p.size(), p.values(), p.lengths(), p.formats(), 1));
  BA_RETURN_IF_ERROR(PgResultStatus(r.get(), c.get(), what));
  return r;
}

// [first, end) of unsigned block indices as at most two inclusive ranges of their bigint images
// (indices >= 2^63 are negative bigints).
std::vector<std::pair<uint64_t, uint64_t>> SignedRanges(uint64_t first, uint64_t end) {
  if (first >= end) return {};
  const uint64_t last = end - 1;
  constexpr uint64_t kHigh = uint64_t{1} << 63;
  if ((first < kHigh) == (last < kHigh)) return {{first, last}};
  return {{first, kHigh - 1}, {kHigh, last}};
}

// The smallest key greater than every key that begins with `prefix`; nullopt: none.
std::optional<std::string> PrefixEnd(std::string_view prefix) {
  std::string s(prefix);
  while (!s.empty() && static_cast<unsigned char>(s.back()) == 0xff) s.pop_back();
  if (s.empty()) return std::nullopt;
  s.back() = static_cast<char>(static_cast<unsigned char>(s.back()) + 1);
  return s;
}

// ---- snapshots -------------------------------------------------------------------------------

class PgSnapshot final : public Snapshot {
 public:
  PgSnapshot(std::shared_ptr<Shared> shared, std::unique_ptr<Conn> conn, CommitId commit, CommitId floor)
      : shared_(std::move(shared)), conn_(std::move(conn)), commit_(commit), floor_(floor) {}
  ~PgSnapshot() override {
    std::lock_guard lock(mu_);
    if (conn_->Mine() && PQstatus(conn_->get()) == CONNECTION_OK) {
      PgResult r(PQexec(conn_->get(), "ROLLBACK"));  // ends the transaction and its pin
    }
    shared_->Release(std::move(conn_));
  }

  CommitId commit_id() const override { return commit_; }
  Status ReadBlock(ArrayId a, BlockIndex i, std::span<std::byte> out) override;
  Status ForEachBlock(ArrayId a, const std::function<bool(const BlockInfo&)>& fn) override;
  Result<std::optional<std::string>> GetMeta(std::string_view key) override;
  Status ForEachMetaFrom(std::string_view prefix, std::string_view from,
                         const std::function<bool(std::string_view, std::string_view)>& fn) override;
  Result<ChangeSet> ChangesSince(CommitId from) override;

 private:
  // Runs a statement of this snapshot's transaction. Caller holds mu_.
  Result<PgResult> Run(const char* stmt, const Params& p, const std::string& what) {
    if (!conn_->Mine()) {
      return FailedPrecondition(what + ": the snapshot was opened by another process (a forked "
                                       "child must open its own store)");
    }
    return Exec(*conn_, stmt, p, what + shared_->Where());
  }

  const std::shared_ptr<Shared> shared_;
  std::unique_ptr<Conn> conn_;
  const CommitId commit_;
  const CommitId floor_;
  std::mutex mu_;  // serializes statements on conn_
};

Status PgSnapshot::ReadBlock(ArrayId a, BlockIndex i, std::span<std::byte> out) {
  PgResult r;
  {
    std::lock_guard lock(mu_);
    BA_ASSIGN_OR_RETURN(r, Run("ba_read", Params().U64(a).U64(i), "read " + BlockName(a, i)));
  }
  if (PQntuples(r.get()) == 0) {
    std::memset(out.data(), 0, out.size());
    return Status::Ok();
  }
  BA_ASSIGN_OR_RETURN(const CommitId commit, U64Field(r.get(), 0, 0, BlockName(a, i)));
  BA_ASSIGN_OR_RETURN(const uint64_t stored_sum, U64Field(r.get(), 0, 1, BlockName(a, i)));
  const std::string_view payload = BytesField(r.get(), 0, 2);
  if (payload.size() > out.size()) {
    return Corruption(BlockName(a, i) + ": stored payload of " + std::to_string(payload.size()) +
                      " bytes does not fit a block of " + std::to_string(out.size()) + " bytes" +
                      shared_->Where());
  }
  std::memcpy(out.data(), payload.data(), payload.size());
  if (internal::BlockChecksum(a, i, commit, out.first(payload.size())) != stored_sum) {
    return Corruption(BlockName(a, i) + ": checksum mismatch (the data in PostgreSQL is damaged)" +
                      shared_->Where());
  }
  std::memset(out.data() + payload.size(), 0, out.size() - payload.size());
  return Status::Ok();
}

Status PgSnapshot::ForEachBlock(ArrayId a, const std::function<bool(const BlockInfo&)>& fn) {
  std::vector<BlockInfo> found;
  {
    std::lock_guard lock(mu_);
    const std::string what = "list the blocks of array #" + std::to_string(a);
    BA_ASSIGN_OR_RETURN(PgResult r, Run("ba_list", Params().U64(a), what));
    const int n = PQntuples(r.get());
    found.reserve(static_cast<size_t>(n));
    for (int row = 0; row < n; ++row) {
      BlockInfo info;
      BA_ASSIGN_OR_RETURN(info.index, U64Field(r.get(), row, 0, what));
      BA_ASSIGN_OR_RETURN(info.commit, U64Field(r.get(), row, 1, what));
      BA_ASSIGN_OR_RETURN(info.stored_bytes, U64Field(r.get(), row, 2, what));
      found.push_back(info);
    }
  }
  // bigint order puts indices >= 2^63 (negative images) first: rotate them to the end.
  auto high = std::find_if(found.begin(), found.end(), [](const BlockInfo& b) { return b.index < (uint64_t{1} << 63); });
  std::rotate(found.begin(), high, found.end());
  for (const BlockInfo& info : found) {
    if (!fn(info)) break;
  }
  return Status::Ok();
}

Result<std::optional<std::string>> PgSnapshot::GetMeta(std::string_view key) {
  std::lock_guard lock(mu_);
  BA_ASSIGN_OR_RETURN(PgResult r, Run("ba_get_meta", Params().Str(key), "read metadata"));
  if (PQntuples(r.get()) == 0) return std::optional<std::string>();
  return std::optional<std::string>(BytesField(r.get(), 0, 0));
}

Status PgSnapshot::ForEachMetaFrom(std::string_view prefix, std::string_view from,
                                   const std::function<bool(std::string_view, std::string_view)>& fn) {
  // Batches start small and double without a cap: a listing that stops early costs a few rows,
  // a whole one log2(N/8) round trips.
  uint64_t batch = 8;
  const std::optional<std::string> end = PrefixEnd(prefix);
  std::string next(std::max(prefix, from));
  for (;;) {
    PgResult r;
    {
      std::lock_guard lock(mu_);
      if (end) {
        BA_ASSIGN_OR_RETURN(r, Run("ba_scan_meta_to", Params().Str(next).Str(*end).U64(batch), "list metadata"));
      } else {
        BA_ASSIGN_OR_RETURN(r, Run("ba_scan_meta", Params().Str(next).U64(batch), "list metadata"));
      }
    }
    const int n = PQntuples(r.get());
    for (int row = 0; row < n; ++row) {
      const std::string key(BytesField(r.get(), row, 0));
      if (!key.starts_with(prefix)) return Status::Ok();  // no end: prefix of 0xff bytes
      if (!fn(key, BytesField(r.get(), row, 1))) return Status::Ok();
      if (row == n - 1) next = key + '\0';  // the least key after it
    }
    if (static_cast<uint64_t>(n) < batch) return Status::Ok();
    batch *= 2;
  }
}

Result<ChangeSet> PgSnapshot::ChangesSince(CommitId from) {
  ChangeSet cs;
  cs.from = from;
  cs.to = commit_;
  if (from >= commit_) return cs;
  if (from < floor_) {
    cs.complete = false;
    return cs;
  }
  std::lock_guard lock(mu_);
  BA_ASSIGN_OR_RETURN(PgResult r, Run("ba_log", Params().U64(from).U64(commit_), "read the change log"));
  for (int row = 0, n = PQntuples(r.get()); row < n; ++row) {
    BA_RETURN_IF_ERROR(internal::DecodeChanges(BytesField(r.get(), row, 0), cs));
  }
  return cs;
}

// ---- the store -------------------------------------------------------------------------------

class PgStore final : public BlockStore {
 public:
  explicit PgStore(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

  Result<std::shared_ptr<Snapshot>> OpenSnapshot() override;
  Result<CommitId> Commit(const WriteBatch& batch) override;
  Status Sync() override;
  std::string Describe() const override { return shared_->describe(); }
  Result<std::optional<CommitId>> WaitForCommit(CommitId after, std::chrono::nanoseconds timeout) override;

 private:
  // `fresh`: on a new connection. `*stale`: failed because a pooled connection had died.
  Result<std::shared_ptr<Snapshot>> TryOpenSnapshot(bool fresh, bool* stale);
  Status TrySync(bool fresh, bool* stale);
  // One attempt on `c`. `*commit_sent`: COMMIT was queued, so a lost connection leaves the
  // outcome unknown.
  Result<CommitId> TryCommit(Conn& c, const WriteBatch& batch, uint64_t token, CommitId* id, bool* commit_sent);
  // After a connection lost with COMMIT sent: did commit `id` with `token` happen?
  Result<CommitId> Resolve(CommitId id, uint64_t token, const Status& lost);

  std::shared_ptr<Shared> shared_;
};

Result<std::shared_ptr<Snapshot>> PgStore::OpenSnapshot() {
  bool stale = false;
  Result<std::shared_ptr<Snapshot>> r = TryOpenSnapshot(false, &stale);
  if (!r.ok() && stale) r = TryOpenSnapshot(true, &stale);
  return r;
}

Result<std::shared_ptr<Snapshot>> PgStore::TryOpenSnapshot(bool fresh, bool* stale) {
  BA_ASSIGN_OR_RETURN(std::unique_ptr<Conn> conn, shared_->Acquire(fresh));
  Pipeline pl(conn->get());
  BA_RETURN_IF_ERROR(pl.Enter());
  pl.Sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", "begin a snapshot" + shared_->Where());
  pl.Prepared("ba_snap", Params(), "read the head of" + shared_->Where());
  (void)pl.Sync();
  Result<PgResult> begin = pl.Next();
  Result<PgResult> head = pl.Next();
  Result<std::pair<CommitId, CommitId>> state = [&]() -> Result<std::pair<CommitId, CommitId>> {
    if (!begin.ok()) return begin.status();
    if (!head.ok()) return head.status();
    if (PQntuples(head->get()) != 1) return Corruption("the head row of " + shared_->describe() + " is missing");
    BA_ASSIGN_OR_RETURN(CommitId commit, U64Field(head->get(), 0, 0, "the head row"));
    BA_ASSIGN_OR_RETURN(CommitId floor, U64Field(head->get(), 0, 1, "the head row"));
    BA_RETURN_IF_ERROR(pl.Finish());
    return std::make_pair(commit, floor);
  }();
  if (!state.ok()) {
    RollBack(*conn, pl);
    *stale = conn->Stale();
    shared_->Release(std::move(conn));
    return state.status();
  }
  return std::shared_ptr<Snapshot>(
      std::make_shared<PgSnapshot>(shared_, std::move(conn), state->first, state->second));
}

namespace {

// The head row's commit id, read on `c` outside any transaction: the latest commit.
Result<CommitId> ReadHead(Conn& c, const std::string& where) {
  PgResult r(PQexec(c.get(), "SELECT commit_id FROM bigarray_head WHERE id = 1"));
  BA_RETURN_IF_ERROR(PgResultStatus(r.get(), c.get(), "read the head of" + where));
  if (PQntuples(r.get()) != 1) return Corruption("the head row of" + where + " is missing");
  char* end = nullptr;
  const char* text = PQgetvalue(r.get(), 0, 0);
  const long long v = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0') return Corruption("the head row of" + where + " holds no commit id");
  return static_cast<CommitId>(v);
}

}  // namespace

Result<std::optional<CommitId>> PgStore::WaitForCommit(CommitId after, std::chrono::nanoseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto deadline = timeout >= Clock::time_point::max() - start ? Clock::time_point::max() : start + timeout;
  const std::string where = shared_->Where();
  BA_ASSIGN_OR_RETURN(std::unique_ptr<Conn> c, shared_->AcquireListener());
  auto finish = [&](Result<std::optional<CommitId>> r) {
    shared_->ReleaseListener(std::move(c));
    return r;
  };
  // LISTEN is active: a commit after this read is notified, one before it is seen here.
  Result<CommitId> head = ReadHead(*c, where);
  if (!head.ok()) return finish(head.status());
  if (*head > after) return finish(std::optional<CommitId>(*head));
  CommitId newest = 0;
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline) {
      head = ReadHead(*c, where);  // notifications are the fast path; the head row is the truth
      if (!head.ok()) return finish(head.status());
      return finish(*head > after ? std::optional<CommitId>(*head) : std::nullopt);
    }
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
    const auto slice = std::min<std::chrono::nanoseconds>(left, std::chrono::hours(24));
    timespec ts{static_cast<time_t>(slice.count() / 1'000'000'000), static_cast<long>(slice.count() % 1'000'000'000)};
    pollfd p{PQsocket(c->get()), POLLIN, 0};
    if (p.fd < 0) return finish(PgConnError(c->get(), "wait for commits on" + where));
    const int rc = ppoll(&p, 1, &ts, nullptr);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return finish(ErrnoStatus(errno, "wait for commits on" + where + " (poll)"));
    if (rc == 0) continue;
    if (!PQconsumeInput(c->get())) return finish(PgConnError(c->get(), "wait for commits on" + where));
    while (PGnotify* n = PQnotifies(c->get())) {
      newest = std::max<CommitId>(newest, std::strtoull(n->extra, nullptr, 10));
      PQfreemem(n);
    }
    if (newest > after) return finish(std::optional<CommitId>(newest));
  }
}

Result<CommitId> PgStore::Commit(const WriteBatch& batch) {
  if (shared_->options().read_only) return FailedPrecondition(shared_->describe() + " was opened read-only");
  const uint64_t token = shared_->Token();
  for (int attempt = 0;; ++attempt) {
    BA_ASSIGN_OR_RETURN(std::unique_ptr<Conn> conn, shared_->Acquire(attempt > 0));
    CommitId id = 0;
    bool commit_sent = false;
    Result<CommitId> r = TryCommit(*conn, batch, token, &id, &commit_sent);
    const bool stale = conn->Stale();
    shared_->Release(std::move(conn));
    if (!r.ok() && commit_sent) return Resolve(id, token, r.status());
    // A pooled connection that had died while idle: nothing was committed; once more, anew.
    if (!r.ok() && stale && attempt == 0) continue;
    return r;
  }
}

Result<CommitId> PgStore::Resolve(CommitId id, uint64_t token, const Status& lost) {
  auto unknown = [&](const Status& why) -> Status {
    return IOError(lost.message() + "; the connection was lost after COMMIT was sent and the outcome of commit " +
                   std::to_string(id) + " could not be determined (" + why.ToString() + ")");
  };
  auto conn = shared_->Acquire(true);
  if (!conn.ok()) return unknown(conn.status());
  // Our transaction held the head row lock (it got past round trip 1). Taking the lock waits
  // until that transaction has ended, on the server, one way or the other (its backend may not
  // have noticed the lost connection yet); then its log record tells.
  const std::string where = shared_->Where();
  Pipeline pl((*conn)->get());
  Status st = pl.Enter();
  if (!st.ok()) return unknown(st);
  pl.Sql("BEGIN", "look up commit " + std::to_string(id) + where);
  pl.Sql("SET LOCAL lock_timeout = '60s'", "look up commit " + std::to_string(id) + where);
  pl.Prepared("ba_lock_head", Params(), "wait for commit " + std::to_string(id) + where);
  pl.Prepared("ba_find_log", Params().U64(id), "look up commit " + std::to_string(id) + where);
  (void)pl.Sync();
  Result<PgResult> begin = pl.Next();
  Result<PgResult> set = pl.Next();
  Result<PgResult> head = pl.Next();
  Result<PgResult> log = pl.Next();
  RollBack(**conn, pl);
  shared_->Release(std::move(*conn));
  for (const auto* r : {&begin, &set, &head, &log}) {
    if (!r->ok()) return unknown(r->status());
  }
  if (PQntuples(log->get()) == 1) {
    auto t = U64Field(log->get(), 0, 0, "the change log");
    if (!t.ok()) return unknown(t.status());
    if (*t == token) return id;  // it did commit
    return lost;                 // another writer's commit has this id: ours did not happen
  }
  if (PQntuples(head->get()) != 1) return unknown(Corruption("no head row"));
  auto floor = U64Field(head->get(), 0, 1, "the head row");
  if (!floor.ok()) return unknown(floor.status());
  if (*floor >= id) return unknown(Internal("its log record was trimmed already"));
  return lost;  // no record of `id`: ours did not happen
}

Result<CommitId> PgStore::TryCommit(Conn& c, const WriteBatch& batch, uint64_t token, CommitId* id_out,
                                    bool* commit_sent) {
  const std::string where = shared_->Where();
  const PostgresOptions& o = shared_->options();
  Pipeline pl(c.get());
  BA_RETURN_IF_ERROR(pl.Enter());

  // Round trip 1: lock the head (serializes commits, allocates the id), read what the conflict
  // check and the log trim need.
  pl.Sql("BEGIN", "begin a commit" + where);
  if (!o.durable) pl.Sql("SET LOCAL synchronous_commit = off", "relax the commit" + where);
  pl.Prepared("ba_lock_head", Params(), "lock the head row" + where);
  pl.Prepared("ba_log_after", Params().U64(batch.base()), "read the change log" + where);
  pl.Prepared("ba_pins", Params(), "list the open snapshots" + where);
  (void)pl.Flush();
  auto fail = [&](Status st) -> Result<CommitId> {
    RollBack(c, pl);
    return st;
  };
  Result<PgResult> begin = pl.Next();
  if (!o.durable) begin = pl.Next();
  Result<PgResult> head = pl.Next();
  Result<PgResult> log = pl.Next();
  Result<PgResult> pins = pl.Next();
  for (const auto* r : {&begin, &head, &log, &pins}) {
    if (!r->ok()) return fail(pl.error().ok() ? r->status() : pl.error());
  }
  if (PQntuples(head->get()) != 1) return fail(Corruption("the head row of " + shared_->describe() + " is missing"));
  auto head_commit = U64Field(head->get(), 0, 0, "the head row");
  auto head_floor = U64Field(head->get(), 0, 1, "the head row");
  if (!head_commit.ok()) return fail(head_commit.status());
  if (!head_floor.ok()) return fail(head_floor.status());
  const CommitId current = *head_commit, floor = *head_floor;
  const CommitId id = current + 1;

  // Conflicts: any key of the batch changed in (base, current].
  if (batch.base() < current) {
    ChangeSet cs;
    cs.from = batch.base();
    cs.to = current;
    if (batch.base() < floor) {
      cs.complete = false;
    } else {
      for (int row = 0, n = PQntuples(log->get()); row < n; ++row) {
        Status st = internal::DecodeChanges(BytesField(log->get(), row, 0), cs);
        if (!st.ok()) return fail(st.WithContext("read the change log" + where));
      }
    }
    if (auto what = batch.FindConflict(cs)) return fail(ConflictError(*what));
  }

  // The new log floor: nothing an open snapshot may ask for, and at least the last
  // log_min_retention records; at most log_max_retention records (0: no limit).
  CommitId new_floor = id - 1 - std::min<uint64_t>(id - 1, o.log_min_retention);
  for (int row = 0, n = PQntuples(pins->get()); row < n; ++row) {
    auto key = U64Field(pins->get(), row, 0, "pg_locks");
    if (!key.ok()) continue;
    // The pinned commit: the largest id <= current with this residue mod 2^31.
    const uint64_t back = (current - *key) % kPinModulus;
    if (back <= current) new_floor = std::min(new_floor, current - back);
  }
  if (o.log_max_retention > 0 && id - 1 > o.log_max_retention) {
    new_floor = std::max(new_floor, id - 1 - o.log_max_retention);
  }
  new_floor = std::max(new_floor, floor);

  // Round trip 2: the writes, streamed; then COMMIT and Sync.
  for (const BlockRange& r : batch.deletes()) {
    for (auto [lo, hi] : SignedRanges(r.first, r.end)) {
      pl.Prepared("ba_del_range", Params().U64(r.array).U64(lo).U64(hi),
                  "delete blocks of array #" + std::to_string(r.array) + where);
    }
  }
  size_t unpolled = 0;
  for (const WriteBatch::Put& p : batch.puts()) {
    std::span<const std::byte> data;
    if (p.size > 0) {
      Result<std::span<const std::byte>> d = p.data();
      if (!d.ok()) return fail(d.status());
      data = *d;
      if (data.size() > p.size) return fail(Internal(BlockName(p.array, p.index) + ": payload too long"));
      data = data.first(TrimmedSize(data));  // trailing zeros are not stored
      if (data.size() > kMaxPayloadBytes) {
        return fail(Unsupported(BlockName(p.array, p.index) + ": a payload of " + std::to_string(data.size()) +
                                " bytes is more than PostgreSQL stores in one value (1 GB); use a smaller block size"));
      }
    }
    if (data.empty()) {
      pl.Prepared("ba_del_block", Params().U64(p.array).U64(p.index), "delete " + BlockName(p.array, p.index) + where);
      continue;
    }
    const uint64_t sum = internal::BlockChecksum(p.array, p.index, id, data);
    pl.Prepared("ba_put_block", Params().U64(p.array).U64(p.index).U64(id).U64(sum).Bytes(data.data(), data.size()),
                "store " + BlockName(p.array, p.index) + where);
    // Stop streaming early when the server already refused something (checked every MiB).
    unpolled += data.size();
    if (unpolled >= kPollBytes) {
      unpolled = 0;
      if (!pl.Flush().ok() || !pl.Poll().ok()) return fail(pl.error());
    }
  }
  for (const auto& [key, value] : batch.meta()) {
    if (value) {
      pl.Prepared("ba_put_meta", Params().Str(key).Str(*value), "write metadata" + where);
    } else {
      pl.Prepared("ba_del_meta", Params().Str(key), "write metadata" + where);
    }
  }
  const std::string record = internal::EncodeChanges(batch);
  pl.Prepared("ba_put_log", Params().U64(id).U64(token).Str(record), "write the change log" + where);
  if (new_floor > floor) pl.Prepared("ba_trim_log", Params().U64(new_floor), "trim the change log" + where);
  pl.Prepared("ba_set_head", Params().U64(id).U64(new_floor), "advance the head" + where);
  pl.Prepared("ba_notify", Params().U64(id), "notify the followers" + where);  // sent at COMMIT
  if (!pl.error().ok()) return fail(pl.error());
  pl.Sql("COMMIT", "commit" + where);
  *id_out = id;
  *commit_sent = true;
  Status st = pl.Finish();
  if (!st.ok()) {
    // With the session alive, the server refused a statement: the transaction is aborted and
    // nothing was written. A lost session leaves the outcome to Resolve.
    if (PQstatus(c.get()) == CONNECTION_OK) *commit_sent = false;
    RollBack(c, pl);
    return st;
  }
  if (PQtransactionStatus(c.get()) != PQTRANS_IDLE) {
    RollBack(c, pl);
    *commit_sent = false;
    return Internal("commit" + where + ": the transaction did not end");
  }
  return id;
}

Status PgStore::Sync() {
  if (shared_->options().durable) return Status::Ok();
  bool stale = false;
  Status st = TrySync(false, &stale);
  if (!st.ok() && stale) st = TrySync(true, &stale);
  return st;
}

Status PgStore::TrySync(bool fresh, bool* stale) {
  // A transaction with an id, committed with synchronous_commit on, flushes the WAL up to its
  // commit record: every earlier (asynchronous) commit is durable with it.
  BA_ASSIGN_OR_RETURN(std::unique_ptr<Conn> conn, shared_->Acquire(fresh));
  PgResult r(PQexec(conn->get(),
                    "BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); COMMIT"));
  Status st = PgResultStatus(r.get(), conn->get(), "sync" + shared_->Where());
  if (!st.ok() && PQstatus(conn->get()) == CONNECTION_OK && PQtransactionStatus(conn->get()) != PQTRANS_IDLE) {
    PgResult rb(PQexec(conn->get(), "ROLLBACK"));
  }
  *stale = conn->Stale();
  shared_->Release(std::move(conn));
  return st;
}

// ---- opening ---------------------------------------------------------------------------------

std::string Hex(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (unsigned char c : bytes) {
    s += digits[c >> 4];
    s += digits[c & 15];
  }
  return s;
}

std::string FormatRecord() {
  std::string record(kFormatMagic);
  for (int i = 0; i < 4; ++i) record.push_back(static_cast<char>(kPostgresFormatVersion >> (8 * i)));
  return record;
}

// Which of the four tables exist (as the search_path resolves them), and the head's OID.
struct Probe {
  int tables = 0;
  uint32_t head_oid = 0;
  std::string schema;
};

Result<Probe> ProbeTables(Conn& c, const std::string& describe) {
  PgResult r(PQexecParams(c.get(),
                          "SELECT (to_regclass('bigarray_head') IS NOT NULL)::int + "
                          "(to_regclass('bigarray_meta') IS NOT NULL)::int + "
                          "(to_regclass('bigarray_blocks') IS NOT NULL)::int + "
                          "(to_regclass('bigarray_log') IS NOT NULL)::int, "
                          "coalesce(to_regclass('bigarray_head')::oid, 0)::text, coalesce(current_schema(), '')",
                          0, nullptr, nullptr, nullptr, nullptr, 0));
  BA_RETURN_IF_ERROR(PgResultStatus(r.get(), c.get(), "look for the bigarray tables in " + describe));
  Probe p;
  p.tables = std::atoi(PQgetvalue(r.get(), 0, 0));
  p.head_oid = static_cast<uint32_t>(std::strtoul(PQgetvalue(r.get(), 0, 1), nullptr, 10));
  p.schema = PQgetvalue(r.get(), 0, 2);
  return p;
}

Status CreateTables(Conn& c, const std::string& describe) {
  const std::string sql =
      "BEGIN;"
      "SELECT pg_advisory_xact_lock(" + std::to_string(kSchemaLockKey) + ");"
      "CREATE TABLE IF NOT EXISTS bigarray_head ("
      "  id integer PRIMARY KEY CHECK (id = 1),"
      "  commit_id bigint NOT NULL,"
      "  log_floor bigint NOT NULL);"
      "CREATE TABLE IF NOT EXISTS bigarray_meta ("
      "  key bytea PRIMARY KEY,"
      "  value bytea NOT NULL);"
      "CREATE TABLE IF NOT EXISTS bigarray_blocks ("
      "  array_id bigint NOT NULL,"
      "  block_index bigint NOT NULL,"
      "  commit_id bigint NOT NULL,"
      "  checksum bigint NOT NULL,"
      "  payload bytea NOT NULL,"
      "  PRIMARY KEY (array_id, block_index));"
      "ALTER TABLE bigarray_blocks ALTER COLUMN payload SET STORAGE EXTERNAL;"
      "CREATE TABLE IF NOT EXISTS bigarray_log ("
      "  commit_id bigint PRIMARY KEY,"
      "  token bigint NOT NULL,"
      "  changes bytea NOT NULL);"
      "INSERT INTO bigarray_head VALUES (1, 0, 0) ON CONFLICT DO NOTHING;"
      "INSERT INTO bigarray_meta VALUES (decode('" + Hex(FormatKey()) + "', 'hex'), decode('" +
      Hex(FormatRecord()) + "', 'hex')) ON CONFLICT DO NOTHING;"
      "COMMIT";
  PgResult r(PQexec(c.get(), sql.c_str()));
  Status st = PgResultStatus(r.get(), c.get(), "create the bigarray tables in " + describe);
  if (!st.ok() && PQstatus(c.get()) == CONNECTION_OK && PQtransactionStatus(c.get()) != PQTRANS_IDLE) {
    PgResult rb(PQexec(c.get(), "ROLLBACK"));
  }
  return st;
}

// Returns once no CreateTables transaction holds the schema lock (the shared lock conflicts
// with its exclusive one, and goes with the implicit transaction).
Status WaitForCreation(Conn& c, const std::string& describe) {
  const std::string sql = "SELECT pg_advisory_xact_lock_shared(" + std::to_string(kSchemaLockKey) + ")";
  PgResult r(PQexec(c.get(), sql.c_str()));
  return PgResultStatus(r.get(), c.get(), "wait for the creation of the bigarray tables in " + describe);
}

Status CheckFormat(Conn& c, const std::string& describe) {
  Params p;
  p.Str(FormatKey());
  PgResult r(PQexecParams(c.get(), "SELECT value FROM bigarray_meta WHERE key = $1", 1, nullptr, p.values(),
                          p.lengths(), p.formats(), 1));
  BA_RETURN_IF_ERROR(PgResultStatus(r.get(), c.get(), "read the format record of " + describe));
  if (PQntuples(r.get()) == 0) {
    return InvalidArgument(describe + " has bigarray tables but is not a bigarray database (no format record)");
  }
  const std::string_view v = BytesField(r.get(), 0, 0);
  if (v.size() != kFormatMagic.size() + 4 || !v.starts_with(kFormatMagic)) {
    return Corruption(describe + ": malformed format record");
  }
  const auto* b = reinterpret_cast<const unsigned char*>(v.data()) + kFormatMagic.size();
  const uint32_t version = b[0] | b[1] << 8 | b[2] << 16 | uint32_t{b[3]} << 24;
  if (version > kPostgresFormatVersion) {
    return Unsupported(describe + " has format version " + std::to_string(version) +
                       "; this build of bigarray reads versions up to " + std::to_string(kPostgresFormatVersion));
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<BlockStore>> OpenPostgresStore(const std::string& uri, const PostgresOptions& options) {
  auto shared = std::make_shared<Shared>(uri, options);
  const std::string& describe = shared->describe();
  BA_ASSIGN_OR_RETURN(std::unique_ptr<Conn> conn, shared->Connect(false));
  BA_ASSIGN_OR_RETURN(Probe probe, ProbeTables(*conn, describe));
  if (probe.tables != 0 && probe.tables != 4) {
    // A probe that overlaps another process's CreateTables commit can count some of the tables:
    // each to_regclass may read a newer catalog than the one before. Wait until no creation holds
    // the schema lock, then look again, in a new transaction that sees its commit.
    BA_RETURN_IF_ERROR(WaitForCreation(*conn, describe));
    BA_ASSIGN_OR_RETURN(probe, ProbeTables(*conn, describe));
  }
  if (probe.tables == 0) {
    if (!options.create_if_missing || options.read_only) {
      return NotFound("no bigarray database at " + describe +
                      (probe.schema.empty() ? std::string(" (its search_path names no existing schema)")
                                            : " (no bigarray tables in schema '" + probe.schema + "')"));
    }
    BA_RETURN_IF_ERROR(CreateTables(*conn, describe));
    BA_ASSIGN_OR_RETURN(probe, ProbeTables(*conn, describe));
  }
  if (probe.tables != 4) {
    return InvalidArgument(describe + " is not a bigarray database (it has some of the bigarray_* tables, "
                                      "not all four)");
  }
  BA_RETURN_IF_ERROR(CheckFormat(*conn, describe));
  shared->DefineStatements(probe.head_oid);
  // The probing connection goes to the pool once its statements are prepared.
  BA_RETURN_IF_ERROR(shared->Prepare(*conn));
  shared->Release(std::move(conn));
  return std::shared_ptr<BlockStore>(std::make_shared<PgStore>(std::move(shared)));
}

}  // namespace bigarray::storage
