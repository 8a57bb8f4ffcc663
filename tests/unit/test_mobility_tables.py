"""The load order of an export's tables (parents first) and the sequence position it keeps."""

import pytest

from lambda_src.mobility.tables import SequencePosition, Table, TenantScope, fk_order


def table(name: str, *parents: str) -> Table:
    return Table("public", name, (), ("tenant_id",), tuple(f"public.{p}" for p in parents))


def test_tables_come_after_the_tables_they_reference_not_in_name_order() -> None:
    ordered = fk_order(
        [
            table("a_lines", "orders", "products"),
            table("orders", "customers"),
            table("customers"),
            table("products"),
        ]
    )
    names = [t.name for t in ordered]
    assert names.index("customers") < names.index("orders") < names.index("a_lines")
    assert names.index("products") < names.index("a_lines")


def test_a_self_reference_and_a_reference_outside_the_export_do_not_count() -> None:
    tree = Table("public", "nodes", (), ("id",), ())  # self references are left out of parents
    ordered = fk_order([tree, table("leaves", "nodes", "elsewhere")])
    assert [t.name for t in ordered] == ["nodes", "leaves"]


def test_a_reference_cycle_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"cycle: public\.a -> public\.b -> public\.a"):
        fk_order([table("a", "b"), table("b", "a")])


@pytest.mark.parametrize(
    ("last_value", "is_called", "position"), [(10, True, 10), (1, False, 0), (7, False, 6)]
)
def test_a_sequence_position_is_the_last_value_handed_out(
    last_value: int, is_called: bool, position: int
) -> None:
    assert SequencePosition("public.t", "id", last_value, is_called).position == position


def test_a_scope_validates_the_tenant_id_before_any_sql() -> None:
    with pytest.raises(ValueError, match="tenant"):
        TenantScope("Bad'; DROP", "pool")
    assert TenantScope.of_tier("acme", "silo").layout == "database"
    assert TenantScope.of_tier("acme", "pool").reader_role == "tenantkit_pool_maintainer"
