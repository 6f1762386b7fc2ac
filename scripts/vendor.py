"""Development-only: fetch the browser libraries with ``npm pack`` and copy their dist files.

Nothing here runs at install time: the copied files and ``vendor.json`` (name, version, licence,
and the sha256 of every file) are committed, and ``tests/unit/test_vendor.py`` checks the hashes.

    python scripts/vendor.py            # re-vendor everything in PACKAGES, rewrite vendor.json
    python scripts/vendor.py --check    # only verify the committed files against vendor.json

To add a library, add an entry to PACKAGES (files are paths inside the npm package) and run it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "engine" / "static" / "vendor"
MANIFEST = VENDOR / "vendor.json"

#: npm name -> (version, files inside the package to copy, kept under their dist-relative path)
PACKAGES: dict[str, tuple[str, list[str]]] = {
    "bootstrap": ("5.3.9", ["dist/css/bootstrap.min.css", "dist/js/bootstrap.bundle.min.js", "LICENSE"]),
    "htmx.org": ("4.0.1", ["dist/htmx.min.js", "LICENSE"]),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(name: str, version: str, files: list[str], work: Path) -> dict[str, object]:
    subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    tarball = next(work.glob(f"{name.replace('/', '-').lstrip('@')}-{version}.tgz"))
    with tarfile.open(tarball) as tar:
        tar.extractall(work / name, filter="data")
    package = work / name / "package"
    meta = json.loads((package / "package.json").read_text(encoding="utf-8"))
    target = VENDOR / f"{name}@{version}"
    shutil.rmtree(target, ignore_errors=True)
    hashes = {}
    for inner in files:
        relative = inner.removeprefix("dist/")
        dest = target / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package / inner, dest)
        hashes[relative] = sha256(dest)
    return {"name": name, "version": version, "license": meta.get("license"),
            "source": f"npm {name}@{version}", "files": hashes}


def check() -> list[str]:
    problems = []
    for entry in json.loads(MANIFEST.read_text(encoding="utf-8")):
        folder = VENDOR / f"{entry['name']}@{entry['version']}"
        for relative, digest in entry["files"].items():
            path = folder / relative
            if not path.is_file():
                problems.append(f"{path.relative_to(ROOT)}: missing")
            elif sha256(path) != digest:
                problems.append(f"{path.relative_to(ROOT)}: sha256 differs from vendor.json")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if not args.check:
        with tempfile.TemporaryDirectory() as tmp:
            entries = [fetch(name, version, files, Path(tmp)) for name, (version, files) in PACKAGES.items()]
        MANIFEST.write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
