"""The dashboard's parts without a browser: tokens and sessions, the history, the partitions
board, the page's escaping, and who may read what (through the server's Flask app)."""

import json
import re

import numpy as np
import pytest

from deepdist import wire
from deepdist.dashboard import Dashboard, MetricHistory, PartitionBoard, SessionStore, render
from deepdist.dashboard.page import embed_json
from deepdist.optim import add
from deepdist.server import create_app
from deepdist.store import ParameterStore

SECRET = "s3cret"


# -- sessions -----------------------------------------------------------------------------------
def test_a_token_is_good_once():
    sessions = SessionStore()
    token = sessions.mint()
    sid = sessions.exchange(token)
    assert sid and sessions.valid(sid)
    assert sessions.exchange(token) is None
    assert sessions.exchange("made-up") is None
    assert not sessions.valid("made-up")


def test_tokens_and_sessions_are_bounded_oldest_out():
    sessions = SessionStore(max_tokens=3, max_sessions=2)
    tokens = [sessions.mint() for _ in range(4)]
    assert sessions.exchange(tokens[0]) is None        # dropped by the fourth
    sids = [sessions.exchange(t) for t in tokens[1:]]
    assert all(sids) and len(sessions) == 2
    assert not sessions.valid(sids[0]) and sessions.valid(sids[1]) and sessions.valid(sids[2])


def test_a_session_expires():
    sessions = SessionStore(lifetime=-1.0)
    assert not sessions.valid(sessions.exchange(sessions.mint()))


# -- history ----------------------------------------------------------------------------------
def _status(applied, metrics):
    return {"version": applied, "updates_applied": applied, "updates_received": applied,
            "bytes_in": 10 * applied, "bytes_out": 0, "queue_depth": 0,
            "metrics": {name: {"mean": total / count, "count": count} for name, (total, count) in metrics.items()}}


def test_a_point_holds_the_mean_of_the_metrics_reported_since_the_last():
    history = MetricHistory(lambda: None)
    history.sample(_status(1, {"loss": (3.0, 1), "epoch": (1.0, 1)}))
    history.sample(_status(3, {"loss": (3.0 + 2.0 + 4.0, 3), "epoch": (2.0, 2)}))
    history.sample(_status(3, {"loss": (9.0, 3)}))
    points = history.since(0)["points"]
    assert [p["metrics"] for p in points] == [{"loss": 3.0}, {"loss": 3.0}, {}]
    assert [p["applied"] for p in points] == [1, 3, 3]


def test_a_long_history_merges_pairs_and_keeps_weighted_means():
    history = MetricHistory(lambda: None, max_points=8)
    total = 0.0
    for i in range(1, 30):
        total += i
        history.sample(_status(i, {"loss": (total, i)}))
    reader = history.since(0)
    points = reader["points"]
    assert len(points) <= 8 and reader["generation"] > 0
    assert points[-1]["applied"] == 29
    weighted = sum(p["metrics"]["loss"] * p["counts"]["loss"] for p in points)
    assert weighted == pytest.approx(total)           # no report lost in the merging
    assert [p["n"] for p in points] == sorted(p["n"] for p in points)


def test_a_reader_gets_what_is_new_or_everything_after_a_merge():
    history = MetricHistory(lambda: None, max_points=4)
    for i in range(3):
        history.sample(_status(i, {}))
    first = history.since(0)
    history.sample(_status(3, {}))
    update = history.since(first["last"], first["generation"])
    assert not update["reset"] and [p["applied"] for p in update["points"]] == [3]
    history.sample(_status(4, {}))                    # over max_points: merged
    after = history.since(update["last"], update["generation"])
    assert after["reset"] and after["points"][-1]["applied"] == 4


def test_marks_close_at_the_epochs_end():
    history = MetricHistory(lambda: _status(0, {}))
    history.mark("epoch 1/2")
    history.end_mark("epoch 1/2")
    [mark] = history.since(0)["marks"]
    assert mark["label"] == "epoch 1/2" and mark["end"] >= mark["start"]


# -- partitions -------------------------------------------------------------------------------
def test_a_new_attempt_of_a_partition_is_a_retry_and_a_new_epoch_is_not():
    board = PartitionBoard()
    board.contact(epoch=1, partition=0, attempt=5, pushed=True, metrics={"progress": 0.25})
    board.contact(epoch=1, partition=0, attempt=8, pushed=True)
    board.contact(epoch=1, partition=0, attempt=5, pushed=True)      # late push of the failed attempt
    [row] = board.rows()
    assert (row["attempt"], row["attempts"], row["retries"], row["pushes"]) == (8, 2, 1, 2)
    board.settled(1, {0: 8})
    assert board.rows()[0]["state"] == "done"
    board.contact(epoch=2, partition=0, attempt=11, pushed=True)
    row = board.rows()[0]
    assert (row["epoch"], row["attempts"], row["retries"], row["state"]) == (2, 1, 1, "running")


# -- the page ---------------------------------------------------------------------------------
def test_embedded_data_cannot_close_its_script_element():
    text = embed_json({"metric": "</script><script>alert(1)</script>"})
    assert "</" not in text and json.loads(text)["metric"].startswith("</script>")


def test_the_report_allows_no_request_and_the_live_page_only_its_server():
    html, policy = render({"x": float("nan")}, live=False)
    assert "connect-src 'none'" in policy and "default-src 'none'" in policy
    assert re.search(r"<meta http-equiv=\"Content-Security-Policy\" content=\"[^\"]*connect-src 'none'", html)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)       # nothing from the network
    assert "NaN" not in html.split('id="deepdist-config"')[1].split("</script>")[0]
    _, live_policy = render({}, live=True)
    assert "connect-src 'self'" in live_policy


# -- who may read what ------------------------------------------------------------------------
@pytest.fixture
def served():
    store = ParameterStore({"w": np.zeros(4, np.int64)})
    store.set_descent(add)
    store.start()
    dashboard = Dashboard(store, name="test")
    dashboard.base_url = "http://127.0.0.1:1"
    app = create_app(store, SECRET, 1 << 20, dashboard=dashboard)
    yield app, dashboard, store
    store.stop()


def _login(client, dashboard):
    token = dashboard.url().split("token=")[1]
    return token, client.get(f"/?token={token}")


def test_the_token_buys_a_strict_http_only_cookie_and_a_redirect(served):
    app, dashboard, _ = served
    client = app.test_client()
    token, answer = _login(client, dashboard)
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("deepdist-test=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Domain" not in cookie and "Path=/" in cookie
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["Content-Security-Policy"]
    data = client.get("/dashboard/data")
    assert data.status_code == 200 and data.json["params"] == [
        {"name": "w", "shape": [4], "dtype": "int64", "bytes": 32}]


def test_no_token_a_used_token_or_a_wrong_cookie_gets_401(served):
    app, dashboard, _ = served
    assert app.test_client().get("/").status_code == 401
    assert app.test_client().get("/dashboard/data").status_code == 401
    token, _ = _login(app.test_client(), dashboard)
    assert app.test_client().get(f"/?token={token}").status_code == 401
    stranger = app.test_client()
    stranger.set_cookie("deepdist-test", "guessed")
    assert stranger.get("/").status_code == 401


def test_the_cookie_opens_the_dashboard_only(served):
    app, dashboard, _ = served
    client = app.test_client()
    _login(client, dashboard)
    assert client.get("/status").status_code == 401
    assert client.get("/model").status_code == 401
    assert client.get("/health").status_code == 401
    frame = wire.encode({"w": np.ones(4, np.int64)}, wire.UpdateMeta(version=0).to_json())
    assert client.post("/update", data=frame, content_type=wire.CONTENT_TYPE).status_code == 401
    assert client.post("/dashboard/data").status_code == 401


def test_the_secret_still_opens_every_route(served):
    app, _, _ = served
    client = app.test_client()
    headers = {"Authorization": f"Bearer {SECRET}"}
    assert client.get("/", headers=headers).status_code == 200
    assert client.get("/dashboard/data?after=0", headers=headers).status_code == 200
    assert client.get("/dashboard/data?after=x", headers=headers).status_code == 400


def test_a_push_shows_in_the_partitions_table(served):
    app, dashboard, store = served
    frame = wire.encode({"w": np.ones(4, np.int64)},
                        wire.UpdateMeta(version=0, epoch=1, partition=3, attempt=9, seq=0, metrics={"loss": 0.5}).to_json())
    answer = app.test_client().post("/update", data=frame, content_type=wire.CONTENT_TYPE,
                                    headers={"Authorization": f"Bearer {SECRET}"})
    assert answer.status_code == 202
    store.drain()
    [row] = dashboard.data()["partitions"]
    assert (row["partition"], row["attempt"], row["pushes"]) == (3, 9, 1)


def test_a_reader_gets_the_marks_from_its_last_on():
    history = MetricHistory(lambda: _status(0, {}))
    history.mark("epoch 1")
    first = history.since(0)
    history.end_mark("epoch 1")
    history.mark("epoch 2")
    later = history.since(first["last"], first["generation"], first["marks"][-1]["i"])
    assert [(m["label"], m["end"] is not None) for m in later["marks"]] == [("epoch 1", True), ("epoch 2", False)]


def test_the_live_page_shows_the_retried_and_silent_partitions_of_many(served):
    _, dashboard, _ = served
    for partition in range(300):
        dashboard.partitions.contact(epoch=1, partition=partition, attempt=partition, pushed=True)
    dashboard.partitions.contact(epoch=1, partition=299, attempt=1000, pushed=True)   # a retry
    data = dashboard.data()
    assert data["partitions_total"] == 300 and len(data["partitions"]) == 200
    assert 299 in {r["partition"] for r in data["partitions"]} and 0 in {r["partition"] for r in data["partitions"]}
    assert len(dashboard.data(max_partitions=None)["partitions"]) == 300
