"""Logs an operator can follow (issue #15): with LEADSCORE_LOG_FORMAT=json every line of a
worker is a JSON object, every HTTP request has a line with its request id (the caller's
X-Request-Id, or a new one echoed back), a dead-lettered record's line names its partition and
offset, and no e-mail address appears in the log."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from tests.integration.support import (
    Api,
    Deployment,
    create_project,
    eventually,
    start_worker,
)


def log_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return parsed


async def test_json_logs_carry_request_ids_and_record_positions(
    stack: tuple[str, str], http: aiohttp.ClientSession, work_dir: Path
) -> None:
    deployment = Deployment.on(stack, LEADSCORE_LOG_FORMAT="json")
    worker = await start_worker(deployment, work_dir, "json-logs")
    try:
        pid, key = await create_project(http, worker.url, deployment.admin_token, "logs")
        api = Api(http, worker.url, key)
        email = f"person-{uuid.uuid4().hex[:6]}@example.com"
        rid = f"rid-{uuid.uuid4().hex}"
        async with http.post(
            f"{worker.url}/api/events",
            json={"eventType": "identify", "leadId": "log-lead", "properties": {"email": email}},
            headers={"X-API-Key": key, "X-Request-Id": rid},
        ) as resp:
            assert resp.status == 202, await resp.text()
            assert resp.headers["X-Request-Id"] == rid
        async with http.get(f"{worker.url}/api/leads/log-lead", headers={"X-API-Key": key}) as r:
            generated = r.headers["X-Request-Id"]  # none given: a new one
        assert generated and generated != rid
        async with http.get(
            f"{worker.url}/api/health", headers={"X-Request-Id": "bad id {forged: line}"}
        ) as r:
            replaced = r.headers["X-Request-Id"]
        assert " " not in replaced and "forged" not in replaced

        producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap_servers)
        await producer.start()
        try:
            sent = await producer.send_and_wait(
                f"{deployment.prefix}.events", key=f"{pid}:log-lead".encode(), value=b"{bad"
            )
        finally:
            await producer.stop()
        await eventually(
            lambda: api.get("/api/leads/log-lead"),
            lambda r: r[0] == 200 and r[1].get("email") == email,
            timeout=90,
        )

        def dead_letter_line(lines: list[dict[str, Any]]) -> bool:
            return any(
                line.get("partition") == sent.partition and line.get("offset") == sent.offset
                for line in lines
            )

        async def read() -> list[dict[str, Any]]:
            return log_lines(worker.log_path)

        lines = await eventually(read, dead_letter_line, timeout=60)
        dl = next(line for line in lines if line.get("offset") == sent.offset)
        assert dl["level"] == "WARNING" and "dead-lettered" in dl["message"], dl
        assert dl["topic"] == f"{deployment.prefix}.events"
        ours = [line for line in lines if line.get("request_id") == rid]
        assert any(
            line["logger"] == "leadscore.http"
            and line["route"] == "/api/events"
            and line["status"] == 202
            for line in ours
        ), ours
        assert any(line.get("request_id") == generated for line in lines)
        assert email not in worker.log_path.read_text()
    finally:
        worker.stop()


async def test_access_lines_can_be_turned_off(
    stack: tuple[str, str], http: aiohttp.ClientSession, work_dir: Path
) -> None:
    deployment = Deployment.on(stack, LEADSCORE_LOG_FORMAT="json", LEADSCORE_ACCESS_LOG="off")
    worker = await start_worker(deployment, work_dir, "no-access-log")
    try:
        _, key = await create_project(http, worker.url, deployment.admin_token, "quiet")
        for _ in range(3):
            async with http.get(f"{worker.url}/api/rules", headers={"X-API-Key": key}) as r:
                assert r.status == 200 and r.headers["X-Request-Id"]
        lines = log_lines(worker.log_path)
        assert lines and not any(line["logger"] == "leadscore.http" for line in lines)
    finally:
        worker.stop()
