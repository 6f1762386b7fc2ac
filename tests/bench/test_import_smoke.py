"""``bench/import.py`` at a reduced size: it must finish and count correctly (no speed asserted).

The generator knows how many distinct people, duplicate rows and bad rows it wrote; the import
must create, merge and reject exactly those numbers, and store one customer per person.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_benchmark_counts_are_exact() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CAREFLOW_DATABASE_URL"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "import.py"), "--rows", "3000", "--json"],
                            capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    assert figures["rows"] == 3000 and figures["seconds"] > 0 and figures["rows_per_s"] > 0
    assert figures["expected"] == {"created": 2610, "merged": 300, "rejected": 90}
    assert (figures["created"], figures["merged"], figures["rejected"]) == (2610, 300, 90)
    assert figures["customers_stored"] == 2610
    assert figures["field_problems"] > 0  # the impossible birthdays, kept out of the stored profile
    assert figures["encoding"] == "GB18030"
    assert figures["row_by_row"]["rows_per_s"] > 0
