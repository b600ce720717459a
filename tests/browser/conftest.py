"""Browser-test fixtures: Debian's Chromium driven headless by Selenium, and static web servers
that play the customer's website on origins of their own."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CHROMIUM = "chromium"
CHROMEDRIVER = "chromedriver"


def ensure_chromium() -> tuple[str, str]:
    """Chromium and its driver from Debian, installed when missing (CI starts from a bare
    machine; nothing but the distribution's packages may be downloaded, so no Selenium Manager)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], check=True, env=env
        )
    browser, driver = shutil.which(CHROMIUM), shutil.which(CHROMEDRIVER)
    assert browser and driver, "chromium and chromedriver should be installed now"
    return browser, driver


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """One headless Chromium for the session; console messages are kept for the tests to read."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1024,768")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # no access log in test output
        pass


@dataclass
class StaticSite:
    """A folder served over HTTP on 127.0.0.1: a website with an origin of its own."""

    root: Path
    origin: str


@pytest.fixture
def static_site(tmp_path: Path) -> Iterator[StaticSite]:
    yield from _serve(tmp_path / "site-a")


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[StaticSite]:
    yield from _serve(tmp_path / "site-b")


def _serve(root: Path) -> Iterator[StaticSite]:
    root.mkdir(parents=True)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StaticSite(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
