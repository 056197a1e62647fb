"""The model bundle: churn model, clusterer and their quality, learned in one place.

Training examples (:mod:`models.moments`) from every worker go to one
trainer, which folds them into a :class:`ModelBundle` and publishes it as a
versioned snapshot (:func:`encode_snapshot`); every worker scores with the
newest snapshot it has verified (:func:`decode_snapshot`). ``segstream
evaluate`` trains and scores one bundle in process.

Snapshots are pickles, so each carries an HMAC-SHA256 of its bytes under a
key from the settings, checked before anything is unpickled. The key is not
the only defence: the snapshot is then read by a restricted unpickler that
resolves only the classes a bundle is made of (see :func:`decode_snapshot`),
so even a correctly signed snapshot cannot run code.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import io
import math
import pickle
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from river import drift

from models.churn import ChurnModel
from models.churn_features import CHURN_FEATURES
from models.clustering import Clusterer, persona_label, persona_labels
from models.evaluation import brier, exact_auc, log_loss
from models.features import FEATURES
from schemas.errors import SegstreamError

SNAPSHOT_MAGIC: Final = b"SGSM\x05"  # bump when the pickled classes change shape
_DIGEST_BYTES: Final = 32
# Example ids remembered by the trainer to drop examples sent twice (a worker
# crash replays uncommitted events, which re-send their examples).
_SEEN_IDS: Final = 4096


class SnapshotError(SegstreamError):
    """A model snapshot that is not ours: bad framing or a failed HMAC check."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Settings of the online models (all come from :class:`Settings`)."""

    horizon_days: float = 90.0
    clusters: int = 6
    cluster_halflife: float = 0.02
    warmup_examples: int = 300
    min_labels: int = 30
    seed: int = 42
    quality_window: int = 1000


class ModelQuality:
    """Churn predictions against resolved labels, beside trivial baselines.

    Every resolved example carries the probability the customer was given
    when scored — before the label existed — so these are honest
    progressive-validation figures over the last ``window`` labels: exact
    ROC AUC, log loss and Brier score of the model, and on the same labels
    the baselines: recency alone (days since the last order; AUC only, it is
    no probability) and the BG/NBD fit's own probability of no order in H.
    ``lift`` is the model's AUC less the best baseline's. Also the rolling
    churn rate, and ADWIN drift alarms on the label stream.
    """

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        # (label, model probability, recency score, BG/NBD probability)
        self.recent: deque[tuple[int, float, float, float | None]] = deque(maxlen=window)
        self.adwin = drift.ADWIN()
        self.drifts = 0
        self.resolved = 0
        self.by_source: dict[str, int] = {}

    @property
    def labels(self) -> list[int]:
        return [y for y, _, _, _ in self.recent]

    def update(
        self,
        y: int,
        p: float,
        source: str,
        x: Mapping[str, float] | None = None,
    ) -> None:
        """Record one resolved label ``y``, the probability ``p`` given earlier,
        and the churn features ``x`` it was given at (for the baselines)."""
        x = x or {}
        recency = float(x.get("recency_log", 0.0))
        bgnbd = None
        if x.get("has_ordered") and "bgnbd_churn_logit" in x:
            bgnbd = 1 / (1 + math.exp(-float(x["bgnbd_churn_logit"])))
        self.recent.append((y, p, recency, bgnbd))
        self.adwin.update(float(y))
        if self.adwin.drift_detected:
            self.drifts += 1
        self.resolved += 1
        self.by_source[source] = self.by_source.get(source, 0) + 1

    def report(self) -> dict[str, Any]:
        """Current figures; an AUC is ``None`` until both classes were seen in the window."""
        labels = self.labels
        model = [p for _, p, _, _ in self.recent]
        with_bgnbd = [(y, b) for y, _, _, b in self.recent if b is not None]

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        auc = exact_auc(labels, model)
        baselines = {
            "recency": {"roc_auc": rounded(exact_auc(labels, [r for _, _, r, _ in self.recent]))},
            "bgnbd": {
                "labels": len(with_bgnbd),
                "roc_auc": rounded(
                    exact_auc([y for y, _ in with_bgnbd], [b for _, b in with_bgnbd])
                ),
                "log_loss": rounded(
                    log_loss([y for y, _ in with_bgnbd], [b for _, b in with_bgnbd])
                ),
                "brier": rounded(brier([y for y, _ in with_bgnbd], [b for _, b in with_bgnbd])),
            },
        }
        best = [b["roc_auc"] for b in baselines.values() if b["roc_auc"] is not None]
        return {
            "resolved_labels": self.resolved,
            "labels_by_score_source": dict(sorted(self.by_source.items())),
            "window": self.window,
            "roc_auc": rounded(auc),
            "log_loss": rounded(log_loss(labels, model)),
            "brier": rounded(brier(labels, model)),
            "baselines": baselines,
            "lift": rounded(auc - max(best)) if auc is not None and best else None,
            "churn_rate": round(sum(labels) / len(labels), 4) if labels else None,
            "churn_rate_drifts": self.drifts,
        }


class ModelBundle:
    """Everything the trainer learns and the workers score with.

    Examples
    --------
    >>> bundle = ModelBundle(ModelConfig(warmup_examples=6, clusters=2))
    >>> bundle.score(dict.fromkeys(FEATURES, 0.5))["churn_source"]
    'prior'
    >>> key = b"secret"
    >>> decode_snapshot(encode_snapshot(bundle, key), key).version == bundle.version
    True
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.version = 0
        self.created_ms: int | None = None
        self.trained_through = -1
        self.examples = 0
        self.churn = ChurnModel(config.horizon_days, config.min_labels)
        self.clusters = Clusterer(
            n_clusters=config.clusters,
            halflife=config.cluster_halflife,
            warmup=config.warmup_examples,
            seed=config.seed,
        )
        self.quality = ModelQuality(config.quality_window)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._personas: tuple[int, dict[int, str]] = (-1, {})

    def learn(self, example: Mapping[str, Any], offset: int | None = None) -> bool:
        """Learn one training example; ``False`` if it was seen or already learned.

        ``offset`` is the example's position in the training topic: a
        restarted trainer skips what its snapshot already learned.
        """
        if offset is not None:
            if offset <= self.trained_through:
                return False
            self.trained_through = offset
        example_id = str(example["example_id"])
        if example_id in self._seen:
            return False
        self._seen[example_id] = None
        if len(self._seen) > _SEEN_IDS:
            self._seen.popitem(last=False)
        if example["kind"] == "cluster":
            x = {name: float(example["x"][name]) for name in FEATURES if name in example["x"]}
            self.clusters.learn_one(x)
        else:
            x = {n: float(example["x"][n]) for n in CHURN_FEATURES if n in example["x"]}
            y = int(example["y"])
            self.quality.update(y, float(example["p"]), str(example["source"]), x)
            self.churn.learn_one(x, y)
        self.examples += 1
        return True

    def personas(self) -> dict[int, str]:
        """Persona label per cluster id, from the current centroids."""
        return persona_labels(self.clusters.centroids())

    def persona(self, cluster_id: int | None) -> str | None:
        """The persona label of one cluster (``None`` for none), from its current
        centroid: read again only once the model has learned since."""
        if cluster_id is None or not self.clusters.ready:
            return None
        stamp, labels = self._personas
        if stamp != self.clusters.examples:
            labels = {}
            self._personas = (self.clusters.examples, labels)
        label = labels.get(cluster_id)
        if label is None:
            label = labels[cluster_id] = persona_label(self.clusters.centroid(cluster_id))
        return label

    def persona_of(self, x: Mapping[str, float]) -> str | None:
        """The persona of the cluster nearest to feature vector ``x`` (None before seeding)."""
        return self.persona(self.clusters.predict_one(x))

    @property
    def horizon_days(self) -> float:
        """H: the churn probability is of no order in the next H days."""
        return self.config.horizon_days

    def score(self, x: Mapping[str, float]) -> dict[str, Any]:
        """Churn probability with its explanation, and cluster with persona.

        ``x`` holds both models' inputs (:func:`models.churn_features.model_inputs`).
        """
        p, source, reasons = self.churn.predict_one(x)
        cluster_id = self.clusters.predict_one({n: x[n] for n in FEATURES if n in x})
        return {
            "churn_probability": p,
            "churn_source": source,
            "churn_explanation": reasons,
            "cluster_id": cluster_id,
            "persona": self.persona(cluster_id),
            "model_version": self.version,
        }

    def describe(self) -> dict[str, Any]:
        """What ``GET /models`` shows: version, training, quality, clusters."""
        personas = self.personas()
        sizes = self.clusters.sizes
        return {
            "version": self.version,
            "created_ms": self.created_ms,
            "examples": self.examples,
            "trained_through_offset": self.trained_through,
            "churn": {
                "horizon_days": self.config.horizon_days,
                "source": (
                    "model" if self.churn.trained else "bgnbd" if self.churn.calibrated else "prior"
                ),
                # The calibrated BG/NBD base and the learned correction, each
                # predicted before learning every label: the correction is
                # served only while it is the better of the two.
                "validation": self.churn.validation(),
                "labels": {"retained": self.churn.counts[0], "churned": self.churn.counts[1]},
                "min_labels_per_class": self.config.min_labels,
                "quality": self.quality.report(),
            },
            "clusters": [
                {
                    "cluster_id": i,
                    "persona": personas.get(i),
                    "recent_size": sizes.get(i, 0),
                    "centroid": {k: round(v, 3) for k, v in sorted(centroid.items())},
                }
                for i, centroid in self.clusters.centroids().items()
            ],
            "clusters_ready": self.clusters.ready,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_personas"] = (-1, {})
        return state


def encode_snapshot(bundle: ModelBundle, key: bytes) -> bytes:
    """The bundle as signed bytes: magic, HMAC-SHA256 of the pickle, the pickle."""
    payload = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
    digest = hmac.new(key, payload, hashlib.sha256).digest()
    return SNAPSHOT_MAGIC + digest + payload


def decode_snapshot(data: bytes, key: bytes) -> ModelBundle:
    """Verify a snapshot's HMAC, then unpickle it with the restricted unpickler.

    Raises
    ------
    SnapshotError
        If the framing is wrong or the HMAC does not match (wrong key or
        tampered bytes) — nothing is unpickled then — or if the signed pickle
        names anything outside the bundle's allow-list, or cannot be loaded.
    """
    head = len(SNAPSHOT_MAGIC)
    if not data.startswith(SNAPSHOT_MAGIC) or len(data) < head + _DIGEST_BYTES:
        raise SnapshotError("not a segstream model snapshot")
    digest, payload = data[head : head + _DIGEST_BYTES], data[head + _DIGEST_BYTES :]
    if not hmac.compare_digest(digest, hmac.new(key, payload, hashlib.sha256).digest()):
        raise SnapshotError("model snapshot failed its HMAC check (wrong key or tampered)")
    try:
        bundle = _BundleUnpickler(payload).load()
    except SnapshotError:
        raise
    except Exception as exc:  # truncated or malformed pickle, state this version cannot take
        raise SnapshotError(f"model snapshot unloadable: {type(exc).__name__}") from exc
    if not isinstance(bundle, ModelBundle):
        raise SnapshotError(f"snapshot holds {type(bundle).__name__}, not a ModelBundle")
    return bundle


# --- What a snapshot may hold -----------------------------------------------
# Unpickling calls whatever the pickle names, so a pickle can run any function
# it can name. The unpickler below resolves only these names; the list is what
# a trained bundle references (every global of one, listed with pickletools,
# is checked by tests/unit/test_security.py). Update it, and SNAPSHOT_MAGIC,
# when the bundle's classes change.

# River packages our models are built from. Not all of River: river.stream
# and river.datasets hold classes that read and write files.
_RIVER_PACKAGES: Final = (
    "river._river_rust",
    "river.cluster",
    "river.compose",
    "river.drift",
    "river.linear_model",
    "river.metrics",
    "river.optim",
    "river.preprocessing",
    "river.stats",
    "river.utils",
)
_STDLIB_GLOBALS: Final = frozenset(
    {
        ("builtins", "bool"), ("builtins", "bytearray"), ("builtins", "bytes"),
        ("builtins", "complex"), ("builtins", "dict"), ("builtins", "float"),
        ("builtins", "frozenset"), ("builtins", "int"), ("builtins", "list"),
        ("builtins", "object"), ("builtins", "range"), ("builtins", "set"),
        ("builtins", "slice"), ("builtins", "str"), ("builtins", "tuple"),
        ("collections", "Counter"), ("collections", "OrderedDict"),
        ("collections", "defaultdict"), ("collections", "deque"),
        ("copyreg", "_reconstructor"), ("functools", "partial"), ("random", "Random"),
    }
)  # fmt: skip
# A bound method pickles as getattr(instance, name). River's KMeans holds one:
# new centre coordinates come from functools.partial(rng.gauss, mu, sigma).
# A free getattr would reach any function through __globals__, so getattr
# resolves to a stand-in that returns only these methods.
_BOUND_METHODS: Final[dict[type, frozenset[str]]] = {random.Random: frozenset({"gauss"})}


def _bound_method(instance: object, name: str) -> Any:
    """``getattr`` as a snapshot may use it: only the methods in ``_BOUND_METHODS``."""
    if name in _BOUND_METHODS.get(type(instance), frozenset()):
        return getattr(instance, name)
    raise SnapshotError(
        f"model snapshot asks for the attribute {name!r} of a {type(instance).__name__}, "
        "which a model bundle never holds"
    )


def _is_model_module(module: str) -> bool:
    """Whether classes of ``module`` may appear in a bundle (River's model packages, ours)."""
    return any(
        module == package or module.startswith(package + ".")
        for package in ("models", *_RIVER_PACKAGES)
    )


def allowed_global(module: str, name: str) -> Any:
    """What a snapshot's ``module.name`` resolves to, if the allow-list has it.

    A stdlib name must be on the explicit list. Otherwise the module must be
    one of ours or one of River's model packages, and the name a public class
    defined there: functions are refused, and so are objects a module merely
    imports (a module that imports ``os.system`` or ``subprocess.Popen`` does
    not lend it to a snapshot).

    >>> allowed_global("river.cluster.k_means", "KMeans").__name__
    'KMeans'
    >>> try:
    ...     allowed_global("posix", "system")
    ... except SnapshotError as refused:
    ...     print(refused)
    model snapshot refers to 'posix.system', which is not part of a model bundle
    """
    if (module, name) == ("builtins", "getattr"):
        return _bound_method
    if (module, name) in _STDLIB_GLOBALS:
        return getattr(importlib.import_module(module), name)
    refused = SnapshotError(
        f"model snapshot refers to {module + '.' + name!r}, which is not part of a model bundle"
    )
    # Identifiers without a leading underscore: no dotted paths, no dunders.
    if not _is_model_module(module) or not name.isidentifier() or name.startswith("_"):
        raise refused
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise refused from exc
    if not (isinstance(found, type) and found.__module__ == module and found.__qualname__ == name):
        raise refused
    return found


# The pure-Python unpickler, for one reason: its opcodes can be overridden.
# BUILD sets attributes on the object below it, and with a class there it
# would change that class for the whole worker (Counter.update = ...). About
# ten times slower than the C unpickler, which a snapshot can afford.
_UNPICKLER: Final[Any] = pickle._Unpickler
_PLAIN_BUILD: Final[Callable[[Any], None]] = _UNPICKLER.dispatch[pickle.BUILD[0]]


class _BundleUnpickler(_UNPICKLER):  # type: ignore[misc]
    """Unpickles a model bundle and nothing else (see :func:`allowed_global`)."""

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(_UNPICKLER.dispatch)

    def __init__(self, payload: bytes) -> None:
        super().__init__(io.BytesIO(payload))
        self._globals: set[int] = set()

    def find_class(self, module: str, name: str) -> Any:
        found = allowed_global(module, name)
        self._globals.add(id(found))
        return found

    def _load_build(self) -> None:
        target = self.stack[-2]
        if isinstance(target, type) or id(target) in self._globals:
            raise SnapshotError("model snapshot sets attributes of a class or function")
        _PLAIN_BUILD(self)

    dispatch[pickle.BUILD[0]] = _load_build
