"""Customer and order imports over the API: upload (a dry run unless ``commit``), the report and
progress, commit or resume, the report as CSV, and the merge log. Admins only: an import may
merge rows into any customer."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean, Dict, File, Float, Integer, List, Nested, String
from apiflask.schemas import FileSchema
from apiflask.validators import FileSize, Length, OneOf, Range, Regexp
from flask import Response, g

from engine.api.auth import careflow, requires, token_auth
from engine.api.errors import ApiError, locale
from engine.api.schemas import MAX_ID, PageQuery, page_of
from engine.import_files import ImportFileError
from engine.imports import Importer, report_csv
from engine.store.imports import merges as merge_log

bp = APIBlueprint("imports", __name__, url_prefix="/api/customers", tag="Customer imports")

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_FIELDS = r"^[a-z][a-z0-9_]{0,63}(,[a-z][a-z0-9_]{0,63})*$"


class ImportIn(Schema):
    file = File(required=True, validate=FileSize(max="50 MiB"),
                metadata={"description": "CSV (UTF-8, UTF-8 with BOM, GBK/GB18030) or XLSX."})
    map = String(validate=Length(max=4000), metadata={"description": "COLUMN=FIELD pairs separated by commas; '-' ignores a column.",
                                                       "example": "客户=name,会员号=member_no,备注=-"})
    mapping = String(validate=Regexp(_NAME), metadata={"description": "A mapping saved earlier."})
    save_mapping = String(validate=Regexp(_NAME), metadata={"description": "Save this file's mapping under this name."})
    sheet = String(validate=Length(min=1, max=100))
    commit = Boolean(load_default=False, metadata={"description": "Write at once instead of a dry run."})


class CustomerImportIn(ImportIn):
    match_on = String(validate=Regexp(_FIELDS), metadata={"description": "More fields that identify a customer, e.g. member_no."})
    start_flows = Boolean(load_default=False, metadata={"description": "Fire the customer created/updated triggers."})


class ProgressOut(Schema):
    done_rows = Integer(required=True)
    total_rows = Integer(required=True)
    percent = Float(required=True)


class FileOut(Schema):
    name = String(required=True)
    format = String(required=True)
    encoding = String(allow_none=True, required=True)


class RowOut(Schema):
    row = Integer(required=True)
    action = String(required=True, validate=OneOf(["create", "merge", "reject", "add", "ignore"]))
    customer_id = Integer(allow_none=True, required=True)
    merged_with = Integer(allow_none=True, required=True)
    matched_on = List(String())
    changes = List(String())
    reason = Dict(keys=String(), values=String(), allow_none=True, required=True)


class ProblemOut(Schema):
    row = Integer(required=True)
    column = String(required=True)
    field = String(required=True)
    value = String(required=True)
    code = String(required=True)
    message = Dict(keys=String(), values=String(), required=True)
    rejects_row = Boolean(required=True)


class ImportOut(Schema):
    id = Integer(required=True)
    kind = String(required=True, validate=OneOf(["customers", "orders"]))
    status = String(required=True, validate=OneOf(["planned", "committing", "committed", "failed"]))
    file = Nested(FileOut, required=True)
    columns = Dict(keys=String(), values=String(), required=True)
    unmapped = List(String(), required=True)
    match_on = List(String(), required=True)
    start_flows = Boolean(required=True)
    summary = Dict(keys=String(), values=Integer(), required=True)
    committed = Dict(keys=String(), values=Integer(), required=True)
    progress = Nested(ProgressOut, required=True)
    error = String(allow_none=True, required=True)
    created_by = String(allow_none=True, required=True)
    created_at = String(required=True)
    committed_at = String(allow_none=True, required=True)
    rows = List(Nested(RowOut), required=True)
    problems = List(Nested(ProblemOut), required=True)


class MergeOut(Schema):
    id = Integer(required=True)
    customer_id = Integer(required=True)
    import_id = Integer(allow_none=True, required=True)
    at = String(required=True)
    created = Boolean(required=True)
    rows = List(Integer(), required=True)
    matched_on = List(String(), required=True)
    changes = Dict(required=True, metadata={"description": "field -> [before, after]"})


class ImportQuery(Schema):
    summary_only = Boolean(load_default=False, metadata={"description": "Leave out rows and problems (to poll progress)."})


class MergeQuery(PageQuery):
    customer_id = Integer(validate=Range(min=1, max=MAX_ID))
    import_id = Integer(validate=Range(min=1, max=MAX_ID))


def _upload(kind: str, form: dict[str, Any]) -> Any:
    upload = form["file"]
    data = upload.read()
    match_on = [f for f in (form.get("match_on") or "").split(",") if f]
    importer = Importer(careflow())
    try:
        report = importer.plan(data, upload.filename or "upload", kind=kind, columns=form.get("map"),
                               mapping_name=form.get("mapping"), save_as=form.get("save_mapping"), match_on=match_on,
                               sheet=form.get("sheet"), start_flows=bool(form.get("start_flows")), by=g.principal.username)
        if form.get("commit"):
            report = importer.commit(report["id"])
    except ImportFileError as exc:
        raise ApiError(422, exc.code, exc.zh if locale() == "zh" else exc.en, details=[
            {"path": "$.file", "field": "file", "message": exc.zh if locale() == "zh" else exc.en, "code": exc.code}]) from None
    return report, 201


_DOC = {404: "No saved mapping by that name", 422: "The file cannot be read, or the mapping does not fit it"}


@bp.post("/imports")
@bp.auth_required(token_auth)
@bp.input(CustomerImportIn, location="form_and_files", arg_name="form")
@bp.output(ImportOut, status_code=201)
@bp.doc(responses=_DOC)
@requires("customers.import")
def import_customers(form: dict[str, Any]) -> Any:
    """Upload a customers file: the dry-run report (rows to create, merge, reject; problems per cell), or commit at once."""
    return _upload("customers", form)


@bp.post("/order-imports")
@bp.auth_required(token_auth)
@bp.input(ImportIn, location="form_and_files", arg_name="form")
@bp.output(ImportOut, status_code=201)
@bp.doc(responses=_DOC)
@requires("customers.import")
def import_orders(form: dict[str, Any]) -> Any:
    """Upload an orders file (phone or e-mail, date, amount, order id); committing updates purchase figures."""
    return _upload("orders", form)


@bp.get("/imports/<id:import_id>")
@bp.auth_required(token_auth)
@bp.input(ImportQuery, location="query", arg_name="query")
@bp.output(ImportOut)
@requires("customers.imports")
def get_import(import_id: int, query: dict[str, Any]) -> Any:
    """An import's report and progress (also while it is being committed); ``summary_only`` to poll."""
    report = Importer(careflow()).get(import_id)
    if query["summary_only"]:
        report["rows"], report["problems"] = [], []
    return report


@bp.post("/imports/<id:import_id>/commit")
@bp.auth_required(token_auth)
@bp.output(ImportOut)
@bp.doc(responses={409: "The import is already committed"})
@requires("customers.import")
def commit_import(import_id: int) -> Any:
    """Commit a dry run, or resume an interrupted import after its last whole batch."""
    return Importer(careflow()).commit(import_id)


@bp.get("/imports/<id:import_id>/report.csv")
@bp.auth_required(token_auth)
@bp.output(FileSchema(type="string", format="binary"), content_type="text/csv", description="The report, UTF-8 with BOM")
@requires("customers.imports")
def import_report_csv(import_id: int) -> Any:
    """The report as CSV: one line per row and one per cell problem, messages in Chinese and English."""
    report = Importer(careflow()).get(import_id)
    return Response(report_csv(report), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=import-{import_id}-report.csv"})


@bp.get("/merges")
@bp.auth_required(token_auth)
@bp.input(MergeQuery, location="query", arg_name="query")
@bp.output(page_of(MergeOut))
@requires("customers.imports")
def list_merges(query: dict[str, Any]) -> Any:
    """The merge log, newest first: rows merged into a customer, matched on what, fields changed."""
    with careflow().session() as s:
        items, total = merge_log(s, customer_id=query.get("customer_id"), import_id=query.get("import_id"),
                                 limit=query["per_page"], offset=(query["page"] - 1) * query["per_page"])
    return {"items": items, "total": total, "page": query["page"], "per_page": query["per_page"]}
