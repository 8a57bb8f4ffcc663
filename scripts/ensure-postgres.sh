#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl, postgres) are on this machine.
# As root on Debian/Ubuntu it installs them; otherwise it says what to do. Idempotent.
set -euo pipefail

have_binaries() {
  local dirs=()
  [ -n "${TENANTKIT_PG_BINDIR:-}" ] && dirs+=("$TENANTKIT_PG_BINDIR")
  command -v pg_config >/dev/null 2>&1 && dirs+=("$(pg_config --bindir)")
  for d in /usr/lib/postgresql/*/bin; do [ -d "$d" ] && dirs+=("$d"); done
  command -v initdb >/dev/null 2>&1 && dirs+=("$(dirname "$(readlink -f "$(command -v initdb)")")")
  for d in "${dirs[@]}"; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && return 0
  done
  return 1
}

if ! have_binaries; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing PostgreSQL server binaries with apt-get"
    # tenantkit runs its own servers: do not let the package create and start a main cluster.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
      mkdir -p /etc/postgresql-common
      echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
fi
if ! have_binaries; then
  echo "error: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found." >&2
  echo "  Install them (Debian/Ubuntu: sudo apt-get install postgresql; macOS: brew install postgresql)" >&2
  echo "  or point TENANTKIT_PG_BINDIR at their directory, then run make setup again." >&2
  exit 1
fi

# initdb and pg_ctl refuse to run as root: tenantkit runs the server as an unprivileged user.
if [ "$(id -u)" = 0 ]; then
  user="${TENANTKIT_PG_USER:-postgres}"
  if ! id "$user" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  fi
fi
echo "PostgreSQL server binaries: ok"
