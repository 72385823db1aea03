"""`astra api` end to end: a real uvicorn process, the test broker, the embedded
Postgres (serving copy) and a lake; real HTTP, WebSocket and SSE clients.

The read endpoints are compared with SQL run directly on the same tables; events sent
over HTTP and WebSocket (retries included) are ingested by the real drain and counted in
the clean tables.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import psycopg
import pytest
import websockets
from confluent_kafka import Consumer, Producer, TopicPartition
from psycopg.rows import dict_row

from astra_pipeline.api.keys import create_key
from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline.assets.serving import (
    ALERTS_SPEC,
)
from astra_pipeline_tests.api_server import ApiProcess
from astra_pipeline_tests.serving_rows import DEVICES, T0, alert_row, serve_tables
from resources.broker import EmbeddedBroker
from resources.embedded_postgres import EmbeddedPostgres
from resources.kafka import KafkaResource
from resources.serving import PostgresServingResource
from resources.serving_reads import READ_INDEXES
from resources.warehouse import DuckDBWarehouseResource

RATE_PER_S = 100


def reading(device: str, ts: dt.datetime, temperature: float, **extra: Any) -> dict[str, Any]:
    return {
        "event_type": "sensor_reading",
        "device_id": device,
        "ts": ts.isoformat().replace("+00:00", "Z"),
        "temperature_c": temperature,
        "humidity_pct": 40.0,
        "battery_pct": 90.0,
        "lat": 1.0,
        "lon": 2.0,
        "status": "ok",
        **extra,
    }


class Stack:
    def __init__(self, api: ApiProcess, env: dict[str, str], keys: dict[str, str], pg: str):
        self.api = api
        self.env = env
        self.keys = keys
        self.pg = pg
        self.topic = env["ASTRA_TOPIC_RAW"]
        self.alerts_topic = env["ASTRA_TOPIC_ALERTS"]
        self.bootstrap = env["ASTRA_KAFKA_BOOTSTRAP_SERVERS"]

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    def client(self, key: str = "read") -> httpx.Client:
        return httpx.Client(base_url=self.api.url, headers=self.auth(key), timeout=30)

    def warehouse(self) -> DuckDBWarehouseResource:
        return DuckDBWarehouseResource(
            lake_catalog=self.env["ASTRA_LAKE_CATALOG"],
            lake_data_path=self.env["ASTRA_LAKE_DATA_PATH"],
            lake_metadata_schema=self.env["ASTRA_LAKE_METADATA_SCHEMA"],
        )

    def ingest(self) -> None:
        kafka = KafkaResource(bootstrap_servers=self.bootstrap, consumer_group=f"g-{self.topic}")
        drain(
            kafka,
            self.warehouse(),
            IngestConfig(topic=self.topic, deadletter_topic=f"{self.topic}_dlq"),
            run_id=None,
        )

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with psycopg.connect(self.pg, row_factory=dict_row, options="-c TimeZone=UTC") as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stack(
    broker: EmbeddedBroker,
    embedded_postgres: EmbeddedPostgres,
    lake_catalog: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:10]
    topic, alerts = f"events_{tag}", f"alerts_{tag}"
    KafkaResource(bootstrap_servers=broker.bootstrap_servers).create_topics(
        {topic: 6, f"{topic}_dlq": 1, alerts: 1}
    )
    keys: dict[str, str] = {}
    entries = []
    for name, scope in (("ingest", "ingest"), ("read", "read"), ("burst", "ingest")):
        key, entry = create_key(scope)  # type: ignore[arg-type]
        keys[name] = key
        entries.append(entry.line())
    folder = tmp_path_factory.mktemp("api")
    pg = embedded_postgres.create_database(f"api_{tag}")
    env = {
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "ASTRA_TOPIC_RAW": topic,
        "ASTRA_TOPIC_DEADLETTER": f"{topic}_dlq",
        "ASTRA_TOPIC_ALERTS": alerts,
        "ASTRA_PG_URL": pg,
        "ASTRA_LAKE_CATALOG": lake_catalog,
        "ASTRA_LAKE_DATA_PATH": str(folder / "lake"),
        "ASTRA_LAKE_METADATA_SCHEMA": f"lake_{tag}",
        "ASTRA_API_KEYS": ",".join(entries),
        "ASTRA_API_RATE_LIMIT_PER_S": str(RATE_PER_S),
        "ASTRA_API_MAX_BODY_BYTES": str(256 * 1024),
    }
    serve_tables(PostgresServingResource(url=pg))  # before the API: it indexes them
    running = Stack(ApiProcess(env, folder / "api.log"), env, keys, pg)
    running.warehouse().ensure_schema()
    try:
        running.api.wait_ready()
        yield running
    finally:
        running.api.stop()


def _pages(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def _iso(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return value


def _same_rows(api_rows: list[dict[str, Any]], sql_rows: list[dict[str, Any]]) -> None:
    assert len(api_rows) == len(sql_rows)
    for got, want in zip(api_rows, sql_rows, strict=True):
        for name, value in got.items():
            if name not in want:
                continue
            expected = _iso(want[name])
            if isinstance(expected, dt.datetime):
                assert dt.datetime.fromisoformat(value) == expected, name
            elif isinstance(expected, dt.date):
                assert dt.date.fromisoformat(value) == expected, name
            else:
                assert value == expected, (name, value, expected)


def test_windows_sessions_churn_and_alerts_equal_sql_on_the_serving_tables(stack: Stack) -> None:
    with stack.client() as client:
        for resolution, table in (
            ("1m", "agg.sensor_1m"),
            ("5m", "agg.sensor_5m_sliding"),
            ("1h", "agg.sensor_1h"),
        ):
            start, end = T0 + dt.timedelta(minutes=7), T0 + dt.timedelta(minutes=131)
            got = _pages(
                client,
                "/v1/devices/dev-b/windows",
                resolution=resolution,
                limit=25,
                **{"from": start.isoformat(), "to": end.isoformat()},
            )
            want = stack.sql(
                f"SELECT * FROM {table} WHERE device_id = 'dev-b' AND window_start >= %s"
                " AND window_start < %s ORDER BY window_start",
                (start, end),
            )
            assert want, table
            _same_rows(got, want)
        devices = _pages(client, "/v1/devices", limit=2)
        want = stack.sql(
            "SELECT DISTINCT ON (device_id) * FROM agg.sensor_1m"
            " ORDER BY device_id, window_start DESC"
        )
        assert [d["device_id"] for d in devices] == list(DEVICES)
        _same_rows([d["latest_window"] for d in devices], want)
        sessions = _pages(
            client,
            "/v1/users/user-2/sessions",
            limit=5,
            **{"from": T0.isoformat(), "to": (T0 + dt.timedelta(minutes=65)).isoformat()},
        )
        _same_rows(
            sessions,
            stack.sql(
                "SELECT * FROM agg.user_sessions WHERE user_id = 'user-2' AND session_start >= %s"
                " AND session_start < %s ORDER BY session_start",
                (T0, T0 + dt.timedelta(minutes=65)),
            ),
        )
        churn = client.get("/v1/users/user-1/churn").json()
        latest = stack.sql(
            "SELECT * FROM ml.churn_scores WHERE user_id = 'user-1' ORDER BY as_of_day DESC LIMIT 1"
        )[0]
        assert churn["as_of_day"] == latest["as_of_day"].isoformat()
        assert churn["churn_probability"] == latest["churn_probability"]
        assert churn["features"]["tenure_days"] == 1
        since = T0 + dt.timedelta(minutes=3)
        got = _pages(client, "/v1/alerts", limit=4, since=since.isoformat(), device_id="dev-a")
        want = stack.sql(
            "SELECT * FROM ml.alerts WHERE ts >= %s AND device_id = 'dev-a' ORDER BY ts, alert_id",
            (since,),
        )
        assert want
        _same_rows(got, want)


def test_the_api_adds_its_read_indexes_to_the_serving_tables(stack: Stack) -> None:
    want = {
        (f"{schema}.{table}", f"api_{table}_{'_'.join(columns)}")
        for schema, table, columns in READ_INDEXES
    }
    got: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 30
    while got != want and time.monotonic() < deadline:
        got = {
            (f"{r['schemaname']}.{r['tablename']}", r["indexname"])
            for r in stack.sql("SELECT * FROM pg_indexes WHERE starts_with(indexname, 'api_')")
        }
        time.sleep(0.5)
    assert got == want


def test_unknown_ids_are_404_and_bad_ranges_400(stack: Stack) -> None:
    with stack.client() as client:
        window = {"from": T0.isoformat(), "to": (T0 + dt.timedelta(hours=1)).isoformat()}
        for path in (
            "/v1/devices/nobody/windows",
            "/v1/devices/nobody/readings",
            "/v1/users/nobody/sessions",
        ):
            response = client.get(path, params=window)
            assert response.status_code == 404, (path, response.text)
            assert set(response.json()) == {"error", "detail"}
        assert client.get("/v1/users/nobody/churn").status_code == 404
        assert client.get("/v1/devices/nobody/latest").status_code == 404
        inverted = {"from": window["to"], "to": window["from"]}
        assert client.get("/v1/devices/dev-a/windows", params=inverted).status_code == 400
        unbounded = client.get("/v1/devices/dev-a/windows", params={"from": window["from"]})
        assert unbounded.status_code == 400
        assert unbounded.json()["error"] == "unbounded time range"
        bad = client.get("/v1/devices/dev-a/windows", params={**window, "resolution": "2m"})
        assert bad.status_code == 400
        assert client.get("/v1/alerts", params={"cursor": "%%%"}).status_code == 400


def test_alert_pages_neither_skip_nor_repeat_while_rows_arrive(stack: Stack) -> None:
    serving = PostgresServingResource(url=stack.pg)
    before = {r["alert_id"] for r in stack.sql("SELECT alert_id FROM ml.alerts")}
    seen: list[str] = []
    cursor = None
    later = T0 + dt.timedelta(hours=1)
    with stack.client() as client:
        for page in range(100):
            params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            body = client.get("/v1/alerts", params=params).json()
            seen += [a["alert_id"] for a in body["items"]]
            cursor = body["next_cursor"]
            if page < 3:  # new alerts arrive between pages (a later hour, replaced whole)
                serving.replace_partition(
                    ALERTS_SPEC,
                    pl.DataFrame([alert_row(i, later) for i in range(5 * (page + 1))]).select(
                        ALERTS_SPEC.column_names
                    ),
                    start=later,
                    end=later + dt.timedelta(hours=1),
                )
            if cursor is None:
                break
    assert len(seen) == len(set(seen)), "a row was repeated"
    assert before <= set(seen), "a row was skipped"
    now = {r["alert_id"] for r in stack.sql("SELECT alert_id FROM ml.alerts")}
    assert set(seen) == now


def test_mixed_batch_is_accepted_item_by_item_and_lands_in_kafka(stack: Stack) -> None:
    good = reading("dev-x", dt.datetime.now(dt.UTC), 21.5, event_id="mixed-1")
    bad = reading("dev-x", dt.datetime.now(dt.UTC), 500.0)
    body = [good, bad, "not an event", {"event_type": "user_activity"}]
    with stack.client("ingest") as client:
        response = client.post("/v1/events", json=body, headers={"X-Request-ID": "req-mixed-1"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-mixed-1"
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected", "rejected"]
    assert results[0]["event_id"] == "mixed-1"
    assert "temperature_c" in results[1]["reason"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "t-mixed"})
    try:
        consumer.assign(
            [TopicPartition(stack.topic, results[0]["partition"], results[0]["offset"])]
        )
        message = consumer.poll(15)
        assert message is not None and message.error() is None
        assert json.loads(message.value()) == good
        assert message.key() == b"dev-x"
        assert ("x-request-id", b"req-mixed-1") in (message.headers() or [])
    finally:
        consumer.close()
    log = stack.api.log()
    assert "req-mixed-1 POST /v1/events 200" in log
    assert stack.keys["ingest"] not in log and stack.keys["ingest"].split("_")[2] not in log


def test_every_client_error_status(stack: Stack) -> None:
    ok = reading("dev-y", dt.datetime.now(dt.UTC), 20.0)
    with httpx.Client(base_url=stack.api.url, timeout=30) as anonymous:
        assert anonymous.post("/v1/events", json=ok).status_code == 401
        assert anonymous.get("/v1/alerts").status_code == 401
        wrong = {"Authorization": "Bearer astra_0000_nope"}
        assert anonymous.get("/v1/alerts", headers=wrong).status_code == 401
        assert anonymous.get("/healthz").status_code == 200
    with stack.client("read") as reader:
        forbidden = reader.post("/v1/events", json=ok)
        assert forbidden.status_code == 403 and forbidden.json()["error"]
    with stack.client("ingest") as client:
        assert client.get("/v1/alerts").status_code == 403
        plain = client.post("/v1/events", content=b"{}", headers={"content-type": "text/plain"})
        assert plain.status_code == 415
        assert client.post("/v1/events", content=b"{nope", headers=_json()).status_code == 400
        ndjson = client.post(
            "/v1/events", content=b"nope\nalso nope\n", headers={"content-type": NDJSON}
        )
        assert ndjson.status_code == 400
        invalid = client.post("/v1/events", json=[{"a": 1}, {"event_type": "sensor_reading"}])
        assert invalid.status_code == 422
        assert [r["status"] for r in invalid.json()["results"]] == ["rejected", "rejected"]
        big = b"[" + b",".join([json.dumps(ok).encode()] * 2000) + b"]"
        assert len(big) > 256 * 1024
        assert client.post("/v1/events", content=big, headers=_json()).status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        chunked = client.post("/v1/events", content=chunks(), headers=_json())
        assert chunked.status_code == 413 and "limit" in chunked.json()["detail"]
    statuses = asyncio.run(_burst(stack, 3 * RATE_PER_S))
    assert 429 in statuses and 200 in statuses, sorted(set(statuses))


def _json() -> dict[str, str]:
    return {"content-type": "application/json"}


NDJSON = "application/x-ndjson"


async def _burst(stack: Stack, n: int) -> list[int]:
    body = [reading("dev-z", dt.datetime.now(dt.UTC), 20.0, event_id="burst")]
    async with httpx.AsyncClient(base_url=stack.api.url, headers=stack.auth("burst")) as client:
        responses = await asyncio.gather(*(client.post("/v1/events", json=body) for _ in range(n)))
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
    return [r.status_code for r in responses]


def test_events_over_http_and_websocket_land_once_with_client_retries(stack: Stack) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=2)
    http_events = [reading("dev-h", now + dt.timedelta(seconds=i), 20.0 + i) for i in range(60)]
    ws_events = [reading("dev-w", now + dt.timedelta(seconds=i), 10.0 + i) for i in range(40)]
    ndjson = b"".join(json.dumps(e).encode() + b"\n" for e in http_events)
    with stack.client("ingest") as client:
        first = client.post("/v1/events", content=ndjson, headers={"content-type": NDJSON})
        retry = client.post("/v1/events", content=ndjson, headers={"content-type": NDJSON})
    assert first.status_code == retry.status_code == 200
    ids = [r["event_id"] for r in first.json()["results"]]
    # No event_id given: the gateway derives it from the content, so a retry sends the same.
    assert ids == [r["event_id"] for r in retry.json()["results"]]
    assert len(set(ids)) == 60
    acks = asyncio.run(_websocket(stack, [ws_events[:15], ws_events[15:30], ws_events[30:]]))
    ws_ids = [r["event_id"] for ack in acks for r in ack["results"]]
    assert all(r["status"] == "accepted" for ack in acks for r in ack["results"])
    assert len(set(ws_ids)) == 40
    again = asyncio.run(_websocket(stack, [ws_events[15:30]]))  # a client's resend
    assert [r["event_id"] for r in again[0]["results"]] == ws_ids[15:30]
    stack.ingest()
    rows = stack.warehouse().query(
        "SELECT device_id, count(*) AS n, count(DISTINCT event_id) AS ids"
        " FROM clean.sensor_readings WHERE device_id IN ('dev-h', 'dev-w') GROUP BY device_id"
        " ORDER BY device_id"
    )
    assert rows.to_dicts() == [
        {"device_id": "dev-h", "n": 60, "ids": 60},
        {"device_id": "dev-w", "n": 40, "ids": 40},
    ]
    stored = set(stack.warehouse().query("SELECT event_id FROM clean.sensor_readings")["event_id"])
    assert set(ids) | set(ws_ids) <= stored
    # The readings endpoint reads the same rows from the lake.
    with stack.client() as client:
        window = {"from": now.isoformat(), "to": (now + dt.timedelta(minutes=5)).isoformat()}
        got = _pages(client, "/v1/devices/dev-h/readings", limit=16, **window)
        latest = client.get("/v1/devices/dev-h/latest").json()
    assert [r["temperature_c"] for r in got] == [e["temperature_c"] for e in http_events]
    assert latest["reading"]["temperature_c"] == http_events[-1]["temperature_c"]


async def _websocket(stack: Stack, messages: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    url = stack.api.url.replace("http://", "ws://") + "/v1/ws/events"
    acks = []
    async with websockets.connect(url, additional_headers=stack.auth("ingest")) as socket:
        for message in messages:
            await socket.send(json.dumps(message))
            acks.append(json.loads(await socket.recv()))
        await socket.send("not json")
        assert json.loads(await socket.recv())["error"] == "message is not JSON"
    return acks


def test_websocket_without_a_key_is_refused(stack: Stack) -> None:
    url = stack.api.url.replace("http://", "ws://") + "/v1/ws/events"

    async def connect() -> None:
        async with websockets.connect(url) as socket:
            await socket.recv()

    with pytest.raises(
        (websockets.exceptions.InvalidStatus, websockets.exceptions.ConnectionClosed)
    ):
        asyncio.run(connect())


def test_alert_stream_delivers_new_alerts_and_resumes_after_last_event_id(stack: Stack) -> None:
    producer = Producer({"bootstrap.servers": stack.bootstrap})

    def publish(alert_id: str) -> None:
        value = json.dumps({"alert_id": alert_id, "device_id": "dev-a", "score": 9.0})
        producer.produce(
            stack.alerts_topic, value=value, key=b"dev-a", headers=[("alert_id", alert_id)]
        )
        producer.flush(10)

    publish("old-alert")  # before the client connects: not delivered
    got = _stream(stack, None, lambda: [publish("a1"), publish("a1"), publish("a2")], 2)
    assert [(e["id"], json.loads(e["data"])["alert_id"]) for e in got] == [
        ("a1", "a1"),
        ("a2", "a2"),
    ]
    publish("a3")
    publish("a4")
    resumed = _stream(stack, "a2", lambda: None, 2)
    assert [e["id"] for e in resumed] == ["a3", "a4"]


def _stream(
    stack: Stack, last_event_id: str | None, after_connect: Any, want: int
) -> list[dict[str, str]]:
    headers = stack.auth("read") | ({"Last-Event-ID": last_event_id} if last_event_id else {})
    events: list[dict[str, str]] = []
    with (
        httpx.Client(base_url=stack.api.url, timeout=30) as client,
        client.stream("GET", "/v1/alerts/stream", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, str] = {}
        lines = response.iter_lines()
        assert next(lines) == ": connected"
        threading.Timer(0.5, after_connect).start()
        for line in lines:
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("data: "):
                current["data"] = line[6:]
            elif line == "" and current:
                events.append(current)
                current = {}
                if len(events) == want:
                    break
    return events


def test_health_and_openapi(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:
        assert client.get("/readyz").json() == {
            "status": "ready",
            "checks": {"kafka": "ok", "postgres": "ok"},
        }
        spec = client.get("/openapi.json").json()
        assert {"/v1/events", "/v1/devices/{device_id}/windows", "/v1/alerts"} <= set(spec["paths"])
        assert client.get("/docs").status_code == 200


def test_a_stopped_broker_gives_503_and_nothing_reported_accepted(
    embedded_postgres: EmbeddedPostgres, lake_catalog: str, tmp_path: Path
) -> None:
    """Its own broker, stopped mid-test: every event acknowledged before is in Kafka;
    after the stop, the gateway answers 503 with Retry-After and accepts nothing."""
    own = EmbeddedBroker().start()
    topic = "events_stop"
    KafkaResource(bootstrap_servers=own.bootstrap_servers).create_topics({topic: 2})
    env = {
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": own.bootstrap_servers,
        "ASTRA_TOPIC_RAW": topic,
        "ASTRA_PG_URL": embedded_postgres.url("postgres"),
        "ASTRA_LAKE_CATALOG": lake_catalog,
        "ASTRA_LAKE_DATA_PATH": str(tmp_path / "lake"),
        "ASTRA_API_KAFKA_TIMEOUT_S": "3",
        "ASTRA_API_PRODUCER_QUEUE_MESSAGES": "1000",
    }
    api = ApiProcess(env, tmp_path / "api.log")
    try:
        api.wait_ready()
        now = dt.datetime.now(dt.UTC)
        events = [reading("dev-s", now - dt.timedelta(seconds=i), 20.0) for i in range(50)]
        before = httpx.post(f"{api.url}/v1/events", json=events, timeout=30)
        assert before.status_code == 200
        acked = [(r["partition"], r["offset"]) for r in before.json()["results"]]
        consumer = Consumer({"bootstrap.servers": own.bootstrap_servers, "group.id": "t-stop"})
        stored = set()
        try:
            for partition in (0, 1):
                consumer.assign([TopicPartition(topic, partition, 0)])
                while (m := consumer.poll(3)) is not None:
                    stored.add((m.partition(), m.offset()))
        finally:
            consumer.close()
        assert set(acked) <= stored
        # More than the producer may hold unacknowledged: refused whole, at once.
        flood = [reading("dev-s", now, 20.0, n=i) for i in range(1001)]
        full = httpx.post(f"{api.url}/v1/events", json=flood, timeout=30)
        assert full.status_code == 503 and full.json()["error"] == "Kafka producer queue full"
        assert full.headers["retry-after"]
        own.stop()
        during = httpx.post(f"{api.url}/v1/events", json=events[:5], timeout=60)
        assert during.status_code == 503, during.text
        assert during.headers["retry-after"]
        assert not [r for r in during.json().get("results", []) if r["status"] == "accepted"]
        ready = httpx.get(f"{api.url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["checks"]["kafka"] != "ok"
        assert ready.json()["checks"]["postgres"] == "ok"
    finally:
        api.stop()
        own.stop()
