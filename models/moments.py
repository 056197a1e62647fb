"""When a customer is scored and learned from — and the delayed churn labels.

The worker does not score or learn on every click. A customer's *moments* are

* **activity moments** — their first event after ``moment_interval`` of
  event time since the previous moment (weekly by default), taken before the
  event is applied;
* **quiet ticks** — every week of silence after their last event for
  thirteen weeks, then every four weeks up to two years (driven by the
  partition's watermark and the deadline index in :mod:`models.deadlines`,
  never by a scan of all customers): the churn model learns from customers
  as long as they are scored, not only from the recently active.

So every customer — active or quiet — is seen about once a week: the
examples the clusterer learns from are a weekly census of the customer
base, not a sample biased towards the busiest customers.

At each moment the customer's features (as of that moment) go to the
trainer as a **cluster example**, and a customer who has ordered is
**scored**: features, score and moment are kept in the profile
(``churn_pending``, at most :data:`MAX_PENDING` at once). A pending
snapshot's label is 0 if the customer orders within H days of its moment
and 1 otherwise; it **resolves** once event time passes the moment plus H,
whatever the label, and a **churn example** (features, label, and the score
given at the moment, for honest progressive validation) goes to the trainer.

Resolving a 0 only at the horizon, though it is known at the order, keeps
the trainer's examples free of label-delay bias: were 0s sent at once, the
moments of the last H days would reach the trainer only as 0s, and where
customers keep arriving (so many moments are recent) the model would learn
too low a churn rate. Likewise snapshots are taken at most every H /
(``MAX_PENDING`` − 1) of event time, so the bound on pending snapshots never
drops moments of silent customers (whose labels wait longest) more than those
of buyers.

Quiet ticks are what teach the model silence: a customer scored only when
active would always look freshly active. Examples carry no customer id:
their id is a keyed hash, so the trainer can drop duplicates without
holding personal data.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.churn_features import CHURN_FEATURES, bgnbd_inputs, churn_logit, model_inputs
from models.clv import new_bgnbd, p_no_purchase
from models.features import FEATURES
from models.ids import keyed_id
from models.profile import DAY_MS, Profile, ProfileConfig
from models.state import ChurnPending, PopulationState

Example = dict[str, Any]

# Churn snapshots a customer may have pending at once (bounded state).
MAX_PENDING = 8


class Scorer(Protocol):
    """Anything that scores a feature vector (a :class:`models.training.ModelBundle`)."""

    @property
    def horizon_days(self) -> float: ...

    def score(self, x: Mapping[str, float]) -> dict[str, Any]: ...

    def persona_of(self, x: Mapping[str, float]) -> str | None: ...


# Quiet ticks: weekly for 13 weeks of silence, then every 4 weeks up to 2 years.
QUIET_TICKS_MS: tuple[int, ...] = tuple(
    week * 7 * DAY_MS for week in (*range(1, 14), *range(17, 105, 4))
)


@dataclass
class Moments:
    """Takes customers' moments and collects the training examples they produce.

    Parameters
    ----------
    scorer
        The model bundle customers are scored with at their moments.
    horizon_ms
        H, the churn horizon, in milliseconds.
    profile_config
        Settings the profiles were built with (for the features).
    id_key
        Key of the hash that turns (customer, moment) into an example id.
    moment_interval_ms
        Least event time between two activity moments.
    quiet_ticks_ms
        Silences after the last event at which a quiet tick is taken.
    sample_rate
        Share of examples sent to the trainer, chosen by example id, so a
        replay (or a batch consumed again after a crash) keeps the same ones.
        Moments and pending churn labels are kept for every customer either
        way; only the examples are thinned, for the one trainer's sake.
    """

    scorer: Scorer
    horizon_ms: int
    profile_config: ProfileConfig
    id_key: bytes
    moment_interval_ms: int = 7 * DAY_MS
    quiet_ticks_ms: tuple[int, ...] = QUIET_TICKS_MS
    sample_rate: float = 1.0
    examples: list[Example] = field(default_factory=list)

    def __post_init__(self) -> None:
        # In ascending order: the next tick is found by bisection.
        self.quiet_ticks_ms = tuple(sorted(self.quiet_ticks_ms))

    def example_id(self, customer_id: str, kind: str, moment_ms: int) -> str:
        """Deterministic, pseudonymous id of an example."""
        return keyed_id(self.id_key, f"{customer_id}|{kind}|{moment_ms}", 20)

    def sampled(self, example_id: str) -> bool:
        """Whether the example with this id goes to the trainer (``sample_rate``)."""
        return self.sample_rate >= 1.0 or int(example_id[:8], 16) < self.sample_rate * 16**8

    def before_event(
        self,
        customer_id: str,
        profile: Profile,
        event: Mapping[str, Any],
        population: PopulationState | None = None,
    ) -> None:
        """Resolve labels and take an activity moment before ``event`` is applied.

        ``population`` holds the BG/NBD fit the churn features use.
        """
        ts = int(event["ts"])
        self.on_deadline(customer_id, profile, ts, population)
        if event["topic"] == "purchases" and event["type"] == "order":
            for pending in profile.get("churn_pending", []):
                if pending["scored_ms"] <= ts:
                    pending["y"] = 0
        last_seen = profile["last_seen_ms"] or ts
        if ts >= last_seen and ts >= profile.get("moment_ms", -self.moment_interval_ms) + (
            self.moment_interval_ms
        ):
            self._moment(customer_id, profile, ts, population)

    def on_deadline(
        self,
        customer_id: str,
        profile: Profile,
        now_ms: int,
        population: PopulationState | None = None,
    ) -> None:
        """Event time reached ``now_ms``: take passed quiet ticks, resolve expired labels."""
        for tick in self._ticks_until(profile, now_ms):
            self._resolve_expired(customer_id, profile, tick, population)
            self._moment(customer_id, profile, tick, population)
        self._resolve_expired(customer_id, profile, now_ms, population)

    def next_deadline(self, profile: Profile | None) -> int | None:
        """Event time at which the customer's state changes with no new event."""
        if profile is None or profile["last_seen_ms"] is None:
            return None
        last_seen = profile["last_seen_ms"]
        after = max(profile.get("moment_ms", -1), last_seen)
        # The first quiet tick not taken yet (asked after every event: a bisection).
        ticks = self.quiet_ticks_ms
        i = bisect_right(ticks, after - last_seen)
        due = last_seen + ticks[i] if i < len(ticks) else None
        for pending in profile.get("churn_pending", ()):
            label_due = pending["scored_ms"] + self.horizon_ms + 1
            if due is None or label_due < due:
                due = label_due
        return due

    def due(self, profile: Profile, now_ms: int) -> bool:
        """Whether a quiet tick or a churn label of the customer is due by ``now_ms``."""
        deadline = self.next_deadline(profile)
        return deadline is not None and deadline <= now_ms

    def _ticks_until(self, profile: Profile, now_ms: int) -> list[int]:
        last_seen = profile["last_seen_ms"]
        if last_seen is None:
            return []
        after = max(profile.get("moment_ms", -1), last_seen)
        ticks = self.quiet_ticks_ms
        first = bisect_right(ticks, after - last_seen)
        return [last_seen + q for q in ticks[first : bisect_right(ticks, now_ms - last_seen)]]

    def _moment(
        self, customer_id: str, profile: Profile, ts: int, population: PopulationState | None
    ) -> None:
        profile["moment_ms"] = ts
        bgnbd = population["bgnbd"] if population is not None else new_bgnbd()
        x = model_inputs(profile, self.profile_config, ts, bgnbd, self.scorer.horizon_days)
        example_id = self.example_id(customer_id, "cluster", ts)
        if self.sampled(example_id):
            clustering = {name: x[name] for name in FEATURES}
            self.examples.append(
                {"example_id": example_id, "kind": "cluster", "x": clustering, "ts": ts}
            )
        pending: list[ChurnPending] = profile.setdefault("churn_pending", [])
        spacing = self.horizon_ms // (MAX_PENDING - 1)
        if (
            profile["last_order_ms"] is not None
            and len(pending) < MAX_PENDING
            and (not pending or ts >= pending[-1]["scored_ms"] + spacing)
        ):
            scores = self.scorer.score(x)
            summary = bgnbd_inputs(profile, ts)
            pending.append(
                {
                    "scored_ms": ts,
                    # Values in CHURN_FEATURES order: profiles are written on
                    # every commit, so the snapshot is kept without the names.
                    "x": [x[name] for name in CHURN_FEATURES],
                    "p": scores["churn_probability"],
                    "source": scores["churn_source"],
                    "version": scores["model_version"],
                }
            )
            if summary is not None:
                pending[-1]["bg"] = list(summary)

    def _rebased(
        self, pending: ChurnPending, population: PopulationState | None
    ) -> dict[str, float]:
        """The example's features, its base worked out with today's BG/NBD fit.

        The model learns a correction to the base it will be scored with,
        not to the fit of H days ago (which learning has moved since).
        """
        x = dict(zip(CHURN_FEATURES, pending["x"], strict=True))
        bg = pending.get("bg")
        if bg is not None and population is not None:
            horizon_days = self.horizon_ms / DAY_MS
            p = p_no_purchase(population["bgnbd"], int(bg[0]), bg[1], bg[2], horizon_days)
            x["bgnbd_churn_logit"] = churn_logit(p)
        return x

    def _resolve_expired(
        self,
        customer_id: str,
        profile: Profile,
        now_ms: int,
        population: PopulationState | None,
    ) -> None:
        for pending in list(profile.get("churn_pending", [])):
            if now_ms > pending["scored_ms"] + self.horizon_ms:
                at = pending["scored_ms"] + self.horizon_ms
                self._resolve(customer_id, profile, pending, pending.get("y", 1), at, population)

    def _resolve(
        self,
        customer_id: str,
        profile: Profile,
        pending: ChurnPending,
        y: int,
        ts: int,
        population: PopulationState | None,
    ) -> None:
        profile["churn_pending"].remove(pending)
        example_id = self.example_id(customer_id, "churn", pending["scored_ms"])
        if not self.sampled(example_id) or len(pending["x"]) != len(CHURN_FEATURES):
            return  # not sampled, or scored on the inputs of an older model
        self.examples.append(
            {
                "example_id": example_id,
                "kind": "churn",
                "x": self._rebased(pending, population),
                "y": y,
                "p": pending["p"],
                "source": pending["source"],
                "scored_with_version": pending["version"],
                "ts": ts,
            }
        )
