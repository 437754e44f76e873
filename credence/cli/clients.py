"""`credence clients ...` and `credence keys ...`: the client applications of the API and their keys.

A key is printed once, when it is made (`--json`: `{"client_id", "key_id", "key"}`); the ledger
keeps only its prefix and the hash of its secret. Every change is an audit entry.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import console, handles_errors, runtime

if TYPE_CHECKING:
    from provenance.ledger.models import Client

# SQLAlchemy and the ledger's models are imported inside each command: `credence --help` and
# every other command start without them.

clients_app = typer.Typer(help="Client applications of the API: quotas, policy overlay, webhook.",
                          no_args_is_help=True)
keys_app = typer.Typer(help="API keys of a client: create, revoke, rotate.", no_args_is_help=True)

ScopesOption = Annotated[str, typer.Option("--scopes", help="Comma-separated: generate, verify, moderate, review, "
                                                            "audit, admin.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AllowPrivateOption = Annotated[bool, typer.Option(
    "--allow-private-webhook", help="Let this client's webhook reach loopback, private or link-local addresses "
                                    "(an internal receiver; refused otherwise, at set-up and at every delivery).")]
ReviewerOption = Annotated[str | None, typer.Option(
    "--reviewer", help="The person who holds this key: approvals need a named reviewer, and the two-reviewer rule "
                       "counts people, not keys.")]


def _find_client(session: Any, name_or_id: str) -> Client:
    from sqlalchemy import or_, select

    from provenance.ledger.models import Client

    from ..auth import AuthError

    client = session.scalars(select(Client).where(or_(Client.id == name_or_id, Client.name == name_or_id))).first()
    if client is None:
        raise AuthError(f"no client {name_or_id!r} (see `credence clients list`)")
    return client


def _check_rate(rate: str | None) -> str | None:
    from ..auth import AuthError

    if rate is None:
        return None
    from limits import parse

    try:
        parse(rate)
    except ValueError:
        raise AuthError(f"--rate {rate!r}: write it as N/second, N/minute, N/hour or N/day") from None
    return rate


def _client_dict(client: Client) -> dict[str, Any]:
    return {"client_id": client.id, "name": client.name, "created_at": client.created_at.isoformat(),
            "disabled": client.disabled, "rate_limit": client.rate_limit,
            "daily_generations": client.daily_generations, "policy_overlay_hash": client.policy_overlay_hash,
            "webhook_url": client.webhook_url, "webhook_allow_private": client.webhook_allow_private,
            "operator": client.operator,
            "keys": [{"key_id": k.id, "prefix": k.prefix, "scopes": k.scopes,
                      "created_at": k.created_at.isoformat(),
                      "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
                      "revoked": k.revoked_at is not None, "reviewer": k.reviewer,
                      "expires_at": k.expires_at.isoformat() if k.expires_at else None} for k in client.keys]}


@clients_app.command("create")
@handles_errors
def clients_create(
    name: Annotated[str, typer.Argument(help="A unique name for the client application.")],
    scopes: ScopesOption = "generate,verify,moderate",
    rate: Annotated[str | None, typer.Option("--rate", help="Requests allowed, e.g. 60/minute.")] = None,
    daily_generations: Annotated[int | None, typer.Option("--daily-generations", min=0,
                                                          help="Generations allowed per day.")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="A policy overlay YAML (stricter only).")] = None,
    webhook: Annotated[str | None, typer.Option("--webhook", help="URL told when each job ends.")] = None,
    allow_private_webhook: AllowPrivateOption = False,
    expires_days: Annotated[int | None, typer.Option("--expires-days", min=1, help="The key expires after.")] = None,
    reviewer: ReviewerOption = None,
    json_: JsonOption = False,
) -> None:
    """Create a client and its first key; the key (and webhook secret) is printed once."""
    from sqlalchemy import select

    from provenance.ledger.models import Client

    from ..auth import AuthError, new_key, parse_scopes

    rt = runtime()
    scope_list = parse_scopes(scopes)
    overlay_text, overlay_digest = _overlay(rt, policy)
    webhook = _check_webhook(webhook, allow_private_webhook)
    webhook_secret = "whsec_" + secrets.token_urlsafe(32) if webhook else None
    with rt.ledger.session() as s:
        if s.scalars(select(Client).where(Client.name == name)).first() is not None:
            raise AuthError(f"a client named {name!r} already exists")
        client = Client(name=name, rate_limit=_check_rate(rate), daily_generations=daily_generations,
                        policy_overlay=overlay_text, policy_overlay_hash=overlay_digest, webhook_url=webhook,
                        webhook_secret=webhook_secret, webhook_allow_private=bool(webhook and allow_private_webhook))
        s.add(client)
        s.flush()
        row, key = new_key(s, client, scope_list, expires_at=_expiry(expires_days), reviewer=reviewer)
        rt.ledger.audit(s, "cli", "client.created", client.id, name=name, scopes=scope_list, rate=rate,
                        daily_generations=daily_generations, overlay_hash=overlay_digest, webhook=webhook,
                        webhook_allow_private=bool(webhook and allow_private_webhook))
        rt.ledger.audit(s, "cli", "key.created", row.id, client_id=client.id, key_id=row.id, scopes=scope_list,
                        reviewer=row.reviewer)
        result = {"client_id": client.id, "key_id": row.id, "key": key}
    if webhook_secret:
        result["webhook_secret"] = webhook_secret
    _print_secret(result, json_)


def _check_webhook(url: str | None, allow_private: bool) -> str | None:
    """The webhook URL, refused (exit 2, saying why) when it is not http(s) or points inside the network."""
    from ..auth import AuthError
    from ..netguard import WebhookURLRefused, check_webhook_url

    if url is None:
        return None
    try:
        return check_webhook_url(url, allow_private=allow_private)
    except WebhookURLRefused as exc:
        raise AuthError(f"--webhook {url[:200]!r}: {exc}") from None


@clients_app.command("set-webhook")
@handles_errors
def clients_set_webhook(
    name_or_id: Annotated[str, typer.Argument(help="Client name or id.")],
    url: Annotated[str | None, typer.Argument(help="The new webhook URL (omit with --remove).")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Stop calling the client's webhook.")] = False,
    allow_private_webhook: AllowPrivateOption = False,
    json_: JsonOption = False,
) -> None:
    """Change (or remove) a client's webhook; a new signing secret is printed once.

    The URL is checked as at `clients create`: http(s) only, and no loopback, private or
    link-local address unless --allow-private-webhook.
    """
    from ..auth import AuthError

    if remove == (url is not None):
        raise AuthError("give the new webhook URL, or --remove (not both)")
    checked = _check_webhook(url, allow_private_webhook)
    secret = "whsec_" + secrets.token_urlsafe(32) if checked else None
    rt = runtime()
    with rt.ledger.session() as s:
        client = _find_client(s, name_or_id)
        client.webhook_url, client.webhook_secret = checked, secret
        client.webhook_allow_private = bool(checked and allow_private_webhook)
        rt.ledger.audit(s, "cli", "client.webhook_set" if checked else "client.webhook_removed", client.id,
                        webhook=checked, webhook_allow_private=client.webhook_allow_private)
        result: dict[str, Any] = {"client_id": client.id, "webhook_url": checked,
                                  "webhook_allow_private": client.webhook_allow_private}
    if secret:
        result["webhook_secret"] = secret
    if json_:
        print(json.dumps(result))
    elif secret:
        console.print(f"webhook of {name_or_id} set; secret (shown once): [bold]{secret}[/]", highlight=False)
    else:
        console.print(f"webhook of {name_or_id} removed", highlight=False)


def _overlay(rt: Any, policy: Path | None) -> tuple[str | None, str | None]:
    if policy is None:
        return None, None
    from moderation import load_policy
    from moderation.errors import PolicyError
    from moderation.overlay import apply_overlay, overlay_hash

    try:
        text = policy.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"--policy {policy}: {exc.strerror or exc}") from None
    apply_overlay(load_policy(rt.settings.policy_path), text)  # PolicyError names the looser field
    return text, overlay_hash(text)


def _expiry(days: int | None) -> dt.datetime | None:
    from provenance.ledger.models import utcnow

    return utcnow() + dt.timedelta(days=days) if days else None


def _print_secret(result: dict[str, Any], json_: bool) -> None:
    if json_:
        print(json.dumps(result))
        return
    console.print(f"client [bold]{result['client_id']}[/]  key id {result['key_id']}")
    console.print(f"key (shown once, store it now): [bold green]{result['key']}[/]", highlight=False)
    if "webhook_secret" in result:
        console.print(f"webhook secret (shown once): [bold]{result['webhook_secret']}[/]", highlight=False)


@clients_app.command("list")
@handles_errors
def clients_list(json_: JsonOption = False) -> None:
    """Every client, one JSON object per line with --json."""
    from sqlalchemy import select

    from provenance.ledger.models import Client

    rt = runtime()
    with rt.ledger.session() as s:
        rows = [_client_dict(c) for c in s.scalars(select(Client).order_by(Client.created_at)).all()]
    for row in rows:
        if json_:
            print(json.dumps(row))
        else:
            state = "disabled" if row["disabled"] else "active"
            console.print(f"{row['client_id']}  {row['name']:<24} {state:<9} keys {len(row['keys'])}  "
                          f"rate {row['rate_limit'] or '-'}  daily {row['daily_generations'] or '-'}")


@clients_app.command("show")
@handles_errors
def clients_show(name_or_id: Annotated[str, typer.Argument(help="Client name or id.")],
                 json_: JsonOption = False) -> None:
    """One client with its keys (never their secrets)."""
    rt = runtime()
    with rt.ledger.session() as s:
        row = _client_dict(_find_client(s, name_or_id))
    print(json.dumps(row, indent=None if json_ else 2))


@clients_app.command("disable")
@handles_errors
def clients_disable(name_or_id: Annotated[str, typer.Argument(help="Client name or id.")]) -> None:
    """Disable a client: every one of its keys answers 401 from now on."""
    from provenance.ledger.models import utcnow

    rt = runtime()
    with rt.ledger.session() as s:
        client = _find_client(s, name_or_id)
        if client.disabled_at is None:
            client.disabled_at = utcnow()
            rt.ledger.audit(s, "cli", "client.disabled", client.id, client_id=client.id)
        console.print(f"client {client.name} disabled")


@keys_app.command("create")
@handles_errors
def keys_create(client: Annotated[str, typer.Argument(help="Client name or id.")], scopes: ScopesOption,
                expires_days: Annotated[int | None, typer.Option("--expires-days", min=1)] = None,
                reviewer: ReviewerOption = None, json_: JsonOption = False) -> None:
    """Another key for a client; printed once. A review key should name its holder (`--reviewer`)."""
    from ..auth import new_key, parse_scopes

    rt = runtime()
    scope_list = parse_scopes(scopes)
    with rt.ledger.session() as s:
        owner = _find_client(s, client)
        row, key = new_key(s, owner, scope_list, expires_at=_expiry(expires_days), reviewer=reviewer)
        rt.ledger.audit(s, "cli", "key.created", row.id, client_id=owner.id, key_id=row.id, scopes=scope_list,
                        reviewer=row.reviewer)
        result = {"client_id": owner.id, "key_id": row.id, "key": key}
    _print_secret(result, json_)


@keys_app.command("revoke")
@handles_errors
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (not the key).")]) -> None:
    """Revoke a key at once."""
    from provenance.ledger.models import ApiKey, utcnow

    from ..auth import AuthError

    rt = runtime()
    with rt.ledger.session() as s:
        row = s.get(ApiKey, key_id)
        if row is None:
            raise AuthError(f"no key {key_id!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            rt.ledger.audit(s, "cli", "key.revoked", row.id, client_id=row.client_id, key_id=row.id)
    console.print(f"key {key_id} revoked")


@keys_app.command("set-reviewer")
@handles_errors
def keys_set_reviewer(key_id: Annotated[str, typer.Argument(help="The key id (not the key).")],
                      name: Annotated[str, typer.Argument(help="The person who holds the key.")]) -> None:
    """Name the person who holds an existing key (keys made before reviewers had names cannot approve)."""
    from provenance.ledger.models import ApiKey

    from ..auth import AuthError, reviewer_name

    rt = runtime()
    with rt.ledger.session() as s:
        row = s.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            raise AuthError(f"no active key {key_id!r}")
        previous, row.reviewer = row.reviewer, reviewer_name(name)
        rt.ledger.audit(s, "cli", "key.reviewer_set", row.id, client_id=row.client_id, key_id=row.id,
                        reviewer=row.reviewer, previous=previous)
    console.print(f"key {key_id} is held by {name}")


@keys_app.command("rotate")
@handles_errors
def keys_rotate(key_id: Annotated[str, typer.Argument(help="The key id to replace.")],
                grace_minutes: Annotated[int, typer.Option("--grace-minutes", min=0,
                                                           help="The old key keeps working this long.")] = 0,
                json_: JsonOption = False) -> None:
    """A new key with the same scopes; the old one is revoked (after the grace period, if any)."""
    from provenance.ledger.models import ApiKey, utcnow

    from ..auth import AuthError, new_key

    rt = runtime()
    with rt.ledger.session() as s:
        old = s.get(ApiKey, key_id)
        if old is None or old.revoked_at is not None:
            raise AuthError(f"no active key {key_id!r}")
        row, key = new_key(s, old.client, list(old.scopes), expires_at=old.expires_at, reviewer=old.reviewer)
        if grace_minutes:
            old.expires_at = utcnow() + dt.timedelta(minutes=grace_minutes)
        else:
            old.revoked_at = utcnow()
        rt.ledger.audit(s, "cli", "key.rotated", old.id, client_id=old.client_id, key_id=row.id,
                        replaced=old.id, grace_minutes=grace_minutes)
        result = {"client_id": old.client_id, "key_id": row.id, "key": key, "replaced": old.id}
    _print_secret(result, json_)
