"""File fields on task forms: multipart upload, stored per task, served only through the task, size limit."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from engine.app import create_app
from engine.core import Careflow
from tests.integration.test_app import sign_in

FORM = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "additionalProperties": False,
    "x-title": {"zh": "上传合同", "en": "Upload the contract"},
    "required": ["contract"],
    "properties": {
        "contract": {"type": "string", "x-label": {"zh": "合同扫描件", "en": "Signed contract"}, "x-widget": "file"},
        "note": {"type": "string", "x-label": {"zh": "说明", "en": "Note"}},
    },
}
FLOW = """
id: contract
name: {zh: 合同归档, en: Contract filing}
triggers: [{type: manual}]
steps:
  - id: upload
    type: task
    form: contract_upload
    title: {zh: 上传合同, en: Upload the contract}
    assignee: {user: wang}
    next: done
  - id: done
    type: end
"""


@pytest.fixture
def setup(cf: Careflow, tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "contract_upload.schema.json").write_text(json.dumps(FORM, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "defs" / "contract.yaml").write_text(FLOW, encoding="utf-8")
    cf.deploy([tmp_path / "defs"])
    iid = cf.start("contract")
    task_id = [t for t in cf.tasks(instance_id=iid)][0]["id"]
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "UPLOAD_FOLDER": str(tmp_path / "uploads"),
                      "MAX_CONTENT_LENGTH": 64 * 1024}, engine=cf)
    return app, task_id, tmp_path / "uploads"


def token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


def test_a_file_field_uploads_stores_and_downloads(cf: Careflow, setup) -> None:  # type: ignore[no-untyped-def]
    app, task_id, folder = setup
    client: FlaskClient = app.test_client()
    sign_in(client, "wang")
    page = client.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert 'type="file"' in page and 'name="contract"' in page
    # required and missing: 422 naming the field
    missing = client.post(f"/tasks/{task_id}", data={"csrf_token": token(page), "note": "x"}, content_type="multipart/form-data")
    assert missing.status_code == 422 and 'id="err-contract"' in missing.get_data(as_text=True)
    body = b"%PDF-1.4 signed contract"
    response = client.post(f"/tasks/{task_id}", content_type="multipart/form-data",
                           data={"csrf_token": token(page), "contract": (io.BytesIO(body), "../../合同 final.pdf")})
    assert response.status_code == 302
    with cf.session() as s:
        from engine.store.models import Task

        task = s.get(Task, task_id)
        assert task is not None and task.status == "completed"
        reference = task.data["contract"]
    assert re.fullmatch(r"[0-9a-f]{32}/[A-Za-z0-9._-]+", reference) and ".." not in reference
    stored = list(folder.rglob("*.pdf"))
    assert len(stored) == 1 and stored[0].read_bytes() == body and folder in stored[0].parents
    done = client.get(f"/tasks/{task_id}").get_data(as_text=True)
    link = re.search(r'href="(/tasks/\d+/files/[^"]+)"', done)
    assert link is not None
    download = client.get(link.group(1))
    assert download.data == body and "attachment" in download.headers["Content-Disposition"]
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    download.close()
    # someone who may not see the task gets nothing
    other = app.test_client()
    sign_in(other, "chen")
    assert other.get(link.group(1)).status_code == 404
    assert client.get(f"/tasks/{task_id}/files/../../etc/passwd").status_code == 404


def test_a_reference_to_another_tasks_file_is_refused(cf: Careflow, setup) -> None:  # type: ignore[no-untyped-def]
    app, task_id, _folder = setup
    client = app.test_client()
    sign_in(client, "wang")
    page = client.get(f"/tasks/{task_id}").get_data(as_text=True)
    forged = client.post(f"/tasks/{task_id}", data={"csrf_token": token(page), "contract": "0" * 32 + "/secret.pdf"})
    assert forged.status_code == 422  # not one of this task's files: treated as missing


def test_a_too_large_upload_gets_a_page_not_a_crash(cf: Careflow, setup) -> None:  # type: ignore[no-untyped-def]
    app, task_id, _folder = setup
    client = app.test_client()
    sign_in(client, "wang")
    page = client.get(f"/tasks/{task_id}").get_data(as_text=True)
    response = client.post(f"/tasks/{task_id}", content_type="multipart/form-data",
                           data={"csrf_token": token(page), "contract": (io.BytesIO(b"x" * 100_000), "big.pdf")})
    assert response.status_code == 413
    assert "上传的文件太大" in response.get_data(as_text=True)
