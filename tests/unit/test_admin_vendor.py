"""The admin pages' vendored browser libraries are exactly what admin/static/vendor/vendor.json lists."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[2] / "admin" / "static" / "vendor"


def test_every_vendored_admin_file_matches_its_recorded_hash() -> None:
    entries = json.loads((VENDOR / "vendor.json").read_text(encoding="utf-8"))
    assert {e["name"] for e in entries} >= {"@logicflow/core"}
    listed = set()
    for entry in entries:
        assert entry["version"] and entry["license"], entry
        folder = VENDOR / f"{entry['name']}@{entry['version']}"
        assert "LICENSE" in entry["files"], f"{entry['name']}: the licence file must be kept"
        for relative, digest in entry["files"].items():
            path = folder / relative
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} differs from vendor.json"
            listed.add(path)
    on_disk = {p for p in VENDOR.rglob("*") if p.is_file() and p.name != "vendor.json"}
    assert on_disk == listed, f"files not in vendor.json: {sorted(map(str, on_disk - listed))}"
