"""The `careflow` command: exit codes, located errors, --json and --now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    def invoke(*args: str, now: str = "2026-11-24T09:00+08:00"):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, ["--database", url, "--now", now, *args], catch_exceptions=False)

    return invoke


def test_validate_passes_the_builtin_flows_and_forms() -> None:
    result = CliRunner(env={"LANG": "C.UTF-8"}).invoke(main, ["validate", str(ROOT / "workflows"), str(ROOT / "forms")])
    assert result.exit_code == 0, result.output
    assert "18 file(s) checked" in result.output


def test_validate_reports_every_problem_located_and_exits_1() -> None:
    bad = [str(ROOT / "tests/data/flows" / n) for n in ("bad_unknown_next.yaml", "bad_cron.yaml", "bad_python_tag.yaml")]
    result = CliRunner(env={"LANG": "C.UTF-8"}).invoke(main, ["validate", *bad])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{bad[0]}:10:11: unknown step 'send_remindr'; did you mean 'send_reminder'?")
    assert all(":" in line.split(" ")[0] for line in lines)
    assert "Traceback" not in result.output


def test_validate_speaks_chinese_with_lang_zh_or_a_chinese_locale() -> None:
    bad = [str(ROOT / "tests/data/flows" / n) for n in ("bad_unknown_next.yaml", "bad_cron.yaml")]
    english = CliRunner(env={"LANG": "en_US.UTF-8"}).invoke(main, ["validate", *bad])
    chinese = CliRunner(env={"LANG": "en_US.UTF-8"}).invoke(main, ["validate", "--lang", "zh", *bad])
    assert english.exit_code == chinese.exit_code == 1
    zh_lines = chinese.output.strip().splitlines()
    # Same places, same names and suggestion, Chinese words.
    assert [line.split(": ")[0] for line in zh_lines] == [line.split(": ")[0] for line in english.output.strip().splitlines()]
    assert zh_lines[0] == f"{bad[0]}:10:11: 未知的步骤 'send_remindr'；是不是想写 'send_reminder'？ ($.steps[1].next)"
    assert zh_lines[1].endswith(":6:11: cron 表达式 '0 25 * * *' 有误：'25' 中的值 25 大于最大值 23 ($.triggers[0].cron)")
    from_locale = CliRunner(env={"LANG": "zh_CN.UTF-8"}).invoke(main, ["validate", *bad])
    assert from_locale.output == chinese.output
    forced = CliRunner(env={"LANG": "zh_CN.UTF-8"}).invoke(main, ["--json", "validate", "--lang", "en", bad[0]])
    assert json.loads(forced.output)["problems"][0]["message"] == "unknown step 'send_remindr'; did you mean 'send_reminder'?"
    ok = CliRunner().invoke(main, ["validate", "--lang", "zh", str(ROOT / "forms")])
    assert ok.exit_code == 0 and "个文件" in ok.output


def test_validate_json() -> None:
    result = CliRunner().invoke(main, ["--json", "validate", str(ROOT / "tests/data/flows/bad_cron.yaml")])
    body = json.loads(result.output)
    assert result.exit_code == 1 and body["ok"] is False
    assert body["problems"][0]["line"] == 6 and body["problems"][0]["path"] == "$.triggers[0].cron"


def test_usage_errors_exit_2() -> None:
    assert CliRunner().invoke(main, ["validate", "/no/such/file.yaml"]).exit_code == 2
    assert CliRunner().invoke(main, ["--now", "yesterday", "tick"]).exit_code == 2
    assert CliRunner().invoke(main, ["frobnicate"]).exit_code == 2


def test_a_process_from_the_command_line(run) -> None:  # type: ignore[no-untyped-def]
    assert run("demo", "--customers", "3").exit_code == 0
    created = run("--json", "customers", "create", "--data",
                  json.dumps({"name": "王芳", "phone": "139 0013 9000", "region": "北京", "expected_value": 50000}))
    customer_id = json.loads(created.output)["customer_id"]
    tasks = json.loads(run("--json", "tasks", "--user", "li").output)
    assert [t["step"] for t in tasks] == ["welcome_call"]
    task = tasks[0]
    bad = run("--json", "complete", str(task["id"]), "--user", "li", "--lang", "en", "--data", '{"reached": "yes"}')
    assert bad.exit_code == 1
    fields = {d["field"] for d in json.loads(bad.output)["error"]["details"]}
    assert {"reached", "call_notes"} <= fields
    ok = run("complete", str(task["id"]), "--user", "li", "--data",
             json.dumps({"reached": True, "call_notes": "已联系", "preferred_channel": "sms"}))
    assert ok.exit_code == 0
    assert run("tick", now="2026-12-01T09:05+08:00").exit_code == 0
    shown = json.loads(run("--json", "show", str(task["instance_id"])).output)
    assert shown["current_steps"] == ["wait_survey"] and shown["customer_id"] == customer_id
    again = run("complete", str(task["id"]), "--user", "li", "--data", "{}")
    assert again.exit_code == 1 and "already completed" in again.output


def test_unknown_ids_are_errors_not_tracebacks(run) -> None:  # type: ignore[no-untyped-def]
    run("demo", "--customers", "0")
    result = run("start", "nosuchflow")
    assert result.exit_code == 1 and "No flow by the id 'nosuchflow'" in result.output
    assert run("show", "42").exit_code == 1
    assert run("start", "follow_up", "--data", "{not json").exit_code == 2


def test_the_installed_command_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "CAREFLOW_HOME": str(tmp_path)}
    env.pop("CAREFLOW_DATABASE_URL", None)
    result = subprocess.run([str(Path(sys.executable).with_name("careflow")), "--json", "tick"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["timers_fired"] == 0
    assert (tmp_path / "careflow.db").exists()


def test_calendar_overrides_change_due_dates(run) -> None:  # type: ignore[no-untyped-def]
    run("demo", "--customers", "0")
    assert "working day" in run("calendar", "check", "2026-02-14").output  # a make-up Saturday (调休)
    assert "day off" in run("calendar", "check", "2026-10-01").output
    assert run("calendar", "set", "2026-11-25", "--off", "--note", "公司年会").exit_code == 0
    assert "day off" in run("calendar", "check", "2026-11-25").output
    run("customers", "create", "--data", json.dumps({"name": "王芳", "phone": "13900139000", "region": "北京"}))
    [task] = json.loads(run("--json", "tasks", "--user", "li").output)
    # Two business days from Tuesday skip the company day off on Wednesday: Friday, not Thursday.
    assert task["due_at"].startswith("2026-11-27T01:00")
    assert run("calendar", "unset", "2026-11-25").exit_code == 0
    assert "working day" in run("calendar", "check", "2026-11-25").output


def test_preview_renders_a_message_in_either_language_without_sending(run) -> None:  # type: ignore[no-untyped-def]
    run("demo", "--customers", "0")
    zh = run("preview", "birthday", "greet")
    assert zh.exit_code == 0 and "张伟，祝您生日快乐" in zh.output
    en = json.loads(run("--json", "preview", "birthday", "send_coupon", "--lang", "en", "--vars", '{"coupon_code": "BD-1"}').output)
    assert en["params"]["text"] == "A birthday coupon for you: BD-1, valid for 30 days."
    wrong = run("preview", "birthday", "is_grade_a")
    assert wrong.exit_code == 1 and "not an action" in wrong.output
    assert json.loads(run("--json", "connectors", "log").output) == []


def test_deploy_reports_each_version(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run("demo", "--customers", "0", "--no-mail")
    flow = tmp_path / "hello.yaml"
    flow.write_text("id: hello\nname: Hello\nsteps:\n  - id: done\n    type: end\n", "utf-8")
    first = run("deploy", str(flow))
    assert first.exit_code == 0 and "flow hello v1 deployed" in first.output
    again = json.loads(run("--json", "deploy", str(flow)).output)
    assert again == [{"kind": "flow", "id": "hello", "version": 1, "changed": False, "source": str(flow)}]


def test_deploy_refuses_a_bad_flow_naming_its_problems_in_the_chosen_language(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run("demo", "--customers", "0", "--no-mail")
    flow = tmp_path / "hello.yaml"
    flow.write_text("id: hello\nname: Hello\nsteps:\n  - id: start\n    type: set\n    values: {a: 1}\n    next: dne\n"
                    "  - id: done\n    type: end\n", "utf-8")
    english = run("deploy", "--lang", "en", str(flow))
    assert english.exit_code == 1 and f"{flow}:7:11: unknown step 'dne'; did you mean 'done'?" in english.output
    chinese = run("deploy", "--lang", "zh", str(flow))
    assert chinese.exit_code == 1 and f"{flow}:7:11: 未知的步骤 'dne'；是不是想写 'done'？" in chinese.output
    body = json.loads(run("--json", "deploy", "--lang", "zh", str(flow)).output)
    assert body["ok"] is False and body["problems"][0]["message"].startswith("未知的步骤 'dne'")
    assert run("start", "hello").exit_code == 1  # nothing was deployed
