"""A headless Chromium for the tests that look at pages as a person would (the HTML report,
the docs), driven by selenium; Debian's ``chromium`` and ``chromium-driver`` packages."""

from __future__ import annotations

import functools
import importlib.util
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DRIVER = "chromedriver"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
UNAVAILABLE = (
    "no headless browser: needs selenium (pip install -e '.[test]') and Debian's chromium and "
    "chromium-driver (apt-get install chromium chromium-driver)"
)


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def available() -> bool:
    """Whether selenium, a Chromium and its driver are installed."""
    return (
        importlib.util.find_spec("selenium") is not None
        and shutil.which(DRIVER) is not None
        and _browser() is not None
    )


@contextmanager
def session(width: int, height: int = 900) -> Iterator[Any]:
    """A headless Chromium window of ``width`` x ``height`` CSS pixels, with a new empty
    profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _browser() or ""
    for flag in FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={width},{height}")
        driver = webdriver.Chrome(service=Service(shutil.which(DRIVER)), options=options)
        try:
            driver.set_window_size(width, height)
            # the window's outer size includes no frame when headless; the viewport is asked for
            inner = driver.execute_script("return window.innerWidth")
            if inner != width:
                driver.set_window_size(2 * width - inner, height)
            yield driver
        finally:
            driver.quit()


def wait_for(driver: Any, condition: str, seconds: float = 20.0) -> None:
    """Wait until the JavaScript expression ``condition`` (``return ...``) is true."""
    deadline = time.monotonic() + seconds
    while not driver.execute_script(condition):
        if time.monotonic() > deadline:
            msg = f"not true after {seconds} s: {condition}"
            raise TimeoutError(msg)
        time.sleep(0.1)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: the tests' output stays the tests'."""


@contextmanager
def serving(folder: Path) -> Iterator[str]:
    """``folder`` served over HTTP on the loopback address, for the duration of the block:
    yields its address (``http://127.0.0.1:PORT``)."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
