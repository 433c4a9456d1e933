"""Certificates for TLS tests, made at test time with `cryptography` (never committed): a CA, a
broker certificate it signs, and the files Mosquitto and a terminal need."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, cn: str = "cx test ca") -> Ca:
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def server(self, folder: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1"),
               valid_days: float = 2, prefix: str = "server") -> tuple[Path, Path]:
        """(cert PEM, key PEM) in folder for a broker known by `names` (DNS names or IPs);
        negative `valid_days` makes a certificate that has already expired."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        start = now - datetime.timedelta(hours=1) if valid_days > 0 else \
            now + datetime.timedelta(days=valid_days - 1)
        cert = (x509.CertificateBuilder().subject_name(_name(names[0]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(start)
                .not_valid_after(now + datetime.timedelta(days=valid_days))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(self.key, hashes.SHA256()))
        folder.mkdir(parents=True, exist_ok=True)
        cp, kp = folder / f"{prefix}.pem", folder / f"{prefix}.key"
        cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        kp.chmod(0o600)
        return cp, kp


def tls_listener(port: int, cert: Path, key: Path) -> str:
    """Mosquitto config lines for a TLS listener on 127.0.0.1:port (as cx fleet broker-config).
    Started as root, Mosquitto would drop to its own user and not read pytest's 0700 folders."""
    as_root = "user root\n" if os.geteuid() == 0 else ""
    return (f"{as_root}listener {port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
            f"tls_version tlsv1.2\n")
