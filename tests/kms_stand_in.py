"""A stand-in for a KMS/HSM adapter: `sign(data) -> signature`, the key held outside Credence."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

KEY_PEM: bytes | None = None
CALLS: list[int] = []


def sign(data: bytes) -> bytes:
    """ES256 over `data` with the key the test installed; records the call."""
    assert KEY_PEM is not None, "the test sets KEY_PEM first"
    key = serialization.load_pem_private_key(KEY_PEM, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    CALLS.append(len(data))
    return key.sign(data, ec.ECDSA(hashes.SHA256()))
