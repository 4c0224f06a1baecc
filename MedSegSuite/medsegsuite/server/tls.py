"""A self-signed certificate for a trial (``medsegsuite serve --self-signed``).

A department should use a certificate from its own CA or a reverse proxy (docs/remote.md); for a
trial the server makes a key (owner-only) and a certificate naming the host, and prints the
certificate's SHA-256 fingerprint. Clients trust that one file (``--ca-cert``):
they keep verifying, and nobody turns verification off (Slicer: ``MEDSEGSUITE_CA_CERT``).
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from pathlib import Path


def fingerprint(cert_file) -> str:
    """SHA-256 of the certificate (DER), as the colon-separated hex browsers and openssl show."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    d = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest().upper()
    return ":".join(d[i:i + 2] for i in range(0, len(d), 2))


def make_self_signed(folder, names: list[str], days: int = 30) -> tuple[Path, Path]:
    """(certificate, key) PEM files in ``folder`` for the host ``names`` (DNS names or IP addresses);
    the key file is 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    names = [n for n in dict.fromkeys(names) if n]
    alt = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n.strip("[]"))))
        except ValueError:
            alt.append(x509.DNSName(n))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names[0] if names else "medsegsuite")[:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "MedSegSuite trial (self-signed)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    key_file, cert_file = folder / "server-key.pem", folder / "server-cert.pem"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(key_file, 0o600)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file
