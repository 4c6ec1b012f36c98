"""Alert rules, Alertmanager config and the Grafana dashboard, checked by the real tools and a live Prometheus.

* ``promtool check rules`` and ``promtool test rules`` (deploy/prometheus/rules.test.yml,
  rules-retrain.test.yml: one firing and one quiet case per alert);
* every alert has ``for:``, a severity and a runbook section in docs/operations.md, and names
  no job or namespace; every metric a rule or the dashboard names is one the code exports
  (a renamed metric fails here, whichever side was renamed);
* ``amtool check-config`` on the example Alertmanager config;
* live: Prometheus (Debian's package, ``make system-deps``) on a free loopback port with
  rules.yml, scraping every 1 s (rules every 1 s) a healthy gunicorn (bundled model, no registry), one whose
  registry is down at start (it serves the bundled fallback) and a closed port in the same job.
  Through the HTTP API: every rule evaluates without error, the fallback alert is pending or
  firing for that instance only, RideDurationDown for the closed port only, and every PromQL
  expression of the dashboard runs without error (those over the service's metrics return data).
  A screenshot of Prometheus's alerts page (headless Chromium) goes to docs/img/ when
  ``ALERTS_SCREENSHOT`` names a path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import typing as t
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, Server, free_port, http, post_json, wait_until

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = [ROOT / "deploy" / "prometheus" / name for name in ("rules.test.yml", "rules-retrain.test.yml")]
ALERTMANAGER = ROOT / "deploy" / "prometheus" / "alertmanager.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ride-duration.json"
OPERATIONS = ROOT / "docs" / "operations.md"
SEVERITIES = {"page", "ticket"}
METRIC = re.compile(r"\b(ride_(?:duration|stream)_[a-z0-9_]+)")
REF_RIDE = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run `make system-deps` (Debian packages prometheus, prometheus-alertmanager)"
    return path


def run(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def rules_of(path: Path = RULES) -> list[dict[str, t.Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alerts_of(path: Path = RULES) -> list[dict[str, t.Any]]:
    return [rule for rule in rules_of(path) if "alert" in rule]


# --- promtool, amtool --------------------------------------------------------------------------------

def test_promtool_checks_the_rules() -> None:
    out = run(tool("promtool"), "check", "rules", str(RULES))
    assert f"SUCCESS: {len(rules_of())} rules found" in out, out


def test_promtool_unit_tests_pass() -> None:
    out = run(tool("promtool"), "test", "rules", *map(str, RULE_TESTS))
    assert out.count("SUCCESS") == len(RULE_TESTS), out


def test_every_alert_has_a_unit_test_that_expects_it_to_fire() -> None:
    fired: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            fired |= {a["alertname"] for a in case.get("alert_rule_test", []) if a.get("exp_alerts")}
    assert {a["alert"] for a in alerts_of()} == fired


def test_amtool_checks_the_example_alertmanager_config() -> None:
    out = run(tool("amtool"), "check-config", str(ALERTMANAGER))
    assert "SUCCESS" in out and "2 receivers" in out, out


def anchors(markdown: str) -> set[str]:
    """Heading ids as mkdocs makes them: an explicit ``{#id}``, else the lower-cased words joined by '-'."""
    ids = set()
    for line in markdown.splitlines():
        if not line.startswith("#"):
            continue
        explicit = re.search(r"\{#([\w-]+)\}\s*$", line)
        if explicit:
            ids.add(explicit[1])
        else:
            ids.add("-".join(re.sub(r"[^\w\s-]", "", line.lstrip("#").strip().lower()).split()))
    return ids


def test_every_alert_has_for_severity_and_a_runbook_section_and_no_job_or_namespace() -> None:
    sections = anchors(OPERATIONS.read_text())
    for alert in alerts_of():
        name = alert["alert"]
        assert re.fullmatch(r"\d+[smhd]", alert.get("for", "")), f"{name}: no for:"
        assert alert["labels"]["severity"] in SEVERITIES, name
        assert {"summary", "description", "runbook_url"} <= set(alert["annotations"]), name
        page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor in sections, f"{name}: no runbook {anchor} in operations.md"
    for rule in rules_of():
        assert not re.search(r"\b(job|namespace|pod|service)\s*=~?\s*\"", rule["expr"]), rule


def exported_metric_names() -> set[str]:
    """Every series name the code can export: service, prediction log, stream consumer, monitor report."""
    import prometheus_client

    from ride_duration.jobs import report
    from ride_duration.stream import metrics as stream_metrics
    from ride_duration.web import metrics as web_metrics
    from ride_duration.web import prediction_log

    collectors = [v for m in (web_metrics, stream_metrics) for v in vars(m).values()
                  if isinstance(v, prometheus_client.metrics.MetricWrapperBase)]
    collectors.append(prediction_log.records_counter())
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    names = {d.name + s for c in collectors for d in c.describe() for s in suffixes[d.type]}
    result = {"method": "jensenshannon", "score": 0.1, "threshold": 0.1, "drift": False}
    sample = {"features": {"trip_distance": result}, "prediction": result, "drift_detected": False,
              "quality": {"rmse": 1.0, "mae": 1.0, "bias": 0.0, "n": 10},
              "data_quality": {"rules": [{"name": "r", "value": 0.0, "failed": False}]},
              "created_at_unix": 0.0, "model": {"version": "v"}, "current": {"source": "s"}}
    names |= {s.name for m in report.registry_for(sample).collect() for s in m.samples}
    return names


def expressions_of_dashboard() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    exprs.append(dash["templating"]["list"][1]["query"]["query"].removeprefix("label_values(").split(",")[0])

    def walk(panels: list[dict[str, t.Any]]) -> None:
        for panel in panels:
            exprs.extend(target["expr"] for target in panel.get("targets", []))
            walk(panel.get("panels", []))
    walk(dash["panels"])
    return exprs


def test_every_metric_the_rules_and_the_dashboard_name_is_exported_by_the_code() -> None:
    exported = exported_metric_names()
    named = {m for rule in rules_of() for m in METRIC.findall(rule["expr"])}
    named |= {m for expr in expressions_of_dashboard() for m in METRIC.findall(expr)}
    assert named - exported == set(), f"not exported by ride_duration: {sorted(named - exported)}"
    assert len(named) >= 20, sorted(named)


# --- live Prometheus ---------------------------------------------------------------------------------

def api(base: str, path: str, **params: str) -> t.Any:
    query = ("?" + urllib.parse.urlencode(params)) if params else ""
    status, _, body = http("GET", f"{base}/api/v1/{path}{query}", timeout=60)
    payload = json.loads(body)
    assert status == 200 and payload["status"] == "success", (path, params, payload)
    return payload["data"]


def poll(what: str, check: t.Callable[[], t.Any], timeout: float = 90.0) -> t.Any:
    return wait_until(check, timeout, what, interval=0.2)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[dict[str, str]]:
    closed = free_port()  # nothing listens here: the registry that is down, and the dead target
    healthy = Server(env={"MLFLOW_TRACKING_URI": ""}, log_path=tmp_path_factory.mktemp("healthy") / "server.log")
    fallback = Server(env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed}", "MODEL_POLL_SECONDS": "1"},
                      log_path=tmp_path_factory.mktemp("fallback") / "server.log")
    # liveness bounds of two minutes: the box may be busy (the registry-down start itself takes < 5 s)
    with contextlib.ExitStack() as stack:
        for srv in (healthy, fallback):
            stack.callback(srv.stop)
            srv.start("/ready", timeout=120)
        for srv in (healthy, fallback):
            for _ in range(5):  # liveness bound only: the box may be busy
                assert post_json(srv.url + "/predict", REF_RIDE, timeout=60)[0] == 200
        _, _, ready = http("GET", fallback.url + "/ready", timeout=60)
        assert json.loads(ready)["source"] == "bundled", ready
        yield {"healthy": f"127.0.0.1:{healthy.port}", "fallback": f"127.0.0.1:{fallback.port}",
               "dead": f"127.0.0.1:{free_port()}"}


@pytest.fixture(scope="module")
def prometheus(services: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[str]:
    work = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "ride-duration", "static_configs": [{"targets": list(services.values())}]}],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    run(tool("promtool"), "check", "config", str(work / "prometheus.yml"))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen([tool("prometheus"), f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def is_ready() -> bool:
            assert proc.poll() is None, (work / "prometheus.log").read_text()[-3000:]
            try:
                return http("GET", base + "/-/ready", timeout=2)[0] == 200
            except OSError:
                return False
        poll("Prometheus /-/ready", is_ready, 120)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_prometheus_scrapes_the_healthy_and_the_fallback_service(prometheus, services) -> None:
    def targets() -> dict[str, str]:
        active = api(prometheus, "targets")["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in active}
    expected = {services["healthy"]: "up", services["fallback"]: "up", services["dead"]: "down"}
    poll("every target scraped", lambda: targets() == expected)


def test_every_rule_evaluates_without_error(prometheus) -> None:
    names = {r.get("alert") or r.get("record") for r in rules_of()}

    def evaluated() -> list[dict[str, t.Any]] | None:
        rules = [r for g in api(prometheus, "rules")["groups"] for r in g["rules"]]
        done = [r for r in rules if not r["lastEvaluation"].startswith("0001-")]
        return rules if len(done) == len(rules) == len(names) else None
    rules = poll("every rule evaluated", evaluated)
    assert {r["name"] for r in rules} == names
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert bad == [], bad


def active_alerts(prometheus: str, name: str) -> dict[str, str]:
    return {a["labels"]["instance"]: a["state"] for a in api(prometheus, "alerts")["alerts"]
            if a["labels"]["alertname"] == name}


def test_the_fallback_alert_fires_for_the_fallback_instance_only(prometheus, services) -> None:
    alerts = poll("RideDurationServingFallback pending or firing for the fallback instance only",
                  lambda: (lambda a: a if set(a) == {services["fallback"]} else None)(
                      active_alerts(prometheus, "RideDurationServingFallback")))
    assert alerts[services["fallback"]] in {"pending", "firing"}, alerts


def test_the_down_alert_fires_for_the_closed_port_only(prometheus, services) -> None:
    # A live target that misses one scrape on a busy box is briefly pending too; it clears on the next
    # scrape, so this waits for exactly the closed port.
    alerts = poll("RideDurationDown pending or firing for the closed port only",
                  lambda: (lambda a: a if set(a) == {services["dead"]} else None)(
                      active_alerts(prometheus, "RideDurationDown")))
    assert alerts[services["dead"]] in {"pending", "firing"}, alerts


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables as a dashboard user would have them: all jobs, a 1 m rate window."""
    return (expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
            .replace('"$job"', '".*"').replace("$job", ".*"))


def served_live(expr: str) -> bool:
    """Expressions over the HTTP service's own series, which the two live services must fill."""
    names = set(METRIC.findall(expr))
    elsewhere = ("ride_stream", "ride_duration_monitor", "ride_duration_prediction_log")
    return (bool(names) and not any(m.startswith(elsewhere) for m in names)
            and "status=~" not in expr and "model_swapped" not in expr)


def test_every_dashboard_expression_runs_on_the_live_prometheus(prometheus, services) -> None:
    exprs = [grafana_to_promql(e) for e in expressions_of_dashboard()]
    assert len(exprs) >= 25
    for expr in exprs:
        api(prometheus, "query", query=expr)  # a PromQL error (HTTP 400/422) fails here
    live = [e for e in exprs if served_live(e)]
    assert len(live) >= 10, live
    # the service's series are there (a metric renamed in the code or the dashboard leaves these empty)
    missing = live

    def all_filled() -> bool:
        nonlocal missing
        missing = [e for e in live if not api(prometheus, "query", query=e)["result"]]
        return not missing

    with contextlib.suppress(AssertionError):  # timed out: the assertion below names the empty ones
        wait_until(all_filled, 60, "a series for every live dashboard expression", interval=0.5)
    assert missing == [], missing


def test_screenshot_of_the_alerts_page(prometheus, services, tmp_path) -> None:
    """Prometheus's own /alerts page in headless Chromium shows the fallback alert (saved if ALERTS_SCREENSHOT)."""
    from tests.protocols.test_docs_browser import CHROMIUM, FLAGS
    if not Path(CHROMIUM).exists():
        pytest.fail("needs Debian's chromium (make system-deps)")
    from playwright.sync_api import sync_playwright

    poll("fallback alert", lambda: active_alerts(prometheus, "RideDurationServingFallback"))
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 1000})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            # Debian's build serves the classic UI under /classic (the React UI is not packaged)
            classic = http("GET", prometheus + "/classic/alerts")[0] == 200
            page.goto(prometheus + ("/classic/alerts" if classic else "/alerts"))
            header = page.locator("tr.alert_header", has_text="RideDurationServingFallback")
            header.wait_for()
            assert "1 active" in header.inner_text(), header.inner_text()
            header.click()  # expand: the instance's labels, state and annotations
            page.locator("button.show-annotations").click()
            page.locator(f'span.badge:visible:text-is(\'instance="{services["fallback"]}"\')').wait_for()
            assert page.get_by_text(services["healthy"]).count() == 0  # no alert of any kind names it
            target = os.environ.get("ALERTS_SCREENSHOT")
            shot = Path(target) if target else tmp_path / "alerts.png"
            page.screenshot(path=str(shot), full_page=False)
            assert shot.stat().st_size > 10_000
        finally:
            context.close()
