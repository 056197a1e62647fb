"""One global model across workers: a single trainer, snapshots every worker follows.

::

    workers ──training examples──► training-examples topic (1 partition)
                                        │  train_models agent: the one worker
                                        ▼  that owns partition 0
                                   ModelBundle.learn
                                        │  on each offset commit, if it learned:
                                        ▼  version + 1, signed pickle
    every worker ◄──follow_snapshots── model-snapshots topic (compacted, 1 key)

Every worker follows the snapshot topic with its own group-less consumer
and scores with the newest snapshot whose HMAC verifies. Faust's
``GlobalTable`` would be the obvious tool, but it does not deliver updates
to every worker when several run (faust-streaming issue #283), so the topic
is read directly.

The trainer publishes when Faust begins an offset commit (a sensor, like
the state caches), so every committed training offset is inside a
published snapshot; a restarted trainer starts from the newest snapshot and
skips the offsets it already holds. Duplicate examples (re-sent after a
worker crash) are dropped by example id.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.sensors.base import Sensor
from faust.types import TP, AppT

from models.training import ModelBundle, SnapshotError, decode_snapshot, encode_snapshot
from streams import metrics
from streams.app import aiokafka_security, app, settings
from streams.topics import model_snapshots_topic, training_examples_topic

log = logging.getLogger(__name__)

SNAPSHOT_KEY = b"models"
_SIGNING_KEY = settings.model_snapshot_key.get_secret_value().encode()


class ModelHolder:
    """The newest verified model bundle this worker scores with."""

    def __init__(self) -> None:
        self.bundle = ModelBundle(settings.learning_config())
        self.caught_up = asyncio.Event()

    def offer(self, data: bytes) -> bool:
        """Load a snapshot if it verifies and is newer; ``True`` if loaded."""
        try:
            # Verified, then read by the restricted unpickler: a signed
            # snapshot holding anything but a model bundle is refused too.
            bundle = decode_snapshot(data, _SIGNING_KEY)
        except SnapshotError as exc:
            metrics.model_snapshots_rejected.inc()
            log.warning("model snapshot rejected reason=%s", exc)
            return False
        if bundle.version <= self.bundle.version:
            return False
        self.bundle = bundle
        metrics.observe_models(bundle.describe())
        log.info("model snapshot loaded version=%d examples=%d", bundle.version, bundle.examples)
        return True


holder = ModelHolder()


@app.task
async def follow_snapshots() -> None:
    """Read every model snapshot, from the beginning, for as long as the worker runs."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        **aiokafka_security(settings),
    )
    partition = TopicPartition(model_snapshots_topic.get_topic_name(), 0)
    await consumer.start()
    try:
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        if end == 0:
            holder.caught_up.set()
        while True:
            batches = await consumer.getmany(partition, timeout_ms=1000)
            for message in batches.get(partition, []):
                if message.value is not None:
                    holder.offer(message.value)
                if message.offset + 1 >= end:
                    holder.caught_up.set()
    finally:
        await consumer.stop()


class Trainer:
    """The bundle being trained on this worker (when it owns the training partition)."""

    def __init__(self) -> None:
        self.bundle: ModelBundle | None = None
        self.dirty = False

    async def learn(self, example: dict[str, Any], offset: int) -> None:
        if self.bundle is None:
            # Resume from the newest snapshot, never from scratch.
            await holder.caught_up.wait()
            self.bundle = copy.deepcopy(holder.bundle)
        if self.bundle.learn(example, offset):
            self.dirty = True
            metrics.training_examples_learned.labels(example["kind"]).inc()

    def publish(self) -> None:
        """Send a new snapshot version if anything was learned since the last."""
        if self.bundle is None or not self.dirty:
            return
        self.bundle.version += 1
        self.bundle.created_ms = time.time_ns() // 1_000_000
        data = encode_snapshot(self.bundle, _SIGNING_KEY)
        model_snapshots_topic.send_soon(key=SNAPSHOT_KEY, value=data)
        self.dirty = False
        log.info("model snapshot published version=%d bytes=%d", self.bundle.version, len(data))

    def forget(self) -> None:
        """The training partition moved away: the next owner resumes from a snapshot."""
        self.bundle = None
        self.dirty = False


trainer = Trainer()


@app.agent(training_examples_topic)
async def train_models(stream: Any) -> None:
    """Learn every training example; the one-partition topic means one trainer."""
    async for event in stream.events():
        try:
            example = orjson.loads(event.message.value)
        except orjson.JSONDecodeError:
            log.warning("training example unreadable offset=%s", event.message.offset)
            continue
        await trainer.learn(example, event.message.offset)


class PublishOnCommit(Sensor):
    """Publishes the trainer's snapshot when Faust begins an offset commit."""

    def on_commit_initiated(self, consumer: Any) -> Any:
        trainer.publish()
        return None


app.sensors.add(PublishOnCommit())


# mode types a receiver as taking any number of positional arguments; Faust
# sends exactly one here, the revoked partitions.
@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _training_partition_revoked(app: AppT, revoked: set[TP], **kwargs: Any) -> None:
    if any(tp.topic == training_examples_topic.get_topic_name() for tp in revoked):
        trainer.publish()
        trainer.forget()
