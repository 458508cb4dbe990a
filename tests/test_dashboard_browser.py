"""The dashboard in a real browser: headless Chromium against a real training run.

One training run on the test session's local SparkSession (a linear regression whose tasks
report their loss, partition 1's first attempt failing after a few pushes) is watched by
Chromium from the one-time login URL on: the loss curve gains points as training proceeds,
the retried partition shows its retry, the page without a token (or with a used one) is a
401, and every request the browser made went to the server on 127.0.0.1. The report written
after training then opens from disk, offline, with the same curves.

Screenshots go to the test's temporary directory, or to ``$DEEPDIST_SCREENSHOTS`` when set
(docs/dashboard_live.png and docs/dashboard_report.png were made so).
"""

import json
import os
import threading
import time

import numpy as np
import pytest
from pyspark import TaskContext

import chromium
from deepdist import DeepDist, report
from deepdist.optim import SGD

pytestmark = pytest.mark.skipif(chromium.missing() is not None, reason=str(chromium.missing()))

FAILING_PARTITION = 1


def _regression(sc, rows=4000, partitions=4):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(rows, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=rows)
    return sc.parallelize(list(zip(X.tolist(), y.tolist())), partitions)


def _gradient(marker):
    def gradient(model, batch):
        task = TaskContext.get()
        gradient.pushes = getattr(gradient, "pushes", 0) + 1
        if (task.partitionId() == FAILING_PARTITION and task.attemptNumber() == 0 and gradient.pushes > 4
                and not os.path.exists(marker)):
            open(marker, "w").close()
            raise RuntimeError("injected failure: partition 1's first attempt")
        X = np.array([r[0] for r in batch])
        y = np.array([r[1] for r in batch])
        err = X @ model["w"] - y
        report(loss=float(np.mean(err ** 2)))
        time.sleep(0.08)  # a task lasts a few seconds: the page polls while it runs
        return {"w": X.T @ err / len(batch)}
    return gradient


# read in one script: the page redraws every poll, so an element found first may be gone next
def _points(driver, chart):
    return driver.execute_script(
        "var s = document.querySelector('svg[data-chart=\"' + arguments[0] + '\"]');"
        "return s ? parseInt(s.getAttribute('data-points'), 10) : -1;", chart)


def _retries(driver, partition):
    return driver.execute_script(
        "var c = document.querySelector('tr[data-partition=\"' + arguments[0] + '\"] td.retries');"
        "return c ? parseInt(c.textContent, 10) : -1;", str(partition))


def _local(url):
    """Does a request for ``url`` stay on this machine? (chrome:, data:, file: never go out.)"""
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https", "ws", "wss"):
        return True
    return rest.split("/")[0].rsplit(":", 1)[0] == "127.0.0.1"


class _Notebook:
    """A page holding ``html`` (what a notebook's output cell shows), served on 127.0.0.1."""

    def __init__(self, html):
        import http.server

        body = f"<!doctype html><html><body><h1>notebook</h1>{html}</body></html>".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _shots(tmp):
    directory = os.environ.get("DEEPDIST_SCREENSHOTS") or str(tmp)
    os.makedirs(directory, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def watched(sc, tmp_path_factory):
    """Train once while Chromium watches; return what it saw."""
    from selenium.webdriver.support.ui import WebDriverWait

    tmp = tmp_path_factory.mktemp("dashboard")
    shots = _shots(tmp)
    seen = {"loss_points": [], "retries": -1, "urls": [], "screenshots": {}}
    driver = chromium.launch(tmp / "profile")
    try:
        rdd = _regression(sc)
        with DeepDist({"w": np.zeros(4)}, spark=sc, progress=False) as dd:
            base = dd.url + "/"
            login = dd.dashboard_url()
            trainer = threading.Thread(target=lambda: seen.update(reports=dd.train(
                rdd, _gradient(str(tmp / "failed-once")), SGD(lr=0.05), epochs=3, batch_size=50)))
            trainer.start()
            driver.get(login)
            seen["after_login"] = driver.current_url
            WebDriverWait(driver, 20).until(lambda d: _points(d, "metric:loss") >= 1)
            while trainer.is_alive():
                seen["loss_points"].append(_points(driver, "metric:loss"))
                seen["retries"] = max(seen["retries"], _retries(driver, FAILING_PARTITION))
                if "live" not in seen["screenshots"] and seen["retries"] >= 1 and seen["loss_points"][-1] >= 9:
                    path = os.path.join(shots, "dashboard_live.png")
                    driver.save_screenshot(path)
                    seen["screenshots"]["live"] = path
                time.sleep(0.5)
            trainer.join()
            time.sleep(1.5)  # one more poll after the last epoch
            seen["loss_points"].append(_points(driver, "metric:loss"))
            seen["retries"] = max(seen["retries"], _retries(driver, FAILING_PARTITION))
            if "live" not in seen["screenshots"]:
                seen["screenshots"]["live"] = os.path.join(shots, "dashboard_live.png")
                driver.save_screenshot(seen["screenshots"]["live"])
            seen["urls"] += chromium.network_events(driver)
            # the cookie opens the dashboard, not the model
            driver.get(base + "model")
            driver.get(base + "status")
            seen["cookie_on_model"] = chromium.network_events(driver)
            # without the cookie: the page, the data, and the used token again
            driver.delete_all_cookies()
            driver.get(base)
            driver.get(base + "dashboard/data")
            driver.get(login)
            seen["without"] = chromium.network_events(driver)
            # Jupyter: the output cell's iframe, in a page from another port of the same host
            with _Notebook(dd._repr_html_()) as notebook:
                driver.get(notebook.url)
                driver.switch_to.frame(0)
                WebDriverWait(driver, 10).until(lambda d: _points(d, "metric:loss") >= 1)
                seen["in_iframe"] = _points(driver, "metric:loss")
                driver.switch_to.default_content()
            seen["notebook"] = chromium.network_events(driver)
            seen["history"] = dd.history()
        seen["report"], seen["report_json"] = dd.save_report(str(tmp / "report.html"))
        seen["shots"] = shots
        yield seen
    finally:
        driver.quit()


def test_the_login_url_opens_the_page_and_leaves_the_address_bar(watched):
    assert watched["after_login"].endswith("/") and "token=" not in watched["after_login"]


def test_the_loss_curve_gains_points_as_training_proceeds(watched):
    counts = [c for c in watched["loss_points"] if c >= 0]
    rising = sorted(set(counts))
    assert len(rising) >= 4, counts                       # several polls saw the curve grow
    assert counts == sorted(counts)                        # it never lost a point
    history_points = sum("loss" in p["metrics"] for p in watched["history"]["history"]["points"])
    assert counts[-1] == history_points


def test_a_retried_partition_shows_its_retry(watched):
    assert watched["retries"] >= 1
    [row] = [r for r in watched["history"]["partitions"] if r["partition"] == FAILING_PARTITION]
    assert row["retries"] >= 1
    assert {r["partition"] for r in watched["history"]["partitions"]} == {0, 1, 2, 3}


def test_without_the_token_or_cookie_the_answer_is_401(watched):
    statuses = [(url, status) for kind, url, status in watched["without"]
                if kind == "response" and not url.endswith("/favicon.ico")]   # Chromium asks on an error page
    assert len(statuses) == 3, statuses
    assert all(status == 401 for _, status in statuses), statuses   # a used token opens nothing


def test_the_cookie_does_not_open_the_model_or_status(watched):
    statuses = [status for kind, url, status in watched["cookie_on_model"]
                if kind == "response" and not url.endswith("/favicon.ico")]
    assert statuses == [401, 401]


def test_in_jupyter_the_context_shows_the_live_page_inline(watched):
    # a notebook served from the same host (another port): the frame logs in and draws the curves
    assert watched["in_iframe"] >= 1


def test_no_request_leaves_the_machine(watched):
    urls = [url for _, url, _ in watched["urls"] + watched["cookie_on_model"] + watched["without"] + watched["notebook"]]
    assert any(url.startswith("http://127.0.0.1:") for url in urls)
    assert all(_local(url) for url in urls), [url for url in urls if not _local(url)]


def test_the_report_opens_offline_with_the_same_curves(watched, tmp_path):
    from selenium.webdriver.common.by import By

    with open(watched["report_json"], encoding="utf-8") as handle:
        saved = json.load(handle)
    expected = sum("loss" in p["metrics"] for p in saved["history"]["points"])
    assert expected >= 4
    driver = chromium.launch(tmp_path / "profile")
    try:
        driver.get("file://" + os.path.abspath(watched["report"]))
        assert driver.find_element(By.ID, "state").text == "report"
        assert _points(driver, "metric:loss") == expected
        assert _points(driver, "updates_per_second") > 0
        assert _retries(driver, FAILING_PARTITION) >= 1
        driver.save_screenshot(os.path.join(watched["shots"], "dashboard_report.png"))
        urls = [url for _, url, _ in chromium.network_events(driver)]
    finally:
        driver.quit()
    assert any(url.startswith("file://") for url in urls)
    assert not [url for url in urls if url.split(":")[0] in ("http", "https", "ws", "wss")], urls
