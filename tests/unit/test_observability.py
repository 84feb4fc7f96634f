"""deploy/observability: the alert rules pass `promtool check rules` and their unit tests
(alerts_test.yml), the dashboard has the shape Grafana needs, and every metric the
dashboard and the rules query is one the code defines.

promtool is built from its Go module by deploy/observability/promtool the first time
(several minutes). Without Go the promtool tests are skipped locally and fail under CI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, Metric
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import metrics
from orchestrator.transport import faust_app
from participants.kit import participant

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
ALERTS = OBSERVABILITY / "alerts.yml"
ALERTS_TEST = OBSERVABILITY / "alerts_test.yml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"

GO_MISSING = 3  # the promtool script's exit status when it cannot build
BUILD_TIMEOUT_S = 1800

# --- promtool -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    found = subprocess.run(
        [str(OBSERVABILITY / "promtool")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if found.returncode == GO_MISSING and not os.environ.get("CI"):
        pytest.skip(f"no promtool and no Go to build it: {found.stderr.strip()}")
    assert found.returncode == 0, f"deploy/observability/promtool failed:\n{found.stderr}"
    return found.stdout.strip()


def _run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_the_alert_rules_pass_promtool_check(promtool: str) -> None:
    checked = _run(promtool, "check", "rules", str(ALERTS.relative_to(ROOT)))

    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_the_alerts_fire_on_the_series_of_their_unit_tests(promtool: str) -> None:
    tested = _run(promtool, "test", "rules", str(ALERTS_TEST.relative_to(ROOT)))

    assert tested.returncode == 0, tested.stdout + tested.stderr


# --- the dashboard's shape ------------------------------------------------------------

_GRID_POS = {
    "type": "object",
    "required": ["x", "y", "w", "h"],
    "properties": {
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "h": {"type": "integer", "minimum": 1},
    },
}
_ROW = {
    "type": "object",
    "required": ["type", "title", "gridPos"],
    "properties": {"type": {"const": "row"}, "title": {"type": "string"}, "gridPos": _GRID_POS},
}
_QUERY_PANEL = {
    "type": "object",
    "required": ["id", "type", "title", "gridPos", "datasource", "targets"],
    "properties": {
        "id": {"type": "integer"},
        "type": {"enum": ["timeseries", "stat", "gauge", "bargauge", "table", "heatmap"]},
        "title": {"type": "string", "minLength": 1},
        "gridPos": _GRID_POS,
        "targets": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["refId", "expr"],
                "properties": {
                    "refId": {"type": "string", "minLength": 1},
                    "expr": {"type": "string", "minLength": 1},
                },
            },
        },
    },
}
DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "uid", "panels", "schemaVersion", "templating"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "panels": {"type": "array", "minItems": 1, "items": {"anyOf": [_ROW, _QUERY_PANEL]}},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "type": {"enum": ["datasource", "query", "custom", "interval"]},
                        },
                    },
                }
            },
        },
    },
}

_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
}


_KEYWORDS: dict[str, Callable[[Any, Any], bool]] = {
    "const": lambda value, const: value == const,
    "enum": lambda value, allowed: value in allowed,
    "minimum": lambda value, least: value >= least,
    "maximum": lambda value, most: value <= most,
    "minLength": lambda value, least: len(value) >= least,
    "minItems": lambda value, least: len(value) >= least,
}


def schema_errors(value: Any, schema: dict[str, Any], where: str = "$") -> Iterator[str]:
    """The JSON Schema keywords DASHBOARD_SCHEMA uses, checked without the jsonschema
    package (which the project does not depend on)."""
    expected = schema.get("type")
    if expected and (isinstance(value, bool) or not isinstance(value, _JSON_TYPES[expected])):
        yield f"{where}: not of type {expected}"
        return
    for keyword, holds in _KEYWORDS.items():
        if keyword in schema and not holds(value, schema[keyword]):
            yield f"{where}: fails {keyword} {schema[keyword]!r}"
    if "anyOf" in schema:
        failures = [list(schema_errors(value, s, where)) for s in schema["anyOf"]]
        if all(failures):
            yield f"{where}: matches none of anyOf: {failures}"
    missing = [key for key in schema.get("required", []) if key not in value]
    yield from (f"{where}: {key} missing" for key in missing)
    for key, sub in schema.get("properties", {}).items():
        if key in value:
            yield from schema_errors(value[key], sub, f"{where}.{key}")
    for i, item in enumerate(value if "items" in schema else []):
        yield from schema_errors(item, schema["items"], f"{where}[{i}]")


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_the_dashboard_matches_its_schema() -> None:
    assert list(schema_errors(_dashboard(), DASHBOARD_SCHEMA)) == []


def test_the_schema_check_catches_a_panel_without_a_query() -> None:
    broken = _dashboard()
    del broken["panels"][1]["targets"][0]["expr"]
    del broken["uid"]

    errors = list(schema_errors(broken, DASHBOARD_SCHEMA))

    assert "$: uid missing" in errors
    assert any(e.startswith("$.panels[1]: matches none of anyOf") for e in errors)


def test_the_dashboard_panels_fit_the_grid_and_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    ids = []
    for panel in _dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        ids.append(panel["id"])
    assert len(ids) == len(set(ids))


def test_the_dashboard_has_a_datasource_and_a_saga_type_variable() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}

    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["type"]["query"]["query"] == "label_values(saga_started_total, type)"
    for panel in _dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


# --- the metric names -----------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def _database_gauges() -> list[Metric]:
    """The api renders these per scrape in a registry of their own: render them once with
    a label value everywhere so that every family has samples."""
    now = datetime.now(UTC)
    stats = {
        "by_type": {"order": {"running": 1}},
        "outbox_backlog": 1,
        "outbox_oldest_unpublished_at": now,
        "overdue": {"by_type": {"order": 1}},
        "resolving": {"by_step": {"order.reserve": 1}},
    }
    text = metrics.database_gauges(stats, now).decode()
    return list(text_string_to_metric_families(text))


def known_series() -> dict[str, set[str]]:
    """Every series name the api, the worker and the participants expose, with the label
    names it carries."""
    # label names come from the metric objects (a private attribute of prometheus_client):
    # a labelled metric with no child yet has no samples to read them from
    labels = {}
    for collector in (
        *(v for v in vars(metrics).values() if hasattr(v, "_labelnames")),
        faust_app.CONSUMER_LAG,
        participant.COMMANDS_APPLIED,
        participant.COMMANDS_REPEATED,
    ):
        labels[collector._name] = set(collector._labelnames)
    series: dict[str, set[str]] = {}
    families = [*REGISTRY.collect(), *_database_gauges()]
    for family in families:
        if not family.name.startswith("saga_"):
            continue
        for suffix in _SUFFIXES[family.type]:
            name = family.name + suffix
            series[name] = labels.get(family.name, set()) | (
                {"le"} if suffix == "_bucket" else set()
            )
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def _rule_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = _dashboard()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


_NAME = re.compile(r"\bsaga_[a-z0-9_]+\b")
_SELECTOR = re.compile(r"\b(saga_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


@pytest.mark.parametrize(
    ("source", "exprs"), [("alerts.yml", _rule_exprs()), ("dashboard", _dashboard_exprs())]
)
def test_every_metric_queried_is_one_the_code_defines(source: str, exprs: list[str]) -> None:
    series = known_series()
    used = {name for expr in exprs for name in _NAME.findall(expr)}

    assert used, source
    assert used - series.keys() == set(), f"{source} queries metrics the code does not define"


@pytest.mark.parametrize(
    ("source", "exprs"), [("alerts.yml", _rule_exprs()), ("dashboard", _dashboard_exprs())]
)
def test_every_label_matched_is_one_the_metric_has(source: str, exprs: list[str]) -> None:
    series = known_series()
    unknown = {
        (name, label)
        for expr in exprs
        for name, matchers in _SELECTOR.findall(expr)
        for label in _MATCHER.findall(matchers)
        if label not in series.get(name, set())
    }

    assert unknown == set(), f"{source} matches labels its metrics do not have"


def test_the_name_check_would_catch_a_misspelt_metric() -> None:
    series = known_series()

    assert "saga_dead_letters_total" in series
    assert "saga_duration_seconds_bucket" in series
    assert "saga_overdue" in series
    assert "saga_consumer_lag" in series
    assert "saga_participant_commands_total" in series
    assert "saga_dead_letter_total" not in series
    assert "saga_overdue_total" not in series
