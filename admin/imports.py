"""Customer and order imports for admins: upload → dry-run report → commit → progress → result,
and the merge log. The work is ``engine.imports.Importer``'s, exactly as over the API; a commit
runs in a background thread so the page can show its progress while it writes."""

from __future__ import annotations

import json
import threading
from typing import Any

from flask import Response, abort, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _

from admin import bp
from admin.access import careflow, principal, requires
from engine.errors import Conflict, EngineError, NotFound
from engine.i18n import lang
from engine.import_files import ImportFileError
from engine.imports import KINDS, Importer, report_csv
from engine.store import imports as import_store
from engine.store.imports import merges as merge_log

PER_PAGE = 50
_FORM_FIELDS = ("kind", "map", "mapping", "save_mapping", "sheet", "match_on")


def _report(import_id: int) -> dict[str, Any]:
    try:
        return Importer(careflow()).get(import_id)
    except NotFound:
        abort(404)


@bp.get("/imports/new")
@requires("customers.import")
def import_new() -> Any:
    return render_template("admin/import_new.html", form={"kind": "customers"}, errors={})


@bp.post("/imports/new")
@requires("customers.import")
def import_upload() -> Any:
    form = {k: request.form.get(k, "").strip() for k in _FORM_FIELDS}
    form["start_flows"] = bool(request.form.get("start_flows"))
    errors: dict[str, list[str]] = {}
    upload = request.files.get("file")
    if form["kind"] not in KINDS:
        errors["kind"] = [_("Choose customers or orders.")]
    if upload is None or not upload.filename:
        errors["file"] = [_("Choose a CSV or XLSX file.")]
    if not errors:
        assert upload is not None
        try:
            report = Importer(careflow()).plan(
                upload.read(), upload.filename or "upload", kind=form["kind"], columns=form["map"] or None,
                mapping_name=form["mapping"] or None, save_as=form["save_mapping"] or None,
                match_on=[f.strip() for f in form["match_on"].split(",") if f.strip()], sheet=form["sheet"] or None,
                start_flows=form["start_flows"], by=principal().username)
        except ImportFileError as exc:
            errors["file"] = [exc.zh if lang() == "zh" else exc.en]
        except NotFound:
            errors["mapping"] = [_("No saved mapping by that name.")]
        except EngineError as exc:
            errors["file"] = [str(exc)]
        else:
            return redirect(url_for("admin.import_detail", import_id=report["id"]), 303)
    return render_template("admin/import_new.html", form=form, errors=errors), 422


@bp.get("/imports/<int:import_id>")
@requires("customers.imports")
def import_detail(import_id: int) -> Any:
    report = _report(import_id)
    problems: dict[int, list[dict[str, Any]]] = {}
    for p in report["problems"]:
        problems.setdefault(p["row"], []).append(p)
    return render_template("admin/import.html", report=report, problems=problems)


@bp.get("/imports/<int:import_id>/progress")
@requires("customers.imports")
def import_progress(import_id: int) -> Any:
    """The progress fragment htmx polls while the commit runs; the whole page once it is done."""
    report = _report(import_id)
    if report["status"] != "committing" and request.headers.get("HX-Request"):
        # Done: send the browser to the result page instead of swapping in a fragment.
        return "", 200, {"HX-Redirect": url_for("admin.import_detail", import_id=import_id)}
    return render_template("admin/_import_progress.html", report=report)


def _commit_in_background(app: Any, import_id: int) -> None:
    with app.app_context():
        try:
            Importer(app.extensions["careflow"]).commit(import_id)
        except Conflict:
            pass  # committed meanwhile by a second click or another admin
        except Exception:  # the run is marked failed with its error; the page shows it
            app.logger.exception("import %s failed", import_id)


@bp.post("/imports/<int:import_id>/commit")
@requires("customers.import")
def import_commit(import_id: int) -> Any:
    report = _report(import_id)
    if report["status"] in ("planned", "failed"):
        # Marked before the thread starts, so the page after the redirect already polls, and a
        # second click finds the import under way instead of starting it twice.
        cf = careflow()
        with cf.sessions.begin() as s:
            run = import_store.get_run(s, import_id)
            if run.status not in ("planned", "failed"):
                return redirect(url_for("admin.import_detail", import_id=import_id), 303)
            run.status, run.updated_at = "committing", cf.clock.now()
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        thread = threading.Thread(target=_commit_in_background, args=(app, import_id), daemon=True,
                                  name=f"import-{import_id}")
        thread.start()
        threads = app.extensions.setdefault("careflow_import_threads", {})  # kept so tests can wait for them
        for done in [i for i, t in threads.items() if not t.is_alive()]:
            del threads[done]
        threads[import_id] = thread
    return redirect(url_for("admin.import_detail", import_id=import_id), 303)


@bp.get("/imports/<int:import_id>/report.csv")
@requires("customers.imports")
def import_report_csv(import_id: int) -> Any:
    return Response(report_csv(_report(import_id)), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=import-{import_id}-report.csv"})


@bp.get("/imports/<int:import_id>/report.json")
@requires("customers.imports")
def import_report_json(import_id: int) -> Any:
    body = json.dumps(_report(import_id), ensure_ascii=False, indent=2)
    return Response(body, mimetype="application/json",
                    headers={"Content-Disposition": f"attachment; filename=import-{import_id}-report.json"})


@bp.get("/merges")
@requires("customers.imports")
def merges() -> Any:
    import_id = request.args.get("import_id", type=int)
    customer_id = request.args.get("customer_id", type=int)
    page_no = max(1, request.args.get("page", 1, type=int) or 1)
    with careflow().session() as s:
        items, total = merge_log(s, customer_id=customer_id, import_id=import_id, limit=PER_PAGE,
                                 offset=(page_no - 1) * PER_PAGE)
    args = {k: v for k, v in (("import_id", import_id), ("customer_id", customer_id)) if v}
    return render_template("admin/merges.html", items=items, total=total, page=page_no, per_page=PER_PAGE, args=args)
