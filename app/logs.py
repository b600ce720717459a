"""Logs an operator can follow (issue #15): JSON lines on request, and a request id per line.

`LEADSCORE_LOG_FORMAT=json` replaces Faust's coloured text with one JSON object per line
(python-json-logger): `time`, `level`, `logger`, `message`, `request_id` when the line was
written while serving an HTTP request, and the fields a call passes in `extra` (the scoring
agent passes `topic`, `partition` and `offset` with every processing error). The request id
lives in a context variable that web/request_ids.py sets for each request, so every line a
request causes — in views, in MongoDB or Kafka helpers — carries it without being passed along.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

__all__ = ["RequestIdFilter", "logging_config", "request_id"]

request_id: ContextVar[str | None] = ContextVar("leadscore_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (None outside a request) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def logging_config(level: str, log_format: str, tty: bool = True) -> dict[str, Any] | None:
    """A `logging.config.dictConfig` for Faust's worker, or None to keep Faust's own (text, on
    a terminal). Text to anything else (a file, a pipe, a container's log) is Faust's own line
    without colour codes: colorlog's formatter rebuilds its escape-code table for every line,
    which at 1,000 requests/s was a tenth of a worker's time in access-log lines."""
    if log_format != "json":
        if tty:
            return None
        return {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "plain": {
                    "()": "mode.utils.logging.DefaultFormatter",
                    "format": "[%(asctime)s] [%(process)s] [%(levelname)s] %(message)s %(extra)s",
                }
            },
            "handlers": {
                "default": {
                    "class": "logging.StreamHandler",
                    "formatter": "plain",
                    "stream": "ext://sys.stdout",
                    "level": level.upper(),
                }
            },
            "root": {"level": level.upper(), "handlers": ["default"]},
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["request_id"],
                "level": level.upper(),
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
