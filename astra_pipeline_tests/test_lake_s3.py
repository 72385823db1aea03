"""The lake's data path in an S3-compatible bucket: a real server over HTTP (moto's
server mode on a free loopback port), DuckDB's httpfs with path-style URLs and the
credentials given as settings would give them; nothing mocked in the client."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline_tests.helpers import produce
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource

BIN = Path(sys.executable).parent
KEY_ID, SECRET = "astra-test", "astra-test-secret"


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{endpoint}/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_ingest_into_a_lake_whose_files_are_in_s3(
    s3_endpoint: str,
    topic: str,
    kafka: KafkaResource,
    broker: object,
    lake_catalog: str,
    tmp_path: Path,
) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{s3_endpoint}",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="astra-lake")
    warehouse = DuckDBWarehouseResource(
        lake_catalog=lake_catalog,
        lake_data_path="s3://astra-lake/events/",
        lake_metadata_schema=f"s3_{uuid.uuid4().hex[:12]}",
        lake_s3_endpoint=s3_endpoint,
        lake_s3_use_ssl=False,
        lake_s3_url_style="path",
        lake_s3_access_key_id=KEY_ID,
        lake_s3_secret_access_key=SECRET,
    )
    produced = produce(kafka, topic, 3000, seed=11, duplicate_fraction=0.0)
    totals = drain(
        kafka,
        warehouse,
        IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq", time_budget_s=60),
        run_id="s3-test",
    )
    assert totals.messages == 3000
    clean = warehouse.query(
        "SELECT (SELECT count(*) FROM clean.sensor_readings) + "
        "(SELECT count(*) FROM clean.user_activity)"
    ).item()
    assert clean == produced["unique_valid"]
    objects = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="astra-lake")
        for item in page.get("Contents", [])
    ]
    # The rows are Parquet objects under the prefix, one folder per schema and table.
    assert any(
        key.startswith("events/clean/sensor_readings/") and key.endswith(".parquet")
        for key in objects
    ), objects
    assert not list(tmp_path.rglob("*.parquet")), "nothing was written to a local folder"
