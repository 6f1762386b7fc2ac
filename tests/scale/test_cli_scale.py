"""The scale-out commands without services: clear errors, and ``careflow migrate``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import main


@pytest.mark.parametrize("command", ["scheduler", "worker", "health"])
def test_distributed_commands_need_a_broker_url(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAREFLOW_BROKER_URL", raising=False)
    result = CliRunner().invoke(main, [command])
    assert result.exit_code == 2 and "CAREFLOW_BROKER_URL" in result.output and "Traceback" not in result.output


def test_a_broker_url_of_another_kind_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREFLOW_BROKER_URL", "http://user:secret@broker.example:80/")
    result = CliRunner().invoke(main, ["scheduler"])
    assert result.exit_code == 2 and "'broker.example:80/'" in result.output and "secret" not in result.output


def test_a_bad_lease_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREFLOW_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("CAREFLOW_LEASE_SECONDS", "soon")
    result = CliRunner().invoke(main, ["scheduler", "--once"])
    assert result.exit_code == 2 and "CAREFLOW_LEASE_SECONDS" in result.output


def test_migrate_upgrades_an_empty_database_and_then_changes_nothing(database_url: str, monkeypatch: Any) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["--json", "--database", database_url, "migrate"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert report["from"] is None and report["to"]
    again = json.loads(runner.invoke(main, ["--json", "--database", database_url, "migrate"]).output)
    assert again == {"from": report["to"], "to": report["to"]}
