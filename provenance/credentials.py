"""C2PA content credentials: sign a manifest into an MP4/MOV, and read and validate any file.

Signing never needs a timestamp authority (none is reachable here) and fails closed: any error
raises `SigningUnavailable` and the destination is left for the caller to discard. Reading is
offline too (no OCSP, no remote manifests), so a verifier never blocks on the network.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import c2pa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import InvalidVideo, SigningUnavailable, UnsupportedFormat
from .keys import SigningIdentity
from .video import SIGNABLE_MIME

GENERATOR_NAME = "credence"
GENERATION_ASSERTION = "org.credence.generation"
#: What the clip discloses: the visible label burned into it (mode, text, position) and the
#: machine-readable layers it carries. EU AI Act Art. 50(2) and 50(4) evidence, read by `verify`.
DISCLOSURE_ASSERTION = "org.credence.disclosure"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"

_OFFLINE_VERIFY = {"ocsp_fetch": False, "remote_manifest_fetch": False, "verify_trust": True,
                   "verify_timestamp_trust": False}


@dataclass(frozen=True)
class ManifestContent:
    """What a Credence manifest says about one generated clip."""

    generation_id: str
    title: str
    model_name: str
    model_version: str | None = None
    policy_version: str | None = None
    generator_version: str = "0.1.0"
    watermark_alg: str | None = None
    watermark_id: str | None = None
    watermark_key_id: str | None = None
    #: The visible label (`provenance.label.LabelSpec.record()`: mode, text, position); None for
    #: a publish that decided nothing about labels (the manifest then says nothing of one).
    label: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest definition c2pa-python's Builder takes."""
        actions: list[dict[str, Any]] = [{
            "action": "c2pa.created",
            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
            "softwareAgent": {"name": self.model_name, "version": self.model_version or "unknown"},
            "parameters": {"org.credence.generation_id": self.generation_id},
        }]
        assertions: list[dict[str, Any]] = []
        if self.label is not None and self.label.get("mode", "off") != "off":
            # The label is burned in after creation and before the mark: an edit, in that order.
            actions.append({
                "action": "c2pa.edited",
                "description": f"visible AI-disclosure label burned in ({self.label['mode']}): {self.label['text']}",
                "softwareAgent": {"name": GENERATOR_NAME, "version": self.generator_version},
                "parameters": {"org.credence.label_mode": self.label["mode"],
                               "org.credence.label_text": self.label["text"]},
            })
        if self.watermark_alg and self.watermark_id:
            actions.append({"action": "c2pa.watermarked",
                            "parameters": {"org.credence.watermark_key_id": self.watermark_key_id}})
            assertions.append({"label": "c2pa.soft-binding", "data": {
                "alg": self.watermark_alg,
                "blocks": [{"scope": {}, "value": base64.b64encode(bytes.fromhex(self.watermark_id)).decode()}],
                "name": "Credence invisible watermark: 64-bit mark id of the generation",
            }})
        assertions.insert(0, {"label": "c2pa.actions.v2", "data": {"actions": actions}})
        assertions.append({"label": "cawg.training-mining", "data": {"entries": {
            "cawg.ai_inference": {"use": "notAllowed"},
            "cawg.ai_generative_training": {"use": "notAllowed"},
            "cawg.ai_training": {"use": "notAllowed"},
            "cawg.data_mining": {"use": "notAllowed"},
        }}})
        assertions.append({"label": GENERATION_ASSERTION, "data": {
            "generation_id": self.generation_id,
            "model": self.model_name,
            "model_version": self.model_version,
            "policy_version": self.policy_version,
            "watermark_id": self.watermark_id,
            **self.extra,
        }})
        if self.label is not None:
            layers = ["c2pa"] + (["watermark"] if self.watermark_alg and self.watermark_id else [])
            assertions.append({"label": DISCLOSURE_ASSERTION, "data": {
                "visible_label": dict(self.label),
                "machine_readable": layers,
                "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
            }})
        return {
            "claim_generator_info": [{"name": GENERATOR_NAME, "version": self.generator_version}],
            "title": self.title,
            "format": "video/mp4",
            "assertions": assertions,
        }


def mime_for(path: Path) -> str:
    """The C2PA MIME type for a file name; `UnsupportedFormat` for containers C2PA cannot carry."""
    suffix = path.suffix.lower()
    if suffix in SIGNABLE_MIME:
        return SIGNABLE_MIME[suffix]
    if suffix in (".webm", ".mkv"):
        raise UnsupportedFormat(f"{path.name}: C2PA cannot embed a manifest in {suffix[1:].upper()}; "
                                "publish as .mp4 or .mov")
    raise UnsupportedFormat(f"{path.name}: unsupported extension {suffix or '(none)'!r}; "
                            "use .mp4, .mov or .avi")


def _make_signer(identity: SigningIdentity) -> c2pa.Signer:
    chain = identity.chain_pem
    if identity.callback is not None:
        callback = identity.callback

        def sign(data: bytes) -> bytes:
            return callback(data)

        return c2pa.Signer.from_callback(sign, c2pa.C2paSigningAlg.ES256, chain.decode(), None)
    assert identity.key_pem is not None
    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, identity.key_pem, None))


def key_callback(key_pem: bytes) -> Any:
    """A signing callback over a PEM key: the shape a KMS or HSM adapter takes (used in tests)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)

    def sign(data: bytes) -> bytes:
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    return sign


def _context(trust_pem: str | None, **settings: Any) -> c2pa.Context:
    cfg: dict[str, Any] = {"verify": dict(_OFFLINE_VERIFY)}
    if trust_pem:
        cfg["trust"] = {"trust_anchors": trust_pem}
    cfg["builder"] = {"thumbnail": {"enabled": False}}
    for key, value in settings.items():
        cfg.setdefault(key, {}).update(value)
    return c2pa.Context.from_dict(cfg)


def sign_manifest(source: Path, dest: Path, content: ManifestContent, identity: SigningIdentity,
                  *, trust_pem: str | None = None) -> bytes:
    """Sign `content` into a copy of `source` written to `dest`; returns the manifest bytes.

    `dest` must not be the final, released path: on failure it holds garbage that the caller
    deletes. The manifest bytes are kept in the ledger (they also serve as a sidecar).
    """
    mime = mime_for(dest)
    try:
        with (_context(trust_pem) as ctx, c2pa.Builder(content.to_manifest(), ctx) as builder,
              open(source, "rb") as src, open(dest, "w+b") as dst):
            return bytes(builder.sign(_make_signer(identity), mime, src, dst))
    except c2pa.C2paError as exc:
        raise SigningUnavailable(f"C2PA signing failed: {exc}") from None
    except OSError as exc:
        raise SigningUnavailable(f"C2PA signing could not write {dest}: {exc}") from None


@dataclass
class Credentials:
    """What a file's C2PA manifest says, and whether it holds up."""

    present: bool
    state: str | None = None  # "Trusted" | "Valid" | "Invalid"
    codes: list[str] = field(default_factory=list)
    signer: dict[str, Any] | None = None
    ours: bool = False
    generation_id: str | None = None
    manifest_label: str | None = None
    claim_generator: str | None = None
    watermark_id: str | None = None
    #: The visible label the manifest records (`DISCLOSURE_ASSERTION`), only from a manifest we signed.
    disclosure: dict[str, Any] | None = None
    error: str | None = None

    def to_evidence(self) -> dict[str, Any]:
        """The C2PA evidence item of a verdict."""
        return {"source": "c2pa", "present": self.present, "state": self.state, "ours": self.ours,
                "generation_id": self.generation_id, "codes": self.codes,
                "signer": self.signer, "manifest_label": self.manifest_label,
                "disclosure": self.disclosure}


def _read_mime(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in SIGNABLE_MIME:
        return SIGNABLE_MIME[suffix]
    return None


def _sniff_mime(head: bytes) -> str | None:
    # Uploads arrive with arbitrary names: look at the bytes (ISO BMFF `ftyp`, RIFF AVI).
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    return None


def read_credentials(path: Path, *, trust_pem: str | None = None,
                     our_signers: frozenset[str] | set[str] = frozenset()) -> Credentials:
    """Read and validate the C2PA manifest of any file (offline).

    `our_signers` are the serial numbers (decimal strings) of the leaf certificates we sign
    with; a valid manifest from anyone else is reported as valid but not ours.
    """
    if not path.exists() or not path.is_file():
        raise InvalidVideo(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(16)
    mime = _sniff_mime(head) or _read_mime(path)
    if mime is None:
        return Credentials(present=False, error="container cannot carry a C2PA manifest")
    try:
        with _context(trust_pem) as ctx, open(path, "rb") as stream:
            reader = c2pa.Reader.try_create(mime, stream, None, ctx)
            if reader is None:
                return Credentials(present=False)
            with reader:
                return _summarise(reader, our_signers)
    except c2pa.C2paError as exc:
        # A manifest box that cannot even be parsed is evidence of tampering, not absence.
        text = str(exc)
        if "ManifestNotFound" in text or "JumbfNotFound" in text:
            return Credentials(present=False)
        return Credentials(present=True, state="Invalid", codes=["manifest.unreadable"], error=text)


def _summarise(reader: c2pa.Reader, our_signers: frozenset[str] | set[str]) -> Credentials:
    store = json.loads(reader.json())
    label = store.get("active_manifest")
    manifest = store.get("manifests", {}).get(label, {}) if label else {}
    state = reader.get_validation_state()
    results = store.get("validation_results") or {}
    active = results.get("activeManifest") or {}
    codes = sorted({item.get("code") for item in active.get("failure", []) if item.get("code")})
    if not codes:
        codes = sorted({item.get("code") for item in store.get("validation_status") or [] if item.get("code")})
    signature = manifest.get("signature_info") or {}
    signer = {k: signature.get(k) for k in ("issuer", "common_name", "cert_serial_number", "alg")}
    generation_id = watermark_id = disclosure = None
    for assertion in manifest.get("assertions", []):
        if assertion.get("label") == GENERATION_ASSERTION:
            data = assertion.get("data") or {}
            generation_id = data.get("generation_id")
            watermark_id = data.get("watermark_id")
        elif assertion.get("label") == DISCLOSURE_ASSERTION and isinstance(assertion.get("data"), dict):
            disclosure = assertion["data"]
    # The Python reader does not expose the certificate itself; the serial number, unique per
    # issuing CA, names it. Only a chain to one of our anchors (Trusted) can be ours.
    serial = signer.get("cert_serial_number")
    ours = state == "Trusted" and serial is not None and str(serial) in our_signers
    claim = manifest.get("claim_generator_info") or [{}]
    return Credentials(
        present=True,
        state=state,
        codes=codes,
        signer=signer,
        ours=ours,
        # Only a manifest we signed names one of our generations; anyone could write the label.
        generation_id=generation_id if ours else None,
        manifest_label=label,
        claim_generator=(claim[0] or {}).get("name"),
        watermark_id=watermark_id if ours else None,
        disclosure=disclosure if ours else None,
    )
