"""`leadscore`: the one entry point for operators."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

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
    if web_port is not None:
        os.environ["WEB_PORT"] = str(web_port)
    if datadir is not None:
        os.environ["LEADSCORE_DATA_DIR"] = str(datadir)
    from faust import Worker

    from app.settings import settings
    from app.topics import ensure_topics

    asyncio.run(ensure_topics(settings))
    (settings.data_dir / settings.topic_prefix).mkdir(parents=True, exist_ok=True)
    from app.worker import app

    level = loglevel or settings.log_level
    Worker(app, loglevel=level, quiet=True).execute_from_commandline()


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


@main.command()
def topics() -> None:
    """Create the topics (idempotent); a worker does this on start too."""
    from app.settings import settings
    from app.topics import ensure_topics

    asyncio.run(ensure_topics(settings))
    click.echo("topics ready")


if __name__ == "__main__":
    sys.exit(main())
