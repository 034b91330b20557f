#include "postgres_status.h"

#include <algorithm>
#include <string>

namespace bigarray::storage::internal {
namespace {

// libpq messages end in a newline and may span lines: one line, "; "-separated.
std::string OneLine(std::string_view m) {
  std::string s;
  for (char c : m) {
    if (c == '\n') {
      if (!s.empty() && s.back() != ' ') s += "; ";
    } else if (c == '\t' || c == ' ') {
      if (!s.empty() && s.back() != ' ') s += ' ';
    } else {
      s += c;
    }
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == ';')) s.pop_back();
  return s;
}

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

}  // namespace

Status PgSqlStateStatus(std::string_view state, std::string m) {
  auto cls = state.substr(0, std::min<size_t>(2, state.size()));
  // Exact codes first, then classes.
  if (state == "53100") return NoSpace(std::move(m));
  if (state == "53200" || state == "53300" || state == "53400") return ResourceExhausted(std::move(m));
  if (state == "40001" || state == "40P01" || state == "55P03") return ConflictError(std::move(m));
  if (state == "25006") {
    return FailedPrecondition(std::move(m) + " (the server is read-only: a hot standby, or "
                                             "default_transaction_read_only is set)");
  }
  if (state == "25P02") {
    return FailedPrecondition(std::move(m) + " (an earlier statement of this transaction failed)");
  }
  if (state == "42501") return FailedPrecondition(std::move(m) + " (the role lacks a privilege)");
  if (state == "3D000") return NotFound(std::move(m));
  if (state == "42P01" || state == "3F000") return NotFound(std::move(m));
  if (state == "XX001" || state == "XX002") return Corruption(std::move(m));
  if (state == "0A000") return Unsupported(std::move(m));
  if (state == "57P01" || state == "57P02" || state == "57P03" || state == "57P04") {
    return IOError(std::move(m) + " (the PostgreSQL server is shutting down or unavailable)");
  }
  if (state == "57014") return IOError(std::move(m) + " (statement timeout or cancel)");
  if (cls == "08") return IOError(std::move(m) + " (connection to the PostgreSQL server failed)");
  if (cls == "28") return InvalidArgument(std::move(m) + " (check the user and password of the URI)");
  if (cls == "53" || cls == "54") return ResourceExhausted(std::move(m));
  if (cls == "58") return IOError(std::move(m));
  if (cls == "22" || cls == "23") return InvalidArgument(std::move(m));
  if (cls == "40") return ConflictError(std::move(m));
  if (cls == "XX") return Internal(std::move(m));
  if (state.empty()) return IOError(std::move(m));
  return Internal(std::move(m));
}

Status PgConnectStatus(const PGconn* conn, std::string_view what) {
  if (conn == nullptr) return ResourceExhausted(std::string(what) + ": out of memory (libpq)");
  if (PQstatus(conn) == CONNECTION_OK) return Status::Ok();
  const std::string msg = OneLine(PQerrorMessage(conn));
  std::string m = std::string(what) + ": " + msg;
  // libpq keeps no SQLSTATE for connection failures: tell the causes apart by its messages.
  if (Contains(msg, "authentication failed") || Contains(msg, "no pg_hba.conf entry") ||
      Contains(msg, "no password supplied") || Contains(msg, "password is required") ||
      (Contains(msg, "role \"") && Contains(msg, "does not exist")) ||
      Contains(msg, "not permitted to log in")) {
    return PgSqlStateStatus("28000", std::move(m));
  }
  if (Contains(msg, "database \"") && Contains(msg, "does not exist")) {
    return PgSqlStateStatus("3D000", std::move(m));
  }
  if (Contains(msg, "too many clients") || Contains(msg, "remaining connection slots")) {
    return PgSqlStateStatus("53300", std::move(m));
  }
  if (Contains(msg, "invalid URI") || Contains(msg, "invalid connection option") ||
      Contains(msg, "missing \"=\"") || Contains(msg, "invalid integer value") ||
      Contains(msg, "invalid percent-encoded") || Contains(msg, "invalid value for parameter") ||
      Contains(msg, "unterminated quoted string") || Contains(msg, "invalid sslmode") ||
      Contains(msg, "invalid port number")) {
    return InvalidArgument(std::move(m) + " (malformed connection URI)");
  }
  if (Contains(msg, "starting up") || Contains(msg, "shutting down") || Contains(msg, "in recovery mode")) {
    return PgSqlStateStatus("57P03", std::move(m));
  }
  return IOError(std::move(m) + " (is the PostgreSQL server running and reachable?)");
}

Status PgConnError(const PGconn* conn, std::string_view what) {
  std::string m = std::string(what) + ": " + OneLine(conn ? PQerrorMessage(conn) : "no connection");
  if (conn == nullptr || PQstatus(conn) == CONNECTION_BAD) {
    return IOError(std::move(m) + " (connection to the PostgreSQL server lost)");
  }
  return IOError(std::move(m));
}

Status PgResultStatus(const PGresult* r, const PGconn* conn, std::string_view what) {
  if (r == nullptr) return PgConnError(conn, what);
  switch (PQresultStatus(r)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_SINGLE_TUPLE:
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
    case PGRES_PIPELINE_SYNC:
      return Status::Ok();
    case PGRES_PIPELINE_ABORTED:
      return Internal(std::string(what) + ": skipped after an earlier error in the pipeline");
    case PGRES_EMPTY_QUERY:
      return Internal(std::string(what) + ": empty query");
    case PGRES_BAD_RESPONSE:
      return IOError(std::string(what) + ": bad response from the server: " +
                     OneLine(PQresultErrorMessage(r)));
    default:
      break;
  }
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  const char* detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
  const char* hint = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
  std::string m(what);
  m += ": ";
  m += OneLine(primary ? primary : PQresultErrorMessage(r));
  if (detail) m += " (" + OneLine(detail) + ")";
  if (hint) m += " (hint: " + OneLine(hint) + ")";
  if (state) m += std::string(" [SQLSTATE ") + state + "]";
  if ((!state || !*state) && conn != nullptr && PQstatus(conn) == CONNECTION_BAD) {
    return IOError(std::move(m) + " (connection to the PostgreSQL server lost)");
  }
  return PgSqlStateStatus(state ? state : "", std::move(m));
}

}  // namespace bigarray::storage::internal
