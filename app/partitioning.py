"""The partitioner every producer of the events topic is expected to use (Kafka's default)."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2

__all__ = ["partition_for"]


@lru_cache(maxsize=1 << 16)  # murmur2 is pure Python; active leads send again and again
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner: murmur2 of the key bytes, as the Java client and aiokafka do."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
