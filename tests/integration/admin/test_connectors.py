"""Connector pages: the settings form from the type's schema, secrets masked and kept, test send, log."""

from __future__ import annotations

from admin.connectors import parse_settings, setting_fields
from engine.core import Careflow
from tests.support.fakes import RecordingProvider


def test_settings_form_follows_the_schema() -> None:
    from connectors.smtp import SmtpConnector

    fields = {f.name: f for f in setting_fields(SmtpConnector.settings_schema)}
    assert fields["password"].kind == "password" and fields["port"].kind == "integer"
    assert fields["security"].kind == "select" and fields["security"].options == ("starttls", "ssl", "none")
    assert fields["from_address"].kind == "email" and fields["host"].required
    settings, errors = parse_settings(list(fields.values()), {"host": " mail.example.com ", "port": "2525x", "password": ""})
    assert settings == {"host": "mail.example.com"} and errors == {"port": ["Enter a whole number."]}


def test_attach_edit_keeps_secrets_and_test_sends(cf: Careflow, signed_in, provider: RecordingProvider) -> None:  # type: ignore[no-untyped-def]
    admin = signed_in()
    page = admin.text("/admin/connectors/new/smtp")
    assert 'name="password"' in page and 'type="password"' in page
    chinese = signed_in(lang="zh").text("/admin/connectors/new/smtp")
    assert "SMTP 服务器主机名" in chinese and "SMTP server host name" not in chinese
    form = {"new": "1", "type": "smtp", "name": "mail-main", "host": "127.0.0.1", "port": "2525", "security": "none",
            "username": "care", "password": "s3cret-password-1234", "from_address": "care@example.com", "enabled": "true"}
    response = admin.post("/admin/connectors/save", form)
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    page = admin.text("/admin/connectors/mail-main")
    assert "s3cret-password-1234" not in page and "1234" in page  # masked: only the last characters
    assert 'value="2525"' in page
    # saved again without a password: the stored one stays
    admin.post("/admin/connectors/save", {**form, "new": "0", "password": "", "port": "2526"})
    with cf.session() as s:
        from engine.store.connectors import get_config

        row = get_config(s, "mail-main")
        assert row.settings["port"] == 2526 and cf.secrets.decrypt(row.secrets["password"]) == "s3cret-password-1234"
    entries, _ = cf.audit_entries(action="connector.save")
    assert entries and "s3cret" not in str(entries)


def test_invalid_settings_are_shown_beside_their_fields(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    admin = signed_in()
    admin.text("/admin/connectors/new/smtp")
    response = admin.post("/admin/connectors/save", {"new": "1", "type": "smtp", "name": "mail-x", "host": "h",
                                                     "from_address": "not-an-address", "port": "99999"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="err-from_address"' in html and 'id="err-port"' in html
    assert cf.connectors() == []
    dup = admin.post("/admin/connectors/save", {"new": "1", "type": "fake", "name": "bad name!"})
    assert dup.status_code == 422 and 'id="err-name"' in dup.get_data(as_text=True)


def test_test_send_goes_through_the_connector_and_appears_in_the_log(cf: Careflow, signed_in, provider: RecordingProvider) -> None:  # type: ignore[no-untyped-def]
    cf.save_connector("fake-main", "fake", {}, by="admin")
    admin = signed_in()
    admin.text("/admin/connectors/fake-main")
    response = admin.post("/admin/connectors/fake-main/test", {"to": "zhou@example.com", "text": "你好"})
    assert response.status_code == 302
    assert "Test message sent to zhou@example.com." in admin.text("/admin/connectors/fake-main")
    assert provider.texts()[-1] == "你好"
    log = admin.text("/admin/connectors?status=sent")
    assert "fake-main" in log
    provider.fail_next("permanent")
    admin.post("/admin/connectors/fake-main/test", {"to": "zhou@example.com"})
    assert "The test message was not sent (failed)" in admin.text("/admin/connectors/fake-main")


def test_connectors_are_for_admins_only(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    ops = signed_in("ops")
    for path in ("/admin/connectors", "/admin/connectors/new/smtp"):
        assert ops.get(path).status_code == 403
    ops.text("/admin/flows")
    assert ops.post("/admin/connectors/save", {"new": "1", "type": "fake", "name": "x"}).status_code == 403
    assert cf.connectors() == []
