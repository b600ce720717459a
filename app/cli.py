"""`leadscore`: the one entry point for operators."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

__all__ = ["main"]


@click.group()
def main() -> None:
    """leadscore — event-driven lead scoring on Kafka, Faust and MongoDB."""


@main.command()
@click.option("--web-port", type=int, default=None, help="HTTP port (default WEB_PORT or 6066).")
@click.option("--datadir", type=click.Path(path_type=Path), default=None, help="Table state dir.")
@click.option("--loglevel", default=None, help="debug, info, warning, error.")
def worker(web_port: int | None, datadir: Path | None, loglevel: str | None) -> None:
    """Run one Faust worker: scoring, sink, sweep and the HTTP API."""
    _run_worker(web_port, datadir, loglevel)


@main.command()
@click.option("--web-port", type=int, default=None, help="HTTP port (default WEB_PORT or 6066).")
@click.option("--loglevel", default=None, help="debug, info, warning, error.")
def ingest(web_port: int | None, loglevel: str | None) -> None:
    """Run an ingest process: only POST /api/events, /api/events/batch, /api/ingest/event and
    GET /api/health. It consumes none of leadscore's topics and keeps no tables, so scoring never
    queues ahead of a 202; run several next to the workers, behind one load balancer."""
    os.environ["LEADSCORE_ROLE"] = "ingest"
    _run_worker(web_port, None, loglevel)


@main.command()
@click.option("--web-port", type=int, default=None, help="HTTP port (default WEB_PORT or 6066).")
@click.option("--loglevel", default=None, help="debug, info, warning, error.")
def sink(web_port: int | None, loglevel: str | None) -> None:
    """Run a sink process: lead-changes -> MongoDB in a consumer group of its own, so writing to
    MongoDB overlaps with scoring instead of waiting behind it; run the workers with
    LEADSCORE_SINK=off. Serves only /api/health."""
    os.environ["LEADSCORE_ROLE"] = "sink"
    _run_worker(web_port, None, loglevel)


@main.command()
@click.option("--web-port", type=int, default=None, help="HTTP port (default WEB_PORT or 6066).")
@click.option("--loglevel", default=None, help="debug, info, warning, error.")
def deliver(web_port: int | None, loglevel: str | None) -> None:
    """Run a delivery process: automation firings decided (first wins in MongoDB) and delivered
    in a consumer group of its own, so webhooks never share a core's event loop with scoring;
    run the workers with LEADSCORE_DELIVERY=off. Serves only /api/health."""
    os.environ["LEADSCORE_ROLE"] = "delivery"
    _run_worker(web_port, None, loglevel)


def _run_worker(web_port: int | None, datadir: Path | None, loglevel: str | None) -> None:
    if web_port is not None:
        os.environ["WEB_PORT"] = str(web_port)
    if datadir is not None:
        os.environ["LEADSCORE_DATA_DIR"] = str(datadir)
    from app.settings import Settings

    boot = Settings.from_env()
    _json_logs_from_the_start(boot)
    epoch = asyncio.run(_prepare(boot))
    if epoch is not None and epoch > boot.app_version:  # a replay opened a newer epoch
        os.environ["LEADSCORE_APP_VERSION"] = str(epoch)
        from app import settings as settings_module

        settings_module.settings = Settings.from_env()  # before anything builds the Faust app
    from faust import Worker

    from app.settings import settings

    (settings.data_dir / settings.app_id).mkdir(parents=True, exist_ok=True)
    from app.faust_patches import unsent_messages
    from app.logs import logging_config
    from app.worker import app
    from tables.local_state import discard_unless_stopped_cleanly, mark_stopped_cleanly

    tabledir = Path(app.conf.tabledir)
    if discard_unless_stopped_cleanly(tabledir):
        click.echo(
            f"{tabledir}: the last run did not stop cleanly; local tables discarded, "
            "they are rebuilt from their changelogs",
            err=True,
        )
    level = loglevel or settings.log_level
    _tune_gc()
    try:
        Worker(
            app,
            loglevel=level,
            quiet=True,
            logging_config=logging_config(level, settings.log_format, _stdout_is_a_tty()),
        ).execute_from_commandline()
    except SystemExit as stopped:
        if (
            stopped.code in (0, None)
            and app.crash_reason is None
            and not unsent_messages(app.producer.buffer)
        ):
            mark_stopped_cleanly(tabledir)
        raise


def _json_logs_from_the_start(boot: Any) -> None:
    """With JSON logs, the lines written before Faust sets up logging (topic checks, the
    epoch) are JSON too."""
    import logging.config

    from app.logs import logging_config

    config = logging_config(boot.log_level, boot.log_format)  # None for text: Faust's own
    if config is not None:
        logging.config.dictConfig(config)


def _stdout_is_a_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


def _tune_gc() -> None:
    """Fewer garbage collections: every event allocates hundreds of short-lived objects (Faust's
    messages and futures, aiokafka's), and with CPython's default threshold (700) the young
    generation was collected every few events. Objects from start-up are frozen: they live as
    long as the worker, and full collections need not walk them again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def _prepare(settings: Any) -> int | None:
    from app.replay import read_epoch
    from app.topics import ensure_topics

    await ensure_topics(settings)
    return await read_epoch(settings)


@main.command()
@click.option(
    "--to-datetime",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Start from the first event at or after this instant instead of the beginning.",
)
@click.option("--force", is_flag=True, help="Do not check that every worker is stopped.")
def replay(to_datetime: datetime | None, force: bool) -> None:
    """Rebuild all tables and MongoDB from the events topic (start workers afterwards)."""
    from app.replay import start_replay
    from app.settings import settings

    if to_datetime is not None and to_datetime.tzinfo is None:
        to_datetime = to_datetime.replace(tzinfo=UTC)
    plan = asyncio.run(start_replay(settings, to_datetime=to_datetime, force=force))
    click.echo(
        f"epoch {plan.previous_version} -> {plan.new_version}: consumer group {plan.group!r}, "
        "fresh tables and changelogs.\nStart the workers now; they rebuild everything from "
        "the events topic while MongoDB keeps serving the previous figures until overwritten."
    )


@main.command("purge-erased")
def purge_erased() -> None:
    """Remove erased leads' records from the events topic (and truncate lead-commands and
    identity-claims), then open a new epoch: stop every process first (ADR 0020)."""
    from app.purge import purge_erased as purge
    from app.settings import settings

    report = asyncio.run(purge(settings))
    click.echo(
        f"{report.erased_keys} erased keys: {report.records_dropped} of {report.records_read} "
        f"event records removed; epoch {report.new_epoch} opened. Start the workers now; "
        "then run `leadscore clean-versions`."
    )


@main.command("clean-versions")
def clean_versions() -> None:
    """Delete the changelog topics and local table dirs of epochs older than the current one."""
    from app.replay import clean_old_versions
    from app.settings import settings

    removed = asyncio.run(clean_old_versions(settings))
    click.echo("\n".join(removed) if removed else "nothing to clean")


@main.command()
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
def run(workers: int) -> None:
    """Run N workers of one deployment on this host (ports WEB_PORT+i, data dirs worker-i).

    Partitions spread over the workers; each serves the whole API. Ctrl-C stops them all.
    """
    import signal
    import subprocess

    from app.settings import settings

    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(workers):
            env = dict(os.environ)
            env["WEB_PORT"] = str(settings.web_port + i)
            env["LEADSCORE_DATA_DIR"] = str(settings.data_dir.parent / f"worker-{i}")
            procs.append(subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env))
            click.echo(f"worker {i}: http://{settings.web_host}:{settings.web_port + i}")
        # block only after spawning: children must not inherit a blocked SIGTERM
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        while all(p.poll() is None for p in procs):
            if signal.sigtimedwait({signal.SIGINT, signal.SIGTERM}, 1.0) is not None:
                break
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


@main.group()
def project() -> None:
    """Projects (tenants) and their API keys."""


@project.command("create")
@click.option("--name", required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (projectId, apiKey).")
def project_create(name: str, as_json: bool) -> None:
    """Create a project with the default rules; prints its id and a new API key (shown once)."""
    from app.admin import create_project

    record, api_key = asyncio.run(create_project(name))
    if as_json:
        click.echo(json.dumps({"projectId": record.projectId, "name": name, "apiKey": api_key}))
    else:
        click.echo(f"projectId: {record.projectId}\napiKey:    {api_key}   (shown once)")


@main.group()
def user() -> None:
    """Users who log in (dashboard, scripts) and their roles in projects."""


@user.command("create")
@click.option("--email", required=True)
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Asked for when not given (do not put it in shell history).",
)
@click.option("--project", "project_id", default=None, help="Grant a role in this project.")
@click.option(
    "--role",
    type=click.Choice(["owner", "admin", "member", "viewer"]),
    default="owner",
    show_default=True,
)
def user_create(email: str, password: str, project_id: str | None, role: str) -> None:
    """Create a user (the first one, typically an owner of the first project); the same as
    `POST /api/users` and `PUT /api/members/{email}` with the admin token."""
    from app.admin import create_user

    try:
        created = asyncio.run(create_user(email, password, project_id, role))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(created))


@main.command()
def topics() -> None:
    """Create the topics (idempotent); a worker does this on start too."""
    from app.settings import settings
    from app.topics import ensure_topics

    asyncio.run(ensure_topics(settings))
    click.echo("topics ready")


if __name__ == "__main__":
    sys.exit(main())
