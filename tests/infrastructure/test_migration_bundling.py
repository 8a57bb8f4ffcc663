"""The application's migrations travel in the provisioner's code asset: copied beside
lambda_src/, part of the asset's hash (a changed migration is a new asset, so a deploy brings
the functions the new files)."""

from pathlib import Path

import aws_cdk.aws_lambda as lambda_
import pytest

from tenant_constructs.bundling import MIGRATIONS_ASSET_DIR, _LocalPipBundling, lambda_src_hash

ARM = lambda_.Architecture.ARM_64


def migrations(root: Path) -> Path:
    directory = root / "migrations"
    directory.mkdir()
    (directory / "V0001__items.sql").write_text("CREATE TABLE items (id bigint);\n")
    (directory / ".gitkeep").write_text("")
    return directory


def test_the_asset_hash_follows_the_migrations(tmp_path: Path) -> None:
    directory = migrations(tmp_path)
    without, first = lambda_src_hash(ARM), lambda_src_hash(ARM, directory)
    assert first != without
    assert lambda_src_hash(ARM, directory) == first  # stable
    (directory / "V0001__items.sql").write_text("CREATE TABLE items (id bigint, v text);\n")
    assert lambda_src_hash(ARM, directory) != first
    (directory / ".gitkeep").write_text("ignored")  # dotfiles stay out
    changed = lambda_src_hash(ARM, directory)
    (directory / ".gitkeep").write_text("still ignored")
    assert lambda_src_hash(ARM, directory) == changed


def test_a_missing_migrations_directory_fails_synth_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"migrations directory .*nowhere does not exist"):
        lambda_src_hash(ARM, tmp_path / "nowhere")


@pytest.mark.slow
def test_bundling_copies_the_migrations_beside_lambda_src(tmp_path: Path) -> None:
    directory = migrations(tmp_path)
    out = tmp_path / "asset"
    out.mkdir()
    assert _LocalPipBundling(ARM, directory).try_bundle(str(out))
    bundled = out / MIGRATIONS_ASSET_DIR
    assert sorted(p.name for p in bundled.iterdir()) == ["V0001__items.sql"]
    assert (bundled / "V0001__items.sql").read_text() == "CREATE TABLE items (id bigint);\n"
    assert (out / "lambda_src" / "provisioner" / "handler.py").is_file()
