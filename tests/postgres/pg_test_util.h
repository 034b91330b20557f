// pg_test_util.h: the PostgreSQL server of the tests (tests/postgres/pg_cluster.sh starts a
// private cluster as a ctest fixture) and a fresh schema per test.
//
// The server: $BIGARRAY_PG_URI, else the URI in the file named by $BIGARRAY_PG_URI_FILE (which
// ctest sets). Without either the tests fail: they never skip.
#pragma once

#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

namespace bigarray::testing {

inline std::string PgBaseUri() {
  if (const char* u = std::getenv("BIGARRAY_PG_URI"); u && *u) return u;
  const char* f = std::getenv("BIGARRAY_PG_URI_FILE");
  if (!f || !*f) {
    throw std::runtime_error("no PostgreSQL server: set BIGARRAY_PG_URI or BIGARRAY_PG_URI_FILE "
                             "(ctest starts one with tests/postgres/pg_cluster.sh)");
  }
  std::ifstream in(f);
  std::string uri;
  if (!std::getline(in, uri) || uri.empty()) {
    throw std::runtime_error(std::string("no PostgreSQL server: cannot read the URI from ") + f +
                             " (did the pg_cluster fixture fail? see its output)");
  }
  return uri;
}

// `uri` with one more query parameter.
inline std::string WithParam(const std::string& uri, const std::string& param) {
  return uri + (uri.find('?') == std::string::npos ? "?" : "&") + param;
}

// Runs SQL on a fresh connection to `uri`; throws on failure. Returns the first field of the
// first row ("" when none).
inline std::string PgExec(const std::string& uri, const std::string& sql) {
  PGconn* c = PQconnectdb(uri.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::string m = PQerrorMessage(c);
    PQfinish(c);
    throw std::runtime_error("connect to " + uri + ": " + m);
  }
  PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);
  PGresult* r = PQexec(c, sql.c_str());
  const ExecStatusType st = PQresultStatus(r);
  std::string out;
  if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0) out = PQgetvalue(r, 0, 0);
  std::string err = PQresultErrorMessage(r);
  PQclear(r);
  PQfinish(c);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw std::runtime_error(sql + ": " + err);
  return out;
}

// A schema of its own on the test server, dropped with everything in it on destruction. uri()
// selects it through the search_path, so a store opened on it starts empty.
class PgSchema {
 public:
  PgSchema() : base_(PgBaseUri()) {
    static std::atomic<int> counter{0};
    name_ = "t_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
    PgExec(base_, "DROP SCHEMA IF EXISTS " + name_ + " CASCADE; CREATE SCHEMA " + name_);
    uri_ = WithParam(base_, "options=-csearch_path%3D" + name_);
  }
  ~PgSchema() {
    try {
      PgExec(base_, "DROP SCHEMA IF EXISTS " + name_ + " CASCADE");
    } catch (...) {
    }
  }
  PgSchema(const PgSchema&) = delete;
  PgSchema& operator=(const PgSchema&) = delete;

  const std::string& uri() const { return uri_; }
  const std::string& base() const { return base_; }
  const std::string& name() const { return name_; }
  // SQL in this schema.
  std::string Exec(const std::string& sql) const { return PgExec(uri_, sql); }

 private:
  std::string base_, name_, uri_;
};

}  // namespace bigarray::testing
