"""ops/: the exposition, alert rules and dashboard checked by `promtool`, and their metric
names checked against what the endpoint really exports.

`promtool` comes from Debian's `prometheus` package (`make test` runs
`scripts/ensure-promtool.sh`); a missing promtool fails these tests, never skips them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from core import metrics, prometheus
from tests.conftest import SCRAPE_TOKEN

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*")  # see tests/handlers/test_metrics
    from starlette.testclient import TestClient

OPS = Path(__file__).resolve().parents[2] / "ops"
RULES = OPS / "prometheus" / "alerts.yml"
RULE_TESTS = OPS / "prometheus" / "alerts.test.yml"
DASHBOARD = OPS / "grafana" / "agent-rebalance.json"
PROMETHEUS = "/api/agent/rebalance/metrics/prometheus"

# Words of PromQL that look like metric names (functions are followed by "(" and skipped;
# aggregations may be followed by `by (...)`).
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "le",
    "job",
    "instance",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
}
_IDENT = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")  # not the unit of "5m" or "1e3"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: run `bash scripts/ensure-promtool.sh` "
            "(Debian's prometheus package ships it)"
        )
    return path


def run(
    promtool: str, *args: str, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


@pytest.fixture
def exposition(env: dict[str, str]) -> Iterator[bytes]:
    """A real body of the Prometheus route, over data in every metric."""
    from handlers.metrics import app

    for name in metrics.TRACKED:
        metrics.increment_counter(name, 3)
    metrics.record_timings([0.0001, 0.7, 12.0, 180.0, 2_500.0, 45_000.0, 400_000.0])
    with TestClient(app) as client:
        response = client.get(PROMETHEUS, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert response.status_code == 200
    yield response.content


def test_promtool_accepts_the_exposition(promtool: str, exposition: bytes) -> None:
    """`promtool check metrics` finds no problem in a real response (fed on stdin)."""
    result = run(promtool, "check", "metrics", stdin=exposition)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_exposition_names_are_the_declared_ones(exposition: bytes) -> None:
    """The body exports exactly `prometheus.exported_names()`; the histogram is cumulative."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for f in text_string_to_metric_families(exposition.decode()) for s in f.samples]
    assert {s.name for s in samples} == prometheus.exported_names()
    buckets = [s.value for s in samples if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 7
    count = next(s.value for s in samples if s.name.endswith("_seconds_count"))
    assert count == 7


def test_rules_pass_promtool_check(promtool: str) -> None:
    """`promtool check rules` accepts the alert rules."""
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    """`promtool test rules` runs every alert's firing and quiet cases."""
    result = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return queries


def as_promql(query: str) -> str:
    """A Grafana query with its variables filled in as Prometheus would receive it."""
    return query.replace("$__rate_interval", "5m").replace("$job", ".*")


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """Every panel query is valid PromQL: promtool parses them as recording rules."""
    queries = [as_promql(q) for q in dashboard_queries() if not q.startswith("label_values(")]
    assert len(queries) >= 10
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def metric_names(expr: str) -> set[str]:
    """Identifiers of `expr` that name series: not functions, keywords, labels or strings."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)  # ranges
    names = set()
    for match in _IDENT.finditer(expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def used_names() -> dict[str, set[str]]:
    rules = yaml.safe_load(RULES.read_text())
    rule_exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    tests = yaml.safe_load(RULE_TESTS.read_text())
    series = [s["series"] for t in tests["tests"] for s in t["input_series"]]
    return {
        "dashboard": set().union(*(metric_names(as_promql(q)) for q in dashboard_queries())),
        "rules": set().union(*(metric_names(e) for e in rule_exprs)),
        "rule tests": set().union(*(metric_names(s) for s in series)),
    }


def test_dashboard_and_rules_use_only_exported_names(exposition: bytes) -> None:
    """Every series a panel, an alert or a rule test names is one the endpoint exports."""
    from prometheus_client.parser import text_string_to_metric_families

    exported = {
        s.name for f in text_string_to_metric_families(exposition.decode()) for s in f.samples
    }
    for where, names in used_names().items():
        assert names, where
        assert names <= exported, f"{where}: {sorted(names - exported)} are not exported"


def test_the_name_extractor_sees_foreign_names() -> None:
    """The cross-check would catch a query on a metric the endpoint does not export."""
    expr = 'sum by (le) (rate(up{job="x"}[5m])) / agent_rebalance_queue_depth offset 1m'
    assert metric_names(expr) == {"up", "agent_rebalance_queue_depth"}


def test_dashboard_covers_the_issue_panels() -> None:
    """Throughput, failure ratio, p95, queue depth, oldest age, dead letters, rate limits."""
    joined = "\n".join(dashboard_queries())
    for needle in (
        "jobs_submitted_total",
        "jobs_failed_total",
        "histogram_quantile(0.95",
        "queue_depth",
        "oldest_queued_age_seconds",
        "dead_letter_depth",
        "rate_limit_blocked_total",
    ):
        assert needle in joined, needle
