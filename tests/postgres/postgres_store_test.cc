// PostgreSQL-specific behaviour of the block store: libpq errors and their codes (connection
// refused, authentication, missing database, server gone), opening and format checks,
// corruption detection, persistence, change-log retention across clients, relaxed commits,
// read-only stores, forks, and block indices past 2^63.
#include <dirent.h>
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <thread>

#include "bigarray/storage/block_store.h"
#include "pg_test_util.h"
#include "postgres_status.h"
#include "test_util.h"

using namespace bigarray;
using namespace bigarray::storage;
using bigarray::testing::AllZero;
using bigarray::testing::Pattern;
using bigarray::testing::PgBaseUri;
using bigarray::testing::PgExec;
using bigarray::testing::PgSchema;
using bigarray::testing::WithParam;

namespace {

constexpr size_t kBlock = 64 * 1024;

std::shared_ptr<BlockStore> Open(const std::string& uri, PostgresOptions o = {}) {
  auto r = OpenPostgresStore(uri, o);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return *r;
}

std::vector<std::byte> Read(Snapshot& s, ArrayId a, BlockIndex i, size_t n = kBlock) {
  std::vector<std::byte> out(n, std::byte{0x5A});
  Status st = s.ReadBlock(a, i, out);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  return out;
}

CommitId Put(BlockStore& store, CommitId base, ArrayId a, BlockIndex i, const std::vector<std::byte>& data) {
  WriteBatch b(base);
  b.PutBlock(a, i, data);
  auto r = store.Commit(b);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return *r;
}

// The value of query parameter `key` in `uri` ("" when absent).
std::string Param(const std::string& uri, const std::string& key) {
  size_t p = uri.find(key + "=");
  if (p == std::string::npos) return "";
  p += key.size() + 1;
  return uri.substr(p, uri.find('&', p) - p);
}

// Runs `fn` in a child process; returns its exit status.
template <typename Fn>
int InChild(Fn fn) {
  pid_t pid = fork();
  if (pid == 0) {
    int rc = 1;
    try {
      rc = fn();
    } catch (...) {
    }
    _exit(rc);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Shuts down, for reading, every socket of this process connected to the server in
// `socket_dir`: libpq then sees the server gone while the server does not know it yet.
int ShutdownReads(const std::string& socket_dir) {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d) return 0;
  while (dirent* e = readdir(d)) {
    const int fd = std::atoi(e->d_name);
    sockaddr_un peer{};
    socklen_t len = sizeof peer;
    if (fd > 2 && getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 && peer.sun_family == AF_UNIX &&
        std::string(peer.sun_path).starts_with(socket_dir + "/")) {
      if (shutdown(fd, SHUT_RD) == 0) ++n;
    }
  }
  closedir(d);
  return n;
}

// Waits until a backend of `application_name` sleeps in pg_sleep.
void WaitForSleeper(const std::string& base, const std::string& application_name) {
  for (int i = 0; i < 2000; ++i) {
    if (PgExec(base, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + application_name +
                         "' AND wait_event = 'PgSleep'") != "0") {
      return;
    }
    usleep(5000);
  }
  FAIL("no backend of " << application_name << " ever slept");
}

}  // namespace

TEST_CASE("SQLSTATEs map to codes") {
  using internal::PgSqlStateStatus;
  struct {
    const char* state;
    Code code;
  } cases[] = {
      {"08006", Code::kIOError},           {"08001", Code::kIOError},
      {"57P01", Code::kIOError},           {"57P02", Code::kIOError},
      {"57P03", Code::kIOError},           {"28P01", Code::kInvalidArgument},
      {"28000", Code::kInvalidArgument},   {"3D000", Code::kNotFound},
      {"42P01", Code::kNotFound},          {"40001", Code::kConflict},
      {"40P01", Code::kConflict},          {"53100", Code::kNoSpace},
      {"53200", Code::kResourceExhausted}, {"53300", Code::kResourceExhausted},
      {"54000", Code::kResourceExhausted}, {"25006", Code::kFailedPrecondition},
      {"25P02", Code::kFailedPrecondition}, {"42501", Code::kFailedPrecondition},
      {"XX001", Code::kCorruption},        {"XX002", Code::kCorruption},
      {"0A000", Code::kUnsupported},       {"42601", Code::kInternal},
      {"XX000", Code::kInternal},          {"58030", Code::kIOError},
      {"22001", Code::kInvalidArgument},   {"", Code::kIOError},
  };
  for (const auto& c : cases) {
    CAPTURE(c.state);
    Status st = PgSqlStateStatus(c.state, "what: why");
    CHECK(st.code() == c.code);
    CHECK(st.message().starts_with("what: why"));
  }
}

TEST_CASE("connection refused is IOError naming the server") {
  auto r = OpenPostgresStore("postgresql:///postgres?host=/nonexistent-bigarray-dir&port=5432", {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kIOError);
  CHECK(r.status().message().find("/nonexistent-bigarray-dir") != std::string::npos);
  // TCP: nothing listens on port 1.
  auto tcp = OpenPostgresStore("postgresql://127.0.0.1:1/postgres?connect_timeout=5", {});
  REQUIRE_FALSE(tcp.ok());
  CHECK(tcp.status().code() == Code::kIOError);
}

TEST_CASE("a malformed URI is InvalidArgument") {
  auto r = OpenPostgresStore("postgresql://host:notaport/db", {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kInvalidArgument);
  auto bad_option = OpenPostgresStore("postgresql:///db?nosuchoption=1", {});
  REQUIRE_FALSE(bad_option.ok());
  CHECK(bad_option.status().code() == Code::kInvalidArgument);
}

TEST_CASE("authentication failure is InvalidArgument; the password never appears in messages") {
  const std::string host = Param(PgBaseUri(), "host");
  const std::string uri = "postgresql://bigarray_pw:wrong-secret@/postgres?host=" + host;
  auto r = OpenPostgresStore(uri, {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kInvalidArgument);
  CHECK(r.status().message().find("password authentication failed") != std::string::npos);
  CHECK(r.status().message().find("wrong-secret") == std::string::npos);

  PgSchema schema;
  PgExec(schema.base(), "GRANT ALL ON SCHEMA " + schema.name() + " TO bigarray_pw");
  const std::string good = "postgresql://bigarray_pw:secret@/postgres?host=" + host +
                           "&options=-csearch_path%3D" + schema.name();
  auto store = Open(good);
  CHECK(store->Describe().find("secret") == std::string::npos);
  CHECK(store->Describe().find("bigarray_pw") != std::string::npos);
  auto with_param = OpenPostgresStore(WithParam(good, "password=alsowrong"), {});
  REQUIRE_FALSE(with_param.ok());
  CHECK(with_param.status().message().find("alsowrong") == std::string::npos);
}

TEST_CASE("a database that does not exist is NotFound") {
  const std::string host = Param(PgBaseUri(), "host");
  auto r = OpenPostgresStore("postgresql:///no_such_database?user=postgres&host=" + host, {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kNotFound);
  CHECK(r.status().message().find("no_such_database") != std::string::npos);
}

TEST_CASE("opening: create, missing tables, foreign tables, newer format") {
  PgSchema schema;
  PostgresOptions no_create;
  no_create.create_if_missing = false;
  auto missing = OpenPostgresStore(schema.uri(), no_create);
  CHECK(missing.status().code() == Code::kNotFound);
  PostgresOptions ro;
  ro.read_only = true;
  CHECK(OpenPostgresStore(schema.uri(), ro).status().code() == Code::kNotFound);
  CHECK(schema.Exec("SELECT count(*) FROM pg_tables WHERE schemaname = '" + schema.name() + "'") == "0");

  {
    auto store = Open(schema.uri());
    auto s = store->OpenSnapshot().value();
    CHECK(s->commit_id() == 0);
    auto format = s->GetMeta(std::string_view("\0format", 7)).value();
    REQUIRE(format.has_value());
    CHECK(format->starts_with("bigarray"));
  }
  CHECK(OpenPostgresStore(schema.uri(), no_create).ok());

  schema.Exec("UPDATE bigarray_meta SET value = decode('626967617272617902000000', 'hex') "
              "WHERE key = decode('00666f726d6174', 'hex')");
  auto newer = OpenPostgresStore(schema.uri(), {});
  CHECK(newer.status().code() == Code::kUnsupported);
  CHECK(newer.status().message().find("version 2") != std::string::npos);

  PgSchema other;
  other.Exec("CREATE TABLE bigarray_meta (x int)");
  auto foreign = OpenPostgresStore(other.uri(), {});
  CHECK(foreign.status().code() == Code::kInvalidArgument);
  CHECK(other.Exec("SELECT count(*) FROM pg_tables WHERE schemaname = '" + other.name() + "'") == "1");
}

TEST_CASE("data persists across stores; commit ids continue") {
  PgSchema schema;
  CommitId c;
  {
    auto store = Open(schema.uri());
    c = Put(*store, 0, 1, 0, Pattern(kBlock, 1));
    c = Put(*store, c, 1, 1, Pattern(kBlock, 2));
  }
  auto store = Open(schema.uri());
  auto s = store->OpenSnapshot().value();
  CHECK(s->commit_id() == c);
  CHECK(Read(*s, 1, 0) == Pattern(kBlock, 1));
  CHECK(Read(*s, 1, 1) == Pattern(kBlock, 2));
  CHECK(Put(*store, c, 1, 2, Pattern(kBlock, 3)) == c + 1);
}

TEST_CASE("a damaged payload or checksum is Corruption naming the array and block") {
  PgSchema schema;
  auto store = Open(schema.uri());
  WriteBatch b(0);
  b.PutBlock(7, 3, Pattern(kBlock, 1));
  b.PutBlock(7, 4, Pattern(kBlock, 2));
  REQUIRE(store->Commit(b).ok());
  schema.Exec("UPDATE bigarray_blocks SET payload = overlay(payload placing '\\x00'::bytea from 100) "
              "WHERE array_id = 7 AND block_index = 3");
  schema.Exec("UPDATE bigarray_blocks SET checksum = checksum + 1 WHERE array_id = 7 AND block_index = 4");
  auto s = store->OpenSnapshot().value();
  std::vector<std::byte> out(kBlock);
  Status st = s->ReadBlock(7, 3, out);
  CHECK(st.code() == Code::kCorruption);
  CHECK(st.message().find("array #7 block 3") != std::string::npos);
  st = s->ReadBlock(7, 4, out);
  CHECK(st.code() == Code::kCorruption);
  CHECK(st.message().find("array #7 block 4") != std::string::npos);
}

TEST_CASE("server gone: a terminated snapshot connection is IOError; the store carries on") {
  PgSchema schema;
  const std::string uri = WithParam(schema.uri(), "application_name=gone_test");
  auto store = Open(uri);
  CommitId c = Put(*store, 0, 1, 0, Pattern(kBlock, 1));
  auto s = store->OpenSnapshot().value();
  CHECK(Read(*s, 1, 0) == Pattern(kBlock, 1));
  PgExec(schema.base(),
         "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gone_test'");
  std::vector<std::byte> out(kBlock);
  Status st = s->ReadBlock(1, 0, out);
  CHECK(st.code() == Code::kIOError);
  CHECK(st.message().find("gone_test") != std::string::npos);  // names the server (the URI)
  CHECK(s->GetMeta("x").status().code() == Code::kIOError);
  s.reset();
  // Fresh connections: the pool dropped the dead ones.
  auto again = store->OpenSnapshot();
  REQUIRE_MESSAGE(again.ok(), again.status().ToString());
  CHECK(Read(**again, 1, 0) == Pattern(kBlock, 1));
  c = Put(*store, c, 1, 1, Pattern(kBlock, 2));
  again->reset();
  // The server ends the idle pooled connections too (as a restart would): the next calls
  // find them dead and connect anew.
  PgExec(schema.base(),
         "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gone_test'");
  auto after = store->OpenSnapshot();
  REQUIRE_MESSAGE(after.ok(), after.status().ToString());
  CHECK(Read(**after, 1, 1) == Pattern(kBlock, 2));
  PgExec(schema.base(),
         "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gone_test'");
  after->reset();
  c = Put(*store, c, 1, 2, Pattern(kBlock, 3));
  PostgresOptions relaxed;
  relaxed.durable = false;
  auto relaxed_store = Open(uri, relaxed);
  PgExec(schema.base(),
         "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gone_test'");
  CHECK(relaxed_store->Sync().ok());
}

TEST_CASE("the change log: kept for snapshots of other clients, trimmed beyond them") {
  PgSchema schema;
  PostgresOptions o;
  o.log_min_retention = 0;
  auto writer = Open(schema.uri(), o);
  auto reader = Open(schema.uri(), o);  // another client: its pins live on its own connections
  CommitId c = Put(*writer, 0, 1, 0, Pattern(4096, 1));
  auto pinned = reader->OpenSnapshot().value();
  const CommitId c1 = pinned->commit_id();
  CHECK(c1 == c);
  for (int i = 1; i < 5; ++i) c = Put(*writer, c, 1, i, Pattern(4096, i));
  ChangeSet cs = writer->OpenSnapshot().value()->ChangesSince(c1).value();
  CHECK(cs.complete);
  CHECK(cs.BlockChanged(1, 4));
  CHECK_FALSE(cs.BlockChanged(1, 0));
  // A writer based on the pinned snapshot is still checked exactly.
  WriteBatch b(c1);
  b.PutBlock(1, 9, Pattern(4096, 9));
  auto based_on_pin = writer->Commit(b);
  REQUIRE_MESSAGE(based_on_pin.ok(), based_on_pin.status().ToString());
  c = *based_on_pin;

  pinned.reset();
  c = Put(*writer, c, 1, 5, Pattern(4096, 5));
  c = Put(*writer, c, 1, 6, Pattern(4096, 6));
  ChangeSet old = writer->OpenSnapshot().value()->ChangesSince(c1).value();
  CHECK_FALSE(old.complete);
  CHECK(schema.Exec("SELECT count(*) FROM bigarray_log") == "1");

  // log_max_retention bounds the log even for a snapshot that is still open.
  PostgresOptions bounded;
  bounded.log_min_retention = 0;
  bounded.log_max_retention = 2;
  auto limited = Open(schema.uri(), bounded);
  auto old_snap = reader->OpenSnapshot().value();
  for (int i = 0; i < 4; ++i) c = Put(*limited, c, 2, i, Pattern(4096, i));
  CHECK_FALSE(limited->OpenSnapshot().value()->ChangesSince(old_snap->commit_id()).value().complete);
  WriteBatch stale(old_snap->commit_id());
  stale.PutBlock(3, 0, Pattern(4096, 1));
  CHECK(limited->Commit(stale).status().code() == Code::kConflict);
}

TEST_CASE("relaxed commits and Sync") {
  PgSchema schema;
  PostgresOptions o;
  o.durable = false;
  auto store = Open(schema.uri(), o);
  CommitId c = Put(*store, 0, 1, 0, Pattern(kBlock, 1));
  CHECK(store->Sync().ok());
  auto s = Open(schema.uri())->OpenSnapshot().value();
  CHECK(s->commit_id() == c);
  CHECK(Read(*s, 1, 0) == Pattern(kBlock, 1));
}

TEST_CASE("a read-only store reads and refuses commits") {
  PgSchema schema;
  Put(*Open(schema.uri()), 0, 1, 0, Pattern(kBlock, 1));
  PostgresOptions ro;
  ro.read_only = true;
  auto store = Open(schema.uri(), ro);
  CHECK(Read(*store->OpenSnapshot().value(), 1, 0) == Pattern(kBlock, 1));
  WriteBatch b(1);
  b.PutBlock(1, 1, Pattern(kBlock, 2));
  CHECK(store->Commit(b).status().code() == Code::kFailedPrecondition);
}

TEST_CASE("a forked child uses the store on connections of its own; the parent's survive") {
  PgSchema schema;
  auto store = Open(schema.uri());
  CommitId c = Put(*store, 0, 1, 0, Pattern(kBlock, 1));
  auto parent_snap = store->OpenSnapshot().value();
  int rc = InChild([&] {
    // The inherited snapshot refuses to run statements on the parent's connection.
    std::vector<std::byte> out(kBlock);
    if (parent_snap->ReadBlock(1, 0, out).code() != Code::kFailedPrecondition) return 2;
    auto s = store->OpenSnapshot();
    if (!s.ok()) return 3;
    if (!(*s)->ReadBlock(1, 0, out).ok() || out != Pattern(kBlock, 1)) return 4;
    WriteBatch b(c);
    b.PutBlock(1, 1, Pattern(kBlock, 2));
    return store->Commit(b).ok() ? 0 : 5;
  });
  CHECK(rc == 0);
  CHECK(Read(*parent_snap, 1, 0) == Pattern(kBlock, 1));
  auto s = store->OpenSnapshot().value();
  CHECK(s->commit_id() == c + 1);
  CHECK(Read(*s, 1, 1) == Pattern(kBlock, 2));
}

TEST_CASE("block indices past 2^63 keep unsigned order and ranges") {
  PgSchema schema;
  auto store = Open(schema.uri());
  const BlockIndex high = (uint64_t{1} << 63) + 5;
  WriteBatch b(0);
  b.PutBlock(1, high, Pattern(4096, 1));
  b.PutBlock(1, 3, Pattern(4096, 2));
  b.PutBlock(1, UINT64_MAX - 1, Pattern(4096, 3));
  CommitId c = store->Commit(b).value();
  auto s = store->OpenSnapshot().value();
  std::vector<BlockIndex> order;
  REQUIRE(s->ForEachBlock(1, [&](const BlockInfo& i) { order.push_back(i.index); return true; }).ok());
  CHECK(order == std::vector<BlockIndex>{3, high, UINT64_MAX - 1});
  WriteBatch d(c);
  d.DeleteBlocks(1, 2, high + 1);
  c = store->Commit(d).value();
  auto s2 = store->OpenSnapshot().value();
  CHECK(AllZero(Read(*s2, 1, 3, 4096)));
  CHECK(AllZero(Read(*s2, 1, high, 4096)));
  CHECK(Read(*s2, 1, UINT64_MAX - 1, 4096) == Pattern(4096, 3));
  ChangeSet cs = s2->ChangesSince(c - 1).value();
  CHECK(cs.BlockChanged(1, high));
  CHECK_FALSE(cs.BlockChanged(1, UINT64_MAX - 1));
}

TEST_CASE("metadata keys with NUL and 0xff bytes scan in byte order") {
  PgSchema schema;
  auto store = Open(schema.uri());
  WriteBatch b(0);
  const std::string k1("p\xff", 2), k2("p\xff\x01", 3), k3("q", 1), k4("p\0x", 3);
  b.PutMeta(k1, "1");
  b.PutMeta(k2, "2");
  b.PutMeta(k3, "3");
  b.PutMeta(k4, std::string("\0\xff", 2));
  REQUIRE(store->Commit(b).ok());
  auto s = store->OpenSnapshot().value();
  std::vector<std::string> keys;
  REQUIRE(s->ForEachMeta(std::string("p\xff", 2), [&](std::string_view k, std::string_view) {
              keys.emplace_back(k);
              return true;
            }).ok());
  CHECK(keys == std::vector<std::string>{k1, k2});
  keys.clear();
  REQUIRE(s->ForEachMeta("p", [&](std::string_view k, std::string_view) {
              keys.emplace_back(k);
              return true;
            }).ok());
  CHECK(keys == std::vector<std::string>{k4, k1, k2});
  CHECK(*s->GetMeta(k4).value() == std::string("\0\xff", 2));
}

TEST_CASE("concurrent commits from threads of one process serialize; snapshots see whole commits") {
  PgSchema schema;
  auto store = Open(schema.uri());
  constexpr int kThreads = 4, kCommits = 10;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCommits; ++i) {
        auto snap = store->OpenSnapshot();
        if (!snap.ok()) {
          ++failures;
          continue;
        }
        WriteBatch b((*snap)->commit_id());
        b.PutBlock(static_cast<ArrayId>(t), static_cast<BlockIndex>(i), Pattern(4096, t * 100 + i));
        b.PutMeta("count/" + std::to_string(t), std::to_string(i + 1));
        if (!store->Commit(b).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  auto s = store->OpenSnapshot().value();
  CHECK(s->commit_id() == kThreads * kCommits);
  for (int t = 0; t < kThreads; ++t) {
    CHECK(*s->GetMeta("count/" + std::to_string(t)).value() == std::to_string(kCommits));
    for (int i = 0; i < kCommits; ++i) CHECK(Read(*s, t, i, 4096) == Pattern(4096, t * 100 + i));
  }
}

TEST_CASE("processes opening a new database at once: one creates the tables, all commit") {
  PgSchema schema;
  constexpr int kProcs = 4;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = fork();
    if (pid == 0) {
      int rc = 1;
      try {
        auto store = OpenPostgresStore(schema.uri(), {});
        if (!store.ok()) {
          std::fprintf(stderr, "child %d: %s\n", p, store.status().ToString().c_str());
          _exit(2);
        }
        WriteBatch b((*store)->OpenSnapshot().value()->commit_id());
        b.PutBlock(1, static_cast<BlockIndex>(p), Pattern(4096, p));
        rc = (*store)->Commit(b).ok() ? 0 : 3;
      } catch (...) {
      }
      _exit(rc);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  }
  auto s = Open(schema.uri())->OpenSnapshot().value();
  CHECK(s->commit_id() == kProcs);
  for (int p = 0; p < kProcs; ++p) CHECK(Read(*s, 1, p, 4096) == Pattern(4096, p));
}

TEST_CASE("opening while another process commits the tables waits for them instead of calling them foreign") {
  // The window of the race (a probe that counts some of the tables of a creation committing at
  // that moment) is made wide: two tables are committed, and a transaction holding the schema lock
  // (postgres_store.cc, kSchemaLockKey) creates the other two and commits only later.
  PgSchema model, schema;
  Open(model.uri());
  const std::string like = " (LIKE " + model.name() + ".";
  schema.Exec("CREATE TABLE bigarray_head" + like + "bigarray_head INCLUDING ALL);"
              "CREATE TABLE bigarray_meta" + like + "bigarray_meta INCLUDING ALL)");
  PGconn* creator = PQconnectdb(schema.uri().c_str());
  REQUIRE(PQstatus(creator) == CONNECTION_OK);
  PQsetNoticeProcessor(creator, [](void*, const char*) {}, nullptr);
  auto exec = [&](const std::string& sql) {
    PGresult* r = PQexec(creator, sql.c_str());
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    INFO(sql << ": " << PQresultErrorMessage(r));
    PQclear(r);
    REQUIRE(ok);
  };
  exec("BEGIN; SELECT pg_advisory_xact_lock(" + std::to_string(0x6269676172726179) + ");"
       "CREATE TABLE bigarray_blocks" + like + "bigarray_blocks INCLUDING ALL);"
       "CREATE TABLE bigarray_log" + like + "bigarray_log INCLUDING ALL);"
       "INSERT INTO bigarray_head SELECT * FROM " + model.name() + ".bigarray_head;"
       "INSERT INTO bigarray_meta SELECT * FROM " + model.name() + ".bigarray_meta");

  std::atomic<bool> done{false};
  std::optional<Result<std::shared_ptr<BlockStore>>> opened;
  std::thread opener([&] {
    opened.emplace(OpenPostgresStore(schema.uri(), {}));
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK_MESSAGE(!done.load(), "the open returned while the tables were being created: ",
                done.load() ? opened->status().ToString() : std::string());
  exec("COMMIT");
  opener.join();
  PQfinish(creator);
  REQUIRE_MESSAGE(opened->ok(), opened->status().ToString());
  CHECK((**opened)->OpenSnapshot().value()->commit_id() == 0);

  // A schema really left with some of the tables is still refused, at once.
  PgSchema half;
  half.Exec("CREATE TABLE bigarray_head" + like + "bigarray_head INCLUDING ALL)");
  auto refused = OpenPostgresStore(half.uri(), {});
  CHECK(refused.status().code() == Code::kInvalidArgument);
  CHECK(refused.status().message().find("not all four") != std::string::npos);
}

TEST_CASE("a connection lost after COMMIT was sent: the store finds out whether the commit happened") {
  PgSchema schema;
  const std::string host = Param(PgBaseUri(), "host");
  const std::string uri = WithParam(schema.uri(), "application_name=resolve_test");
  auto store = Open(uri);
  CommitId c = Put(*store, 0, 1, 0, Pattern(4096, 1));
  // COMMIT now sleeps a second (a deferred trigger) before it writes the commit record.
  schema.Exec("CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
              "$$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$;"
              "CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON bigarray_log "
              "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()");

  SUBCASE("the client loses the connection; the server commits") {
    std::thread cut([&] {
      WaitForSleeper(schema.base(), "resolve_test");
      CHECK(ShutdownReads(host) >= 1);
    });
    WriteBatch b(c);
    b.PutBlock(1, 1, Pattern(4096, 2));
    auto r = store->Commit(b);
    cut.join();
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(*r == c + 1);
    auto s = store->OpenSnapshot().value();
    CHECK(s->commit_id() == c + 1);
    CHECK(Read(*s, 1, 1, 4096) == Pattern(4096, 2));
  }
  SUBCASE("the server ends the session during COMMIT; nothing is committed") {
    std::thread kill([&] {
      WaitForSleeper(schema.base(), "resolve_test");
      PgExec(schema.base(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'resolve_test' AND wait_event = 'PgSleep'");
    });
    WriteBatch b(c);
    b.PutBlock(1, 1, Pattern(4096, 2));
    auto r = store->Commit(b);
    kill.join();
    CHECK(r.status().code() == Code::kIOError);
    auto s = store->OpenSnapshot().value();
    CHECK(s->commit_id() == c);
    CHECK(AllZero(Read(*s, 1, 1, 4096)));
  }
  schema.Exec("DROP TRIGGER slow ON bigarray_log");
  CHECK(Put(*store, store->OpenSnapshot().value()->commit_id(), 1, 2, Pattern(4096, 3)) > c);
}
