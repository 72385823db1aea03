import dagster as dg

from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline.jobs import build_ingest_job
from sensors.kafka_events import build_kafka_events_sensor, compute_lag


def test_compute_lag_by_hand() -> None:
    assert compute_lag({0: 10, 1: 5, 2: 0}, {0: 4, 1: None, 2: None}) == {0: 6, 1: 5, 2: 0}
    assert compute_lag({0: 3}, {0: 7}) == {0: 0}


def evaluate(sensor: dg.SensorDefinition, kafka, instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"kafka": kafka})
    return sensor(context)


def test_sensor_requests_run_on_lag_and_skips_when_caught_up(kafka, topic, warehouse) -> None:
    job = build_ingest_job(IngestConfig(topic=topic))
    sensor = build_kafka_events_sensor(topic, interval_s=5, running_by_default=True, job=job)
    kafka.produce_all(topic, ((f"k{i % 7}".encode(), b"{}") for i in range(500)))
    with dg.instance_for_test() as instance:
        first = evaluate(sensor, kafka, instance)
        assert isinstance(first, dg.SensorResult)
        assert len(first.run_requests) == 1
        observed = first.asset_events[0].metadata["kafka_lag"]
        assert 0 < observed.value <= 500
        # The same state gives the same run key: one state never launches two runs.
        again = evaluate(sensor, kafka, instance)
        assert again.run_requests[0].run_key == first.run_requests[0].run_key
        drain(kafka, warehouse, IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq"), None)
        caught_up = evaluate(sensor, kafka, instance, cursor=first.cursor)
        requests = caught_up.run_requests if isinstance(caught_up, dg.SensorResult) else []
        assert requests == []
