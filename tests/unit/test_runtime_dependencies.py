"""What the runtime library asks of a function's bundle: SQLAlchemy only for tenant_runtime.orm."""

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_the_runtime_package_imports_without_sqlalchemy() -> None:
    # GIVEN a fresh interpreter WHEN a function imports the runtime (sync and asyncio)
    probe = (
        "import sys; import lambda_src.tenant_runtime; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'greenlet')))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    # THEN neither SQLAlchemy nor greenlet was loaded: a bundle without them works
    assert imported == "[]"


def test_sqlalchemy_is_not_bundled_into_tenantkits_functions() -> None:
    bundled = (REPO_ROOT / "lambda_src" / "requirements.txt").read_text().lower()
    assert "sqlalchemy" not in bundled
    assert "greenlet" not in bundled
