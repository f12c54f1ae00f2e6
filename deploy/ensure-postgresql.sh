#!/usr/bin/env bash
# Makes sure PostgreSQL 15's server binaries (initdb, pg_ctl, postgres) are installed, for the
# PostgreSQL operator's end-to-end tests: installs Debian's postgresql-15 package when they are
# missing (as root, with apt-get). Run it or source it; it prints the binaries' directory.
# POSTGRES_BIN_DIR names another directory holding them.
set -euo pipefail

dir=${POSTGRES_BIN_DIR:-/usr/lib/postgresql/15/bin}
present() { [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; }

if ! present; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "PostgreSQL 15 server binaries not found in $dir: install Debian's postgresql-15 (as root: apt-get install postgresql-15)" >&2
    exit 1
  fi
  echo "installing PostgreSQL 15 (apt-get install postgresql-15)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql-15 >&2
  present || { echo "postgresql-15 installed, but $dir lacks initdb or pg_ctl" >&2; exit 1; }
fi
echo "$dir"
