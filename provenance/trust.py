"""Certificate paths to the deployment's trust anchors: who may sign a tree head or an audit head.

Why: a signed document that carries its own certificate proves only that someone holding *some*
key signed it. An attacker who rewrites the log can sign a new head with a self-signed
certificate of their own, and a verifier that trusts the embedded certificate accepts it. So a
signature counts only when the carried leaf chains, signature by signature, to one of the
anchors the verifier was given out of band (the development CA that `credence init` made, plus
the PEMs in `CREDENCE_TRUST_ANCHORS`: the same roots C2PA validation trusts).

Checked along the path: each certificate was issued (name and signature) by the next; every one
is valid at the moment that matters (the document's signing time); issuers are CAs
(basicConstraints, keyCertSign, path length); the leaf is not a CA, may sign (digitalSignature),
holds a P-256 key (ES256) and, when it names extended key usages, names one a C2PA signer uses.
No network is used (no AIA fetching, no OCSP or CRL): verification works offline.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from .errors import ProvenanceError

#: Extended key usages a signing leaf may carry (C2PA's list: e-mail protection, document signing).
SIGNER_EKUS = frozenset({ExtendedKeyUsageOID.EMAIL_PROTECTION, ObjectIdentifier("1.3.6.1.5.5.7.3.36"),
                         ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE})
#: Longest path followed (leaf, intermediates, anchor): a carried chain is attacker input.
MAX_DEPTH = 6


class UntrustedSigner(ProvenanceError):
    """A signature whose certificate does not chain to a trust anchor, or is not fit to sign."""


def load_certificates(pem: str | bytes, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM text; `UntrustedSigner` when it holds none or is not PEM."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise UntrustedSigner(f"{what} is not a PEM certificate list ({exc})") from None
    if not certificates:
        raise UntrustedSigner(f"{what} holds no certificate")
    return certificates


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _check_time(cert: x509.Certificate, at: dt.datetime, role: str) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise UntrustedSigner(f"{role} {_name(cert)} is not valid at {at.isoformat()} (valid "
                              f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})")


def _extension(cert: x509.Certificate, kind: type) -> object | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_issuer(cert: x509.Certificate, at: dt.datetime, below: int, role: str) -> None:
    """A CA that may issue: CA basic constraints, keyCertSign, a path length that allows `below` CAs."""
    _check_time(cert, at, role)
    constraints = _extension(cert, x509.BasicConstraints)
    if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
        raise UntrustedSigner(f"{role} {_name(cert)} is not a CA (basicConstraints)")
    if constraints.path_length is not None and below > constraints.path_length:
        raise UntrustedSigner(f"{role} {_name(cert)} allows {constraints.path_length} CAs below it, the path has "
                              f"{below}")
    usage = _extension(cert, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
        raise UntrustedSigner(f"{role} {_name(cert)} may not sign certificates (keyUsage)")


def _check_leaf(cert: x509.Certificate, at: dt.datetime) -> None:
    _check_time(cert, at, "the signing certificate")
    constraints = _extension(cert, x509.BasicConstraints)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        raise UntrustedSigner(f"the signing certificate {_name(cert)} is a CA certificate, not a signer")
    usage = _extension(cert, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not usage.digital_signature:
        raise UntrustedSigner(f"the signing certificate {_name(cert)} may not sign (no digitalSignature)")
    ekus = _extension(cert, x509.ExtendedKeyUsage)
    if isinstance(ekus, x509.ExtendedKeyUsage) and not SIGNER_EKUS & set(ekus):
        raise UntrustedSigner(f"the signing certificate {_name(cert)} names no signing extended key usage")
    public = cert.public_key()
    if not (isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1)):
        raise UntrustedSigner(f"the signing certificate {_name(cert)} does not hold a P-256 key (ES256)")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s name and key issued `cert` (its signature checks)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def verify_path(chain_pem: str | bytes, anchors_pem: str | bytes, *, at: dt.datetime) -> x509.Certificate:
    """The carried leaf, once a path from it to one of `anchors_pem` checks out at time `at`.

    `chain_pem` is the document's chain (leaf first, then any intermediates; a root it carries is
    ignored unless it is also an anchor). Raises `UntrustedSigner` naming what failed.
    """
    at = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
    if not anchors_pem or not str(anchors_pem).strip():
        raise UntrustedSigner("no trust anchors: run `credence init` or set CREDENCE_TRUST_ANCHORS")
    anchors = load_certificates(anchors_pem, "the trust anchors")
    carried = load_certificates(chain_pem, "the certificate chain")
    leaf = carried[0]
    _check_leaf(leaf, at)
    anchor_ders = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
    current, path = leaf, [leaf]
    for _depth in range(MAX_DEPTH):
        for anchor in anchors:
            if anchor.subject == current.issuer and _issued_by(current, anchor):
                if current.public_bytes(serialization.Encoding.DER) not in anchor_ders:
                    _check_issuer(anchor, at, len(path) - 1, "the trust anchor")
                return leaf
        issuer = next((c for c in carried[1:] if c not in path and c.subject == current.issuer
                       and _issued_by(current, c)), None)
        if issuer is None:
            raise UntrustedSigner(f"the certificate chain does not lead to a trust anchor: no trusted issuer "
                                  f"for {_name(current)} (issuer {current.issuer.rfc4514_string()})")
        _check_issuer(issuer, at, len(path) - 1, "the intermediate CA")
        current = issuer
        path.append(issuer)
    raise UntrustedSigner(f"the certificate chain is longer than {MAX_DEPTH} without reaching a trust anchor")
