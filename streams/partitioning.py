"""Which input partition a customer's key belongs to.

Kafka's default partitioner (Java, kafka-python and aiokafka alike) is
murmur2 of the key bytes, positive, modulo the partition count. The offline
path uses it to group customers the way the topics do, and the web views to
find a customer's partition population.
"""

from __future__ import annotations

from functools import lru_cache

from kafka.partitioner.default import murmur2


@lru_cache(maxsize=65536)
def partition_for_key(key: str, partitions: int) -> int:
    """The partition a message keyed by ``key`` lands in.

    >>> partition_for_key("c000001", 4) in range(4)
    True
    """
    hashed: int = murmur2(key.encode())  # kafka-python is unannotated
    return (hashed & 0x7FFFFFFF) % partitions
