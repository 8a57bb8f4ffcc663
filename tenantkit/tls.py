"""A private CA and a server certificate for the embedded PostgreSQL, so local runs use TLS
with full verification exactly as the provisioner does against RDS with the RDS CA bundle."""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class ServerTls:
    """Where the certificate files are."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_server_tls(ca_dir: Path, data_dir: Path) -> ServerTls:
    """Create a CA (certificate only kept) and a certificate for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    # Each server's CA has a name of its own (as each RDS Region's has): OpenSSL finds a
    # certificate's issuer in a bundle by name, so a bundle of several servers' CAs with one
    # name would verify only the first server.
    ca_name = _name(f"tenantkit embedded PostgreSQL CA {serial:040x}"[:49])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    tls = ServerTls(
        ca_cert=ca_dir / "ca.crt",
        server_cert=data_dir / "server.crt",
        server_key=data_dir / "server.key",
    )
    tls.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    tls.server_key.touch(mode=0o600)
    tls.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tls
