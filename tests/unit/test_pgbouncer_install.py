"""Installing and finding the pinned PgBouncer: a clear error when it is missing, and a package
whose checksum is not the pinned one is refused with nothing kept."""

import subprocess
from pathlib import Path

import pytest

from tenantkit import pgbouncer
from tenantkit.pgbouncer import DEBIAN_PACKAGES, PgBouncerError, find_pgbouncer, install


def test_a_missing_pgbouncer_fails_saying_to_run_make_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(pgbouncer.ENV_BIN, raising=False)
    with pytest.raises(PgBouncerError, match=r"not installed .*run `make setup`"):
        find_pgbouncer(tmp_path)


def test_an_override_that_is_not_a_file_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pgbouncer.ENV_BIN, str(tmp_path / "nothing-here"))
    with pytest.raises(PgBouncerError, match="TENANTKIT_PGBOUNCER_BIN"):
        find_pgbouncer(tmp_path)


def test_a_package_with_another_checksum_is_refused_and_nothing_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN apt-get download hands over files that are not the pinned packages
    def download(debs: Path, _options: list[str]) -> subprocess.CompletedProcess[str]:
        for package in DEBIAN_PACKAGES:
            (debs / f"{package.name}_{package.version}_amd64.deb").write_bytes(b"tampered")
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(pgbouncer, "_apt_download", download)
    monkeypatch.delenv(pgbouncer.ENV_BIN, raising=False)
    # WHEN it installs THEN it refuses, naming the file and both checksums, and keeps nothing
    with pytest.raises(PgBouncerError, match=r"pgbouncer_.*\.deb: SHA-256 .* pinned "):
        install(tmp_path)
    assert [p.name for p in (tmp_path / pgbouncer.PGBOUNCER_VERSION).iterdir()] == []


def test_the_installed_pgbouncer_is_the_pinned_version(monkeypatch: pytest.MonkeyPatch) -> None:
    # make setup installed it; the pooler tests fail (never skip) without it
    monkeypatch.delenv(pgbouncer.ENV_BIN, raising=False)
    found = find_pgbouncer()
    assert found.version == pgbouncer.PGBOUNCER_VERSION
