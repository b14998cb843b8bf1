#!/usr/bin/python3
"""The ops kit: the Grafana dashboard deploy/grafana/herald.json and the Prometheus alerting
rules deploy/prometheus/herald-alerts.yml, checked against a real gateway and a real promtool.

- `promtool check rules` accepts the rules, and rejects deliberately broken copies of them.
- A real redis-server and a real gateway (HERALD_BIN, no database) are started; their /metrics
  must pass `promtool check metrics` (lint included), and every herald_* metric named in the
  rules and the dashboard must be in it. The name check is our own (promtool does not know
  which metrics exist): a copy naming a made-up metric must be rejected.
- The dashboard's JSON: unique panel ids, a PromQL target on every panel, the data source and
  instance variables, every herald_* selector filtered by $instance, every metric the gateway
  exports shown somewhere; its expressions (Grafana variables replaced) pass promtool too.
- `promtool test rules`: on the live gateway's metrics held steady for an hour no alert fires
  or is even pending, and for each alert a scenario made for it fires that alert and no other
  (and a few below the thresholds fire none).

promtool comes from Debian's prometheus package (deploy/install-deps.sh --test); without it
these tests fail, they never skip. Run: HERALD_BIN=build/gateway/herald /usr/bin/python3
tests/deploy/test_ops_kit.py
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import harness  # noqa: E402

RULES = os.path.join(REPO, "deploy", "prometheus", "herald-alerts.yml")
DASHBOARD = os.path.join(REPO, "deploy", "grafana", "herald.json")
PROMTOOL_TIMEOUT = 30
SEVERITIES = ("critical", "warning", "info")


# ---------------------------------------------------------------------------------------------
# promtool


def promtool(*args, stdin=None):
    """Run promtool; returns the CompletedProcess (text). Fails, never skips, without it."""
    path = shutil.which("promtool")
    if not path:
        raise AssertionError(
            "promtool is not installed: deploy/install-deps.sh --test installs it (Debian "
            "package prometheus)")
    return subprocess.run([path, *args], input=stdin, capture_output=True, text=True,
                          timeout=PROMTOOL_TIMEOUT)


def check_rules_file(doc, tmpdir, name="rules.yml"):
    """Write a rules document (a dict, or text as is) and run `promtool check rules` on it."""
    path = os.path.join(tmpdir, name)
    with open(path, "w") as f:
        f.write(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return promtool("check", "rules", path)


# ---------------------------------------------------------------------------------------------
# Metric names used by expressions, and exported by the gateway

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_HERALD_NAME = re.compile(r"(?<![A-Za-z0-9_:$])herald_[A-Za-z0-9_:]*")
_TYPE_LINE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)\s*$")
_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr):
    """herald_* identifiers of a PromQL expression (or a Grafana label_values() query), string
    literals left out (a label value such as job="herald_x" is no metric)."""
    return set(_HERALD_NAME.findall(_STRING.sub('""', expr)))


def exported(metrics_text):
    """(sample names, {family: type}) of a Prometheus text exposition."""
    names = {name for name, _labels, _value in harness.parse_metrics(metrics_text)}
    types = {}
    for line in metrics_text.splitlines():
        m = _TYPE_LINE.match(line)
        if m:
            types[m.group(1)] = m.group(2)
    return names, types


def unknown_metrics(exprs, metrics_text, defined=()):
    """Problems for each herald_* name in exprs [(where, expr)] that metrics_text does not
    export. A histogram's or summary's _bucket/_sum/_count counts as its family; names in
    `defined` (recording rules' outputs) are known too."""
    names, types = exported(metrics_text)
    known = names | set(types) | set(defined)
    problems = []
    for where, expr in exprs:
        for name in sorted(metric_names(expr)):
            if name in known:
                continue
            base = next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), None)
            if base and types.get(base) in ("histogram", "summary"):
                continue
            problems.append(f"{where}: {name} is not exported by the gateway")
    return problems


def load_rules(path=RULES):
    with open(path) as f:
        return yaml.safe_load(f)


def all_rules(doc):
    for group in doc["groups"]:
        for rule in group["rules"]:
            yield group["name"], rule


def rule_exprs(doc):
    return [(f"rule {r.get('alert') or r.get('record')} (group {g})", str(r.get("expr", "")))
            for g, r in all_rules(doc)]


def recorded_names(doc):
    return {r["record"] for _g, r in all_rules(doc) if "record" in r}


def rule_problems(doc):
    """What every alert must carry: `for`, a severity, a summary and a description."""
    problems, seen = [], set()
    for group, rule in all_rules(doc):
        name = rule.get("alert")
        if not name:
            problems.append(f"group {group}: a rule that is not an alert: {rule}")
            continue
        if name in seen:
            problems.append(f"{name}: the alert name is used twice")
        seen.add(name)
        if not rule.get("for"):
            problems.append(f"{name}: no `for:`")
        if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: labels.severity is not one of {SEVERITIES}")
        ann = rule.get("annotations") or {}
        for key in ("summary", "description"):
            if not str(ann.get(key, "")).strip():
                problems.append(f"{name}: no annotations.{key}")
    return problems


# ---------------------------------------------------------------------------------------------
# The dashboard

DS_VAR = "${DS_PROMETHEUS}"
INSTANCE_QUERY = "label_values(herald_info, instance)"
_SELECTOR = re.compile(r"(?<![A-Za-z0-9_:$])(herald_[A-Za-z0-9_:]*)\s*(\{[^}]*\})?")
_GRAFANA_VARS = [
    (re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}"),
     "5m"),
    (re.compile(r"\$\{instance(:\w+)?\}|\$instance\b|\[\[instance\]\]"), ".*"),
]


def load_dashboard(path=DASHBOARD):
    with open(path) as f:
        return json.load(f)


def all_panels(dash):
    """Every panel, the ones inside collapsed rows too."""
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", []) or []


def dashboard_exprs(dash, with_variables=True):
    out = []
    for p in all_panels(dash):
        for t in p.get("targets", []) or []:
            if "expr" in t:
                out.append((f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}",
                            t["expr"]))
    if with_variables:
        for v in dash.get("templating", {}).get("list", []):
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else q
            if v.get("type") == "query" and q:
                out.append((f"variable {v.get('name')}", q))
    return out


def grafana_to_promql(expr):
    for pattern, value in _GRAFANA_VARS:
        expr = pattern.sub(value, expr)
    return expr


def dashboard_as_rules(dash):
    """The dashboard's queries as recording rules, Grafana's variables replaced, so that
    `promtool check rules` parses them."""
    rules = []
    for p in all_panels(dash):
        for t in p.get("targets", []) or []:
            if "expr" in t:
                rules.append({"record": f"ops_kit:panel_{p.get('id')}_{t.get('refId')}",
                              "expr": grafana_to_promql(t["expr"])})
    return {"groups": [{"name": "dashboard", "rules": rules}]}


def _ds_ok(ds):
    return isinstance(ds, dict) and ds.get("uid") == DS_VAR and ds.get("type") == "prometheus"


def dashboard_problems(dash):
    problems = []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 30:
        problems.append(f"schemaVersion {dash.get('schemaVersion')!r}: want 30 or later")
    for key in ("title", "uid"):
        if not dash.get(key):
            problems.append(f"no {key}")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("DS_PROMETHEUS")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no datasource variable DS_PROMETHEUS of type prometheus")
    inst = variables.get("instance")
    q = (inst or {}).get("query")
    q = q.get("query") if isinstance(q, dict) else q
    if not inst or inst.get("type") != "query" or q != INSTANCE_QUERY:
        problems.append(f"no query variable instance from {INSTANCE_QUERY}")
    elif not _ds_ok(inst.get("datasource")):
        problems.append("variable instance: data source is not " + DS_VAR)

    panels = list(all_panels(dash))
    if not panels:
        problems.append("no panels")
    ids = [p.get("id") for p in panels]
    for i in sorted({i for i in ids if ids.count(i) > 1}, key=str):
        problems.append(f"panel id {i} is used {ids.count(i)} times")
    boxes = []
    for p in panels:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if not isinstance(p.get("id"), int):
            problems.append(f"{where}: id is not an integer")
        if not p.get("title"):
            problems.append(f"{where}: no title")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")) \
                or g["x"] < 0 or g["w"] < 1 or g["h"] < 1 or g["x"] + g["w"] > 24:
            problems.append(f"{where}: gridPos {g} is not inside the 24-column grid")
        else:
            for other, og in boxes:
                if g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"] \
                        and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]:
                    problems.append(f"{where} overlaps {other}")
            boxes.append((where, g))
        if p.get("type") == "row":
            if p.get("targets"):
                problems.append(f"{where}: a row with targets")
            continue
        if not _ds_ok(p.get("datasource")):
            problems.append(f"{where}: data source is not {DS_VAR}")
        targets = [t for t in p.get("targets") or [] if str(t.get("expr", "")).strip()]
        if not targets:
            problems.append(f"{where}: no target with an expr")
        for t in p.get("targets") or []:
            tw = f"{where} target {t.get('refId')}"
            if not str(t.get("expr", "")).strip():
                problems.append(f"{tw}: no expr")
            if "datasource" in t and not _ds_ok(t["datasource"]):
                problems.append(f"{tw}: data source is not {DS_VAR}")
            # each metric of the panel follows the instance picker
            for m in _SELECTOR.finditer(t.get("expr", "")):
                if 'instance=~"$instance"' not in (m.group(2) or ""):
                    problems.append(f'{tw}: {m.group(1)} is not filtered by instance=~"$instance"')
    return problems


# ---------------------------------------------------------------------------------------------
# Alert scenarios for `promtool test rules`
#
# Every input series starts as the live gateway's sample (labels and value), as Prometheus
# would store it: target labels job and instance added, the gateway's own `instance` label
# (herald_info) renamed exported_instance. Samples every minute for an hour; alerts are
# evaluated at minute 60. A scenario changes some series (name, or name{labels} to pick one of
# a family) and says which alerts must be firing then: exactly those.

TARGET = {"job": "herald", "instance": "10.0.0.7:8080"}
EVAL_MIN = 60


def steady(v):
    return f"{v!r}x{EVAL_MIN}"


def gone_after(minute):
    """The series' value until `minute`, then no samples (a scrape that fails)."""
    return lambda v: f"{v!r}x{minute} _x{EVAL_MIN - minute}"


SCENARIOS = {
    # name: (alerts firing at minute 60, {series: values or f(live value) -> values})
    "healthy, busy": ((), {
        "herald_frames_out_total": "0+60000x60", "herald_redis_messages_total": "0+6000x60",
        "herald_connections_total": "0+100x60", "herald_duplicates_dropped_total": "0+100x60",
        "herald_slow_consumer_closes_total": "0+5x60", "herald_ping_timeouts_total": "0+10x60",
        "herald_rejected_connections_total": "0+60x60",
        'herald_client_errors_total{code="bad_request"}': "0+600x60",
        "herald_resumes_recovered_total": "0+100x60", "herald_resumes_failed_total": "0+1x60",
        "herald_db_up": "1x60", "herald_db_queries_total": "0+1000x60",
        "herald_db_queued": "100x60", "herald_publish_queued": "100x60",
        "herald_redis_heartbeat_age_seconds": "1.5x60",
        "herald_redis_reconnects_total": "0x50 1x10",
    }),
    "few resumes, all failed": ((), {"herald_resumes_failed_total": "0+0.5x60"}),
    "instance down": (("HeraldInstanceDown",), {
        "up": "1x54 0x6", "herald_*": gone_after(54)}),
    "every instance gone": (("HeraldAbsent",), {"up": gone_after(40), "herald_*": gone_after(40)}),
    "restart loop": (("HeraldRestarting",), {
        "herald_uptime_seconds": "0+60x34 0+60x9 0+60x9 0+60x5"}),
    "redis down": (("HeraldRedisNotReady",), {
        "herald_redis_up": "1x55 0x5", "herald_redis_shard_up": "1x55 0x5",
        "herald_redis_heartbeat_age_seconds": "0.1x55 60+60x5"}),
    "redis slow": (("HeraldRedisHeartbeatLate",), {
        "herald_redis_heartbeat_age_seconds": "0.1x50 2.5x10"}),
    "redis flapping": (("HeraldRedisReconnecting",), {
        "herald_redis_reconnects_total": "0x40 1+1x20"}),
    "postgresql down": (("HeraldPostgresDown",), {
        "herald_db_up": "1x55 0x5", "herald_db_queries_total": "100+10x55 650x5"}),
    "db queue": (("HeraldDbQueueBacklog",), {"herald_db_queued": "0x50 8000x10"}),
    "publish queue": (("HeraldPublishQueueBacklog",), {"herald_publish_queued": "0x50 8000x10"}),
    "slow consumers": (("HeraldSlowConsumerClosesHigh",), {
        "herald_slow_consumer_closes_total": "0+20x60"}),
    "dead clients": (("HeraldPingTimeoutsHigh",), {"herald_ping_timeouts_total": "0+60x60"}),
    "resumes failing": (("HeraldResumesFailing",), {
        "herald_resumes_failed_total": "0+5x60", "herald_resumes_recovered_total": "0+5x60"}),
    "handshakes refused": (("HeraldRejectedConnectionsHigh",), {
        "herald_rejected_connections_total": "0+600x60"}),
    "history unavailable": (("HeraldServerErrors",), {
        'herald_client_errors_total{code="history_unavailable"}': "0+60x60"}),
    "gap skipped": (("HeraldGapsSkipped",), {"herald_gaps_skipped_total": "0x55 3x5"}),
    "invalid payloads": (("HeraldInvalidPayloads",), {
        "herald_invalid_payloads_total": "0x55 2x5"}),
    "unsigned envelopes": (("HeraldUnverifiedEnvelopes",), {
        "herald_unverified_envelopes_total": "0x55 1x5"}),
}

_KEY = re.compile(r"^([a-zA-Z_:*][a-zA-Z0-9_:*]*)(\{.*\})?$")


def _labels_text(labels):
    def esc(v):
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def baseline_series(metrics_text):
    """[(name, labels, value)] as Prometheus would store the gateway's scrape, plus `up`."""
    out = [("up", dict(TARGET), 1.0)]
    for name, labels, value in harness.parse_metrics(metrics_text):
        labels = dict(labels)
        if "instance" in labels:  # honor_labels: false
            labels["exported_instance"] = labels.pop("instance")
        out.append((name, {**labels, **TARGET}, value))
    return out


def _matches(key, name, labels):
    m = _KEY.match(key)
    if not m:
        raise ValueError(f"bad scenario key {key!r}")
    kname, ktext = m.group(1), m.group(2)
    if kname.endswith("*") and not name.startswith(kname[:-1]):
        return False
    if not kname.endswith("*") and kname != name:
        return False
    want = dict(harness._LABEL.findall(ktext or ""))
    return all(labels.get(k) == v for k, v in want.items())


def scenario_test(name, expected, overrides, baseline):
    """One `promtool test rules` test group for a scenario."""
    used = set()
    series = []
    for sname, labels, value in baseline:
        values = f"{value!r}+60x{EVAL_MIN}" if sname == "herald_uptime_seconds" else steady(value)
        # the most specific key wins: name{labels} over name over herald_*
        for key in sorted(overrides, key=lambda k: ("*" in k, "{" not in k)):
            if _matches(key, sname, labels):
                v = overrides[key]
                values = v(value) if callable(v) else v
                used.add(key)
                break
        series.append({"series": sname + _labels_text(labels), "values": values})
    unused = set(overrides) - used
    if unused:
        raise AssertionError(f"scenario {name!r}: no live series matches {sorted(unused)}")
    return {
        "name": name,
        "interval": "1m",
        "input_series": series,
        "promql_expr_test": [{
            # pending alerts count too when none may fire
            "expr": ('count by (alertname) (ALERTS{alertstate="firing"})' if expected
                     else "count by (alertname, alertstate) (ALERTS)"),
            "eval_time": f"{EVAL_MIN}m",
            "exp_samples": [{"labels": f'{{alertname="{a}"}}', "value": 1} for a in expected],
        }],
    }


def run_scenarios(rules_path, scenarios, baseline, tmpdir):
    doc = {"rule_files": [rules_path], "evaluation_interval": "1m",
           "tests": [scenario_test(n, exp, ov, baseline) for n, (exp, ov) in scenarios.items()]}
    path = os.path.join(tmpdir, "scenarios.yml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return promtool("test", "rules", path)


# ---------------------------------------------------------------------------------------------


class OpsKit(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rules = load_rules()
        cls.dash = load_dashboard()
        # one real gateway for all tests: Redis, no database
        if not os.path.exists(harness.herald_bin()):
            raise AssertionError(f"build the gateway first: {harness.herald_bin()} is missing")
        cls.tmp = tempfile.mkdtemp(prefix="herald-ops-kit-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        redis = harness.RedisServer(cls.tmp)
        cls.addClassCleanup(redis.kill)
        redis.start(timeout=20)
        gw = harness.Herald(cls.tmp, redis.url)
        cls.addClassCleanup(gw.stop, 10)
        gw.start(timeout=20)  # waits for /healthz 200
        # the metrics of a gateway that works: ready, its Redis heartbeat back on time (one
        # goes every second; a loaded machine may see an older one now and then)
        harness.wait_for(lambda: gw.readyz() == 200, 20, what="herald /readyz 200")
        gw.wait_metric("herald_redis_heartbeat_age_seconds", lambda v: v is not None and v < 1.5,
                       timeout=20)
        status, headers, body = gw.get("/metrics", timeout=10)
        if status != 200:
            raise AssertionError(f"/metrics answered {status}")
        cls.metrics = body.decode()
        cls.content_type = headers.get("content-type", "")

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="herald-ops-kit-")
        self.addCleanup(shutil.rmtree, self.work, True)

    # ---- the rules ---------------------------------------------------------------------------

    def test_rules_pass_promtool(self):
        r = promtool("check", "rules", RULES)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        n = sum(1 for _ in all_rules(self.rules))
        self.assertIn(f"SUCCESS: {n} rules found", r.stdout)
        self.assertGreaterEqual(n, 10)

    def test_rules_carry_for_severity_and_annotations(self):
        self.assertEqual(rule_problems(self.rules), [])

    def test_promtool_rejects_broken_rules(self):
        def broken(alert, change):
            doc = copy.deepcopy(self.rules)
            for _g, rule in all_rules(doc):
                if rule.get("alert") == alert:
                    change(rule)
                    return doc
            raise AssertionError(f"no alert {alert}")

        # (copy, what promtool must say about it)
        cases = {
            "bad PromQL": (broken("HeraldRedisNotReady",
                                  lambda r: r.update(expr="herald_redis_up == ")),
                           "parse error"),
            "unclosed selector": (broken("HeraldDbQueueBacklog", lambda r: r.update(
                expr='herald_db_queued{job="x" > 1')), "parse error"),
            "bad duration": (broken("HeraldPostgresDown", lambda r: r.update({"for": "1 minute"})),
                             "not a valid duration"),
            "bad template": (broken("HeraldGapsSkipped", lambda r: r["annotations"].update(
                summary="{{ $value | no_such_function }}")), "no_such_function"),
            "no expr": (broken("HeraldAbsent", lambda r: r.pop("expr")), "'expr' must be set"),
        }
        for what, (doc, reason) in cases.items():
            with self.subTest(what):
                r = check_rules_file(doc, self.work)
                self.assertNotEqual(r.returncode, 0, f"promtool accepted {what}:\n{r.stdout}")
                self.assertIn(reason, r.stdout + r.stderr)
        # the same writer with the rules unchanged passes (the failures above are the breakage)
        self.assertEqual(check_rules_file(self.rules, self.work).returncode, 0)

    def test_rule_checks_reject_missing_parts(self):
        for what, change in {
            "no for": lambda r: r.pop("for"),
            "no severity": lambda r: r["labels"].pop("severity"),
            "odd severity": lambda r: r["labels"].update(severity="page-me"),
            "no summary": lambda r: r["annotations"].pop("summary"),
            "empty description": lambda r: r["annotations"].update(description=" "),
        }.items():
            with self.subTest(what):
                doc = copy.deepcopy(self.rules)
                change(doc["groups"][0]["rules"][0])
                self.assertEqual(len(rule_problems(doc)), 1, what)
        doc = copy.deepcopy(self.rules)
        doc["groups"][1]["rules"].append(copy.deepcopy(doc["groups"][0]["rules"][0]))
        self.assertEqual(len(rule_problems(doc)), 1, "a duplicated alert name")

    # ---- the live /metrics -------------------------------------------------------------------

    def test_live_metrics_pass_promtool(self):
        self.assertTrue(self.content_type.startswith("text/plain"), self.content_type)
        # promtool check metrics exits 0 when clean, 1 when the text does not parse and 3 when
        # it parses but breaks the naming conventions (a counter without _total, no HELP, a
        # non-base unit). 3 is a failure here: the gateway lints clean, and a new metric should
        # too, since dashboards and rules are written against those conventions.
        r = promtool("check", "metrics", stdin=self.metrics)
        self.assertEqual(r.returncode, 0, f"exit {r.returncode}:\n{r.stdout}{r.stderr}")

    def test_promtool_metrics_lint_can_fail(self):
        # the check above is only worth something if promtool does complain: a counter without
        # _total and an unparseable line added to the real output
        lint = self.metrics + "# HELP herald_oops A counter.\n# TYPE herald_oops counter\n" \
                              "herald_oops 1\n"
        r = promtool("check", "metrics", stdin=lint)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("herald_oops", r.stdout + r.stderr)
        r = promtool("check", "metrics", stdin=self.metrics + "herald_bad{x=} 1\n")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)

    def test_every_metric_used_is_exported(self):
        exprs = rule_exprs(self.rules) + dashboard_exprs(self.dash)
        used = set().union(*(metric_names(e) for _w, e in exprs))
        # the extraction sees the metrics the files are about
        for name in ("herald_info", "herald_redis_up", "herald_db_up", "herald_frames_out_total",
                     "herald_client_errors_total"):
            self.assertIn(name, used)
        self.assertEqual(unknown_metrics(exprs, self.metrics, recorded_names(self.rules)), [])

    def test_name_check_rejects_made_up_metrics(self):
        rules = copy.deepcopy(self.rules)
        rules["groups"][0]["rules"][0]["expr"] = "rate(herald_messages_lost_total[5m]) > 0"
        problems = unknown_metrics(rule_exprs(rules), self.metrics)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("herald_messages_lost_total", problems[0])
        # promtool itself accepts it: the name check is what catches it
        self.assertEqual(check_rules_file(rules, self.work).returncode, 0)

        dash = copy.deepcopy(self.dash)
        panel = next(p for p in all_panels(dash) if p.get("targets"))
        panel["targets"][0]["expr"] = 'herald_publish_latency_seconds{instance=~"$instance"}'
        problems = unknown_metrics(dashboard_exprs(dash), self.metrics)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("herald_publish_latency_seconds", problems[0])

        # a quoted label value is not a metric; a histogram's series map to the family
        text = ("# TYPE herald_x_seconds histogram\nherald_x_seconds_bucket{le=\"+Inf\"} 1\n"
                "herald_x_seconds_sum 1\nherald_x_seconds_count 1\n"
                "# TYPE herald_g gauge\nherald_g 1\n")
        self.assertEqual(unknown_metrics([("q", 'herald_g{job="herald_nope"}')], text), [])
        self.assertEqual(unknown_metrics(
            [("q", "histogram_quantile(0.9, rate(herald_x_seconds_bucket[5m]))"),
             ("q", "herald_x_seconds_count / herald_x_seconds_sum")], text), [])
        self.assertEqual(len(unknown_metrics([("q", "herald_g_count")], text)), 1)

    # ---- the dashboard -----------------------------------------------------------------------

    def test_dashboard_structure(self):
        self.assertEqual(dashboard_problems(self.dash), [])
        self.assertGreaterEqual(sum(1 for p in all_panels(self.dash) if p.get("targets")), 20)

    def test_dashboard_checks_reject_broken_copies(self):
        def first_data_panel(d):
            return next(p for p in all_panels(d) if p.get("targets"))

        def dup_id(d):
            panels = [p for p in all_panels(d) if p.get("targets")]
            panels[1]["id"] = panels[0]["id"]

        cases = {
            "duplicate id": dup_id,
            "no targets": lambda d: first_data_panel(d).update(targets=[]),
            "empty expr": lambda d: first_data_panel(d)["targets"][0].update(expr=""),
            "no instance filter": lambda d: first_data_panel(d)["targets"][0].update(
                expr="sum(herald_connections)"),
            "other data source": lambda d: first_data_panel(d).update(
                datasource={"type": "prometheus", "uid": "abc123"}),
            "no instance variable": lambda d: d["templating"].update(list=[
                v for v in d["templating"]["list"] if v["name"] != "instance"]),
            "overlap": lambda d: first_data_panel(d)["gridPos"].update(x=0, y=0),
            "old schema": lambda d: d.update(schemaVersion=16),
        }
        for what, change in cases.items():
            with self.subTest(what):
                dash = copy.deepcopy(self.dash)
                change(dash)
                self.assertNotEqual(dashboard_problems(dash), [], what)

    def test_dashboard_shows_every_exported_metric(self):
        # a metric added to the gateway belongs on the dashboard: add a panel or a target
        names, types = exported(self.metrics)
        shown = set().union(*(metric_names(e) for _w, e in dashboard_exprs(self.dash)))
        self.assertTrue(names)
        self.assertEqual(sorted(set(types) - shown), [])

    def test_dashboard_queries_pass_promtool(self):
        doc = dashboard_as_rules(self.dash)
        n = len(doc["groups"][0]["rules"])
        self.assertGreaterEqual(n, 20)
        for rule in doc["groups"][0]["rules"]:
            self.assertNotIn("$", rule["expr"], "a Grafana variable left in the query")
        r = check_rules_file(doc, self.work, "dashboard.yml")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"SUCCESS: {n} rules found", r.stdout)

        dash = copy.deepcopy(self.dash)
        panel = next(p for p in all_panels(dash) if p.get("targets"))
        panel["targets"][0]["expr"] = 'sum(rate(herald_frames_out_total{instance=~"$instance"}))'
        r = check_rules_file(dashboard_as_rules(dash), self.work, "broken.yml")
        self.assertNotEqual(r.returncode, 0, "promtool accepted rate() without a range")

    # ---- the alerts, evaluated ---------------------------------------------------------------

    def test_alert_scenarios(self):
        alerts = {r["alert"] for _g, r in all_rules(self.rules)}
        covered = set().union(*(set(exp) for exp, _ov in SCENARIOS.values()))
        self.assertEqual(sorted(alerts - covered), [], "alerts without a scenario that fires them")
        self.assertEqual(sorted(covered - alerts), [], "scenarios expect alerts that do not exist")
        baseline = baseline_series(self.metrics)
        scenarios = {"live gateway, steady": ((), {}), **SCENARIOS}
        r = run_scenarios(RULES, scenarios, baseline, self.work)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_alert_scenarios_can_fail(self):
        baseline = baseline_series(self.metrics)
        # a wrong expectation fails
        r = run_scenarios(RULES, {"wrong": (("HeraldRedisNotReady",), {})}, baseline, self.work)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        # an extra alert fails an exact expectation
        r = run_scenarios(RULES, {"extra": (("HeraldDbQueueBacklog",), {
            "herald_db_queued": "0x50 8000x10", "herald_publish_queued": "0x50 8000x10"})},
            baseline, self.work)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        # a threshold moved out of reach makes its scenario fail
        doc = copy.deepcopy(self.rules)
        for _g, rule in all_rules(doc):
            if rule["alert"] == "HeraldDbQueueBacklog":
                rule["expr"] = rule["expr"].replace("5000", "50000")
        path = os.path.join(self.work, "raised.yml")
        with open(path, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        scenario = {"db queue": SCENARIOS["db queue"]}
        r = run_scenarios(path, scenario, baseline, self.work)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertEqual(run_scenarios(RULES, scenario, baseline, self.work).returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
