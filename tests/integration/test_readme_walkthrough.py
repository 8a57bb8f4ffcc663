"""The README's walkthroughs ("Changing the schema of every tenant", "Moving a tenant"), run end
to end: the catalog written as the README shows it, then every `$` line of the console block,
as written and in order, in a directory of its own. Each exit code must be the one the line
states (`# exit N`, else 0) and each output line the README shows must be in the command's
output, so the README cannot drift from what the commands do."""

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenantkit.cli import app
from tenantkit.embedded_pg import EmbeddedPostgres

REPO_ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Changing the schema of every tenant"
MOVE_SECTION = "## Moving a tenant"
runner = CliRunner()


@dataclass(frozen=True)
class Command:
    """A `$` line of the walkthrough, the output lines shown under it and its exit code."""

    line: str
    shown: tuple[str, ...]
    exit_code: int


def walkthrough(heading: str = SECTION) -> tuple[str, list[Command]]:
    """The section's catalog (its yaml block) and the commands of its console block."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    section = section[: section.index("\n## ", len(heading))]
    blocks = dict(re.findall(r"```(yaml|console)\n(.*?)```", section, re.DOTALL))
    commands: list[Command] = []
    for line in blocks["console"].splitlines():
        if line.startswith("$ "):
            stated = re.search(r"#\s*exit (\d+)", line)
            commands.append(Command(line[2:], (), int(stated[1]) if stated else 0))
        elif line.strip() and line.strip() != "...":
            last = commands[-1]
            commands[-1] = Command(last.line, (*last.shown, line), last.exit_code)
    return blocks["yaml"], commands


def words(text: str) -> str:
    """Text with every run of white space one space: a table cell's padding and a line the
    README wraps do not matter, the words and their order do."""
    return " ".join(text.split())


@pytest.fixture
def directory(pg_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty directory of the test's own (the server user can traverse it), the current
    one; the servers the walkthrough leaves are stopped afterwards."""
    root = Path(tempfile.mkdtemp(prefix="walkthrough-", dir=pg_root))
    root.chmod(0o711)
    monkeypatch.chdir(root)
    yield root
    for data in root.glob(".tenantkit/**/pg"):
        EmbeddedPostgres(data).stop()


def test_the_walkthrough_is_read_from_the_readme_as_commands_with_their_output() -> None:
    catalog, commands = walkthrough()
    assert "schema:" in catalog
    assert [c.line.split()[0] for c in commands].count("tenantctl") >= 6
    assert commands[-1].exit_code == 2  # the lint refusal
    assert all(c.shown for c in commands if c.line.startswith("tenantctl"))


@pytest.mark.slow
@pytest.mark.parametrize("heading", [SECTION, MOVE_SECTION])
def test_every_command_of_the_walkthrough_behaves_as_the_readme_shows(
    directory: Path, heading: str
) -> None:
    # GIVEN only the catalog the README shows
    catalog, commands = walkthrough(heading)
    (directory / "tenants.yaml").write_text(catalog)
    # (a line bash runs finds this tenantctl, as a user's activated virtualenv would)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        # WHEN the line runs as written: tenantctl in this process, anything else in bash
        if command.line.startswith("tenantctl "):
            result = runner.invoke(app, shlex.split(command.line, comments=True)[1:])
            code, output = result.exit_code, result.output
        else:
            done = subprocess.run(
                ["bash", "-c", command.line],
                cwd=directory,
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            code, output = done.returncode, done.stdout + done.stderr
        # THEN its exit code and every output line shown are the README's
        assert code == command.exit_code, (command.line, output)
        for shown in command.shown:
            assert words(shown) in words(output), (command.line, shown, output)
