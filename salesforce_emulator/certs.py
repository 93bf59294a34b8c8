"""TLS and JWT key material, created once per data directory and reused on restart."""

import datetime as dt
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def ensure_tls(data_dir: Path, host: str) -> tuple[Path, Path, Path]:
    """Return (ca.pem, server chain, server key), creating them if missing."""
    ca_path = data_dir / "ca.pem"
    chain_path = data_dir / "server.pem"
    key_path = data_dir / "server_key.pem"
    if ca_path.exists() and chain_path.exists() and key_path.exists():
        return ca_path, chain_path, key_path
    ca = trustme.CA(organization_name="stagemap Salesforce emulator")
    names = ["127.0.0.1", "localhost"]
    if host not in names and host not in ("0.0.0.0", "::", ""):
        names.append(host)
    leaf = ca.issue_cert(*names)
    ca.cert_pem.write_to_path(str(ca_path))
    ca.private_key_pem.write_to_path(str(data_dir / "ca_key.pem"))
    key_path.write_bytes(leaf.private_key_pem.bytes())
    key_path.chmod(0o600)
    chain_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return ca_path, chain_path, key_path


def new_jwt_keypair(common_name: str) -> tuple[str, str]:
    """An RSA key and a self-signed certificate, as a connected app's JWT bearer setup uses."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def public_key_from_cert(cert_pem: str) -> object:
    return x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
