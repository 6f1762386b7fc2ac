"""One error shape for the whole API: ``{"error": {"code", "message", "details"}}``.

Every error goes through here: HTTP errors (404, 405, 413...), request validation (422 with one
detail per field), authentication (401), engine errors (their ``code`` and ``status``) and
anything unexpected (500, logged, no internals in the body). Messages follow Accept-Language:
Chinese unless the client prefers English.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from apiflask import APIFlask, HTTPError
from flask import has_request_context, request

from engine.errors import DefinitionInvalid, EngineError, NotFound, SubmissionInvalid

log = logging.getLogger(__name__)

LANGUAGES = ("zh", "en")

#: status -> (code, zh, en) for errors that carry no message of their own.
STATUS_TEXT: dict[int, tuple[str, str, str]] = {
    400: ("bad_request", "请求无效", "The request is not valid"),
    401: ("unauthorized", "需要有效的访问令牌（Authorization: Bearer …）", "A valid access token is required (Authorization: Bearer …)"),
    403: ("forbidden", "无权执行此操作", "You may not do this"),
    404: ("not_found", "未找到", "Not found"),
    405: ("method_not_allowed", "不支持此请求方法", "This method is not allowed here"),
    406: ("not_acceptable", "无法提供所需的格式", "Cannot answer in the requested format"),
    409: ("conflict", "操作冲突", "Conflict"),
    410: ("gone", "已失效", "No longer available"),
    413: ("too_large", "请求内容过大", "The request body is too large"),
    415: ("unsupported_media_type", "不支持的内容类型", "Unsupported content type"),
    422: ("validation_failed", "数据校验未通过", "The data is not valid"),
    429: ("too_many_requests", "请求过于频繁，请稍后再试", "Too many requests; try again later"),
    500: ("internal_error", "服务器内部错误", "Internal server error"),
}

#: Our own messages, by key.
MESSAGES: dict[str, tuple[str, str]] = {
    "scope_missing": ("访问令牌缺少 {scope} 权限范围", "The access token lacks the {scope} scope"),
    "role_missing": ("您的角色无权执行此操作", "Your roles do not allow this operation"),
    "not_found": ("未找到{kind} {ident}", "No {kind} by the id {ident} was found"),
    "bad_json": ("请求体不是有效的 JSON", "The request body is not valid JSON"),
    "bad_yaml_type": ("请以 text/yaml 或 JSON {{source, filename}} 提交流程", "Send the flow as text/yaml or as JSON {{source, filename}}"),
    "self_revoke": ("不能吊销当前正在使用的令牌", "You cannot revoke the token you are using"),
    "owner_not_allowed": ("只能把客户分配给自己或本团队成员", "You may assign customers only to yourself or your team"),
    "not_waiting": ("流程实例没有在等待事件 {event}", "The instance is not waiting for the event {event}"),
}

KINDS_ZH = {"task": "任务", "instance": "流程实例", "customer": "客户", "flow": "流程", "form": "表单", "user": "用户",
            "token": "令牌", "webhook": "Webhook", "incident": "异常", "object": "对象", "segment": "分群"}


def locale() -> str:
    """zh or en, from ``?lang=`` or Accept-Language; Chinese by default."""
    if not has_request_context():
        return "zh"
    asked = request.args.get("lang")
    if asked in LANGUAGES:
        return asked
    best = request.accept_languages.best_match(LANGUAGES)
    if best is None:
        # werkzeug matches "en-US" to "en" only via the primary tag; do that ourselves too.
        for value, _quality in request.accept_languages:
            primary = value.split("-")[0].lower()
            if primary in LANGUAGES:
                return primary
        return "zh"
    return best


def text(key: str, **values: Any) -> str:
    zh, en = MESSAGES[key]
    return (zh if locale() == "zh" else en).format(**values)


class ApiError(HTTPError):
    """An API error with our code and a localized message."""

    def __init__(self, status: int, code: str | None = None, message: str | None = None,
                 details: list[dict[str, Any]] | None = None, headers: Mapping[str, str] | None = None):
        default_code, zh, en = STATUS_TEXT.get(status, STATUS_TEXT[400 if status < 500 else 500])
        super().__init__(status, message or (zh if locale() == "zh" else en), detail=details or [],
                         headers=dict(headers or {}), extra_data={"code": code or default_code})


def forbidden(key: str = "role_missing", **values: Any) -> ApiError:
    return ApiError(403, "forbidden", text(key, **values))


def not_found(kind: str, ident: Any) -> ApiError:
    shown_kind = KINDS_ZH.get(kind, kind) if locale() == "zh" else kind
    return ApiError(404, "not_found", text("not_found", kind=shown_kind, ident=repr(ident) if isinstance(ident, str) else ident))


@contextmanager
def references(**fields: type[NotFound]) -> Iterator[None]:
    """Turn "no such X" for an id named in the request body into a 422 on that field.

    404 is kept for the resource the URL names; a body that points at nothing is invalid input.
    """
    try:
        yield
    except NotFound as exc:
        for field, kind in fields.items():
            if isinstance(exc, kind):
                message = engine_error_response(exc)[0]["error"]["message"]
                raise ApiError(422, "validation_failed", details=[
                    {"path": f"$.{field}", "field": field, "message": message, "code": "not_found"}]) from None
        raise


def body(code: str, message: str, details: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": [dict(d) for d in details]}}


def _validation_details(detail: Any) -> list[dict[str, Any]]:
    """webargs' {"json": {"field": ["message"]}} as field errors."""
    out: list[dict[str, Any]] = []

    def walk(node: Any, path: list[str], location: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, [*path, str(key)], location)
        elif isinstance(node, list) and node and all(isinstance(m, str) for m in node):
            for message in node:
                out.append({
                    "path": "$" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path),
                    "field": path[0] if path else "",
                    "message": message,
                    "code": "invalid",
                    "location": location,
                })
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, [*path, str(i)], location)
        elif node is not None:
            out.append({"path": "$", "field": path[0] if path else "", "message": str(node), "code": "invalid", "location": location})

    if isinstance(detail, Mapping):
        for location, errors in detail.items():
            walk(errors, [], str(location))
    return out[:100]


def engine_error_response(exc: EngineError) -> tuple[dict[str, Any], int]:
    status = exc.status if 400 <= exc.status < 600 else 400
    lang = locale()
    if isinstance(exc, SubmissionInvalid):
        details = [e.as_dict() for e in exc.errors]
        message = STATUS_TEXT[422][1 if lang == "zh" else 2]
        return body(exc.code, message, details), 422
    if isinstance(exc, DefinitionInvalid):
        details = [p.as_dict(lang) for p in exc.problems]
        message = "定义有错误" if lang == "zh" else "The definition has problems"
        return body(exc.code, message, details), status
    if isinstance(exc, NotFound):
        kind = getattr(exc, "kind", "object")
        shown_kind = KINDS_ZH.get(kind, kind) if lang == "zh" else kind
        ident = exc.ident
        message = text("not_found", kind=shown_kind, ident=repr(ident) if isinstance(ident, str) else ident)
        return body("not_found", message, [{"kind": kind}]), 404
    message = str(exc)
    if lang == "zh" and status in STATUS_TEXT:
        message = f"{STATUS_TEXT[status][1]}：{message}"
    return body(exc.code, message), status


def init_app(app: APIFlask) -> None:
    @app.error_processor
    def http_error(error: HTTPError) -> tuple[dict[str, Any], int, Mapping[str, str]]:
        status = error.status_code
        code = error.extra_data.get("code")
        default_code, zh, en = STATUS_TEXT.get(status, STATUS_TEXT[400 if status < 500 else 500])
        if status == 422 and isinstance(error.detail, Mapping):
            details = _validation_details(error.detail)
            message = zh if locale() == "zh" else en
        else:
            details = error.detail if isinstance(error.detail, list) else []
            message = (error.message or "") if code else (zh if locale() == "zh" else en)
        given: Any = error.headers or {}
        headers: dict[str, str] = {str(k): str(v) for k, v in dict(given).items() if str(k).lower() != "content-type"}
        if status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="careflow"')
        return body(code or default_code, message, details), status, headers

    @app.errorhandler(EngineError)
    def engine_error(exc: EngineError) -> tuple[dict[str, Any], int]:
        return engine_error_response(exc)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):  # handled by the error processor above
            return exc
        log.exception("unexpected error on %s %s", request.method, request.path)
        return body("internal_error", STATUS_TEXT[500][1 if locale() == "zh" else 2]), 500
