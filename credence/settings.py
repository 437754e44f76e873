"""One typed settings object, read from the environment once at the edge and passed down.

Domain packages (`provenance`, `moderation`, ...) never read the environment; they take the
values they need as arguments. That keeps them testable and lets one process serve several
configurations side by side (the tests do exactly that).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A `CREDENCE_*` variable holds a value that cannot be used."""


def _number(env: Mapping[str, str], name: str, default: float, *, kind: type = int, zero_ok: bool = False,
            what: str = "an integer") -> Any:
    """A number from the environment: `kind` (int or float), positive (or 0 with `zero_ok`), finite."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
    if not (0 <= value if zero_ok else 0 < value) or value == float("inf"):
        raise SettingsError(f"{name} must be {'0 or more' if zero_ok else 'positive'}, got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive integer."""
    return _number(env, name, default)


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    """A non-negative integer (a queue may be 0: refuse at once when every slot is busy)."""
    return _number(env, name, default, zero_ok=True)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive, finite number of seconds (decimals allowed: tests use short limits)."""
    return _number(env, name, default, kind=float, what="a number of seconds")


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw).expanduser() if raw else None


def _shard_urls(raw: str) -> tuple[str, ...]:
    urls = tuple(u.strip().rstrip("/") for u in raw.split(",") if u.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"CREDENCE_INDEX_SHARDS: {url!r} is not an http(s) URL of a shard server")
    return urls


@dataclass(frozen=True)
class Settings:
    """Where Credence keeps its keys and ledger, and how it signs and serves.

    Production deployments set `signing_chain` and `signing_key` (PEM files from their own CA),
    or `signing_callback` (`module:function` taking the bytes to sign and returning an ES256
    signature, for a KMS or HSM) together with `signing_chain`. Without them the development
    CA that `credence init` made under `home` is used.
    """

    home: Path
    database_url: str
    signing_chain: Path | None = None
    signing_key: Path | None = None
    signing_callback: str | None = None
    trust_anchors: Path | None = None
    policy_path: Path | None = None
    default_model: Path | None = None
    clip_model: Path | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    max_upload_seconds: int = 600
    # Decoding budget of an uploaded clip (issue 21): each frame fits this box (either way round), and
    # width x height x frames stays under the total (default 600 s of 3840x2160 at 60 fps).
    max_frame_size: tuple[int, int] = (4096, 2304)
    max_total_pixels: int = 600 * 3840 * 2160 * 60
    # Bodies of the routes that take no clip (JSON, forms): a larger declared Content-Length is 413 at once.
    max_body_bytes: int = 1024 * 1024
    # Open connections (and requests in flight) past which `credence serve` answers 503 at once.
    max_connections: int = 512
    # HTTP limits (credence serve): a body that stops arriving, and how many heavy requests run and wait.
    body_timeout: float = 30.0
    queue_timeout: float = 30.0
    verify_concurrency: int = 2
    verify_queue: int = 14  # 2 running + 14 queued: the 16-client load bench is served without a 503
    verify_timeout: float = 120.0
    moderation_concurrency: int = 4
    moderation_queue: int = 32
    moderation_timeout: float = 60.0
    generation_queue: int = 2
    generation_timeout: float = 900.0
    api_keys: tuple[str, ...] = field(default_factory=tuple)
    device: str | None = None
    dtype: str | None = None
    cpu_offload: bool = False
    vae_tiling: bool = False
    # Generation leases (see provenance.ledger.states) and fault injection for the crash tests.
    lease_seconds: float = 120.0
    fault_point: str | None = None
    # Redis URL of the job queue (Dramatiq) and the shared quota counters; None: in-process.
    broker_url: str | None = None
    # Trust and safety: prompts kept in the clear this long (None: forever), quarantined outputs
    # kept this long for reviewers, console sessions this long.
    prompt_retention_days: int | None = None
    quarantine_hours: float = 24.0 * 30
    console_session_minutes: float = 480.0
    # The console behind TLS (issue 21): `behind_tls` makes its cookie Secure and adds HSTS;
    # X-Forwarded-Proto / X-Forwarded-For are believed only when the operator says a proxy sets them.
    # Failed console sign-ins allowed per client address and per key prefix (a `limits` rate).
    behind_tls: bool = False
    trust_forwarded_proto: bool = False
    trust_forwarded_for: bool = False
    signin_failures: str = "10/minute"
    # The fingerprint index: its snapshot folder (None: CREDENCE_HOME/index) and, past one box, the
    # shard servers (`credence index serve-shard`) that verification asks instead of its own index.
    index_dir: Path | None = None
    index_shards: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `CREDENCE_*` variables (the process environment by default)."""
        env = os.environ if env is None else env
        home = Path(env.get("CREDENCE_HOME") or "~/.credence").expanduser().resolve()
        database_url = env.get("CREDENCE_DATABASE_URL") or f"sqlite:///{home / 'ledger.sqlite3'}"
        chain, key = _path(env, "CREDENCE_SIGNING_CHAIN"), _path(env, "CREDENCE_SIGNING_KEY")
        callback = env.get("CREDENCE_SIGNING_CALLBACK") or None
        if key is not None and chain is None:
            raise SettingsError("CREDENCE_SIGNING_KEY is set but CREDENCE_SIGNING_CHAIN is not")
        if callback is not None and chain is None:
            raise SettingsError("CREDENCE_SIGNING_CALLBACK needs CREDENCE_SIGNING_CHAIN (the PEM chain)")
        if chain is not None and key is None and callback is None:
            raise SettingsError("CREDENCE_SIGNING_CHAIN needs CREDENCE_SIGNING_KEY or CREDENCE_SIGNING_CALLBACK")
        keys = tuple(k.strip() for k in (env.get("CREDENCE_API_KEYS") or "").split(",") if k.strip())
        return cls(
            home=home,
            database_url=database_url,
            signing_chain=chain,
            signing_key=key,
            signing_callback=callback,
            trust_anchors=_path(env, "CREDENCE_TRUST_ANCHORS"),
            policy_path=_path(env, "CREDENCE_POLICY"),
            default_model=_path(env, "CREDENCE_MODEL"),
            clip_model=_path(env, "CREDENCE_CLIP_CHECKPOINT"),
            max_upload_bytes=_int(env, "CREDENCE_MAX_UPLOAD_BYTES", 512 * 1024 * 1024),
            max_upload_seconds=_int(env, "CREDENCE_MAX_UPLOAD_SECONDS", 600),
            max_frame_size=_frame_size(env, "CREDENCE_MAX_FRAME_SIZE", (4096, 2304)),
            max_total_pixels=_int(env, "CREDENCE_MAX_TOTAL_PIXELS", 600 * 3840 * 2160 * 60),
            max_body_bytes=_int(env, "CREDENCE_MAX_BODY_BYTES", 1024 * 1024),
            max_connections=_int(env, "CREDENCE_MAX_CONNECTIONS", 512),
            body_timeout=_seconds(env, "CREDENCE_BODY_TIMEOUT", 30.0),
            queue_timeout=_seconds(env, "CREDENCE_QUEUE_TIMEOUT", 30.0),
            verify_concurrency=_int(env, "CREDENCE_VERIFY_CONCURRENCY", 2),
            verify_queue=_count(env, "CREDENCE_VERIFY_QUEUE", 14),
            verify_timeout=_seconds(env, "CREDENCE_VERIFY_TIMEOUT", 120.0),
            moderation_concurrency=_int(env, "CREDENCE_MODERATION_CONCURRENCY", 4),
            moderation_queue=_count(env, "CREDENCE_MODERATION_QUEUE", 32),
            moderation_timeout=_seconds(env, "CREDENCE_MODERATION_TIMEOUT", 60.0),
            generation_queue=_count(env, "CREDENCE_GENERATION_QUEUE", 2),
            generation_timeout=_seconds(env, "CREDENCE_GENERATION_TIMEOUT", 900.0),
            api_keys=keys,
            device=env.get("CREDENCE_DEVICE") or None,
            dtype=env.get("CREDENCE_DTYPE") or None,
            cpu_offload=_flag(env, "CREDENCE_CPU_OFFLOAD"),
            vae_tiling=_flag(env, "CREDENCE_VAE_TILING"),
            lease_seconds=_seconds(env, "CREDENCE_LEASE_SECONDS", 120.0),
            fault_point=env.get("CREDENCE_FAULT_POINT") or None,
            broker_url=env.get("CREDENCE_BROKER_URL") or None,
            prompt_retention_days=_int(env, "CREDENCE_PROMPT_RETENTION_DAYS", 0) or None,
            quarantine_hours=_seconds(env, "CREDENCE_QUARANTINE_HOURS", 24.0 * 30),
            console_session_minutes=_seconds(env, "CREDENCE_CONSOLE_SESSION_MINUTES", 480.0),
            behind_tls=_flag(env, "CREDENCE_BEHIND_TLS"),
            trust_forwarded_proto=_flag(env, "CREDENCE_TRUST_FORWARDED_PROTO"),
            trust_forwarded_for=_flag(env, "CREDENCE_TRUST_FORWARDED_FOR"),
            signin_failures=_rate(env, "CREDENCE_SIGNIN_FAILURES", "10/minute"),
            index_dir=_path(env, "CREDENCE_INDEX_DIR"),
            index_shards=_shard_urls(env.get("CREDENCE_INDEX_SHARDS") or ""),
        )

    @property
    def index_folder(self) -> Path:
        """The fingerprint index's snapshot folder (`credence index rebuild` writes it, the API loads it)."""
        return self.index_dir if self.index_dir is not None else self.home / "index"

    @property
    def decode_limits(self) -> Any:
        """The decoding budget of an uploaded clip (`provenance.video_limits.DecodeLimits`)."""
        from provenance.video_limits import DecodeLimits

        return DecodeLimits(frame_box=self.max_frame_size, max_total_pixels=self.max_total_pixels,
                            max_seconds=float(self.max_upload_seconds))

    @property
    def keys_dir(self) -> Path:
        """Folder of the development CA, signing certificate and watermark secrets."""
        return self.home / "keys"

    @property
    def outputs_dir(self) -> Path:
        """Default folder for clips that `credence generate` publishes."""
        return self.home / "outputs"


def _frame_size(env: Mapping[str, str], name: str, default: tuple[int, int]) -> tuple[int, int]:
    """A frame size such as `4096x2304` (width x height, each at least 16)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    from provenance.video_limits import parse_frame_box

    try:
        return parse_frame_box(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    """A `limits` rate such as `10/minute`, checked here so that a typo stops start-up, not a sign-in."""
    raw = (env.get(name) or "").strip() or default
    from limits import parse

    try:
        item = parse(raw)
    except ValueError:
        item = None
    if item is None or item.amount < 1:
        raise SettingsError(f"{name} must be a rate such as 10/minute (N per second, minute, hour or day), "
                            f"got {raw!r}")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    """A boolean variable; anything but the usual spellings is an error, not silently false."""
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be 1/0, true/false, yes/no or on/off, got {raw!r}")
