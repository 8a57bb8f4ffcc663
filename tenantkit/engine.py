"""The PostgreSQL version tenantkit deploys, and the one its embedded servers run.

One constant: the templates' Aurora PostgreSQL and RDS for PostgreSQL engine version and the
embedded server's major.minor both follow ENGINE_VERSION, so the SQL the tests run is the SQL
that deploys. `make test PG_VERSION=17` (TENANTKIT_PG_VERSION) runs the embedded servers on
another pinned build; the templates keep ENGINE_VERSION.
"""

import os
import re
from collections.abc import Mapping

from lambda_src.core import environment as env_names

ENGINE_VERSION = "16.9"
"""major.minor of every cluster and instance the templates deploy."""
ENGINE_MAJOR = ENGINE_VERSION.split(".")[0]
ENV_PG_VERSION = env_names.PG_VERSION
"""Run the embedded servers on another version: a major (`17`) or a major.minor (`17.9`)."""

_VERSION = re.compile(r"^\d+(\.\d+)?$")


def wanted_server_version(env: Mapping[str, str] = os.environ) -> str:
    """The version asked for the embedded servers: TENANTKIT_PG_VERSION, else ENGINE_VERSION."""
    wanted = env.get(ENV_PG_VERSION, "").strip() or ENGINE_VERSION
    if not _VERSION.match(wanted):
        raise ValueError(
            f"{ENV_PG_VERSION}={wanted!r}: give a PostgreSQL major (17) or major.minor (17.9)"
        )
    return wanted


def version_matches(actual: str, wanted: str) -> bool:
    """Whether `actual` (major.minor) is what `wanted` (a major or a major.minor) asks for."""
    return actual == wanted or actual.split(".")[0] == wanted
