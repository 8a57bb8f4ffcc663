"""What the export/import and move tests share: a schema with foreign keys, an identity and a
serial column, NULLs, unicode, bytea, jsonb and a large text; rows of it for a tenant; and the
test's own look at a tenant's rows, sequences and checksums in any tier."""

import json
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lambda_src.mobility import TenantScope, tenant_digests
from lambda_src.tenancy import POOL, tenant_names

from .migrate_cli import as_superuser, server_of

# `items` references `vaults`: the load order (parents first) is not the alphabetical one.
V1 = """\
-- squawk-ignore-file prefer-identity
-- (items.item_id is a bigserial on purpose: an export keeps serial sequences as well)
CREATE TABLE vaults (
    tenant_id text NOT NULL,
    vault_id bigint GENERATED ALWAYS AS IDENTITY,
    name text NOT NULL,
    note text,
    avatar bytea,
    settings jsonb,
    PRIMARY KEY (tenant_id, vault_id)
);
CREATE TABLE items (
    tenant_id text NOT NULL,
    item_id bigserial,
    vault_id bigint NOT NULL,
    body text,
    amount numeric(12, 2),
    at timestamptz,
    PRIMARY KEY (tenant_id, item_id),
    FOREIGN KEY (tenant_id, vault_id) REFERENCES vaults (tenant_id, vault_id)
);
"""
TABLES = ("public.vaults", "public.items")
LARGE = "x" * 300_000 + "\u00e9\u6f22\u5b57\U0001f600"
"""A value stored out of line (TOAST), ending in multi-byte characters."""


def _database(tenant_id: str, tier: str) -> str:
    return POOL.database if tier == "pool" else tenant_names(tenant_id).database


def _server(workdir: Path, tenant_id: str, tier: str) -> Any:
    return server_of(workdir, tenant_id if tier == "silo" else None)


def one(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The one row a query returns."""
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)


def seed(workdir: Path, tenant_id: str, tier: str, vaults: int) -> None:
    """Rows with NULLs, unicode, bytea, jsonb, a large text and escapes COPY must keep."""
    with as_superuser(_server(workdir, tenant_id, tier), _database(tenant_id, tier)) as conn:
        for n in range(vaults):
            vault = one(
                conn.execute(
                    "INSERT INTO vaults (tenant_id, name, note, avatar, settings) "
                    "VALUES (%s, %s, %s, %s, %s) RETURNING vault_id",
                    (
                        tenant_id,
                        f"vault {n} \u00fcml\u00e4ut \u6f22\u5b57\ttab\\back\nline",
                        None if n % 2 else LARGE,
                        bytes(range(256)) if n % 3 == 0 else None,
                        json.dumps({"n": n, "nested": {"a": [1, None, "\u2603"]}}),
                    ),
                )
            )[0]
            for m in range(3):
                conn.execute(
                    "INSERT INTO items (tenant_id, vault_id, body, amount, at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (
                        tenant_id,
                        vault,
                        None if m == 1 else f"item {m}",
                        None if m == 2 else f"{n}.{m}5",
                        None if m == 0 else "2026-12-01 10:00:00+02",
                    ),
                )


def rows_of(workdir: Path, tenant_id: str, tier: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tenant, read by the test itself as the superuser, in key order."""
    with as_superuser(_server(workdir, tenant_id, tier), _database(tenant_id, tier)) as conn:
        return {
            "vaults": conn.execute(
                "SELECT * FROM vaults WHERE tenant_id = %s ORDER BY vault_id", (tenant_id,)
            ).fetchall(),
            "items": conn.execute(
                "SELECT * FROM items WHERE tenant_id = %s ORDER BY item_id", (tenant_id,)
            ).fetchall(),
        }


def positions(workdir: Path, tenant_id: str, tier: str) -> dict[str, int]:
    """Where the two sequences stand (the last value handed out)."""
    with as_superuser(_server(workdir, tenant_id, tier), _database(tenant_id, tier)) as conn:
        found = {}
        for table, column in (("vaults", "vault_id"), ("items", "item_id")):
            sequence = one(conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column)))[
                0
            ]
            query = sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.Identifier(*sequence.split("."))
            )
            last, called = one(conn.execute(query))
            found[table] = last if called else last - 1
        return found


def digests(workdir: Path, tenant_id: str, tier: str) -> dict[str, tuple[int, str]]:
    """The tenant's count and checksum per table (what stage 2's move verifies with)."""
    server = _server(workdir, tenant_id, tier)
    settings = server.admin_settings(_database(tenant_id, tier))
    with psycopg.connect(**settings.connect_kwargs()) as conn:
        found = tenant_digests(conn, TenantScope.of_tier(tenant_id, tier))
        return {name: (d.rows, d.sha256) for name, d in found.items()}


def bystanders(workdir: Path, tiers: dict[str, str], but: str) -> dict[str, Any]:
    return {t: digests(workdir, t, tiers[t]) for t in tiers if t != but}
