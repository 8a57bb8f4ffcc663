"""tenantctl's help renders each command's description as written: on a wide terminal no
sentence of it is broken across lines, in the command's own help or in its group's list."""

import inspect
from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from tenantkit.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def described(
    group: typer.Typer, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, description as written) of every command and group below `group`."""
    for info in group.registered_commands:
        assert info.callback is not None
        name = info.name or info.callback.__name__.replace("_", "-")
        yield (*path, name), info.callback.__doc__ or ""
    for sub in group.registered_groups:
        assert sub.name is not None
        assert sub.typer_instance is not None
        yield (*path, sub.name), str(sub.typer_instance.info.help)
        yield from described(sub.typer_instance, (*path, sub.name))


DESCRIPTIONS = dict(described(app))


def paragraphs(path: tuple[str, ...]) -> list[str]:
    """The description of the command at `path`, one string per paragraph."""
    return [" ".join(p.split()) for p in inspect.cleandoc(DESCRIPTIONS[path]).split("\n\n")]


def rendered_lines(*path: str) -> list[str]:
    """`tenantctl <path> --help` on a wide terminal, each line without its box and padding."""
    result = runner.invoke(app, [*path, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return [" ".join(line.strip(" │").split()) for line in result.stdout.splitlines()]


def test_every_command_and_group_is_covered() -> None:
    assert {"run", "onboard", "plan", "list", "bench"} <= {path[0] for path in DESCRIPTIONS}
    assert ("bench", "rls") in DESCRIPTIONS


@pytest.mark.parametrize("path", DESCRIPTIONS, ids=" ".join)
def test_a_commands_help_shows_each_paragraph_of_its_description_on_one_line(
    path: tuple[str, ...],
) -> None:
    lines = rendered_lines(*path)

    for paragraph in paragraphs(path):
        assert any(paragraph in line for line in lines), (paragraph, lines)


@pytest.mark.parametrize("group", [(), ("bench",)], ids=["tenantctl", "bench"])
def test_a_groups_list_shows_each_commands_first_paragraph_on_one_line(
    group: tuple[str, ...],
) -> None:
    lines = rendered_lines(*group)

    for path in DESCRIPTIONS:
        if path[:-1] == group:
            first = paragraphs(path)[0]
            assert any(line.startswith(f"{path[-1]} {first}") for line in lines), (path, lines)
