"""The vendored browser libraries are exactly the files each vendor.json lists, with their licences."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("vendor", "required"),
    [
        pytest.param(ROOT / "engine" / "static" / "vendor", {"bootstrap", "htmx.org"}, id="engine"),
        pytest.param(ROOT / "admin" / "static" / "vendor", {"@logicflow/core", "@alpinejs/csp", "sortablejs"}, id="admin"),
    ],
)
def test_every_vendored_file_matches_its_recorded_hash(vendor: Path, required: set[str]) -> None:
    entries = json.loads((vendor / "vendor.json").read_text(encoding="utf-8"))
    assert {e["name"] for e in entries} >= required
    listed = set()
    for entry in entries:
        assert entry["version"] and entry["license"], entry
        folder = vendor / f"{entry['name']}@{entry['version']}"
        assert "LICENSE" in entry["files"], f"{entry['name']}: the licence file must be kept"
        for relative, digest in entry["files"].items():
            path = folder / relative
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} differs from vendor.json"
            listed.add(path)
    on_disk = {p for p in vendor.rglob("*") if p.is_file() and p.name != "vendor.json"}
    assert on_disk == listed, f"files not in vendor.json: {sorted(map(str, on_disk - listed))}"
