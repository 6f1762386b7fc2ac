"""``careflow customers import`` / ``import-orders`` / ``import-commit`` / ``merges`` / ``mappings``.

A dry run by default: it prints what would be created, merged and rejected (and writes the full
report with ``--report``); ``--commit`` writes it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from engine.cli import State, customers, guarded

_LANG = click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True,
                     help="Language of the printed problems.")


def _import_options(fn: Any) -> Any:
    for option in reversed([
        click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
        click.option("--map", "columns", metavar="'COLUMN=FIELD,…'", help="Map columns to fields ('-' ignores a column)."),
        click.option("--mapping", "mapping_name", metavar="NAME", help="Use a mapping saved earlier."),
        click.option("--save-mapping", "save_as", metavar="NAME", help="Save this file's mapping under NAME."),
        click.option("--sheet", help="XLSX sheet (default: the first)."),
        click.option("--commit", is_flag=True, help="Write the import (default: a dry run that only reports)."),
        click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write the full report: .csv (Excel-friendly) or .json."),
        click.option("--by", default=None, help="Who imports (for the record)."),
        _LANG,
    ]):
        fn = option(fn)
    return fn


def _write_report(report: dict[str, Any], path: Path | None) -> None:
    from engine.imports import report_csv

    if path is None:
        return
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    else:
        path.write_text(report_csv(report), encoding="utf-8")


def _summary_text(report: dict[str, Any], lang: str) -> str:
    s = report["summary"]
    zh = lang == "zh"
    enc = f" · {report['file']['encoding']}" if report["file"]["encoding"] else ""
    lines = [f"{'导入' if zh else 'import'} #{report['id']} {report['file']['name']} ({report['file']['format']}{enc}) "
             f"· {report['status']}"]
    lines.append(("列：" if zh else "columns: ") + ", ".join(f"{k}→{v}" for k, v in report["columns"].items()))
    if report["kind"] == "customers":
        lines.append(f"{'行' if zh else 'rows'} {s['rows']}: {'新建' if zh else 'create'} {s['create']}, "
                     f"{'合并' if zh else 'merge'} {s['merge']}, {'拒绝' if zh else 'reject'} {s['reject']} "
                     f"({'更新已有客户' if zh else 'stored customers updated'} {s['update']}, "
                     f"{'无变化' if zh else 'unchanged'} {s['unchanged']})")
    else:
        lines.append(f"{'行' if zh else 'rows'} {s['rows']}: {'新增订单' if zh else 'add'} {s['add']}, "
                     f"{'重复忽略' if zh else 'ignore'} {s['ignore']}, {'拒绝' if zh else 'reject'} {s['reject']}")
    for row in [r for r in report["rows"] if r["action"] == "reject"][:20]:
        lines.append(f"  {'第' if zh else 'row '}{row['row']}{'行' if zh else ''}: {row['reason'][lang]}")
    shown = [p for p in report["problems"] if not p["rejects_row"]][:20]
    for p in shown:
        lines.append(f"  {'第' if zh else 'row '}{p['row']}{'行' if zh else ''} [{p['column']}] {p['message'][lang]}")
    if report["committed"]:
        lines.append(("已写入：" if zh else "committed: ") + ", ".join(f"{k} {v}" for k, v in report["committed"].items()))
    elif report["status"] == "planned":
        lines.append("这是预演，未写入任何数据；确认后加 --commit。" if zh else "Dry run: nothing was written; add --commit to import.")
    return "\n".join(lines)


def _commit_with_bar(state: State, importer: Any, run_id: int, total: int) -> dict[str, Any]:
    if state.as_json:
        return importer.commit(run_id)  # type: ignore[no-any-return]
    with click.progressbar(length=max(total, 1), label="importing", file=sys.stderr) as bar:
        seen = [0]

        def progress(done: int, _total: int) -> None:
            bar.update(done - seen[0])
            seen[0] = done

        return importer.commit(run_id, progress=progress)  # type: ignore[no-any-return]


def _run(state: State, kind: str, file: Path, columns: str | None, mapping_name: str | None, save_as: str | None,
         sheet: str | None, commit: bool, report_path: Path | None, by: str | None, lang: str,
         match_on: tuple[str, ...] = (), start_flows: bool = False) -> None:
    from engine.imports import Importer

    importer = Importer(state.engine())
    report = importer.plan(file.read_bytes(), file.name, kind=kind, columns=columns, mapping_name=mapping_name,
                           save_as=save_as, match_on=match_on, sheet=sheet, start_flows=start_flows, by=by)
    if commit:
        report = _commit_with_bar(state, importer, report["id"], report["summary"]["rows"])
    _write_report(report, report_path)
    if state.as_json:
        state.emit({k: v for k, v in report.items() if k != "rows"} if report_path else report)
    else:
        click.echo(_summary_text(report, lang))


@customers.command("import")
@_import_options
@click.option("--match-on", "match_on", multiple=True, metavar="FIELD",
              help="Also treat rows with the same FIELD (e.g. member_no) as one customer; repeatable.")
@click.option("--start-flows/--no-start-flows", default=False, show_default=True,
              help="Fire the customer created/updated triggers (onboarding...) for imported customers.")
@click.pass_obj
@guarded
def customers_import(state: State, file: Path, columns: str | None, mapping_name: str | None, save_as: str | None,
                     sheet: str | None, commit: bool, report_path: Path | None, by: str | None, lang: str,
                     match_on: tuple[str, ...], start_flows: bool) -> None:
    """Import customers from CSV (UTF-8 or GBK) or XLSX: a dry run unless --commit."""
    _run(state, "customers", file, columns, mapping_name, save_as, sheet, commit, report_path, by, lang, match_on, start_flows)


@customers.command("import-orders")
@_import_options
@click.pass_obj
@guarded
def customers_import_orders(state: State, file: Path, columns: str | None, mapping_name: str | None, save_as: str | None,
                            sheet: str | None, commit: bool, report_path: Path | None, by: str | None, lang: str) -> None:
    """Import orders (customer phone or e-mail, date, amount, order id); updates purchase figures."""
    _run(state, "orders", file, columns, mapping_name, save_as, sheet, commit, report_path, by, lang)


@customers.command("import-commit")
@click.argument("import_id", type=int)
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report (.csv or .json).")
@_LANG
@click.pass_obj
@guarded
def customers_import_commit(state: State, import_id: int, report_path: Path | None, lang: str) -> None:
    """Commit a dry run, or resume an import that was interrupted, after its last whole batch."""
    from engine.imports import Importer

    importer = Importer(state.engine())
    report = _commit_with_bar(state, importer, import_id, importer.get(import_id)["progress"]["total_rows"])
    _write_report(report, report_path)
    state.emit(report, lambda r: _summary_text(r, lang))


@customers.command("merges")
@click.option("--customer", "customer_id", type=int, help="Only this customer's merges.")
@click.option("--import", "import_id", type=int, help="Only this import's merges.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_obj
@guarded
def customers_merges(state: State, customer_id: int | None, import_id: int | None, limit: int) -> None:
    """The merge log: which rows went into which customer, and what changed."""
    from engine.store.imports import merges

    with state.engine().session() as s:
        items, total = merges(s, customer_id=customer_id, import_id=import_id, limit=limit)

    def text(_: Any) -> str:
        lines = [f"#{m['id']} customer {m['customer_id']} import {m['import_id']} rows {m['rows']} "
                 f"on {','.join(m['matched_on'])}{' (new)' if m['created'] else ''}: "
                 + (", ".join(f"{k} {v[0]!r}→{v[1]!r}" for k, v in m["changes"].items()) or "no change")
                 for m in items]
        return "\n".join(lines) or "no merges"

    state.emit({"items": items, "total": total}, text)


@customers.command("mappings")
@click.pass_obj
@guarded
def customers_mappings(state: State) -> None:
    """Saved column mappings."""
    from engine.store.imports import mappings

    with state.engine().session() as s:
        items = mappings(s)
    state.emit(items, lambda d: "\n".join(f"{m['name']} ({m['kind']}): " + ", ".join(f"{k}→{v}" for k, v in m["columns"].items())
                                          for m in d) or "no saved mappings")
