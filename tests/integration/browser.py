"""Headless Chromium for the dashboard's browser tests (and bench/dashboard.py), through Selenium.

Debian's ``chromium`` with its matching ``chromium-driver`` (``tools/test`` installs both when
``/usr/bin/chromium`` is missing; Selenium comes with setup.py's test extra).  The browser
starts headless with a fresh profile and without any background networking: the machines
this runs on have no network but the package registries, and Chromium's own connections
would be refused many at a time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.trial import unittest

from tests.helpers import missing_requirement

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def browser_missing() -> str | None:
    """What is missing to drive Chromium here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "Selenium is not installed (pip install '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install {package})"
    return None


def require_browser(test: unittest.TestCase) -> None:
    """Browser tests need Chromium: fail under CI, skip (saying so) on a developer's machine."""
    missing = browser_missing()
    if missing is not None:
        missing_requirement(test, missing + " (tools/test installs it)")


@contextmanager
def chromium(width: int = 1280, height: int = 800, mobile: bool = False) -> Iterator[Any]:
    """A headless Chromium (a Selenium WebDriver) whose viewport is ``width`` x ``height``; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="zqtwisted-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        metrics = {"width": width, "height": height, "deviceScaleFactor": 2 if mobile else 1, "mobile": mobile}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any, allowed: tuple[str, ...] = ()) -> list[str]:
    """The console's errors since the last call, but those containing one of ``allowed``."""
    entries = driver.get_log("browser")
    return [
        e["message"] for e in entries if e["level"] == "SEVERE" and not any(text in e["message"] for text in allowed)
    ]


def page_fetch(driver: Any, method: str, path: str) -> int:
    """The status of a ``fetch`` made by the page itself (same origin, no token)."""
    script = (
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[1], {method: arguments[0]}).then(r => done(r.status), e => done(-1));"
    )
    return int(driver.execute_async_script(script, method, path))
