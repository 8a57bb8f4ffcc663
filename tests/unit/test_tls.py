"""The embedded servers' certificates: each server's CA has a name of its own, so one bundle can
hold several servers' CAs (OpenSSL finds an issuer in a bundle by its name)."""

from pathlib import Path

from cryptography import x509

from tenantkit.tls import write_server_tls


def test_two_servers_cas_have_different_names_and_each_issues_its_own_certificate(
    tmp_path: Path,
) -> None:
    written = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        written.append(write_server_tls(tmp_path / name, tmp_path / name))

    cas = [x509.load_pem_x509_certificate(t.ca_cert.read_bytes()) for t in written]
    servers = [x509.load_pem_x509_certificate(t.server_cert.read_bytes()) for t in written]

    assert cas[0].subject != cas[1].subject
    for ca, server in zip(cas, servers, strict=True):
        assert server.issuer == ca.subject
        server.verify_directly_issued_by(ca)
