"""How many connections a host's database accepts, estimated from the capacity it is given.

Aurora PostgreSQL (and RDS for PostgreSQL) default max_connections to
LEAST(DBInstanceClassMemory / 9531392, 5000). DBInstanceClassMemory is not published per class:
it is the class's memory less what the engine and OS reserve. Estimates, so that the bridge's
connection budget can be checked at synth: Serverless v2 at 2 GiB per ACU of max_acu, and an
instance class at 90 % of its memory (db.t4g.medium: 405, as AWS documents; db.r6g.large: 1,622,
below the 1,722 AWS documents). AWS may change the formula: the figures are a guard, not a
promise.
"""

BYTES_PER_CONNECTION = 9_531_392
MAX_CONNECTIONS = 5000
GIB = 1024**3
ACU_MEMORY_GIB = 2
CLASS_MEMORY_SHARE = 0.9
"""Of an instance class's memory, what DBInstanceClassMemory is estimated at."""

_SIZES_GIB = {
    "large": 16,
    "xlarge": 32,
    "2xlarge": 64,
    "4xlarge": 128,
    "8xlarge": 256,
    "12xlarge": 384,
    "16xlarge": 512,
    "24xlarge": 768,
    "32xlarge": 1024,
}


def _family(name: str, largest: str, memory_factor: int = 1) -> dict[str, int]:
    sizes = list(_SIZES_GIB)
    return {
        f"{name}.{size}": _SIZES_GIB[size] * memory_factor
        for size in sizes[: sizes.index(largest) + 1]
    }


INSTANCE_MEMORY_GIB: dict[str, int] = {
    "t3.medium": 4,
    "t3.large": 8,
    "t4g.medium": 4,
    "t4g.large": 8,
    **_family("r5", "24xlarge"),
    **_family("r6g", "16xlarge"),
    **_family("r6i", "32xlarge"),
    **_family("r7g", "16xlarge"),
    **_family("r7i", "24xlarge"),
    **_family("r8g", "16xlarge"),
    **_family("x2g", "16xlarge", memory_factor=2),
}
"""Memory of the Aurora PostgreSQL instance classes tenantkit knows (without `db.`)."""


def known_classes() -> str:
    """The table's classes by family: `t3.medium-large, ..., r6g.large-16xlarge, ...`."""
    families: dict[str, list[str]] = {}
    for name in INSTANCE_MEMORY_GIB:
        family, size = name.split(".")
        families.setdefault(family, []).append(size)
    return ", ".join(f"{family}.{sizes[0]}-{sizes[-1]}" for family, sizes in families.items())


def _connections(memory_bytes: float) -> int:
    return min(int(memory_bytes // BYTES_PER_CONNECTION), MAX_CONNECTIONS)


def serverless_max_connections(max_acu: float) -> int:
    """max_connections of a Serverless v2 instance whose maximum is `max_acu`."""
    return _connections(max_acu * ACU_MEMORY_GIB * GIB)


def instance_max_connections(instance_class: str) -> int:
    """max_connections of a provisioned instance; ValueError for a class not in the table."""
    if instance_class not in INSTANCE_MEMORY_GIB:
        raise ValueError(
            f"unknown instance class {instance_class!r}: the connection budget needs its "
            f"memory, and tenantkit knows that of {known_classes()} (without db.)"
        )
    return _connections(INSTANCE_MEMORY_GIB[instance_class] * GIB * CLASS_MEMORY_SHARE)
