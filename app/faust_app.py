"""The Faust App: one per worker process, configured from `app.settings`."""

from __future__ import annotations

import faust
from faust.transport.producer import ProducerBuffer

from app import faust_patches
from app.settings import settings

faust_patches.apply(fetch_max_wait_ms=settings.fetch_max_wait_ms)

# Table writes queue here on their way to the changelogs. Faust's default of 100 stalled the
# consumer (and logged a warning) every time a late event rewrote more than a few facts; the
# queue is drained continuously and in full before every commit, so a larger one only bounds
# memory (a few MB). Its task yields to the event loop every 32 messages (app/faust_patches.py).
ProducerBuffer.max_messages = 10_000

__all__ = ["app"]

app = faust.App(
    settings.app_id,
    version=settings.app_version,
    broker=settings.kafka_url,
    store="rocksdb://",
    # Faust's table paths do not include the app id: keep deployments apart by prefix.
    datadir=str(settings.data_dir / settings.app_id),
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    table_standby_replicas=settings.standby_replicas,
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset="earliest",
    web_port=settings.web_port,
    web_host=settings.web_host,
    web_bind="127.0.0.1" if settings.web_host in ("127.0.0.1", "localhost") else "0.0.0.0",
    web_tables_enabled=False,
    # the API's own limit (web.base.MAX_REQUEST_BYTES): a chunked body without Content-Length
    # stops being read there, and web.base answers the JSON 413
    web_application_options={"client_max_size": 1024 * 1024},
    producer_acks=-1,
    # how long a record may wait for the broker before its send fails (Faust's default, 20
    # minutes, kept ingest requests hanging while Kafka was down; they now also give up after
    # LEADSCORE_PRODUCE_TIMEOUT with a 503). Kafka's own clients default to 120 s as well.
    producer_request_timeout=120.0,
    producer_linger_ms=5,
    producer_max_batch_size=256 * 1024,
    stream_buffer_maxsize=16_384,
    broker_max_poll_records=2_000,
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=min(3.0, settings.session_timeout / 4),
    broker_commit_every=10_000,
    topic_allow_declare=True,
    loghandlers=[],
)
