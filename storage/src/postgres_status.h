// postgres_status.h: the one place where libpq failures become Status values (docs/distributed.md,
// "Errors").
//
//   connection refused, unreachable host, server gone, admin/crash shutdown   kIOError
//   authentication failed, no pg_hba.conf entry, unknown role, malformed URI  kInvalidArgument
//   database does not exist, undefined table                                   kNotFound
//   serialization failure, deadlock, lock not available                       kConflict
//   disk full (53100)                                                          kNoSpace
//   out of memory, too many connections, program/config limits                kResourceExhausted
//   read-only transaction/server (25006), insufficient privilege (42501)      kFailedPrecondition
//   data or index corrupted (XX001, XX002)                                     kCorruption
//   feature not supported (0A000)                                              kUnsupported
//   syntax and other SQL errors (a bug in bigarray)                            kInternal
#pragma once

#include <libpq-fe.h>

#include <string_view>

#include "bigarray/status.h"

namespace bigarray::storage::internal {

// A server error by its SQLSTATE (5 characters; empty when unknown). `message` is the full
// message, already prefixed with what failed.
Status PgSqlStateStatus(std::string_view sqlstate, std::string message);

// A failed connection attempt (PQconnectdb*): libpq reports no SQLSTATE for these, so they are
// told apart by libpq's message. Ok when `conn` is connected.
Status PgConnectStatus(const PGconn* conn, std::string_view what);

// The outcome of one statement. Ok for PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_COPY_* and
// PGRES_PIPELINE_SYNC; a null `result` or a broken connection is kIOError ("server gone").
Status PgResultStatus(const PGresult* result, const PGconn* conn, std::string_view what);

// A libpq call on `conn` that failed without a result (PQsend*, PQflush, PQputCopyData, ...).
Status PgConnError(const PGconn* conn, std::string_view what);

}  // namespace bigarray::storage::internal
