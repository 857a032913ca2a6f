"""docker/loki/alerts.yaml: Loki's ruler cannot run here (no registry for Loki), so what can be
checked without it: each rule is well formed, alerts on an event docs/log-schema.md documents,
selects streams by the labels the Loki overrides set (docker/loki/*.yaml) and services that exist."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import ROOT

RULES = yaml.safe_load((ROOT / "docker/loki/alerts.yaml").read_text())["groups"]
# The stream labels of docs/logs.md's table: the overrides' and the driver's, and `level`.
LABELS = {"job", "federation", "compose_project", "compose_service", "container_name", "host", "source", "level"}
FIELDS = {"run_id", "node_id", "reason"}  # read from the line by `| json`
SCHEMA = (ROOT / "docs/log-schema.md").read_text()


class ComposeLoader(yaml.SafeLoader):
    """Compose's own tags (!reset, !override) read as plain values."""


ComposeLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
SERVICES = {name for f in ("compose.yaml", "docker/compose.server.yaml", "docker/compose.client.yaml")
            for name in yaml.load((ROOT / f).read_text(), ComposeLoader)["services"]}


def rules() -> list[dict]:
    return [rule for group in RULES for rule in group["rules"]]


def test_every_rule_has_a_name_an_expression_a_severity_and_a_summary():
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)) >= 8
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning"} and rule["annotations"]["summary"], rule
        assert rule["expr"].count("{") == rule["expr"].count("}") and rule["expr"].count("(") == rule["expr"].count(")")


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_each_rule_selects_by_bounded_labels_and_documented_events(rule):
    expr = rule["expr"]
    selectors = re.findall(r"\{([^{}]*)\}\s*\|", expr)
    assert selectors, expr
    for selector in selectors:
        for label, _, value in re.findall(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"', selector):
            assert label in LABELS, f"{label} is not a stream label (docs/logs.md)"
            if label == "compose_service":
                assert value in SERVICES, value
    for by in re.findall(r"by \(([^)]*)\)", expr):
        assert {b.strip() for b in by.split(",")} <= LABELS | FIELDS, by
    events = set(re.findall(r'event="(\w+)"', expr)) | set(re.findall(r'\|= "(\w+)"', expr))
    assert events
    for event in events:
        assert f"| `{event}`" in SCHEMA or f"`{event}`" in SCHEMA, f"{event} is not in docs/log-schema.md"


def test_the_events_the_schema_says_to_alert_on_each_have_a_rule():
    covered = " ".join(rule["expr"] for rule in rules())
    for event in ("run_failed", "round_rejected", "node_excluded", "round_skipped", "site_data_invalid",
                  "supernode_config_invalid", 'status="rejected"', 'status="missing"'):
        assert event in covered, event
