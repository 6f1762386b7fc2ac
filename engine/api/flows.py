"""Flows: list, deploy YAML, versions."""

from __future__ import annotations

from typing import Any, cast

from apiflask import APIBlueprint
from flask import g, request
from marshmallow import ValidationError
from sqlalchemy import select

from engine.api.auth import careflow, requires, token_auth
from engine.api.errors import ApiError, _validation_details, not_found, text
from engine.api.present import iso
from engine.api.schemas import DeployedOut, FlowDetailOut, FlowOut, FlowSourceIn, FlowVersionOut
from engine.api.spec import request_body
from engine.store.definitions import latest_flow_versions
from engine.store.models import FlowVersion

bp = APIBlueprint("flows", __name__, url_prefix="/api/flows", tag="Flows")

YAML_TYPES = ("text/yaml", "application/yaml", "application/x-yaml", "text/x-yaml")
#: Characters in one flow's YAML. Even written as escaped JSON (up to 12 bytes a character),
#: a flow this long fits in the 2 MiB request limit, so the limit is always a clean 422.
MAX_FLOW_CHARS = 150_000
FILENAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.ya?ml$"
EXAMPLE = """\
id: api_example
name: {zh: 示例, en: Example}
triggers:
  - type: manual
steps:
  - id: wait_reply
    type: wait
    event: customer_replied
    timeout: {days: 3}
    on_timeout: done
    next: done
  - id: done
    type: end
    outcome: done
"""


def flow_dict(v: FlowVersion) -> dict[str, Any]:
    return {
        "id": v.flow_id,
        "name": dict(v.name or {}),
        "version": v.version,
        "content_hash": v.content_hash,
        "deployed_at": iso(v.deployed_at),
        "deployed_by": v.deployed_by,
    }


def _length(text: str | bytes) -> int:
    """Characters of the source (bytes that are not UTF-8 count one each; the loader reports them)."""
    if isinstance(text, bytes):
        try:
            return len(text.decode("utf-8-sig"))
        except UnicodeDecodeError:
            return len(text)
    return len(text)


@bp.get("")
@bp.auth_required(token_auth)
@bp.output(FlowOut(many=True))
@requires("flows.read")
def list_flows() -> Any:
    """The newest version of every deployed flow."""
    with careflow().session() as s:
        return [flow_dict(v) for v in latest_flow_versions(s)]


@bp.post("")
@bp.auth_required(token_auth)
@bp.output(DeployedOut, status_code=201, description="Deployed as a new version")
@bp.doc(responses=cast(Any, {200: {"description": "Unchanged: the same content is already deployed",
                         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DeployedOut"}}}},
                   413: "Larger than the 2 MiB request limit",
                   415: "Not YAML or JSON", 422: "The flow has problems (each with line and column)"}))
@request_body({
    "text/yaml": {"schema": {"type": "string", "maxLength": MAX_FLOW_CHARS}, "example": EXAMPLE},
    "application/json": {"schema": {
        "type": "object",
        "required": ["source"],
        "additionalProperties": False,
        "properties": {
            "source": {"type": "string", "minLength": 1, "maxLength": MAX_FLOW_CHARS},
            "filename": {"type": "string", "pattern": FILENAME,
                         "description": "Optional; the flow id must equal its stem."},
        },
    }, "example": {"source": EXAMPLE, "filename": "api_example.yaml"}},
})
@requires("flows.deploy")
def deploy_flow() -> Any:
    """Validate and deploy a flow; send the YAML as text/yaml, or JSON ``{source, filename}``."""
    if request.mimetype in YAML_TYPES:
        source_text: str | bytes = request.get_data(cache=False)
        filename = "request"
    elif request.is_json:
        try:
            data = FlowSourceIn().load(request.get_json())
        except ValidationError as exc:
            raise ApiError(422, "validation_failed", details=_validation_details({"json": exc.messages})) from None
        source_text, filename = data["source"], data.get("filename") or "request"
    else:
        raise ApiError(415, "unsupported_media_type", text("bad_yaml_type"))
    if _length(source_text) > MAX_FLOW_CHARS:
        raise ApiError(422, "validation_failed", details=[
            {"path": "$", "field": "source", "message": f"a flow has at most {MAX_FLOW_CHARS} characters", "code": "maxLength"}])
    result = careflow().deploy_flow_text(source_text, filename, by=g.principal.username)
    body = {"kind": result.kind, "id": result.id, "version": result.version, "changed": result.changed}
    return body, 201 if result.changed else 200


@bp.get("/<ident:flow_id>")
@bp.auth_required(token_auth)
@bp.output(FlowDetailOut)
@requires("flows.read")
def get_flow(flow_id: str) -> Any:
    """The newest version of a flow, with its YAML source."""
    with careflow().session() as s:
        version = s.scalars(
            select(FlowVersion).where(FlowVersion.flow_id == flow_id, FlowVersion.active.is_(True))
            .order_by(FlowVersion.version.desc()).limit(1)
        ).first()
        if version is None:
            raise not_found("flow", flow_id)
        return {**flow_dict(version), "source": version.source}


@bp.get("/<ident:flow_id>/versions")
@bp.auth_required(token_auth)
@bp.output(FlowVersionOut(many=True))
@requires("flows.read")
def flow_versions(flow_id: str) -> Any:
    """Every deployed version, newest first."""
    with careflow().session() as s:
        rows = list(s.scalars(select(FlowVersion).where(FlowVersion.flow_id == flow_id).order_by(FlowVersion.version.desc())))
        if not rows:
            raise not_found("flow", flow_id)
        return [
            {"version": v.version, "content_hash": v.content_hash, "deployed_at": iso(v.deployed_at),
             "deployed_by": v.deployed_by, "active": v.active}
            for v in rows
        ]
