"""The bridge between the policy's `label:` section (moderation) and the renderer (provenance).

`moderation` parses and validates the section (and holds client overlays to "stronger only");
`provenance.label` draws the label; neither may import the other, so this module turns the one
into the other: the policy's `LabelPolicy`, raised by a run's `--label` mode, with `{client}`
filled in with the client's display name, becomes the `LabelSpec` the publisher burns in.
"""

from __future__ import annotations

from typing import Any

from moderation.label_policy import LabelPolicy, strengthen_mode
from provenance.label import LabelSpec
from provenance.ledger import Ledger
from provenance.ledger.models import Client


def policy_label(moderator: Any) -> LabelPolicy:
    """The label section of the policy a moderator screens with (a client's overlay included).

    A moderator without a policy (a stand-in) gets the default label, never none: fail closed.
    """
    policy = getattr(moderator, "policy", None)
    label = getattr(policy, "visible_label", None)
    return label if isinstance(label, LabelPolicy) else LabelPolicy()


def check_requested_mode(label: LabelPolicy, mode: str | None) -> LabelPolicy:
    """`label` raised to a run's requested mode; `PolicyError` (named) for a mode weaker than the policy's."""
    return label if mode is None else strengthen_mode(label, mode)


def client_display_name(ledger: Ledger, client_id: str | None, fallback: str | None = None) -> str | None:
    """The client's name as the label shows it (`{client}`), or `fallback` (the request's client text)."""
    if client_id is None:
        return fallback
    with ledger.session() as s:
        client = s.get(Client, client_id)
        return client.name if client is not None else fallback


def label_spec(label: LabelPolicy, client_name: str | None = None) -> LabelSpec:
    """The renderer's spec for a policy label, `{client}` filled in."""
    return LabelSpec(mode=label.mode, text=label.text, position=label.position, size=label.size,
                     opacity=label.opacity).with_client(client_name)


def resolve_label(ledger: Ledger, moderator: Any, requested_mode: str | None, client_id: str | None,
                  client: str | None = None) -> LabelSpec:
    """Everything above in one call: the label one publish burns in."""
    label = check_requested_mode(policy_label(moderator), requested_mode)
    name = client_display_name(ledger, client_id, client) if "{client}" in label.text else None
    return label_spec(label, name)
