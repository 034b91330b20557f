#!/usr/bin/env bash
# The private PostgreSQL cluster of the PostgreSQL tests (a ctest fixture).
#
#   pg_cluster.sh start STATE_DIR   initdb into a fresh directory under /tmp, start a server that
#                                   listens on a Unix socket in that directory only
#                                   (listen_addresses = ''), write its URI to STATE_DIR/uri
#   pg_cluster.sh stop STATE_DIR    stop that server and remove its directory
#
# PostgreSQL refuses to run as root: as root, initdb, pg_ctl and the server run as the
# `postgres` system user (created by Debian's postgresql-common), or, when there is none, as a
# dedicated unprivileged user `bigarray-pg` created for the purpose. The cluster is owned by that
# user; clients connect through the socket with trust authentication as the database superuser
# "postgres". One role, bigarray_pw (password "secret"), must authenticate with a password
# (scram-sha-256), for the authentication-failure tests.
#
# The binaries: $PG_BINDIR, else /usr/lib/postgresql/15/bin, else the newest
# /usr/lib/postgresql/*/bin, else the directory of `initdb` on the PATH. Any failure exits
# non-zero with the server's log, so the tests that need the cluster fail (never skip).
set -euo pipefail

cmd=${1:-}
state=${2:-}
if [ -z "$cmd" ] || [ -z "$state" ]; then
  echo "usage: $0 start|stop STATE_DIR" >&2
  exit 2
fi

find_bindir() {
  if [ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/initdb" ]; then echo "$PG_BINDIR"; return; fi
  if [ -x /usr/lib/postgresql/15/bin/initdb ]; then echo /usr/lib/postgresql/15/bin; return; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  echo "pg_cluster: no PostgreSQL server binaries (initdb) found; install postgresql (scripts/setup.sh)" >&2
  exit 1
}

# The user the server runs as, and how to run a command as that user.
server_user() {
  if [ "$(id -u)" -ne 0 ]; then id -un; return; fi
  if id -u postgres >/dev/null 2>&1; then echo postgres; return; fi
  if ! id -u bigarray-pg >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bigarray-pg >&2 \
      || { echo "pg_cluster: cannot create the user bigarray-pg to run PostgreSQL as" >&2; exit 1; }
  fi
  echo bigarray-pg
}

as_user() {
  local user=$1
  shift
  if [ "$(id -un)" = "$user" ]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$user" -- "$@"
  else
    su -s /bin/sh "$user" -c "$(printf '%q ' "$@")"
  fi
}

stop_cluster() {
  [ -f "$state/dir" ] || return 0
  local dir user bindir
  dir=$(cat "$state/dir")
  user=$(cat "$state/user" 2>/dev/null || id -un)
  bindir=$(cat "$state/bindir" 2>/dev/null || find_bindir)
  if [ -d "$dir/data" ]; then
    as_user "$user" "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
      || as_user "$user" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  case "$dir" in
    /tmp/bigarray-pg-*) rm -rf "$dir" ;;
  esac
  rm -f "$state/dir" "$state/uri" "$state/user" "$state/bindir"
}

case "$cmd" in
  stop)
    stop_cluster
    echo "pg_cluster: stopped"
    ;;
  start)
    mkdir -p "$state"
    stop_cluster  # a cluster left over by an interrupted run
    bindir=$(find_bindir)
    user=$(server_user)
    dir=$(mktemp -d /tmp/bigarray-pg-XXXXXX)
    echo "$dir" >"$state/dir"
    echo "$user" >"$state/user"
    echo "$bindir" >"$state/bindir"
    chmod 755 "$dir"
    [ "$(id -u)" -eq 0 ] && chown "$user" "$dir"
    fail() {
      echo "pg_cluster: $1" >&2
      for f in "$dir/initdb.log" "$dir/server.log"; do
        [ -f "$f" ] && { echo "---- $f" >&2; tail -n 40 "$f" >&2; }
      done
      stop_cluster
      exit 1
    }
    as_user "$user" "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
      >"$dir/initdb.log" 2>&1 || fail "initdb failed"
    # Only a Unix socket, in the cluster's own directory; durability is not under test here.
    as_user "$user" sh -c "cat >>'$dir/data/postgresql.conf'" <<EOF || fail "cannot configure"
listen_addresses = ''
unix_socket_directories = '$dir'
unix_socket_permissions = 0777
port = 5432
max_connections = 200
fsync = off
full_page_writes = off
shared_buffers = 128MB
max_wal_size = 2GB
EOF
    as_user "$user" sh -c "cat >'$dir/data/pg_hba.conf'" <<EOF || fail "cannot configure"
local all bigarray_pw scram-sha-256
local all all trust
EOF
    as_user "$user" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null 2>&1 \
      || fail "the server did not start"
    "$bindir/psql" -X -q -h "$dir" -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -c "CREATE ROLE bigarray_pw LOGIN PASSWORD 'secret'" >/dev/null 2>&1 \
      || fail "the server does not accept connections"
    echo "postgresql:///postgres?host=$dir&port=5432&user=postgres" >"$state/uri"
    echo "pg_cluster: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') as $user at $(cat "$state/uri")"
    ;;
  *)
    echo "usage: $0 start|stop STATE_DIR" >&2
    exit 2
    ;;
esac
