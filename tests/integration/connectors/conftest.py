"""Real peers for the connector tests: an SMTP server, Prism mock servers and local HTTP stubs.

* SMTP: aiosmtpd on 127.0.0.1 (plain, STARTTLS, implicit TLS, AUTH), with a certificate from a
  throwaway CA made at test time.
* Prism (``npm ci`` at the repo root installs it into node_modules/) serves the vendors' OpenAPI
  contracts from ../shared/contracts (or CAREFLOW_CONTRACTS_DIR) and validates every request.
  Without Prism the Prism tests skip, unless CAREFLOW_REQUIRE_PRISM=1 (CI), where they fail.
* HTTP stubs: http.server threads on 127.0.0.1 that record requests and answer as scripted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[3]
PRISM = REPO / "node_modules" / ".bin" / "prism"
SMTP_USER, SMTP_PASSWORD = "agent@example.com", "s3cret-pässword"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------- TLS material


@dataclass
class Tls:
    ca_pem: str
    ca_path: str
    cert_path: str
    key_path: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA and a server certificate for 127.0.0.1, localhost and hooks.example.test."""
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Careflow test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.DNSName("hooks.example.test"),
             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode("ascii")
    (folder / "ca.pem").write_text(ca_pem)
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return Tls(ca_pem, str(folder / "ca.pem"), str(folder / "cert.pem"), str(folder / "key.pem"))


# ---------------------------------------------------------------------------- SMTP


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    smtp_utf8: bool


class SmtpHandler:
    """Records what arrives; tests script refusals and slow answers."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.rcpt_reply: str | None = None  # e.g. "550 5.1.1 no such user"
        self.data_reply = "250 2.0.0 Ok: queued as CAREFLOW1"
        self.data_delay = 0.0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, envelope.smtp_utf8))
        return self.data_reply


@dataclass
class SmtpServer:
    host: str
    port: int
    security: str
    handler: SmtpHandler
    ca_pem: str

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "security": self.security, "from_address": "service@example.com",
                "from_name": "客服中心", "timeout": 5, "ca_cert": self.ca_pem, **extra}


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode() \
        and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.fixture
def smtp_server(tls: Tls) -> Iterator[Callable[..., SmtpServer]]:
    """``smtp_server(security="none"|"starttls"|"ssl", auth=False)``: an aiosmtpd on 127.0.0.1."""
    controllers: list[Controller] = []

    def start(security: str = "none", auth: bool = False) -> SmtpServer:
        handler = SmtpHandler()
        port = free_port()
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": port, "server_hostname": "mail.example.test",
                                  "enable_SMTPUTF8": True}
        if security == "starttls":
            kwargs.update(tls_context=tls.server_context(), require_starttls=True)
        elif security == "ssl":
            kwargs.update(ssl_context=tls.server_context())
        if auth:
            # Over TLS, AUTH is required; over plain text it is offered but optional, since
            # aiosmtpd (rightly) warns about requiring AUTH without TLS.
            kwargs.update(authenticator=_authenticate, auth_required=security != "none",
                          auth_require_tls=security != "none")
        controller = Controller(handler, **kwargs)
        controller.start()
        controllers.append(controller)
        return SmtpServer("127.0.0.1", port, security, handler, tls.ca_pem)

    yield start
    for controller in controllers:
        controller.stop()


# ---------------------------------------------------------------------------- HTTP stubs


@dataclass
class StubRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any  # email.message.Message: case-insensitive get()
    body: bytes
    sni: str | None = None
    target: str = ""  # the request target as sent, query undecoded

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class StubReply:
    status: int = 200
    body: Any = b""  # bytes, or anything JSON-serialisable
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # wait this long before answering
    drop: bool = False  # read the request, then close the connection without an answer


Responder = Callable[[StubRequest], StubReply]


class StubServer:
    def __init__(self, responder: Responder, tls_context: ssl.SSLContext | None = None):
        self.responder = responder
        self.requests: list[StubRequest] = []
        self.stopping = threading.Event()
        self._sni = threading.local()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                sni = getattr(self.connection, "careflow_sni", None)
                request = StubRequest(self.command, parts.path, parse_qs(parts.query), self.headers, body, sni, self.path)
                stub.requests.append(request)
                reply = stub.responder(request)
                if reply.delay and stub.stopping.wait(reply.delay):
                    return
                if reply.drop:
                    self.close_connection = True
                    return
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode("utf-8")
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if not isinstance(reply.body, bytes):
                        self.send_header("Content-Type", "application/json;charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout, size cap): expected in some tests
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up mid-answer is part of several tests

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls_context is not None:
            def remember_sni(sock: ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext) -> None:
                sock.careflow_sni = name  # type: ignore[attr-defined]

            tls_context.sni_callback = remember_sni
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.url = f"{'https' if tls_context else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def stub_server() -> Iterator[Callable[..., StubServer]]:
    """``stub_server(responder, tls_context=None)``: an HTTP server on 127.0.0.1 in a thread."""
    servers: list[StubServer] = []

    def start(responder: Responder, tls_context: ssl.SSLContext | None = None) -> StubServer:
        server = StubServer(responder, tls_context)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# ---------------------------------------------------------------------------- Prism


def _contracts_dir() -> Path:
    return Path(os.environ.get("CAREFLOW_CONTRACTS_DIR") or REPO.parent / "shared" / "contracts")


def _unavailable(reason: str) -> None:
    if os.environ.get("CAREFLOW_REQUIRE_PRISM") == "1":
        pytest.fail(f"{reason} (CAREFLOW_REQUIRE_PRISM=1)")
    pytest.skip(reason)


class Prism:
    """A running ``prism mock``; its log tells which requests broke the contract."""

    def __init__(self, contract: Path, log_path: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [str(PRISM), "mock", "-h", "127.0.0.1", "-p", str(self.port), str(contract)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
        )
        deadline = time.monotonic() + 120  # the Twilio contract is 1.5 MB: parsing takes a while
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                pytest.fail(f"prism exited with {self.process.returncode}:\n{log_path.read_text(errors='replace')[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"prism did not listen on port {self.port} within 120 s")

    def mark(self) -> int:
        """A position in the log; ``violations(mark)`` reports what came after it."""
        return self.log_path.stat().st_size

    def violations(self, since: int) -> list[str]:
        """Contract violations Prism logged after ``since``, for the requests made since."""
        # A request Prism cannot route is logged in order after everything before it: once its
        # line is in the log, so are the violations of earlier requests.
        token = f"/__careflow_mark_{uuid.uuid4().hex}"
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.base_url + token, timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            exc.close()
        deadline = time.monotonic() + 10
        while True:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                text = f.read().decode("utf-8", errors="replace")
            if token in text or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        lines = text.split(token)[0].splitlines()
        # Prism logs a request violation as "Violation: request…" when the contract has an error
        # answer for it, and as "[VALIDATOR] ✖ error Request…" when it makes up a 422 itself.
        return [line for line in lines if "request" in line.lower()
                and ("Violation:" in line or ("[VALIDATOR]" in line and "✔" not in line and "did not pass" not in line))]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def _prism(contract_name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    contract = _contracts_dir() / contract_name
    if not contract.is_file():
        _unavailable(f"contract {contract} not found (set CAREFLOW_CONTRACTS_DIR)")
    if not PRISM.exists():
        _unavailable("Prism is not installed: run `npm ci` at the repository root")
    prism = Prism(contract, tmp_path_factory.mktemp("prism") / f"{contract.stem}.log")
    yield prism
    prism.stop()


@pytest.fixture(scope="session")
def prism_sendgrid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    yield from _prism("sendgrid-mail-v3.yaml", tmp_path_factory)


@pytest.fixture(scope="session")
def prism_twilio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    yield from _prism("twilio-api-v2010.yaml", tmp_path_factory)
