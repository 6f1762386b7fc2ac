"""Importing customers and orders: a dry run that stores the file and its report, then a commit
in batches, each batch one transaction together with the run's watermark.

A crash loses at most the batch in flight; ``commit`` on the same run resumes after the last
whole batch, and importing the same file again finds every row already stored (matching on
phone and e-mail, orders on their order id), so nothing is created twice either way.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from engine import cleaning
from engine.cleaning import CleaningProblem
from engine.crashpoints import crash_point
from engine.customer_import import Group, Issue, Record, clean_record, group_records
from engine.errors import Conflict
from engine.import_files import ImportFileError, Mapping_, Table, map_columns, parse_map, read_table
from engine.store import imports as store
from engine.store.models import ImportRun, User

if TYPE_CHECKING:
    from engine.core import Careflow

BATCH = 1000
KINDS = ("customers", "orders")
Progress = Callable[[int, int], None]


@dataclass(slots=True)
class Prepared:
    table: Table
    mapping: Mapping_
    records: list[Record]
    groups: list[Group]


def _msg(zh: str, en: str) -> dict[str, str]:
    return {"zh": zh, "en": en}


class Importer:
    """Dry runs, commits and reports of imports, on one ``Careflow``."""

    def __init__(self, engine: Careflow):
        self.cf = engine
        # The cleaned rows of runs planned by this importer, so that a commit right after the dry
        # run (CLI --commit, API commit=true) does not clean the file twice. A commit in another
        # process (or a resume) cleans the stored file again: the result is the same.
        self._prepared: dict[int, Prepared] = {}

    # ----- dry run ------------------------------------------------------------------------------

    def plan(self, data: bytes, filename: str, *, kind: str = "customers", columns: str | dict[str, str] | None = None,
             mapping_name: str | None = None, save_as: str | None = None, match_on: Sequence[str] = (),
             sheet: str | None = None, start_flows: bool = False, by: str | None = None) -> dict[str, Any]:
        """Read, clean and match the file; store it with its report (nothing else is written)."""
        if kind not in KINDS:
            raise ImportFileError(f"未知的导入类型“{kind}”", f"unknown import kind {kind!r}")
        explicit: dict[str, str] = {}
        if mapping_name:
            with self.cf.session() as s:
                explicit.update(store.load_mapping(s, mapping_name))
        explicit.update(parse_map(columns) if isinstance(columns, str) else dict(columns or {}))
        table = read_table(data, filename, sheet)
        mapping = map_columns(table.headers, explicit, kind)
        options = {"columns": mapping.as_dict(), "unmapped": mapping.unmapped, "match_on": list(match_on), "sheet": sheet,
                   "start_flows": start_flows}
        now = self.cf.clock.now()
        with self.cf.sessions.begin() as s:
            if save_as:
                store.save_mapping(s, save_as, kind, mapping.as_dict(), by, now)
            run = ImportRun(kind=kind, filename=filename[:255] or "upload", file_format=table.format, encoding=table.encoding,
                            source=data, options=options, status="planned", total_rows=len(table.rows), done_rows=0,
                            done_groups=0, summary={}, report={}, created_by=by, created_at=now, updated_at=now)
            s.add(run)
            s.flush()
            if kind == "customers":
                prepared = self._prepare(s, table, options)
                report = self._customer_report(s, prepared, options)
                self._prepared = {run.id: prepared}
            else:
                report = self._order_report(s, table, mapping)
            run.summary, run.report = report["summary"], {"rows": report["rows"], "problems": report["problems"]}
            return self.report(s, run)

    def _prepare(self, s: Any, table: Table, options: dict[str, Any]) -> Prepared:
        mapping = map_columns(table.headers, options["columns"], "customers")
        owners = frozenset(s.scalars(select(User.username)))
        records = [clean_record(row, cells, mapping, owners) for row, cells in table.rows]
        return Prepared(table, mapping, records, group_records(records, options["match_on"]))

    def _customer_report(self, s: Any, p: Prepared, options: dict[str, Any]) -> dict[str, Any]:
        matches = store.match_groups(s, p.groups, options["match_on"])
        profiles = store.stored_profiles(s, (cid for m in matches for cid in m.ids))
        rows: dict[int, dict[str, Any]] = {}
        summary = {"rows": len(p.records), "create": 0, "merge": 0, "reject": 0, "update": 0, "unchanged": 0}
        for record in p.records:
            if record.rejected:
                reason = next(i for i in record.issues if i.rejects)
                rows[record.row] = {"row": record.row, "action": "reject", "customer_id": None, "merged_with": None,
                                    "reason": _msg(reason.zh, reason.en)}
        for group, match in zip(p.groups, matches):
            first = group.rows[0]
            if len(match.ids) > 1:
                ids = sorted(match.ids)
                on = "; ".join(f"{cid}: {', '.join(match.on[cid])}" for cid in ids)
                reason = _msg(f"同时匹配到多个已有客户（{on}），请先核对", f"matches several stored customers ({on}); check them first")
                for row in group.rows:
                    rows[row] = {"row": row, "action": "reject", "customer_id": None, "merged_with": None, "reason": reason}
            elif match.ids:
                (cid,) = match.ids
                changes = store.changes_for(profiles[cid], group)
                summary["update" if changes else "unchanged"] += 1
                for row in group.rows:
                    rows[row] = {"row": row, "action": "merge", "customer_id": cid, "merged_with": None,
                                 "matched_on": sorted(set(match.on[cid])), "changes": sorted(changes),
                                 "reason": _msg(f"与已有客户 {cid} 合并", f"merged into stored customer {cid}")}
            elif not group.values.get("name"):
                reason = _msg("新客户缺少姓名", "a new customer needs a name")
                for row in group.rows:
                    rows[row] = {"row": row, "action": "reject", "customer_id": None, "merged_with": None, "reason": reason}
            else:
                rows[first] = {"row": first, "action": "create", "customer_id": None, "merged_with": None, "reason": None}
                for row in group.rows[1:]:
                    rows[row] = {"row": row, "action": "merge", "customer_id": None, "merged_with": first,
                                 "reason": _msg(f"与第 {first} 行是同一客户", f"same customer as row {first}")}
        for row in rows.values():
            summary[row["action"]] += 1
        summary["customers"] = summary["create"] + summary["update"] + summary["unchanged"]
        problems = [i.as_dict() for r in p.records for i in r.issues]
        return {"summary": summary, "rows": [rows[r.row] for r in p.records], "problems": problems}

    # ----- orders ----------------------------------------------------------------------------------

    def _clean_orders(self, table: Table, mapping: Mapping_) -> tuple[list[dict[str, Any]], list[Issue]]:
        orders, issues = [], []
        for row, cells in table.rows:
            values: dict[str, Any] = {"row": row}
            problems: list[Issue] = []
            for index, header, target in mapping.columns:
                cell = cells[index] if index < len(cells) else ""
                if target in values or cleaning.text(cell) == "":
                    continue
                try:
                    if target == "phone":
                        values[target] = cleaning.clean_phone(cleaning.text(cell))
                    elif target == "email":
                        values[target] = cleaning.clean_email(cleaning.text(cell))
                    elif target == "ordered_at":
                        values[target] = cleaning.clean_instant(cell)
                    elif target == "amount":
                        values[target] = cleaning.clean_amount(cell)
                    else:
                        order_id = cleaning.text(cell)
                        if len(order_id) > 64:
                            raise CleaningProblem("too_long", "订单号超过 64 个字符", "the order id is longer than 64 characters")
                        values[target] = order_id
                except CleaningProblem as exc:
                    problems.append(Issue(row, header, target, cleaning.text(cell), exc.code, exc.zh, exc.en, rejects=True))
            for name, zh in (("order_id", "订单号"), ("ordered_at", "下单时间"), ("amount", "金额")):
                if name not in values and not any(p.field == name for p in problems):
                    problems.append(Issue(row, "", name, "", "required", f"缺少{zh}", f"{name} is missing", rejects=True))
            if not (values.get("phone") or values.get("email")) and not any(p.field in ("phone", "email") for p in problems):
                problems.append(Issue(row, "", "phone", "", "no_contact", "缺少客户手机或邮箱", "no customer phone or e-mail",
                                      rejects=True))
            values["rejected"] = bool(problems)
            issues.extend(problems)
            orders.append(values)
        return orders, issues

    def _resolve_orders(self, s: Any, orders: list[dict[str, Any]]) -> None:
        """Set ``customer_id`` and ``action`` on each cleaned order (against the database now)."""
        contacts = store.customers_by_contact(s, (o["phone"] for o in orders if o.get("phone")),
                                              (o["email"] for o in orders if o.get("email")))
        known = store.known_orders(s, (o["order_id"] for o in orders if not o["rejected"]))
        seen: set[str] = set()
        for o in orders:
            o["customer_id"] = None
            if o["rejected"]:
                o["action"] = "reject"
                continue
            cid = contacts.get(("phone", o.get("phone"))) or contacts.get(("email", o.get("email")))
            if o["order_id"] in known or o["order_id"] in seen:
                o["action"], o["reason"] = "ignore", _msg("订单号重复，已忽略", "duplicate order id, ignored")
            elif cid is None:
                o["action"], o["reason"] = "reject", _msg("找不到该手机或邮箱的客户", "no customer with this phone or e-mail")
            else:
                o["action"], o["customer_id"] = "add", cid
            seen.add(o["order_id"])

    def _order_report(self, s: Any, table: Table, mapping: Mapping_) -> dict[str, Any]:
        orders, issues = self._clean_orders(table, mapping)
        self._resolve_orders(s, orders)
        reasons = {i.row: _msg(i.zh, i.en) for i in reversed(issues)}
        rows = [{"row": o["row"], "action": o["action"], "customer_id": o["customer_id"], "merged_with": None,
                 "reason": o.get("reason") or reasons.get(o["row"])} for o in orders]
        summary = {"rows": len(rows), "add": 0, "ignore": 0, "reject": 0}
        for row in rows:
            summary[row["action"]] += 1
        summary["customers"] = len({o["customer_id"] for o in orders if o["action"] == "add"})
        return {"summary": summary, "rows": rows, "problems": [i.as_dict() for i in issues]}

    # ----- commit ----------------------------------------------------------------------------------

    def commit(self, run_id: int, progress: Progress | None = None) -> dict[str, Any]:
        """Write a planned run in batches (or resume an interrupted one), then call ``after_import``."""
        with self.cf.sessions.begin() as s:
            run = store.get_run(s, run_id)
            if run.status == "committed":
                raise Conflict(f"import {run_id} is already committed")
            run.status, run.updated_at = "committing", self.cf.clock.now()
            kind, data, filename, options = run.kind, run.source, run.filename, dict(run.options)
            start, total = run.done_groups, run.total_rows
        table = read_table(data, filename, options.get("sheet"))
        try:
            if kind == "customers":
                created, changed = self._commit_customers(run_id, table, options, start, progress)
            else:
                created, changed = self._commit_orders(run_id, table, options, start, progress)
        except Exception as exc:
            with self.cf.sessions.begin() as s:
                run = store.get_run(s, run_id)
                run.status, run.error, run.updated_at = "failed", str(exc)[:2000], self.cf.clock.now()
            raise
        with self.cf.sessions.begin() as s:
            run = store.get_run(s, run_id)
            run.status, run.done_rows = "committed", total
            run.committed_at = run.updated_at = self.cf.clock.now()
        self.cf.after_import(sorted(set(created) | set(changed)), created=created, changed=changed,
                             start_flows=bool(options.get("start_flows")))
        with self.cf.session() as s:
            return self.report(s, store.get_run(s, run_id))

    def _batches(self, run_id: int, items: Sequence[Any], start: int, rows_of: Callable[[Any], int],
                 write: Callable[[Any, ImportRun, Sequence[Any]], tuple[dict[str, int], Callable[[], None]]],
                 progress: Progress | None, skipped: int = 0) -> None:
        """``write`` returns the batch's counts and what to remember once its transaction committed."""
        done_rows = skipped + sum(rows_of(x) for x in items[:start])
        total = skipped + sum(rows_of(x) for x in items)
        for begin in range(start, len(items), BATCH):
            batch = items[begin:begin + BATCH]
            for attempt in range(3):
                try:
                    with self.cf.sessions.begin() as s:
                        run = store.get_run(s, run_id)
                        counts, remember = write(s, run, batch)
                        committed = dict(run.summary.get("committed") or {})
                        if begin == 0 and skipped:
                            counts = {**counts, "rejected": counts.get("rejected", 0) + skipped}
                        for key, n in counts.items():
                            committed[key] = committed.get(key, 0) + n
                        done_rows += sum(rows_of(x) for x in batch)
                        run.summary = {**run.summary, "committed": committed}
                        run.done_groups, run.done_rows, run.updated_at = begin + len(batch), done_rows, self.cf.clock.now()
                        crash_point("import_batch_before_commit")
                    remember()
                    break
                except IntegrityError:
                    # Someone stored the same phone, e-mail or order meanwhile: match again.
                    done_rows -= sum(rows_of(x) for x in batch)
                    if attempt == 2:
                        raise
            if progress is not None:
                progress(done_rows, total)

    def _commit_customers(self, run_id: int, table: Table, options: dict[str, Any], start: int,
                          progress: Progress | None) -> tuple[list[int], dict[int, list[str]]]:
        prepared = self._prepared.pop(run_id, None)
        if prepared is None:
            with self.cf.session() as s:
                prepared = self._prepare(s, table, options)
        created: list[int] = []
        changed: dict[int, list[str]] = {}
        now = self.cf.clock.now()

        def write(s: Any, run: ImportRun, batch: Sequence[Group]) -> tuple[dict[str, int], Callable[[], None]]:
            result = store.write_customer_batch(s, run, batch, options["match_on"], now)
            merged = sum(len(g.records) for g in batch) - len(result.created) - len(result.rejected_rows)

            def remember() -> None:
                created.extend(result.created)
                changed.update(result.changed)

            return {"created": len(result.created), "updated": len(result.changed), "merged": merged,
                    "rejected": len(result.rejected_rows)}, remember

        # Rows refused while cleaning count as done at once: they are never written.
        skipped = sum(r.rejected for r in prepared.records)
        self._batches(run_id, prepared.groups, start, lambda g: len(g.records), write, progress, skipped)
        return created, changed

    def _commit_orders(self, run_id: int, table: Table, options: dict[str, Any], start: int,
                       progress: Progress | None) -> tuple[list[int], dict[int, list[str]]]:
        mapping = map_columns(table.headers, options["columns"], "orders")
        orders, _issues = self._clean_orders(table, mapping)
        changed: dict[int, list[str]] = {}
        now = self.cf.clock.now()

        def write(s: Any, run: ImportRun, batch: Sequence[dict[str, Any]]) -> tuple[dict[str, int], Callable[[], None]]:
            items = [dict(o) for o in batch]
            self._resolve_orders(s, items)
            added, fields = store.write_order_batch(s, run, [o for o in items if o["action"] == "add"], now)

            def remember() -> None:
                for cid, names in fields.items():
                    changed[cid] = sorted(set(changed.get(cid, [])) | set(names))

            return {"added": added, "ignored": sum(o["action"] == "ignore" for o in items),
                    "rejected": sum(o["action"] == "reject" for o in items)}, remember

        self._batches(run_id, orders, start, lambda o: 1, write, progress)
        return [], changed

    # ----- reports ------------------------------------------------------------------------------------

    def report(self, s: Any, run: ImportRun) -> dict[str, Any]:
        total = run.total_rows or 0
        return {
            "id": run.id, "kind": run.kind, "status": run.status,
            "file": {"name": run.filename, "format": run.file_format, "encoding": run.encoding},
            "columns": dict(run.options.get("columns") or {}), "unmapped": list(run.options.get("unmapped") or []),
            "match_on": list(run.options.get("match_on") or []),
            "start_flows": bool(run.options.get("start_flows")),
            "summary": {k: v for k, v in run.summary.items() if k != "committed"},
            "committed": dict(run.summary.get("committed") or {}),
            "progress": {"done_rows": run.done_rows, "total_rows": total,
                         "percent": round(100 * run.done_rows / total, 1) if total else 100.0},
            "error": run.error, "created_by": run.created_by, "created_at": run.created_at.isoformat(),
            "committed_at": run.committed_at.isoformat() if run.committed_at else None,
            "rows": list(run.report.get("rows") or []), "problems": list(run.report.get("problems") or []),
        }

    def get(self, run_id: int) -> dict[str, Any]:
        with self.cf.session() as s:
            return self.report(s, store.get_run(s, run_id))


REPORT_COLUMNS = ("row", "action", "customer_id", "merged_with_row", "column", "field", "value", "code", "message_zh", "message_en")


def report_csv(report: dict[str, Any]) -> str:
    """One line per row (its action and reason), plus one line per cell problem; UTF-8 with BOM for Excel."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    problems: dict[int, list[dict[str, Any]]] = {}
    for p in report["problems"]:
        problems.setdefault(p["row"], []).append(p)
    for row in report["rows"]:
        reason = row.get("reason") or {}
        writer.writerow([row["row"], row["action"], row.get("customer_id") or "", row.get("merged_with") or "", "", "", "", "",
                         reason.get("zh", ""), reason.get("en", "")])
        for p in problems.get(row["row"], []):
            if p["rejects_row"] and not p["column"]:
                continue  # the row's reason, already on its line
            writer.writerow([p["row"], row["action"], row.get("customer_id") or "", row.get("merged_with") or "", p["column"],
                             p["field"], p["value"], p["code"], p["message"]["zh"], p["message"]["en"]])
    return out.getvalue()
