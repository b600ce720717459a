"""JSON logs carry the request id of the request a line belongs to (issue #15); text logs
are Faust's own lines, without colour codes when they do not go to a terminal."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Callable
from typing import Any

from app.logs import logging_config, request_id


def _written(config: dict[str, Any] | None, write: Callable[[logging.Logger], None]) -> str:
    """What `write` logs under `config`, with the root logger restored afterwards."""
    assert config is not None
    stream = io.StringIO()
    config["handlers"]["default"]["stream"] = stream
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        logging.config.dictConfig(config)
        write(logging.getLogger("leadscore.test"))
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return stream.getvalue()


def test_text_format_keeps_fausts_own_logging_on_a_terminal_and_drops_colours_elsewhere() -> None:
    assert logging_config("info", "text", tty=True) is None
    line = _written(logging_config("info", "text", tty=False), lambda log: log.info("a %s", "b"))
    assert "[INFO] a b" in line and "\x1b[" not in line


def test_json_lines_carry_the_request_id_and_extra_fields() -> None:
    def write(log: logging.Logger) -> None:
        token = request_id.set("rid-1")
        try:
            log.info("in a request", extra={"partition": 3, "offset": 42})
        finally:
            request_id.reset(token)
        log.warning("outside")

    text = _written(logging_config("info", "json"), write)
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["request_id"] == "rid-1" and first["message"] == "in a request"
    assert first["partition"] == 3 and first["offset"] == 42 and first["level"] == "INFO"
    assert second["request_id"] is None and second["logger"] == "leadscore.test"
