"""The repository's Prometheus files, checked by promtool (Debian's prometheus package;
.ci/run installs it): the config, the alert rules, and the rules' unit tests that make
every alert fire and stay quiet (prometheus/tests/astra_test.yml)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from astra_pipeline_tests.test_metrics_prometheus import need
from resources.settings import AstraSettings

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "prometheus" / "rules" / "astra.yml"


def promtool(*args: str) -> str:
    result = subprocess.run(
        [need("promtool"), *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_config_and_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus/prometheus.yml")
    assert f"SUCCESS: {len(alerts())} rules found" in promtool("check", "rules", str(RULES))


def test_every_alert_fires_and_stays_quiet_in_the_rule_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", "prometheus/tests/astra_test.yml")
    tests = yaml.safe_load((REPO / "prometheus/tests/astra_test.yml").read_text())["tests"]
    for rule in alerts():
        cases = [
            case
            for test in tests
            for case in test["alert_rule_test"]
            if case["alertname"] == rule["alert"]
        ]
        assert any(c["exp_alerts"] for c in cases), f"{rule['alert']} never fires in a test"
        assert any(not c["exp_alerts"] for c in cases), f"{rule['alert']} never stays quiet"


def test_every_alert_has_a_summary_and_a_runbook_section() -> None:
    runbook = (REPO / "docs" / "operations.md").read_text()
    anchors = {m.lower() for m in re.findall(r"^### (\w+)$", runbook, re.MULTILINE)}
    for rule in alerts():
        annotations = rule["annotations"]  # type: ignore[index]
        assert annotations["summary"]  # type: ignore[index]
        name = str(rule["alert"]).lower()
        assert annotations["runbook"] == f"docs/operations.md#{name}"  # type: ignore[index]
        assert name in anchors, f"docs/operations.md has no section for {rule['alert']}"


def test_the_dead_letter_rule_uses_the_settings_threshold() -> None:
    rule = next(r for r in alerts() if r["alert"] == "AstraDeadLetterRateHigh")
    threshold = float(str(rule["expr"]).rsplit(">", 1)[1])
    assert threshold == AstraSettings().deadletter_rate_threshold
