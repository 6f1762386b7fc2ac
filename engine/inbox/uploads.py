"""Files uploaded through a task form's file fields.

A file is stored under ``<UPLOAD_FOLDER>/task-<id>/<random hex>/<safe name>`` and the form's
answer holds the reference ``<random hex>/<safe name>``. It is served back only through the task
it belongs to (so only to users who may see that task), always as a download with ``nosniff``,
never rendered inline. The size limit is Flask's ``MAX_CONTENT_LENGTH`` for the whole request.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from flask import current_app
from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

REFERENCE = re.compile(r"[0-9a-f]{32}/[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def upload_root() -> Path:
    configured = current_app.config.get("UPLOAD_FOLDER")
    if configured:
        return Path(configured)
    home = os.environ.get("CAREFLOW_HOME")
    return Path(home) / "uploads" if home else Path(current_app.instance_path) / "uploads"


def task_folder(task_id: int) -> Path:
    return upload_root() / f"task-{int(task_id)}"


def save(task_id: int, upload: FileStorage) -> str:
    """Store one uploaded file for the task; returns its reference."""
    original = upload.filename or ""
    stem, dot, ext = original.rpartition(".")
    name = secure_filename(original) or ("upload" + (f".{secure_filename(ext)}" if dot and secure_filename(ext) else ""))
    name = name[-128:].lstrip("._-") or "upload"
    key = secrets.token_hex(16)
    folder = task_folder(task_id) / key
    folder.mkdir(parents=True, exist_ok=True)
    upload.save(folder / name)
    return f"{key}/{name}"


def path_of(task_id: int, reference: str) -> Path | None:
    """The stored file of a reference, or None when it is malformed or not this task's."""
    if not isinstance(reference, str) or not REFERENCE.fullmatch(reference):
        return None
    path = task_folder(task_id) / reference
    return path if path.is_file() else None
