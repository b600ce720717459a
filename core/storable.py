"""Storable by construction (SPEC 12): what passes here survives Kafka JSON, the RocksDB tables
and MongoDB unchanged, so no accepted input can later stop a consumer or the sink.

Each check answers with `FieldError`s that name the offending field by its path
(`properties.a.b[3]`), never with an exception: the callers (HTTP views, the scoring agent's
dead-letter path, settings and rules) turn them into a 4xx body or a dead-letter reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_DEPTH",
    "MAX_ERRORS",
    "MAX_TIMESTAMP_US",
    "MIN_TIMESTAMP_US",
    "FieldError",
    "check_int64",
    "check_key",
    "check_text",
    "check_timestamp_range",
    "check_value",
    "depth_of",
    "is_utf8",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_DEPTH = 32
"""Deepest nesting of a JSON value (an object or list is one level). MongoDB refuses 100 levels
and orjson 1,024; 32 leaves both far away, with room for the envelope around properties."""
MAX_ERRORS = 20
"""At most this many errors per value: a hostile body must not buy a huge error answer."""
MIN_TIMESTAMP_US = 0
"""1970-01-01T00:00:00Z: before it, BSON dates, epoch-day arithmetic and RocksDB key order break."""
MAX_TIMESTAMP_US = 253_402_300_799_999_999
"""9999-12-31T23:59:59.999999Z: the last instant `datetime` (and ISO-8601 text) can write."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One offending field: its path in the input and what is wrong with it."""

    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


def is_utf8(text: str) -> bool:
    """False for strings holding lone surrogates, which JSON can carry as `\\udXXX` escapes but
    UTF-8 (Kafka, RocksDB, BSON) cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: str, field: str) -> FieldError | None:
    if not is_utf8(value):
        return FieldError(field, "must be valid UTF-8 (no lone surrogates)")
    return None


def check_int64(value: int, field: str) -> FieldError | None:
    if not INT64_MIN <= value <= INT64_MAX:
        return FieldError(field, "must be an integer within signed 64 bits")
    return None


def check_key(key: Any, field: str) -> FieldError | None:
    """An object key: a non-empty UTF-8 string, no NUL (BSON keys are C strings), not starting
    with `$` (an operator to MongoDB; refused by servers before 5.0 and by many tools)."""
    if not isinstance(key, str):
        return FieldError(field, "keys must be strings")
    if key == "":
        return FieldError(field, "keys must not be empty")
    if "\x00" in key:
        return FieldError(field, "keys must not contain NUL")
    if key.startswith("$"):
        return FieldError(field, "keys must not start with '$'")
    return check_text(key, field)


def depth_of(value: Any) -> int:
    """Nesting depth (a scalar is 0, `{}` or `[]` is 1); iterative, so any depth is safe."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def check_value(value: Any, field: str, *, max_depth: int = MAX_DEPTH) -> list[FieldError]:
    """Every reason why `value` (parsed JSON) is not storable, each naming its path."""
    if depth_of(value) > max_depth:
        return [FieldError(field, f"must be nested at most {max_depth} levels deep")]
    errors: list[FieldError] = []
    for error in _walk(value, field):
        errors.append(error)
        if len(errors) >= MAX_ERRORS:
            break
    return errors


def _walk(value: Any, path: str) -> Iterator[FieldError]:
    # Depth is bounded by `check_value` before the walk, so recursion is bounded too.
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        error = check_int64(value, path)
    elif isinstance(value, float):
        error = None if math.isfinite(value) else FieldError(path, "must be a finite number")
    elif isinstance(value, str):
        error = check_text(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{_shown(key)}"
            key_error = check_key(key, child)
            if key_error is not None:
                yield key_error
                continue
            yield from _walk(item, child)
        return
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")
        return
    else:
        error = FieldError(path, f"must be JSON, not {type(value).__name__}")
    if error is not None:
        yield error


def _shown(key: Any) -> str:
    """A key as it appears in an error's field path: printable and short."""
    if not isinstance(key, str) or not is_utf8(key):
        return "?"
    return key if len(key) <= 64 else key[:61] + "..."


def check_timestamp_range(us: int, field: str) -> FieldError | None:
    if not MIN_TIMESTAMP_US <= us <= MAX_TIMESTAMP_US:
        return FieldError(field, "must lie between 1970-01-01 and 9999-12-31 (UTC)")
    return None
