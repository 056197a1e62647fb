"""Typed records for every topic, with a ``schema_version`` field.

These msgspec Structs are the Python side of each contract; the JSON Schema
files in ``schemas/json/`` are generated from them (``segstream schemas
export``) and a test keeps the two identical. Input records are normalised
on the way in: event time to UTC epoch milliseconds (``ts``), currency to
upper case. msgspec validates a parsed event in about a microsecond, which is
why it was chosen over pydantic (about six) for the per-event hot path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta, Struct, field
from msgspec.structs import force_setattr

from schemas.event_time import parse_event_time

SCHEMA_VERSION: Literal[1] = 1

ClickType = Literal[
    "session_start",
    "session_end",
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout_start",
    "email_open",
    "email_click",
    "app_open",
    "push_open",
    "social_interaction",
    "identify",
    "track",
]
ClickChannel = Literal["web", "app", "email", "social", "store"]
PurchaseType = Literal["order", "refund"]
PurchaseChannel = Literal["web", "app", "store", "delivery", "click_and_collect"]
SupportType = Literal[
    "ticket_opened",
    "ticket_resolved",
    "csat_response",
    "nps_response",
    "ces_response",
    "complaint",
]
SupportChannel = Literal["email", "chat", "phone", "social"]
Priority = Literal["low", "normal", "high", "urgent"]

MAX_ID_CHARS = 128
Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)]
Text = Annotated[str, Meta(max_length=4096)]
Money = Annotated[float, Meta(ge=0)]
# A custom event's name: lower-case words joined by underscores.
CustomName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
# A custom event's properties: flat, at most 50, each a string (up to 1,024
# characters), a number, a boolean or null.
PropertyName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
PropertyValue = Annotated[str, Meta(max_length=1024)] | int | float | bool | None
Properties = Annotated[dict[PropertyName, PropertyValue], Meta(max_length=50)]

SCORE_RANGES: dict[str, tuple[float, float]] = {
    "csat_response": (1, 5),
    "nps_response": (0, 10),
    "ces_response": (1, 7),
}


class ClickEvent(Struct, frozen=True, kw_only=True):
    """A clickstream / digital-engagement event (topic ``clickstream``).

    ``customer_id`` may be absent only for anonymous browsing, which then
    carries ``anonymous_id``; ``identify`` carries both. ``ts`` accepts
    ISO-8601 with an offset or epoch ms and is stored as UTC epoch ms.
    ``stitched`` marks anonymous browsing that segstream re-issued under the
    customer's id after an ``identify``; ``identified_by`` is that identify's
    event id on browsing that was held until it (once per event, however old).

    ``track`` is the shop's own event: ``name`` says what happened (for
    example ``store_visit``; never one of the built-in types) and
    ``properties`` carries its details, flat. Any name is accepted; the
    profile counts each, and traits and audiences can read them.
    """

    event_id: Id
    ts: int | str
    type: ClickType
    schema_version: Literal[1] = SCHEMA_VERSION
    customer_id: Id | None = None
    anonymous_id: Id | None = None
    session_id: Id | None = None
    channel: ClickChannel = "web"
    page: Text | None = None
    product_id: Id | None = None
    category: Id | None = None
    duration_ms: Annotated[int, Meta(ge=0, le=86_400_000)] | None = None
    campaign: Id | None = None
    query: Text | None = None
    stitched: bool = False
    identified_by: Id | None = None
    historical: bool = False
    name: CustomName | None = None
    properties: Properties | None = None

    def __post_init__(self) -> None:
        _normalise_ts(self)
        if self.type == "track":
            if self.name is None:
                raise ValueError("a track event needs a name")
            if self.name in _CLICK_TYPES:
                raise ValueError(f"a track event's name must not be a built-in type ({self.name})")
        elif self.name is not None or self.properties is not None:
            raise ValueError("only track events carry name and properties")


class LineItem(Struct, frozen=True, kw_only=True):
    """One line of an order."""

    sku: Id
    category: Id | None = None
    qty: Annotated[int, Meta(ge=1, le=100_000)] = 1
    unit_price: Money = 0.0


class PurchaseEvent(Struct, frozen=True, kw_only=True):
    """An order or a refund (topic ``purchases``). ``amount`` is what was paid, in ``currency``.

    A refund carries the ``order_id`` of the order it pays back, and the
    amount paid back (part of the order, or all of it). ``base_amount`` is
    set by segstream's decoder: ``amount`` in the base currency at the
    event's date; producers leave it out (a value sent is replaced).
    """

    event_id: Id
    ts: int | str
    type: PurchaseType
    customer_id: Id
    order_id: Id
    amount: Annotated[float, Meta(gt=0)]
    schema_version: Literal[1] = SCHEMA_VERSION
    currency: Annotated[str, Meta(pattern=r"^[A-Za-z]{3}$")] = "EUR"
    items: Annotated[list[LineItem], Meta(max_length=1000)] = field(default_factory=list)
    discount: Money = 0.0
    channel: PurchaseChannel = "web"
    base_amount: (
        Annotated[
            float,
            Meta(description="Set by segstream: amount in the base currency; not for producers."),
        ]
        | None
    ) = None
    historical: bool = False

    def __post_init__(self) -> None:
        _normalise_ts(self)
        if not self.currency.isupper():
            force_setattr(self, "currency", self.currency.upper())


class SupportEvent(Struct, frozen=True, kw_only=True):
    """A ticket, survey answer or complaint (topic ``support``).

    ``historical`` (on every input event) is set by ``segstream replay
    --historical``: the event is part of a backfill of past history.
    """

    event_id: Id
    ts: int | str
    type: SupportType
    customer_id: Id
    schema_version: Literal[1] = SCHEMA_VERSION
    ticket_id: Id | None = None
    channel: SupportChannel | None = None
    priority: Priority | None = None
    first_response_s: Money | None = None
    resolution_s: Money | None = None
    score: float | None = None
    text: Text | None = None
    historical: bool = False

    def __post_init__(self) -> None:
        _normalise_ts(self)


_CLICK_TYPES = frozenset(get_args(ClickType))


def _normalise_ts(event: ClickEvent | PurchaseEvent | SupportEvent) -> None:
    # msgspec turns a ValueError here into a ValidationError naming the struct.
    if not isinstance(event.ts, int):
        force_setattr(event, "ts", parse_event_time(event.ts))


InputEvent = ClickEvent | PurchaseEvent | SupportEvent

INPUT_MODELS: dict[str, type[InputEvent]] = {
    "clickstream": ClickEvent,
    "purchases": PurchaseEvent,
    "support": SupportEvent,
}


class DeadLetter(Struct, frozen=True, kw_only=True):
    """An input message segstream could not accept, with where it came from and why.

    ``key_b64`` and ``value_b64`` hold the original bytes, base64, or only
    their first ``SEGSTREAM_DEAD_LETTER_MAX_BYTES`` when ``truncated``;
    ``key_size_bytes``, ``value_size_bytes`` and the SHA-256 digests
    (lower-case hex) describe the whole originals. ``error_kind`` is
    machine-readable (``not_json``, ``key_mismatch``, ...), ``error`` is for
    people; ``failed_at_ms`` is the wall-clock time of rejection. The size and
    digest fields are absent from dead letters written before they existed.
    """

    source_topic: str
    partition: int
    offset: int
    key_b64: str | None
    value_b64: str | None
    error_kind: str
    error: str
    message_timestamp_ms: int | None
    failed_at_ms: int
    key_size_bytes: int | None = None
    value_size_bytes: int | None = None
    key_sha256: str | None = None
    value_sha256: str | None = None
    truncated: bool = False
    schema_version: Literal[1] = SCHEMA_VERSION


ChangeKind = Literal["change", "exit", "customer_erased"]


class SegmentChange(Struct, frozen=True, kw_only=True):
    """A customer moved from one segment to another in one dimension.

    ``change_id`` is deterministic, so consumers drop duplicates by it; ``ts``
    is the event time of the change.

    ``change_kind`` (added in a backward-compatible way: absent means
    ``change``) marks the records of an erasure. ``exit``: the customer left
    ``from_segment`` of ``dimension`` because they were erased, ``to_segment``
    is null. ``customer_erased``: dimension ``customer``, both segments null,
    sent after the exits; a consumer must forget everything it holds about
    the customer and drop anything still pending for them. ``ts`` of these
    two is the wall-clock time of the erasure.

    ``historical`` (also backward compatible: absent means false) marks a
    change worked out during a backfill (``segstream replay --historical``)
    for a moment long past: it says what the customer's segment was from
    ``ts`` on, not that anything happened now. Update records; send nothing.

    ``initial`` (backward compatible: absent means false) marks a customer's
    first assignment in the dimension (``from_segment`` is null): onboarding,
    not a move. A consumer that acts on moves can skip these.

    ``scores`` are the model's scores as of ``ts``. A user audience's move
    decided with no built-in dimension (a window edge, a ``days_since``
    threshold) carries those of the customer's latest full decision instead,
    the ones its built-in segments stand on, and says when they are as of in
    ``scores.as_of_ms``.
    """

    change_id: str
    customer_id: str
    dimension: str
    from_segment: str | None
    to_segment: str | None
    ts: int
    reason: str
    scores: dict[str, Any] = field(default_factory=dict)
    model_version: int | None = None
    change_kind: ChangeKind = "change"
    historical: bool = False
    initial: bool = False
    schema_version: Literal[1] = SCHEMA_VERSION


class Trigger(Struct, frozen=True, kw_only=True):
    """An action a notification service should take for one customer.

    ``kind`` is one of cart_abandoned, win_back, churn_alert, nps_detractor,
    negative_feedback, vip, sla_breach, welcome_back; ``trigger_id`` is
    deterministic.
    """

    trigger_id: str
    customer_id: str
    kind: str
    ts: int
    reason: str
    payload: dict[str, Any] = field(default_factory=dict)
    schema_version: Literal[1] = SCHEMA_VERSION


class ErasureRequest(Struct, frozen=True, kw_only=True):
    """A right-to-be-forgotten request (topic ``erasure-requests``).

    Keyed by ``customer_id``; segstream itself also sends requests keyed by
    an ``anonymous_id`` linked to an erased customer.
    """

    request_id: Id
    customer_id: Id | None = None
    anonymous_id: Id | None = None
    requested_at_ms: int | None = None
    schema_version: Literal[1] = SCHEMA_VERSION


class ErasureAudit(Struct, frozen=True, kw_only=True):
    """Proof that an erasure ran, without personal data.

    ``subject_hash`` is a keyed hash (HMAC-SHA256) of the erased id, so an
    auditor holding the id and the key can match it; nobody else can.
    """

    request_id: str
    subject_hash: str
    erased: list[str]
    erased_at_ms: int
    schema_version: Literal[1] = SCHEMA_VERSION


CONTRACTS: dict[str, type[Struct]] = {
    "clickstream": ClickEvent,
    "purchases": PurchaseEvent,
    "support": SupportEvent,
    "dead_letter": DeadLetter,
    "segment_change": SegmentChange,
    "trigger": Trigger,
    "erasure_request": ErasureRequest,
    "erasure_audit": ErasureAudit,
}


def json_schema(contract: str) -> dict[str, Any]:
    """The JSON Schema of one contract, as published in ``schemas/json/``."""
    schema: dict[str, Any] = msgspec.json.schema(CONTRACTS[contract])
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"segstream {contract} v{SCHEMA_VERSION}"
    return schema
