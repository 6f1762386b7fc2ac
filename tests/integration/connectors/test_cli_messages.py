"""The command line: `careflow connectors types` shows message parameters; `validate` checks them offline."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main

FLOW = """\
id: tell_groups
name: {zh: 通知, en: Tell}
steps:
  - id: tell
    type: action
    connector: feishu/care-team
    params:
      subjct: 新投诉
      text: "{{ customer.name }}"
    next: mail
  - id: mail
    type: action
    connector: email/marketing
    params: {subject: 优惠, text: 正文, category: marketting}
    next: done
  - id: done
    type: end
"""


def test_types_lists_the_message_parameters_without_a_database(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CAREFLOW_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["connectors", "types"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "  message:  to* subject* text* html category" in result.output  # smtp, sendgrid
    assert "feishu  (channel feishu; TYPE/NAME ok)\n  message:  text+ markdown+ subject mention category" in result.output
    assert "preferred  (channel -; no named configurations)" in result.output
    as_json = json.loads(CliRunner().invoke(main, ["--json", "connectors", "types"]).output)
    webhook = next(t for t in as_json if t["type"] == "webhook")
    assert webhook["message_schema"]["additionalProperties"] is True
    assert list(tmp_path.iterdir()) == []  # no database was created


def test_validate_reports_message_problems_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "tell_groups.yaml"
    path.write_text(FLOW, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{path}:8:7: unknown parameter 'subjct' for connector 'feishu/care-team'; did you mean 'subject'? "
        "($.steps[0].params.subjct)",
        f"{path}:14:47: parameter 'category' must be one of 'service', 'marketing', not 'marketting'; "
        "did you mean 'marketing'? ($.steps[1].params.category)",
    ]
