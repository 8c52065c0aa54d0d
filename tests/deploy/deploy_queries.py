"""The PromQL queries of the suite's dashboard and recording rules, and the metric names they use. Shared by the
deploy tests."""
import json
import os
import re

import yaml

SOURCE_DIR = os.environ.get("RLHF_SOURCE_DIR",
                            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DASHBOARD = os.path.join(SOURCE_DIR, "deploy", "grafana", "rlhf.json")
RULES = os.path.join(SOURCE_DIR, "deploy", "prometheus", "rules.yml")

# Grafana variables and the values a query is evaluated with here: every service.
_VARIABLES = {"$service": ".*"}


def dashboard_queries():
    """[(panel title, refId, expr)] of every panel target, with the dashboard's variables substituted."""
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in _VARIABLES.items():
                expr = expr.replace(name, value)
            queries.append((panel["title"], target["refId"], expr))
    return queries


def rules():
    """(recording rules [(record, expr)], alerts [(alert, expr)]) of rules.yml."""
    with open(RULES) as f:
        groups = yaml.safe_load(f)["groups"]
    records, alerts = [], []
    for group in groups:
        for rule in group["rules"]:
            if "record" in rule:
                records.append((rule["record"], rule["expr"]))
            else:
                alerts.append((rule["alert"], rule["expr"]))
    return records, alerts


def metric_names(expr):
    """The exported metric names (rlhf_*) an expression selects, directly or through the recording rules it uses
    (names with colons, e.g. service:rlhf_engine_tokens:rate1m); string literals (label values) are ignored."""
    records = dict(rules()[0])
    names, seen, todo = set(), set(), [expr]
    while todo:
        text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', todo.pop())
        names |= set(re.findall(r"(?<![\w:])rlhf_[a-z0-9_]+(?![\w:])", text))
        for record in re.findall(r"(?<![\w:])[a-z_]+:[a-z0-9_:]+(?![\w:])", text):
            if record in records and record not in seen:
                seen.add(record)
                todo.append(records[record])
    return names

