"""deploy/prometheus: the alert rules pass promtool's check and their unit tests, every alert
is explained in docs/operations.md, and a real Prometheus with the shipped configuration
scrapes a real gunicorn and evaluates every rule on what it scraped."""

import re
import shutil
import subprocess

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from harness import DEPLOY, ROOT, free_port, wait_for
from harness.servers import PrivateDir, Process, require_program, start_redis

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "booking-alerts.yml"
ALERTS = re.findall(r"(?m)^\s*- alert: (\w+)$", RULES.read_text())


def promtool(*args: str) -> str:
    result = subprocess.run(
        [require_program("promtool"), *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_rules_and_the_configuration_pass_promtool():
    assert f"SUCCESS: {len(ALERTS)} rules found" in promtool("check", "rules", RULES.name)
    promtool("check", "config", "prometheus.yml")


def test_every_alert_fires_and_stays_quiet_in_its_unit_tests():
    tests = (PROMETHEUS / "booking-alerts.test.yml").read_text()
    for alert in ALERTS:
        assert tests.count(f"alertname: {alert}\n") >= 2, f"{alert}: not tested both ways"
    assert "SUCCESS" in promtool("test", "rules", "booking-alerts.test.yml")


def test_every_alert_is_explained_in_the_operations_guide():
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert len(ALERTS) == 8
    for alert in ALERTS:
        assert f"`{alert}`" in guide, f"docs/operations.md does not explain {alert}"


@pytest.fixture
def prometheus(start_gunicorn):
    """Debian's Prometheus with the shipped configuration, its target our gunicorn."""
    binary = require_program("prometheus")
    app = start_gunicorn(workers=2)
    workdir = PrivateDir("prometheus")
    d = workdir.path
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert config.count('"127.0.0.1:3000"') == 1, "prometheus.yml no longer has that target"
    (d / "prometheus.yml").write_text(config.replace("127.0.0.1:3000", f"127.0.0.1:{app.port}"))
    shutil.copy(RULES, d / RULES.name)
    port = free_port()
    args = [binary, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data"]
    args += [f"--web.listen-address=127.0.0.1:{port}"]
    process = Process(args, workdir, port, d / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    # It listens before its storage is open, answering 503 until then.
    wait_for(lambda: requests.get(f"{url}/-/ready", timeout=5).ok, "Prometheus ready", 60)
    yield f"{url}/api/v1"
    process.stop()


def test_prometheus_scrapes_gunicorn_and_evaluates_every_rule(prometheus):
    def query(expression: str) -> list[dict]:
        answer = requests.get(f"{prometheus}/query", params={"query": expression}, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]["result"]

    # The first scrape comes within one scrape_interval (15 s).
    up = wait_for(lambda: query('up{job="booking"}'), "the first scrape", 60)
    assert up[0]["value"][1] == "1"
    # gunicorn's own /health checks while it started, summed over the workers.
    (served,) = query('http_requests_total{job="booking", route="/health", status="200"}')
    assert float(served["value"][1]) >= 1
    # Counted by a query at scrape time: the app reached PostgreSQL.
    assert query('idempotency_keys{job="booking"}')
    assert query('ratelimit_storage_up{job="booking"} == 1')

    def evaluated() -> list[dict]:
        groups = requests.get(f"{prometheus}/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if all(rule["health"] != "unknown" for rule in rules) else []

    rules = wait_for(evaluated, "the first evaluation of the rules", 60)
    assert sorted(rule["name"] for rule in rules) == sorted(ALERTS)
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []


def test_the_limiter_storage_gauge_follows_redis(start_gunicorn):
    """ratelimit_storage_up, which BookingRateLimitFailingOpen watches: 1 while the
    limiter's Redis answers, 0 once it is gone."""
    redis = start_redis()
    try:
        app = start_gunicorn({"RATELIMIT_STORAGE_URI": redis.url, "RATE_LIMIT": "100/second"})

        def storage_up() -> float:
            text = requests.get(f"{app.url}/metrics", timeout=10).text
            (family,) = [
                f for f in text_string_to_metric_families(text)
                if f.name == "ratelimit_storage_up"
            ]  # fmt: skip
            return family.samples[0].value

        assert storage_up() == 1
        redis.stop()
        assert storage_up() == 0
    finally:
        redis.stop()
