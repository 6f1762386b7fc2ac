"""Development-only: vendor the admin pages' browser libraries into ``admin/static/vendor``.

The same procedure as ``scripts/vendor.py`` (``npm pack``, copy dist files, record sha256 in a
``vendor.json``), for the admin blueprint's own static folder; ``tests/unit/test_vendor.py``
checks the hashes.

    python scripts/vendor_admin.py            # re-vendor, rewrite admin/static/vendor/vendor.json
    python scripts/vendor_admin.py --check    # only verify the committed files
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vendor  # noqa: E402

vendor.VENDOR = vendor.ROOT / "admin" / "static" / "vendor"
vendor.MANIFEST = vendor.VENDOR / "vendor.json"
#: LogicFlow's core draws the read-only diagrams (silent mode); no extension is needed for that.
vendor.PACKAGES = {
    "@logicflow/core": ("2.2.5", ["dist/index.min.js", "dist/index.css", "LICENSE"]),
    # the flow designer's palette (DndPanel), Control (zoom, undo, fit) and selection tools
    "@logicflow/extension": ("2.3.1", ["dist/index.min.js", "dist/index.css", "LICENSE"]),
    # The form designer. Alpine's CSP build: the pages' CSP forbids eval. Its npm package has no
    # LICENSE file: after a re-vendor, put the MIT text of github.com/alpinejs/alpine LICENSE.md
    # back as @alpinejs/csp@<version>/LICENSE and add it to vendor.json.
    "@alpinejs/csp": ("3.17.4", ["dist/cdn.min.js"]),
    "sortablejs": ("1.15.7", ["Sortable.min.js", "LICENSE"]),
}

if __name__ == "__main__":
    raise SystemExit(vendor.main())
