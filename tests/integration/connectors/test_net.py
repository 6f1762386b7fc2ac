"""connectors.net: the SSRF refusal matrix, address pinning, no redirects, bounded answers.

Refusals are checked with an injected resolver, so no test depends on DNS and none connects
to anything but servers on 127.0.0.1 (and those only where allow_private says so).
"""

from __future__ import annotations

import time

import pytest
import urllib3

from connectors.base import ConnectorError, TransientConnectorError
from connectors.net import (
    AmbiguousSendError, UnsafeURLError, check_url, raise_for_status, retry_after, safe_post,
)
from tests.integration.connectors.conftest import StubReply, free_port

PUBLIC = "93.184.216.34"


def resolver(table: dict[str, list[str]]):
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if host not in table:
            raise OSError("no such host")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


REFUSED_URLS = [
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/hook",
    "http://localhost/",
    "http://api.localhost/",
    "http://0.0.0.0/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud metadata
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[fd00::1]/",
    "http://[fc00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[2002:c0a8:101::]/",  # 6to4 of 192.168.1.1
    "http://[ff02::1]/",
    "http://224.0.0.1/",
    "http://2130706433/",  # decimal 127.0.0.1
    "http://017700000001/",  # octal
    "http://0x7f000001/",  # hex
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://127.0.0.1./",
    "http://user@127.0.0.1/",
    "http://user:pass@example.com/",
    "file:///etc/passwd",
    "gopher://example.com/",
    "ftp://example.com/",
    "dict://example.com:11211/",
    "http://example.com:22/",
    "http://example.com:6379/",
    "http://internal.example.com/",  # resolves to 10.0.0.1
    "http://metadata.example.com/",  # resolves to 169.254.169.254
    "http://mixed.example.com/",  # one public and one private address
    "http://v6internal.example.com/",  # resolves to fd00::1
    "http://mapped.example.com/",  # resolves to ::ffff:10.0.0.1
    "http://nowhere.example.com/",  # does not resolve
    "http://exa mple.com/",
    "http://example.com\\@127.0.0.1/",
    "",
]
DNS = {
    "example.com": [PUBLIC],
    "hooks.example.com": [PUBLIC],
    "internal.example.com": ["10.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
    "mixed.example.com": [PUBLIC, "10.0.0.1"],
    "v6internal.example.com": ["fd00::1"],
    "mapped.example.com": ["::ffff:10.0.0.1"],
}


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_refused_at_save_time(url):
    with pytest.raises(UnsafeURLError) as caught:
        check_url(url, resolve=resolver(DNS))
    assert str(caught.value).startswith("URL refused")
    assert "10.0.0.1" not in str(caught.value) and "169.254" not in str(caught.value)  # no resolver oracle


@pytest.mark.parametrize("url", [u for u in REFUSED_URLS if u])
def test_refused_at_send_time_without_any_request(url, stub_server):
    canary = stub_server(lambda request: StubReply(200))
    dns = {**DNS, "internal.example.com": ["127.0.0.1"]}
    with pytest.raises(ConnectorError):
        safe_post(url.replace(":8080", f":{canary.port}"), json={"x": 1}, resolve=resolver(dns), timeout=2)
    assert canary.requests == []


@pytest.mark.parametrize("url, pinned", [
    ("https://example.com/hook", PUBLIC),
    ("https://hooks.example.com:8443/hook?x=1", PUBLIC),
    (f"http://{PUBLIC}/", PUBLIC),
    ("https://[2606:4700:4700::1111]/", "2606:4700:4700::1111"),
    ("https://例子.中国/", PUBLIC),
])
def test_public_targets_pass_and_are_pinned(url, pinned):
    dns = {**DNS, "xn--fsqu00a.xn--fiqs8s": [PUBLIC]}
    target = check_url(url, resolve=resolver(dns))
    assert target.ip == pinned


def test_fragment_tricks_keep_the_real_host():
    target = check_url("http://example.com#@127.0.0.1/", resolve=resolver(DNS))
    assert target.host == "example.com" and target.ip == PUBLIC
    assert "#" not in target.url


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000/", "http://10.0.0.5/hook", "http://[::1]:9000/", "http://intranet.corp/"])
def test_allow_private_lets_the_company_network_through(url):
    target = check_url(url, allow_private=True, resolve=resolver({"intranet.corp": ["192.168.10.20"]}))
    assert target.ip


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://100.100.100.200/",
    "http://2130706433/", "http://[::ffff:127.0.0.1]/", "http://224.0.0.1/", "http://0.0.0.0/",
])
def test_allow_private_still_refuses_metadata_and_tricks(url):
    with pytest.raises(UnsafeURLError):
        check_url(url, allow_private=True, resolve=resolver(DNS))


def test_dns_is_asked_once_and_the_connection_goes_to_that_address(monkeypatch):
    """DNS rebinding: a second answer pointing inside never matters, the first one is used."""
    answers = iter([[PUBLIC], ["127.0.0.1"]])
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    dialled: list[tuple[str, int]] = []

    def refuse_everything(address, *args, **kwargs):  # record the dial, connect nowhere
        dialled.append(address)
        raise ConnectionRefusedError("test: not connecting")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", refuse_everything)
    with pytest.raises(TransientConnectorError) as caught:
        safe_post("https://rebind.example.com/hook", json={"x": 1}, resolve=rebinding, timeout=2)
    assert not isinstance(caught.value, AmbiguousSendError)  # nothing reached any server
    assert calls == ["rebind.example.com"]
    assert dialled == [(PUBLIC, 443)]


def test_pinned_connection_keeps_host_header(stub_server):
    stub = stub_server(lambda request: StubReply(200, {"ok": True}))
    dns = resolver({"hooks.internal.test": ["127.0.0.1"]})
    response = safe_post(f"http://hooks.internal.test:{stub.port}/in", json={"a": "中文"}, resolve=dns, allow_private=True)
    assert response.status == 200 and response.json() == {"ok": True}
    [request] = stub.requests
    assert request.headers["Host"] == f"hooks.internal.test:{stub.port}"
    assert request.json() == {"a": "中文"}
    assert dns.calls == ["hooks.internal.test"]  # type: ignore[attr-defined]


def test_pinned_https_keeps_sni_and_checks_the_certificate_name(stub_server, tls):
    stub = stub_server(lambda request: StubReply(200, {"ok": True}), tls_context=tls.server_context())
    dns = resolver({"hooks.example.test": ["127.0.0.1"], "wrong.example.test": ["127.0.0.1"]})
    response = safe_post(f"https://hooks.example.test:{stub.port}/in", json={}, resolve=dns, allow_private=True,
                         ca_certs=tls.ca_path)
    assert response.status == 200
    assert stub.requests[0].sni == "hooks.example.test"
    # A name the certificate does not cover fails, although the same IP answers.
    with pytest.raises(TransientConnectorError):
        safe_post(f"https://wrong.example.test:{stub.port}/in", json={}, resolve=dns, allow_private=True,
                  ca_certs=tls.ca_path)
    assert len(stub.requests) == 1


def test_redirects_are_not_followed(stub_server):
    target = stub_server(lambda request: StubReply(200))
    redirecting = stub_server(lambda request: StubReply(302, b"", {"Location": f"{target.url}/internal"}))
    response = safe_post(redirecting.url + "/hook", json={}, allow_private=True)
    assert response.status == 302
    with pytest.raises(ConnectorError) as caught:
        raise_for_status(response, "the receiver")
    assert not caught.value.retryable and "redirect" in str(caught.value)
    assert target.requests == []


def test_answer_is_read_only_up_to_the_cap(stub_server):
    big = b"x" * 3_000_000
    stub = stub_server(lambda request: StubReply(200, big, {"Content-Type": "text/plain"}))
    response = safe_post(stub.url, json={}, allow_private=True, max_response_bytes=10_000)
    assert response.status == 200
    assert len(response.body) == 10_000 and response.truncated
    with pytest.raises(ValueError):
        response.json()


def test_timeout_after_sending_is_ambiguous_and_bounded(stub_server):
    stub = stub_server(lambda request: StubReply(200, delay=5))
    started = time.monotonic()
    with pytest.raises(AmbiguousSendError):
        safe_post(stub.url, json={}, allow_private=True, timeout=1)
    assert time.monotonic() - started < 3
    assert len(stub.requests) == 1


def test_dropped_connection_after_the_request_is_ambiguous(stub_server):
    stub = stub_server(lambda request: StubReply(drop=True))
    with pytest.raises(AmbiguousSendError):
        safe_post(stub.url, json={}, allow_private=True, timeout=2)
    assert len(stub.requests) == 1


def test_connection_refused_is_plainly_transient():
    with pytest.raises(TransientConnectorError) as caught:
        safe_post(f"http://127.0.0.1:{free_port()}/", json={}, allow_private=True, timeout=2)
    assert not isinstance(caught.value, AmbiguousSendError)


def test_unresolvable_host_is_transient_at_send_time():
    with pytest.raises(TransientConnectorError):
        safe_post("https://nowhere.example.com/", json={}, resolve=resolver({}))


@pytest.mark.parametrize("status, retryable", [(200, None), (204, None), (400, False), (404, False), (408, True),
                                               (429, True), (500, True), (503, True), (301, False)])
def test_status_classes(status, retryable):
    from connectors.net import HttpResponse

    response = HttpResponse(status, {"Retry-After": "7"}, b"")
    if retryable is None:
        raise_for_status(response, "x")
        return
    with pytest.raises(ConnectorError) as caught:
        raise_for_status(response, "x")
    assert caught.value.retryable is retryable
    if status == 429:
        assert caught.value.retry_after == 7


def test_retry_after_accepts_seconds_and_dates():
    assert retry_after({"retry-after": "120"}) == 120
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0  # in the past
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({}) is None
