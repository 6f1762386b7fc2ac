"""Schemathesis against the live API: every operation, authenticated as an admin, examples,
coverage, fuzzing and stateful phases, 100 examples per operation; no server errors and no
response that breaks the OpenAPI document.

Runs in CI with the rest of the suite (about two minutes on two cores). ``CAREFLOW_ST_EXAMPLES``
changes the number of examples per operation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from engine.app import create_app
from engine.core import Careflow
from engine.demo import seed

EXAMPLES = int(os.environ.get("CAREFLOW_ST_EXAMPLES", "100"))

#: Schema-valid input the API still refuses by meaning: a phone number that is not a real number,
#: form answers that break the form's own JSON Schema, a flow whose YAML does not validate. No
#: OpenAPI document can express those, so positive data may also get 422 (never 400 or 5xx).
#: Half of the generated ids and names are ones that exist, so the calls reach the real logic.
CONFIG = """\
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[dictionaries]
{dictionaries}

[parameters]
"path.task_id" = {{ dictionary = "task_ids", probability = 0.5 }}
"path.instance_id" = {{ dictionary = "instance_ids", probability = 0.5 }}
"path.customer_id" = {{ dictionary = "customer_ids", probability = 0.5 }}
"path.flow_id" = {{ dictionary = "flow_ids", probability = 0.5 }}
"path.form_id" = {{ dictionary = "form_ids", probability = 0.5 }}
"path.username" = {{ dictionary = "usernames", probability = 0.5 }}
"path.name" = {{ dictionary = "hook_names", probability = 0.5 }}
"path.token_id" = {{ dictionary = "token_ids", probability = 0.3 }}
"""


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def known_values(engine: Careflow) -> dict[str, list[Any]]:
    from sqlalchemy import select

    from engine.store.models import ApiToken, Customer, FlowVersion, FormVersion, Instance, Task, User

    with engine.session() as s:
        return {
            "task_ids": list(s.scalars(select(Task.id))),
            "instance_ids": list(s.scalars(select(Instance.id))),
            "customer_ids": list(s.scalars(select(Customer.id))),
            "flow_ids": sorted(set(s.scalars(select(FlowVersion.flow_id)))),
            "form_ids": sorted(set(s.scalars(select(FormVersion.form_id)))),
            "usernames": list(s.scalars(select(User.username))),
            "hook_names": ["shop", "churn_risk", "grade_a", "detractors"],  # webhook and segment names
            "token_ids": list(s.scalars(select(ApiToken.id))),
        }


def dictionaries_toml(values: dict[str, list[Any]]) -> str:
    return "\n".join(f"{name} = {{ values = {json.dumps(items, ensure_ascii=False)} }}" for name, items in values.items())


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, list[Any]]]]:
    engine = Careflow(f"sqlite:///{tmp_path / 'st.db'}")
    engine.deploy_builtins()
    seed(engine, customers=20)
    engine.create_webhook("shop", actor="admin")
    for n in range(3):
        engine.submit_form("complaint_intake", {"subject": f"投诉 {n}", "description": "商品破损"}, user="chen")
    for customer_id in range(1, 9):
        engine.start("onboarding", customer_id=customer_id, started_by="admin")
    engine.start("winback", customer_id=9, started_by="admin")
    engine.create_token("li", ["read"], name="report", actor="admin")
    _info, token = engine.create_token("admin", ["read", "write", "admin"], name="schemathesis", actor="admin")
    app = create_app({"SECRET_KEY": "schemathesis", "SESSION_COOKIE_SECURE": False}, engine=engine)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", token, known_values(engine)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        engine.close()


def st_command() -> list[str]:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "schemathesis.cli"]


def run_schemathesis(base: str, token: str, known: dict[str, list[Any]], workdir: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG.format(dictionaries=dictionaries_toml(known)), encoding="utf-8")
    report = workdir / "report.json"
    command = [
        *st_command(), "--config-file", str(config), "run", f"{base}/api/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(EXAMPLES),
        "--workers", "1",
        "--seed", "20261124",
        "--request-timeout", "30",
        "--generation-database", "none",
        "--report", "json", "--report-json-path", str(report),
        "--no-color",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=workdir)
    (workdir / "schemathesis-output.txt").write_text(result.stdout + result.stderr, encoding="utf-8")
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    return result, data


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(live_api: tuple[str, str, dict[str, list[Any]]], tmp_path: Path) -> None:
    base, token, known = live_api
    result, report = run_schemathesis(base, token, known, tmp_path)
    output = result.stdout + result.stderr
    assert report, output[-6000:]
    operations, cases = report["operations"], report["test_cases"]
    print(f"schemathesis: {operations['tested']}/{operations['total']} operations, {cases['generated']} test cases, "
          f"{len(report['failures'])} failures, {len(report['errors'])} errors, {report['running_time']:.0f}s")
    failures = output[output.find("FAILURES"):output.find("WARNINGS")] if "FAILURES" in output else ""
    assert result.returncode == 0 and report["exit_code"] == 0, failures[:12000] or output[-6000:]
    assert report["failures"] == [] and report["errors"] == [] and cases["with_failures"] == 0
    assert operations["tested"] == operations["total"] >= 45
    assert all(phase["status"] == "success" for phase in report["phases"].values()), report["phases"]
