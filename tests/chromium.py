"""Headless Chromium for the dashboard's browser tests: Debian's chromium driven by selenium.

Every launch has a fresh profile and switches off what would call the network by itself
(sync, component updates, background fetches, QUIC), and records the performance log, whose
``Network.*`` events list every request the page made.
"""

import json
import os
import shutil

CHROMIUM = os.environ.get("DEEPDIST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DEEPDIST_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--window-size=1280,1500")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(path)):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    return None


def launch(profile_dir):
    """A headless Chromium on a fresh profile in ``profile_dir``, with its performance log on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def network_events(driver) -> list:
    """``(method, url, status or None)`` of the requests and responses since the last call."""
    events = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        method, params = message.get("method", ""), message.get("params", {})
        if method == "Network.requestWillBeSent":
            events.append(("request", params["request"]["url"], None))
        elif method == "Network.responseReceived":
            events.append(("response", params["response"]["url"], params["response"]["status"]))
    return events
