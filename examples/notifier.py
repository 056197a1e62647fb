"""An example notification service: segment changes and triggers, each delivered once.

    python -m examples.notifier --sink log:deliveries.jsonl [--group notifier]
    python -m examples.notifier --sink webhook:https://crm.example/hooks/segstream

A kafka-python consumer group reads the segment-changes and triggers topics.
For every record it

1. drops it if its id (``change_id`` / ``trigger_id``, deterministic) was
   delivered before — segstream may publish a change twice after a crash,
   and this service may read a record twice after its own;
2. delivers it to the sink;
3. commits the consumer offsets only after the whole polled batch is
   delivered, so a crash never skips a record.

Erasure: a segment change with ``change_kind`` ``customer_erased`` (after one
``exit`` per segment the customer was in) means the customer exercised the
right to be forgotten. The notifier delivers the exits and the erasure notice
(a CRM must forget the customer too), drops every other record of that
customer still pending — in the same poll, or read later, such as a trigger
published before the erasure — and makes the sink forget what it kept about
them: the log sink rewrites its file, keeping only the ids of the customer's
deliveries (so duplicates are still dropped).

The **log sink** appends one JSON line per delivery and fsyncs; the log *is*
the record of what was delivered, so delivery and bookkeeping cannot
disagree, and a restart rebuilds the delivered ids from it. The **webhook
sink** POSTs each record with an ``Idempotency-Key`` header (its id), and
remembers delivered ids in a side file after each 2xx answer; a crash
between the two re-sends once with the same key, which the receiver drops.

What to deliver can be narrowed (records left out are read and committed,
never delivered): ``--dimensions lifecycle,churn_risk`` keeps the segment
changes of those dimensions only, ``--kinds vip,churn_alert`` the triggers of
those kinds only, and ``--skip-initial`` leaves out first assignments
(``initial: true``: a new customer's onboarding, not a move). An erasure's
own records are always delivered.

Configuration comes from the same ``SEGSTREAM_*`` settings as the workers
(broker, topics, TLS/SASL).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from streams.producer import make_consumer
from streams.settings import Settings, load_settings

log = logging.getLogger("segstream.notifier")


class Sink(Protocol):
    """Where notifications go; knows what it has delivered."""

    def delivered(self) -> set[str]: ...

    def deliver(self, record_id: str, topic: str, record: dict[str, Any]) -> None: ...

    def forget(self, customer_id: str) -> None: ...


class LogSink:
    """Appends deliveries to a JSONL file; the file is the delivery record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def delivered(self) -> set[str]:
        ids: set[str] = set()
        if not self.path.exists():
            return ids
        with self.path.open("rb") as handle:
            for line in handle:
                try:
                    ids.add(orjson.loads(line)["id"])
                except (orjson.JSONDecodeError, KeyError):
                    continue  # a line cut short by a crash: not delivered
        return ids

    def deliver(self, record_id: str, topic: str, record: dict[str, Any]) -> None:
        line = orjson.dumps({"id": record_id, "topic": topic, "record": record}) + b"\n"
        with self.path.open("ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def forget(self, customer_id: str) -> None:
        """Rewrite the log without the customer's records; their ids stay (deduplication)."""
        if not self.path.exists():
            return
        kept: list[bytes] = []
        with self.path.open("rb") as handle:
            for line in handle:
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a line cut short by a crash: not delivered
                if entry.get("record", {}).get("customer_id") == customer_id:
                    entry["record"] = {}
                kept.append(orjson.dumps(entry) + b"\n")
        scratch = self.path.with_suffix(self.path.suffix + ".tmp")
        with scratch.open("wb") as handle:
            handle.writelines(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, self.path)


class WebhookSink:
    """POSTs each record with an ``Idempotency-Key``; remembers ids after a 2xx."""

    def __init__(self, url: str, ids_path: Path, timeout_s: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s): {url}")
        self.url = url
        self.ids = LogSink(ids_path)
        self.timeout_s = timeout_s

    def delivered(self) -> set[str]:
        return self.ids.delivered()

    def deliver(self, record_id: str, topic: str, record: dict[str, Any]) -> None:
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url,
            data=orjson.dumps({"topic": topic, "record": record}),
            headers={"Content-Type": "application/json", "Idempotency-Key": record_id},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise RuntimeError(f"webhook answered {response.status}")
        self.ids.deliver(record_id, topic, {})

    def forget(self, customer_id: str) -> None:
        # Only ids are kept here; the receiver got the customer_erased record.
        return None


def record_id(record: dict[str, Any]) -> str:
    """The deterministic id a record carries."""
    return str(record.get("change_id") or record["trigger_id"])


def is_erasure(record: dict[str, Any]) -> bool:
    """An erasure's own records: the exits and ``customer_erased`` (delivered, never dropped)."""
    return record.get("change_kind") in ("exit", "customer_erased")


def dropped(record: dict[str, Any], forgotten: set[str]) -> bool:
    """Whether a record belongs to an erased customer and is not the erasure's own.

    >>> trigger = {"trigger_id": "t", "customer_id": "c1", "kind": "win_back"}
    >>> erased = {"change_id": "e", "customer_id": "c1", "change_kind": "customer_erased"}
    >>> dropped(trigger, {"c1"}), dropped(erased, {"c1"}), dropped(trigger, set())
    (True, False, False)
    """
    return not is_erasure(record) and record.get("customer_id") in forgotten


@dataclass(frozen=True)
class Selection:
    """Which records to deliver; None: every dimension / every kind."""

    dimensions: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    skip_initial: bool = False

    def wanted(self, record: dict[str, Any]) -> bool:
        """Whether to deliver ``record`` (an erasure's own records always).

        >>> only = Selection(dimensions=frozenset({"lifecycle"}), kinds=frozenset({"vip"}),
        ...                  skip_initial=True)
        >>> change = {"change_id": "a", "dimension": "lifecycle", "to_segment": "new"}
        >>> only.wanted(change), only.wanted({**change, "initial": True})
        (True, False)
        >>> only.wanted({"change_id": "b", "dimension": "persona"})
        False
        >>> only.wanted({"trigger_id": "t", "kind": "vip"}), only.wanted({"trigger_id": "u",
        ...                                                               "kind": "win_back"})
        (True, False)
        """
        if is_erasure(record):
            return True
        if "trigger_id" in record:
            return self.kinds is None or record.get("kind") in self.kinds
        if self.skip_initial and record.get("initial"):
            return False
        return self.dimensions is None or record.get("dimension") in self.dimensions


def run(
    settings: Settings,
    sink: Sink,
    group_id: str,
    max_idle_polls: int | None = None,
    selection: Selection | None = None,
) -> None:
    """Consume and deliver until stopped (or ``max_idle_polls`` empty polls in a row)."""
    selection = selection or Selection()
    names = settings.topic_names()
    topics = [names["segment_changes"], names["triggers"]]
    consumer = make_consumer(settings, *topics, group_id=group_id)
    delivered = sink.delivered()
    forgotten: set[str] = set()  # erased customers, in memory only
    log.info("notifier started group=%s already_delivered=%d", group_id, len(delivered))
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    idle = 0
    try:
        while not stopping:
            polled = consumer.poll(timeout_ms=500)
            records = [r for batch in polled.values() for r in batch]
            if not records:
                # Idle only counts once partitions are assigned (not while joining).
                idle += 1 if consumer.assignment() else 0
                if max_idle_polls is not None and idle >= max_idle_polls:
                    break
                continue
            idle = 0
            decoded = [(message.topic, orjson.loads(message.value)) for message in records]
            # Customers erased in this poll: their other records in it are dropped
            # too, before or after the erasure, and any read later.
            erased = [
                r["customer_id"] for _, r in decoded if r.get("change_kind") == "customer_erased"
            ]
            forgotten.update(erased)
            for topic, record in decoded:
                rid = record_id(record)
                if rid in delivered or dropped(record, forgotten) or not selection.wanted(record):
                    continue
                sink.deliver(rid, topic, record)
                delivered.add(rid)
            for customer_id in erased:
                sink.forget(customer_id)
            # Only now: everything polled is delivered.
            consumer.commit()
    finally:
        consumer.close()


def parse_sink(spec: str, state_dir: Path) -> Sink:
    """``log:PATH`` or ``webhook:URL``."""
    kind, _, target = spec.partition(":")
    if kind == "log" and target:
        return LogSink(Path(target))
    if kind == "webhook" and target:
        return WebhookSink(target, state_dir / "webhook-delivered.jsonl")
    raise SystemExit(f"--sink must be log:PATH or webhook:URL, not {spec!r}")


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sink", required=True, help="log:PATH or webhook:URL")
    parser.add_argument("--group", default="segstream-notifier", help="consumer group id")
    parser.add_argument("--state-dir", type=Path, default=Path("var/notifier"))
    parser.add_argument("--max-idle-polls", type=int, default=None, help="stop when idle (tests)")
    parser.add_argument("--dimensions", help="deliver changes of these dimensions only (a,b,…)")
    parser.add_argument("--kinds", help="deliver triggers of these kinds only (a,b,…)")
    parser.add_argument(
        "--skip-initial", action="store_true", help="leave out first assignments (initial: true)"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    selection = Selection(
        dimensions=frozenset(args.dimensions.split(",")) if args.dimensions else None,
        kinds=frozenset(args.kinds.split(",")) if args.kinds else None,
        skip_initial=args.skip_initial,
    )
    sink = parse_sink(args.sink, args.state_dir)
    run(load_settings(), sink, args.group, args.max_idle_polls, selection)


if __name__ == "__main__":
    main()
