#!/usr/bin/env bash
# Check that the embedded PostgreSQL can run: the pinned server build `npm ci` installed
# (package.json: postgresql-<version>-linux-<arch>, the version the templates deploy), or
# $TENANTKIT_PG_BINDIR. As root, also make the unprivileged user the server runs as, because
# initdb and pg_ctl refuse to run as root. No apt, no download. Idempotent.
set -euo pipefail

if [ "$(id -u)" = 0 ]; then
  user="${TENANTKIT_PG_USER:-postgres}"
  if ! id "$user" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  fi
fi
"${PYTHON:-python3}" - <<'PY'
import sys

from tenantkit.embedded_pg import EmbeddedPostgresError, find_server

try:
    install = find_server()
except (EmbeddedPostgresError, ValueError) as error:
    sys.exit(f"error: {error}")
print(f"PostgreSQL server binaries: {install.version} ({install.origin})")
PY
