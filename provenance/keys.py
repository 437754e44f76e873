"""Keys: the development CA and signing certificate, and the keyed watermark secrets.

`credence init` calls `ensure_development_keys`, which creates what is missing and never
overwrites what exists: a key that signed or marked a published clip must outlive it. Secrets
are written with mode 0600. Production replaces the development CA with a PEM chain and key,
or a signing callback for a KMS or HSM (`SigningIdentity`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import KeyMissing
from .fsio import replace_text

CA_CERT = "ca.pem"
CA_KEY = "ca_key.pem"
SIGNING_CHAIN = "signing_chain.pem"
SIGNING_KEY = "signing_key.pem"
WATERMARK_DIR = "watermark"
ACTIVE_WATERMARK = "ACTIVE"


@dataclass(frozen=True)
class WatermarkSecret:
    """A 256-bit watermark secret and the id that names it in manifests and the ledger."""

    key_id: str
    secret: bytes


@dataclass(frozen=True)
class SigningIdentity:
    """What C2PA signing needs: a PEM chain (leaf first) and either a PEM key or a callback.

    The callback takes the bytes to sign and returns an ES256 signature; it is how a KMS or
    HSM signs without the private key ever reaching this process.
    """

    chain_pem: bytes
    key_pem: bytes | None = None
    callback: Callable[[bytes], bytes] | None = None

    @property
    def leaf_fingerprint(self) -> str:
        """SHA-256 of the leaf certificate's DER: how the ledger and verifier name our signer."""
        return certificate_fingerprint(self.chain_pem)

    @property
    def leaf_serial(self) -> str:
        """Decimal serial number of the leaf: what C2PA readers report about the signer."""
        return str(self.leaf.serial_number)

    @property
    def leaf(self) -> x509.Certificate:
        """The signing (leaf) certificate."""
        return x509.load_pem_x509_certificates(self.chain_pem)[0]


def certificate_fingerprint(chain_pem: bytes) -> str:
    """SHA-256 hex of the first certificate in a PEM chain."""
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    except ValueError as exc:
        raise KeyMissing(f"not a PEM certificate chain ({exc})") from None
    return leaf.fingerprint(hashes.SHA256()).hex()


def _write_secret(path: Path, data: bytes) -> None:
    # O_EXCL: two concurrent `credence init` runs must not overwrite each other's key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Credence development"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _create_development_ca(keys_dir: Path) -> list[str]:
    """A P-256 root CA and a leaf that c2pa-rs accepts (a self-signed leaf is refused)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Credence Development Root CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Credence Development Signer")).issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    _write_secret(keys_dir / CA_KEY, ca_key.private_bytes(pem, pkcs8, plain))
    _write_secret(keys_dir / SIGNING_KEY, leaf_key.private_bytes(pem, pkcs8, plain))
    (keys_dir / CA_CERT).write_bytes(ca_cert.public_bytes(pem))
    (keys_dir / SIGNING_CHAIN).write_bytes(leaf_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    return [CA_CERT, CA_KEY, SIGNING_CHAIN, SIGNING_KEY]


def create_watermark_secret(keys_dir: Path, *, activate: bool = True) -> WatermarkSecret:
    """Add a new 256-bit watermark secret; the old ones stay so old clips still decode."""
    wm_dir = keys_dir / WATERMARK_DIR
    wm_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_bytes(32)
    # The id is derived from the secret (one-way) so that a copied key file names itself.
    key_id = "wm-" + hashlib.sha256(b"credence-key-id" + secret).hexdigest()[:12]
    _write_secret(wm_dir / f"{key_id}.key", secret.hex().encode() + b"\n")
    if activate:
        replace_text(wm_dir / ACTIVE_WATERMARK, key_id + "\n", temp=wm_dir / f".{ACTIVE_WATERMARK}.tmp")
    return WatermarkSecret(key_id, secret)


def ensure_development_keys(keys_dir: Path) -> list[str]:
    """Create the development CA, signing certificate and a watermark secret if absent.

    Returns the names of the files created (empty when everything already existed).
    """
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    created: list[str] = []
    ca_files = [keys_dir / n for n in (CA_CERT, CA_KEY, SIGNING_CHAIN, SIGNING_KEY)]
    present = [p.exists() for p in ca_files]
    if not any(present):
        created += _create_development_ca(keys_dir)
    elif not all(present):
        missing = ", ".join(p.name for p, ok in zip(ca_files, present, strict=True) if not ok)
        raise KeyMissing(f"{keys_dir}: the development CA is incomplete (missing {missing}); "
                         "restore the files or move the folder aside; refusing to overwrite keys")
    if not (keys_dir / WATERMARK_DIR / ACTIVE_WATERMARK).exists():
        if load_watermark_secrets(keys_dir):
            raise KeyMissing(f"{keys_dir / WATERMARK_DIR}: watermark keys exist but none is marked active")
        secret = create_watermark_secret(keys_dir)
        created.append(f"{WATERMARK_DIR}/{secret.key_id}.key")
    return created


def _read_secret(path: Path) -> WatermarkSecret:
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise KeyMissing(f"{path}: not a hex watermark secret") from None
    if len(secret) < 16:
        raise KeyMissing(f"{path}: watermark secret is {len(secret) * 8} bits, need at least 128")
    return WatermarkSecret(path.stem, secret)


def load_watermark_secrets(keys_dir: Path) -> list[WatermarkSecret]:
    """Every watermark secret under `keys_dir`, the active one first."""
    wm_dir = keys_dir / WATERMARK_DIR
    if not wm_dir.is_dir():
        return []
    found = [_read_secret(p) for p in sorted(wm_dir.glob("*.key"))]
    active_file = wm_dir / ACTIVE_WATERMARK
    active = active_file.read_text().strip() if active_file.exists() else None
    return sorted(found, key=lambda s: s.key_id != active)


def active_watermark_secret(keys_dir: Path) -> WatermarkSecret:
    """The secret new clips are marked with; `KeyMissing` if `credence init` has not run."""
    active_file = keys_dir / WATERMARK_DIR / ACTIVE_WATERMARK
    if not active_file.exists():
        raise KeyMissing(f"no watermark key under {keys_dir}; run `credence init`")
    key_id = active_file.read_text().strip()
    path = keys_dir / WATERMARK_DIR / f"{key_id}.key"
    if not path.exists():
        raise KeyMissing(f"{path}: the active watermark key file is missing")
    return _read_secret(path)


def load_callback(spec: str) -> Callable[[bytes], bytes]:
    """Import a signing callback named `module:function` (a KMS or HSM adapter)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise KeyMissing(f"signing callback {spec!r} must look like 'package.module:function'")
    try:
        func = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise KeyMissing(f"signing callback {spec!r} cannot be imported ({exc})") from None
    if not callable(func):
        raise KeyMissing(f"signing callback {spec!r} is not callable")
    return func


def load_signing_identity(keys_dir: Path, *, chain: Path | None = None, key: Path | None = None,
                          callback: str | None = None) -> SigningIdentity:
    """The configured production identity, else the development one under `keys_dir`."""
    chain_path = chain or keys_dir / SIGNING_CHAIN
    if not chain_path.exists():
        raise KeyMissing(f"no signing certificate at {chain_path}; run `credence init` "
                         "or set CREDENCE_SIGNING_CHAIN")
    chain_pem = chain_path.read_bytes()
    certificate_fingerprint(chain_pem)  # fail early on a file that is not a PEM chain
    if callback is not None:
        return SigningIdentity(chain_pem, callback=load_callback(callback))
    key_path = key or keys_dir / SIGNING_KEY
    if not key_path.exists():
        raise KeyMissing(f"no signing key at {key_path}; run `credence init` or set CREDENCE_SIGNING_KEY")
    key_pem = key_path.read_bytes()
    try:
        serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyMissing(f"{key_path}: not an unencrypted PEM private key ({exc})") from None
    return SigningIdentity(chain_pem, key_pem=key_pem)


def trust_anchors_pem(keys_dir: Path, extra: Path | None = None) -> str:
    """PEM roots the verifier trusts: our development CA (if any) plus configured anchors."""
    parts: list[str] = []
    if (keys_dir / CA_CERT).exists():
        parts.append((keys_dir / CA_CERT).read_text())
    if extra is not None:
        if not extra.exists():
            raise KeyMissing(f"trust anchors file {extra} does not exist")
        parts.append(extra.read_text())
    return "\n".join(parts)


# The names the watermark package and its CLI use for the same two look-ups.
load_watermark_keys = load_watermark_secrets
active_watermark_key = active_watermark_secret
