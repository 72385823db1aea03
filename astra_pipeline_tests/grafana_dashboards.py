"""The repository's Grafana dashboards and provisioning, and Grafana's Postgres macros
expanded the way Grafana expands them (its grafana-postgresql-datasource: `$__timeFilter`
is a BETWEEN of two RFC 3339 times, `$__timeGroup` a floor of the epoch, `$__timeGroupAlias`
the same `AS "time"`; a multi-value variable is a comma-separated list of quoted values)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.stem: json.loads(path.read_text())
        for path in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


def dashboard_targets(datasource_uid: str) -> Iterator[dict[str, Any]]:
    for board in dashboards().values():
        for panel in board["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["uid"] == datasource_uid:
                    yield {**target, "panel": panel["title"], "panel_type": panel["type"]}


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(interval: str) -> int:
    match = re.fullmatch(r"(\d+)([smhd])", interval.strip().strip("'"))
    assert match, interval
    return int(match.group(1)) * _UNITS[match.group(2)]


def expand(
    sql: str, start: dt.datetime, end: dt.datetime, variables: Mapping[str, Sequence[str]]
) -> str:
    def macro(match: re.Match[str]) -> str:
        name, args = match.group(1), [a.strip() for a in match.group(2).split(",")]
        if name == "timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
        if name in ("timeGroup", "timeGroupAlias"):
            step = _seconds(args[1])
            group = f"floor(extract(epoch from {args[0]})/{step})*{step}"
            return group + (' AS "time"' if name == "timeGroupAlias" else "")
        raise AssertionError(f"macro $__{name} not expanded by this test")

    sql = re.sub(r"\$__(\w+)\(([^)]*)\)", macro, sql)
    sql = sql.replace("$__timeFrom()", f"'{_rfc3339(start)}'")
    sql = sql.replace("$__timeTo()", f"'{_rfc3339(end)}'")
    for name, values in variables.items():
        quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values)
        sql = sql.replace(f"${name}", quoted)
    assert "$" not in sql, sql
    return sql
