"""The Grafana dashboard in deploy/grafana/ queries only metrics the broker exposes, through
its datasource variable, and every query is valid PromQL (promtool parses them as rules)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from tests.tools import require_tool

from tq.api.metrics import MetricsServer
from tq.broker.service import BrokerService
from tq.config import load
from tq.core.machine import Machine
from tq.storage import MemoryStore

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = DEPLOY / "tq-dashboard.json"
#: Grafana's variables, replaced by something PromQL accepts.
VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$queue": ".*"}
METRIC = re.compile(r"\b((?:tq|process)_[a-z_]+)\b")


def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", ())]


def exposed_names() -> set[str]:
    settings = load(env={}, overrides={"monitoring.prometheus_port": 0})
    server = MetricsServer(BrokerService(settings, MemoryStore(), Machine()), settings)
    text = server.render()[0].decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def test_every_panel_reads_the_datasource_variable() -> None:
    doc = dashboard()
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in doc["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_the_dashboard_shows_the_required_views() -> None:
    text = "\n".join(exprs())
    assert "sum by (tier) (tq_broker_queue_depth" in text
    for histogram in (
        "tq_submit_latency_seconds",
        "tq_claim_latency_seconds",
        "tq_task_processing_duration_seconds",
        "tq_group_commit_batch_size",
        "tq_group_commit_fsync_duration_seconds",
    ):
        assert f"histogram_quantile(0.99, sum by (le) (rate({histogram}_bucket" in text
    for gauge in ("tq_workers_connected", "tq_connections", "tq_tasks_pending"):
        assert gauge in text


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    exposed = exposed_names()
    queried = {m for e in exprs() for m in METRIC.findall(e)}
    assert len(queried) > 15
    assert not sorted(queried - exposed)


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rules = []
    for i, query in enumerate(exprs()):
        expr = query
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        rules.append({"record": f"tq:dashboard_query_{i}", "expr": expr})
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_provisioning_files_point_at_the_dashboard_and_a_prometheus_source() -> None:
    dashboards = yaml.safe_load((DEPLOY / "provisioning/dashboards/tq.yaml").read_text())
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/var/lib/grafana/dashboards")
    sources = yaml.safe_load((DEPLOY / "provisioning/datasources/prometheus.yaml").read_text())
    assert sources["datasources"][0]["type"] == "prometheus"
