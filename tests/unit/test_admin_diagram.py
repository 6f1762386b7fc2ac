"""The diagram graph built from a flow: nodes per step, labelled edges, rows by distance, highlights."""

from __future__ import annotations

from flask import Flask
from flask_babel import Babel

from admin.diagram import CURRENT_STYLE, DONE_STYLE, graph
from engine.flow.loader import load_flow_text

FLOW = """\
id: diagram_demo
name: {zh: 图示, en: Diagram}
triggers:
  - type: manual
steps:
  - id: ask
    type: wait
    name: {zh: 等待回复, en: Wait for a reply}
    event: customer_replied
    timeout: {days: 3}
    on_timeout: remind
    next: check
  - id: remind
    type: end
    outcome: no_reply
  - id: check
    type: decision
    cases:
      - when: "vars.customer_replied.ok"
        next: done
    default: remind
  - id: done
    type: end
    outcome: done
"""


def test_graph_of_a_flow_in_english() -> None:
    app = Flask(__name__)
    Babel(app, locale_selector=lambda: "en")
    flow = load_flow_text(FLOW, "diagram_demo.yaml")
    with app.test_request_context("/?lang=en"):
        data = graph(flow, current=["check"], visited=["ask", "check"])
    nodes = {n["id"]: n for n in data["nodes"]}
    assert nodes["ask"]["type"] == "ellipse" and nodes["check"]["type"] == "diamond" and nodes["done"]["type"] == "circle"
    assert nodes["ask"]["text"] == "Wait for a reply" and nodes["check"]["text"] == "check"
    edges = {(e["sourceNodeId"], e["targetNodeId"]): e.get("text") for e in data["edges"]}
    assert edges == {("ask", "check"): None, ("ask", "remind"): "timeout",
                     ("check", "done"): "vars.customer_replied.ok", ("check", "remind"): "otherwise"}
    rows = {step: n["y"] for step, n in nodes.items()}
    assert rows["ask"] < rows["check"] == rows["remind"] < rows["done"]
    assert nodes["check"]["properties"]["style"] == CURRENT_STYLE and nodes["check"]["properties"]["current"]
    assert nodes["ask"]["properties"]["style"] == DONE_STYLE and nodes["done"]["properties"]["style"] == {}
    assert data["current"] == ["check"]
