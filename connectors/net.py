"""Outgoing HTTP for connectors: refuse internal addresses, pin the resolved IP, no redirects.

An admin-entered webhook URL must never become a way into the internal network (SSRF, see
RELIABILITY T21). So a URL is checked when it is saved (``check_url``) and again when it is
used (``safe_post``): only http(s), no credentials in the URL, no unusual IPv4 notations
(``2130706433``, ``0x7f.1``, ``0177.0.0.1``), and every address the host resolves to must be
public. The host is resolved once and the connection goes to that very address, while the
``Host`` header, SNI and certificate check keep the original name; a DNS answer that changes
between the check and the connection (rebinding) therefore changes nothing. Redirects are
never followed, timeouts are bounded and the answer is read up to a size cap.

``allow_private`` is an admin opt-in for targets on the company network (and for vendor base
URLs, which only admins set). Cloud metadata endpoints, multicast and unspecified addresses
stay refused even then.
"""

from __future__ import annotations

import ipaddress
import json as jsonlib
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from connectors.base import AmbiguousSendError, ConnectorError, TransientConnectorError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], list[str]]

#: Ports a public webhook may use; others are refused unless the admin allows private targets.
ALLOWED_PORTS = frozenset({80, 443, 8080, 8443})
#: Cloud metadata services (AWS/GCP/Azure, AWS IPv6, AWS ECS, Alibaba Cloud, Tencent Cloud).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200", "169.254.0.23")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
MAX_TIMEOUT = 60.0
MAX_CONNECT_TIMEOUT = 10.0
REFUSED = "URL refused"


class UnsafeURLError(ValueError):
    """A URL that connectors may not call; the message names the rule, never the resolved address."""


class UnresolvableHostError(UnsafeURLError):
    """The host name did not resolve: refused now, but DNS may recover, so a send is retried."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the one address it will be connected to."""

    url: str  # without fragment
    scheme: str
    host: str  # as in the URL (IDNA-encoded), for Host, SNI and certificate checks
    port: int
    ip: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    truncated: bool = False  # the body was longer than the cap, or broke off

    def json(self) -> Any:
        if self.truncated:
            raise ValueError("the answer was cut off")
        return jsonlib.loads(self.body.decode("utf-8"))

    def json_or_none(self) -> Any:
        try:
            return self.json()
        except ValueError:
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def system_resolve(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


def check_url(url: str, allow_private: bool = False, *, resolve: Resolve | None = None) -> Target:
    """The target ``url`` would be connected to; raises UnsafeURLError when it must not be called."""
    if not isinstance(url, str) or not url:
        raise UnsafeURLError(f"{REFUSED}: empty")
    if any(c.isspace() or ord(c) < 0x20 or c == "\\" for c in url):
        raise UnsafeURLError(f"{REFUSED}: it contains spaces, control characters or backslashes")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURLError(f"{REFUSED}: only http and https URLs are allowed")
    if "@" in parts.netloc:
        raise UnsafeURLError(f"{REFUSED}: credentials in the URL are not allowed")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise UnsafeURLError(f"{REFUSED}: the port is not valid") from None
    host = _normalise_host(parts.hostname or "")
    if not allow_private and port not in ALLOWED_PORTS:
        raise UnsafeURLError(f"{REFUSED}: port {port} is not allowed (use 80, 443, 8080 or 8443)")
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        if not allow_private and (host == "localhost" or host.endswith(".localhost")):
            raise UnsafeURLError(f"{REFUSED}: it points to a loopback, private, link-local or metadata address")
        try:
            addresses = [ipaddress.ip_address(a) for a in (resolve or system_resolve)(host, port)]
        except (OSError, UnicodeError, ValueError):
            raise UnresolvableHostError(f"{REFUSED}: the host name cannot be resolved") from None
        if not addresses:
            raise UnresolvableHostError(f"{REFUSED}: the host name cannot be resolved")
    # Every address must pass, or a round-robin answer could smuggle one internal address in.
    for address in addresses:
        reason = _refusal(address, allow_private)
        if reason:
            raise UnsafeURLError(f"{REFUSED}: {reason}")
    clean = urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))
    return Target(clean, scheme, host, port, str(addresses[0]))


def _normalise_host(host: str) -> str:
    if not host:
        raise UnsafeURLError(f"{REFUSED}: the URL has no host")
    if "%" in host:
        raise UnsafeURLError(f"{REFUSED}: percent-encoded or scoped host names are not allowed")
    if host.endswith("."):
        host = host[:-1]
    if not host.isascii():
        try:
            import idna  # installed with requests; the same IDNA 2008 encoding requests uses

            host = idna.encode(host, uts46=True).decode("ascii")
        except (ImportError, UnicodeError, ValueError):
            raise UnsafeURLError(f"{REFUSED}: the host name is not valid") from None
    return host.lower()


def _ip_literal(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal; refuses the notations browsers also accept."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise UnsafeURLError(f"{REFUSED}: the host is not a valid IPv6 address") from None
    labels = host.split(".")
    last = labels[-1]
    # WHATWG URL parsing treats a host whose last label is a number as IPv4, in decimal, octal
    # or hex, so 2130706433, 0x7f.1 and 0177.0.0.1 all mean 127.0.0.1 to some client: only the
    # plain dotted-quad form is accepted.
    numeric = last.isdigit() or (last[:2] in ("0x", "0X") and all(c in "0123456789abcdefABCDEF" for c in last[2:]))
    if not numeric:
        return None
    canonical = len(labels) == 4 and all(
        part.isdigit() and (part == "0" or not part.startswith("0")) and int(part) <= 255 for part in labels
    )
    if not canonical:
        raise UnsafeURLError(f"{REFUSED}: unusual IP address notation")
    return ipaddress.IPv4Address(host)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden in a 6to4, Teredo, NAT64 or IPv4-compatible IPv6 address."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _refusal(address: IPAddress, allow_private: bool) -> str | None:
    internal = "it points to a loopback, private, link-local or metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "IPv4-mapped IPv6 addresses are not allowed"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return _refusal(embedded, allow_private)
        if address.scope_id:
            return internal
    if address in METADATA_ADDRESSES or address.is_multicast or address.is_unspecified:
        return internal
    if isinstance(address, ipaddress.IPv4Address) and address.is_reserved:  # 240/4 and broadcast
        return internal
    if not allow_private and not address.is_global:
        return internal
    return None


class _PinnedAdapter(HTTPAdapter):
    """Connects to the checked IP; the URL keeps the host name for Host, SNI and certificates."""

    def __init__(self, target: Target):
        self.target = target
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):  # type: ignore[no-untyped-def]
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params = {**host_params, "host": self.target.ip, "port": self.target.port}
        if self.target.scheme == "https":
            pool_kwargs = {**pool_kwargs, "server_hostname": self.target.host, "assert_hostname": self.target.host}
        return host_params, pool_kwargs


def safe_post(
    url: str,
    *,
    json: Any = None,
    data: bytes | str | Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    timeout: float = 10.0,
    allow_private: bool = False,
    max_response_bytes: int = 1_000_000,
    resolve: Resolve | None = None,
    ca_certs: str | None = None,
) -> HttpResponse:
    """POST to a checked, pinned address and return the answer whatever its status.

    Raises ConnectorError when the URL is refused (permanent), TransientConnectorError when
    nothing reached the server (connection refused, DNS, TLS, connect timeout) and
    AmbiguousSendError when the request went out but no answer came back.
    """
    try:
        target = check_url(url, allow_private, resolve=resolve)
    except UnresolvableHostError as exc:
        raise TransientConnectorError(str(exc)) from None
    except UnsafeURLError as exc:
        raise ConnectorError(str(exc)) from None
    timeout = min(max(float(timeout), 0.1), MAX_TIMEOUT)
    send_headers = {"Accept-Encoding": "identity", **(headers or {}), "Host": target.host_header}
    body = data
    if json is not None:
        body = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        send_headers.setdefault("Content-Type", "application/json; charset=utf-8")
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment (it would bypass the pin), no .netrc
        adapter = _PinnedAdapter(target)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            response = session.post(
                target.url, data=body, headers=send_headers, auth=auth, allow_redirects=False, stream=True,
                timeout=(min(timeout, MAX_CONNECT_TIMEOUT), timeout), verify=ca_certs or True,
            )
        except requests.exceptions.RequestException as exc:
            raise _network_error(exc, target) from None
        with response:
            content, truncated = _read_capped(response, max_response_bytes, time.monotonic() + timeout)
            return HttpResponse(response.status_code, dict(response.headers), content, truncated)


def _network_error(exc: requests.exceptions.RequestException, target: Target) -> ConnectorError:
    where = target.host
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return TransientConnectorError(f"could not connect to {where}: {type(exc).__name__}")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return AmbiguousSendError(f"{where} did not answer in time; the request may have been accepted")
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError) and isinstance(
        reason.reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    ):
        return TransientConnectorError(f"could not connect to {where}: connection failed")
    return AmbiguousSendError(f"the connection to {where} broke off before an answer; the request may have been accepted")


def _read_capped(response: requests.Response, cap: int, deadline: float) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of the body; the status is already known, so a broken body is not an error."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= cap:
            if time.monotonic() > deadline:
                return b"".join(chunks)[:cap], True
            chunk = response.raw.read(min(65_536, cap + 1 - size))
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
    except (urllib3.exceptions.HTTPError, OSError):
        return b"".join(chunks)[:cap], True
    return b"".join(chunks)[:cap], True


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = str(value).strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def short(text: Any, limit: int = 300) -> str:
    """Provider text for an error message: one line, bounded."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def raise_for_status(response: HttpResponse, provider: str, detail: str | None = None) -> None:
    """2xx passes; 408/429/5xx are transient (Retry-After honoured); redirects and other 4xx are permanent."""
    status = response.status
    if 200 <= status < 300:
        return
    message = f"{provider} answered HTTP {status}"
    if detail:
        message += f": {short(detail)}"
    if status in (408, 429) or status >= 500:
        raise TransientConnectorError(message, retry_after=retry_after(response.headers))
    if 300 <= status < 400:
        raise ConnectorError(f"{message} (a redirect; redirects are not followed, so correct the URL)")
    raise ConnectorError(message)


# Group-robot webhooks (WeCom, DingTalk, Feishu) share the transport and the answer format: a
# JSON object whose code is 0 on success. The vendors answer rate limiting with their own code
# (sometimes with HTTP 400), so the code is read before the HTTP status.

ROBOT_SETTINGS_PROPERTIES: Mapping[str, Any] = {
    "webhook_url": {"type": "string", "format": "uri", "x-secret": True, "writeOnly": True,
                    "description": "The robot's webhook address (it contains the robot's key)"},
    "timeout": {"type": "number", "minimum": 1, "maximum": 30, "default": 10},
    "allow_private": {"type": "boolean", "default": False,
                      "description": "Allow an address on the company network (a privately deployed IM server)"},
}


def robot_message(params: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, title, content): ``markdown`` when the params have one, else the ``text``."""
    subject = params.get("subject")
    title = " ".join(str(subject).split()) if isinstance(subject, str) and subject.strip() else ""
    markdown = params.get("markdown")
    if isinstance(markdown, str) and markdown.strip():
        return "markdown", title or " ".join(markdown.strip().splitlines()[0].lstrip("#").split())[:40], markdown
    text = params.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ConnectorError("a group-robot message needs a non-empty 'text' or 'markdown'")
    return "text", title, f"{title}\n{text}" if title else text


#: What an IM id may look like (WeCom userid, DingTalk userId, Feishu open_id/user_id): robots put
#: it into their markdown (``<@id>``, ``@id``, ``<at id="id">``), so nothing there may be markup.
IM_ID_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


def mentions(params: Mapping[str, Any]) -> list[str]:
    """The IM ids a robot message @mentions (``mention``), as strings; an id that is not one is refused."""
    value = params.get("mention")
    people = [str(v).strip() for v in value if str(v).strip()] if isinstance(value, list) else []
    for person in people:
        if not IM_ID_RE.fullmatch(person):
            raise ConnectorError(f"mention {person[:80]!r} is not an IM id (1-64 letters, digits, _ . @ or -)")
    return people


def post_robot(
    url: str, body: Mapping[str, Any], settings: Mapping[str, Any], *, vendor: str,
    transient_codes: Mapping[int, float | None],
) -> dict[str, Any]:
    """POST ``body``; return the vendor's answer, or raise by its code (rate limits are transient)."""
    response = safe_post(
        url, json=body, timeout=min(float(settings.get("timeout") or 10), 30.0),
        allow_private=bool(settings.get("allow_private")), max_response_bytes=64_000,
    )
    answer = response.json_or_none()
    code: Any = None
    if isinstance(answer, dict):
        code = next((answer[k] for k in ("errcode", "code", "StatusCode") if answer.get(k) is not None), None)
    if code not in (None, 0):
        detail = next((answer[k] for k in ("errmsg", "msg", "StatusMessage") if answer.get(k)), "")  # type: ignore[index]
        if code in transient_codes:
            raise TransientConnectorError(
                f"{vendor} asked to slow down or retry: {code} {short(detail)}", retry_after=transient_codes[code]
            )
        raise_for_status(response, vendor, f"{code} {detail}")
        raise ConnectorError(f"{vendor} refused the message: {code} {short(detail)}")
    raise_for_status(response, vendor, response.text[:200])
    if code is None:
        raise ConnectorError(f"{vendor} answered HTTP {response.status} without a result code")
    return answer  # type: ignore[return-value]
