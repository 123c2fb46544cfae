"""The egress policy: the pure checks (a table of refused and allowed URLs, the allow list, redaction), and
the transport against real local servers on loopback (which the policy refuses unless these tests allow
it explicitly): refusals by literal address, by a name resolving to loopback, and on the address actually
connected to; redirects never followed; bodies capped; oversized headers and malformed answers as
transport errors; SMTP's host; one recipient per email. Nothing here sets `SEGMENTFLOW_EGRESS_ALLOW`."""

from __future__ import annotations

import asyncio
import socket
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmentflow.policies.egress import (
    EgressPolicy,
    address_refusal,
    literal_address,
    parse_allow,
    redact_url,
    url_refusal,
)
from segmentflow.services.delivery import (
    SmtpServer,
    post_webhook,
    recipient_refusal,
    send_email,
    webhook_client,
)
from segmentflow.services.egress import (
    Answer,
    EgressRefusedError,
    checked_addresses,
    connect_socket,
    egress_client,
    post_json,
)
from segmentflow.settings import Settings

DEFAULT = EgressPolicy()
LOOPBACK = parse_allow("127.0.0.0/8,::1")


# ---- the pure policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "category"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://127.0.0.1:5432/", "loopback"),
        ("http://127.9.9.9/", "loopback"),
        ("http://2130706433/", "loopback"),  # decimal
        ("http://0177.0.0.1/", "loopback"),  # octal
        ("http://0x7f.1/", "loopback"),  # hex, two parts
        ("http://127.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped
        ("http://[::ffff:a9fe:a9fe]/", "link-local"),
        ("http://[::127.0.0.1]/", "loopback"),  # IPv4-compatible
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64
        ("http://[2002:7f00:1::]/", "loopback"),  # 6to4
        ("http://10.0.0.1/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fd12:3456::1]/", "private"),
        ("http://[fe80::1]/", "link-local"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://100.127.255.254/", "carrier-grade NAT"),
        ("http://224.0.0.251/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://255.255.255.255/", "broadcast"),
        ("http://192.0.2.7/", "reserved"),  # documentation range: not globally reachable
        ("https://user:pw@127.0.0.1/", "loopback"),
        ("http://127.0.0.1./", "loopback"),
    ],
)
def test_a_url_naming_a_refused_address_is_refused_with_its_category(url: str, category: str) -> None:
    reason = url_refusal(url, DEFAULT)
    assert reason is not None and category in reason and "SEGMENTFLOW_EGRESS_ALLOW" in reason


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x",
        "http://8.8.8.8/",
        "http://[2606:4700:4700::1111]/",
        "http://100.128.0.1/",
    ],
)
def test_public_addresses_and_names_pass_the_url_check(url: str) -> None:
    assert url_refusal(url, DEFAULT) is None


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/", "//x/y"]
)
def test_only_http_and_https_are_sent_to(url: str) -> None:
    assert "only http and https" in (url_refusal(url, DEFAULT) or "")


def test_the_allow_list_opens_exactly_its_networks_and_names() -> None:
    policy = parse_allow(" 127.0.0.0/8 , ::1, Internal.Example., 10.1.2.3")
    assert url_refusal("http://127.0.0.1:9/", policy) is None
    assert url_refusal("http://2130706433/", policy) is None
    assert url_refusal("http://[::1]/", policy) is None
    assert url_refusal("http://10.1.2.3/", policy) is None
    assert url_refusal("http://10.1.2.4/", policy) is not None
    assert url_refusal("http://169.254.169.254/", policy) is not None
    ip = literal_address("169.254.169.254")
    assert ip is not None
    assert (
        address_refusal(ip, policy, host="internal.example") is None
    )  # an allowed name, whatever it resolves to
    assert address_refusal(ip, policy, host="other.example") is not None


@pytest.mark.parametrize("entry", ["not a host", "10.0.0.0/33", "http://x/", "a/b"])
def test_a_bad_allow_entry_is_refused_naming_the_setting(entry: str) -> None:
    with pytest.raises(ValueError, match="SEGMENTFLOW_EGRESS_ALLOW"):
        parse_allow(entry)
    with pytest.raises(ValueError, match="SEGMENTFLOW_EGRESS_ALLOW"):
        Settings(egress_allow=entry)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://bot:s3cret@hooks.example/x", "https://<redacted>@hooks.example/x"),
        ("https://h.example/x?token=s3cret&v=2", "https://h.example/x?token=<redacted>&v=<redacted>"),
        (
            "https://hooks.slack.com/services/T0AAAA1/B0BBBB2/vCvXwrKDeDq9kdXbQbnvMBcd",
            "https://hooks.slack.com/services/T0AAAA1/B0BBBB2/<redacted>",
        ),
        (
            "https://discord.com/api/webhooks/123456789012345678/abcDEF123ghiJKL456",
            "https://discord.com/api/webhooks/123456789012345678/<redacted>",
        ),
        ("https://h.example/orders/order-created-hook", "https://h.example/orders/order-created-hook"),
        ("http://u:p@[::1]:8080/x#sig", "http://<redacted>@[::1]:8080/x#<redacted>"),
    ],
)
def test_secrets_in_urls_are_redacted_and_the_rest_kept(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# ---- local servers -------------------------------------------------------------------------------------


@dataclass
class Canned:
    """A raw HTTP/1.1 server on 127.0.0.1 answering every request with `answer` (bytes, or a function of
    the writer for streamed answers); records each request's head."""

    port: int = 0
    heads: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    answer: bytes | Callable[[asyncio.StreamWriter], Awaitable[None]] = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )


@pytest.fixture
async def canned() -> AsyncIterator[Canned]:
    state = Canned()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                state.heads.append(head)
                length = next(
                    (
                        int(line.split(":", 1)[1])
                        for line in head.split("\r\n")
                        if line.lower().startswith("content-length:")
                    ),
                    0,
                )
                state.bodies.append(await reader.readexactly(length))
                if callable(state.answer):
                    await state.answer(writer)
                    break
                writer.write(state.answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


async def _post(url: str, policy: EgressPolicy = DEFAULT, **kwargs: object) -> object:
    async with webhook_client(policy=policy, timeout=5.0) as client:
        return await post_webhook(client, url=url, payload={"a": 1}, idempotency_key="k", backoff=0, **kwargs)  # type: ignore[arg-type]


async def test_a_webhook_to_a_loopback_address_is_refused_for_good_and_never_connected(
    canned: Canned,
) -> None:
    for url in (
        f"http://127.0.0.1:{canned.port}/hook",
        f"http://2130706433:{canned.port}/hook",
        f"http://[::ffff:127.0.0.1]:{canned.port}/hook",
        f"http://[::1]:{canned.port}/hook",
    ):
        delivery = await _post(url)
        assert (delivery.outcome, delivery.status_code) == ("failed", None), url  # type: ignore[attr-defined]
        assert "loopback" in delivery.response  # type: ignore[attr-defined]
    assert canned.heads == []
    allowed = await _post(f"http://127.0.0.1:{canned.port}/hook", LOOPBACK)
    assert allowed.outcome == "sent" and len(canned.heads) == 1  # type: ignore[attr-defined]


async def test_a_webhook_to_the_metadata_address_is_refused() -> None:
    delivery = await _post("http://169.254.169.254/latest/meta-data/")
    assert delivery.outcome == "failed" and "169.254.169.254 is link-local" in delivery.response  # type: ignore[attr-defined]


async def test_an_octal_ipv4_url_is_refused_for_good() -> None:
    delivery = await _post("http://0177.0.0.1/hook")  # httpx refuses it as a URL; it is never sent
    assert delivery.outcome == "failed"  # type: ignore[attr-defined]


async def test_a_hostname_resolving_to_loopback_is_refused_on_the_address(canned: Canned) -> None:
    delivery = await _post(f"http://localhost:{canned.port}/hook")
    assert delivery.outcome == "failed" and "localhost resolves to" in delivery.response  # type: ignore[attr-defined]
    assert "loopback" in delivery.response and canned.heads == []  # type: ignore[attr-defined]


async def test_the_transport_connects_to_the_address_it_checked_keeping_the_host_header(
    canned: Canned,
) -> None:
    """A stand-in resolver: `svc.example` resolves to a refused address first and to loopback (allowed
    here) second. The transport resolves once per connection, skips the refused address, and connects to
    the checked one; the request still names `svc.example`."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["169.254.169.254", "127.0.0.1"]

    async with egress_client(policy=LOOPBACK, resolve=resolve, timeout=5.0) as client:
        answer = await client.post(f"http://svc.example:{canned.port}/x", json={})
    assert answer.status_code == 200 and calls == ["svc.example"]
    assert f"host: svc.example:{canned.port}" in canned.heads[0].lower()


async def test_a_name_resolving_only_to_refused_addresses_is_refused_whatever_it_resolves_to_next(
    canned: Canned,
) -> None:
    """DNS rebinding: the first answer is public, every later one loopback. The check is made on the
    address connected to, so no later answer can slip through."""
    answers = [["93.184.215.14"]]

    async def resolve(host: str, port: int) -> list[str]:
        return answers.pop(0) if answers else ["127.0.0.1"]

    assert await checked_addresses("rebind.example", 80, policy=DEFAULT, resolve=resolve) == ["93.184.215.14"]
    async with egress_client(policy=DEFAULT, resolve=resolve, timeout=5.0) as client:
        with pytest.raises(EgressRefusedError, match=r"rebind\.example resolves to 127\.0\.0\.1"):
            await client.post(f"http://rebind.example:{canned.port}/x", json={})
    assert canned.heads == []


async def test_an_allowed_host_name_passes_whatever_it_resolves_to(canned: Canned) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async with egress_client(policy=parse_allow("relay.internal"), resolve=resolve, timeout=5.0) as client:
        assert (await client.post(f"http://relay.internal:{canned.port}/x", json={})).status_code == 200


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_fails_the_send_for_good_naming_it(canned: Canned, status: int) -> None:
    canned.answer = (
        f"HTTP/1.1 {status} Moved\r\nLocation: http://169.254.169.254/?sig=s3cret\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    delivery = await _post(f"http://127.0.0.1:{canned.port}/hook", LOOPBACK)
    assert (delivery.outcome, delivery.status_code) == ("failed", status)  # type: ignore[attr-defined]
    assert "redirect to http://169.254.169.254/?sig=<redacted> not followed" in delivery.response  # type: ignore[attr-defined]
    assert len(canned.heads) == 1  # neither followed nor retried


def _big(length: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length + b"x" * length


async def test_a_response_body_over_the_cap_is_cut_and_marked_truncated(canned: Canned) -> None:
    canned.answer = _big(5_000_000)
    async with egress_client(policy=LOOPBACK, max_body=65536, timeout=5.0) as client:
        response = await client.post(f"http://127.0.0.1:{canned.port}/x", json={})
        assert len(response.content) == 65536 and response.extensions["segmentflow.truncated"] is True
        canned.answer = _big(100)
        small = await client.post(f"http://127.0.0.1:{canned.port}/x", json={})
        assert len(small.content) == 100 and small.extensions["segmentflow.truncated"] is False


async def test_a_chunked_or_unframed_body_over_the_cap_is_cut_too(canned: Canned) -> None:
    async def chunked(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(200):
            writer.write(b"%x\r\n%s\r\n" % (10_000, b"y" * 10_000))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    canned.answer = chunked
    delivery = await _post(f"http://127.0.0.1:{canned.port}/hook", LOOPBACK)
    assert (delivery.outcome, delivery.status_code) == ("failed", 404)  # type: ignore[attr-defined]
    assert delivery.response.endswith("[truncated]")  # type: ignore[attr-defined]

    async def unframed(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n")
        for _ in range(100):
            writer.write(b"z" * 10_000)
            await writer.drain()

    canned.answer = unframed
    async with egress_client(policy=LOOPBACK, max_body=4096, timeout=5.0) as client:
        response = await client.post(f"http://127.0.0.1:{canned.port}/x", json={})
    assert len(response.content) == 4096 and response.extensions["segmentflow.truncated"]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["oversized-header", "bad-status-line", "negative-length", "bad-chunk"],
)
async def test_oversized_headers_and_malformed_answers_are_transport_errors(
    canned: Canned, answer: bytes
) -> None:
    canned.answer = answer
    async with egress_client(policy=LOOPBACK, timeout=5.0) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"http://127.0.0.1:{canned.port}/x", json={})
    delivery = await _post(f"http://127.0.0.1:{canned.port}/x", LOOPBACK, attempts=1)
    assert delivery.outcome == "retry"  # type: ignore[attr-defined]


# ---- SMTP ------------------------------------------------------------------------------------------------


async def test_smtp_host_gets_the_same_check_on_the_address_connected_to() -> None:
    with pytest.raises(EgressRefusedError, match="loopback"):
        await connect_socket("localhost", 25, policy=DEFAULT, timeout=5.0)
    for host in ("127.0.0.1", "localhost", "169.254.169.254"):
        smtp = SmtpServer(host=host, port=2525, policy=DEFAULT)
        delivery = await send_email(smtp, to="ana@example.org", subject="s", body="b", idempotency_key="k")
        assert (delivery.outcome, delivery.status_code) == ("failed", None)
        assert f"SMTP host {host}: egress refused" in (delivery.response or "")


def test_a_literally_refused_smtp_host_stops_the_worker_naming_the_setting() -> None:
    from segmentflow.activities import SequenceActivities

    from segmentflow.db.engine import make_engine

    engine = make_engine("sqlite://")
    with pytest.raises(ValueError, match="SEGMENTFLOW_SMTP_HOST: egress refused"):
        SequenceActivities(engine, Settings(smtp_host="169.254.169.254", egress_allow=""))
    SequenceActivities(engine, Settings(smtp_host="127.0.0.1", egress_allow="127.0.0.1"))
    engine.dispose()


def test_a_literally_refused_responder_url_stops_the_worker_naming_the_setting() -> None:
    from segmentflow.activities import MessageActivities

    from segmentflow.db.engine import make_engine

    engine = make_engine("sqlite://")
    with pytest.raises(ValueError, match="SEGMENTFLOW_OPENAI_BASE_URL: egress refused"):
        MessageActivities(engine, Settings(openai_base_url="http://169.254.169.254/v1", egress_allow=""))
    engine.dispose()


@pytest.mark.parametrize(
    "to",
    [
        "me@x.example, v1@y.example, v2@z.example",
        "me@x.example;v1@y.example",
        "Me <me@x.example>",
        "me@x.example\r\nBcc: v1@y.example",
        "me@x.example\n",
        "",
        "   ",
        "not-an-address",
        "me@localhost",
    ],
)
async def test_anything_but_exactly_one_recipient_fails_the_send_for_good(to: str) -> None:
    assert recipient_refusal(to) is not None
    server = socket.socket()
    server.bind(("127.0.0.1", 0))  # nothing listens: a send that got as far as connecting would be a retry
    port = server.getsockname()[1]
    server.close()
    smtp = SmtpServer(host="127.0.0.1", port=port, policy=LOOPBACK)
    delivery = await send_email(smtp, to=to, subject="s", body="b", idempotency_key="k")
    assert (delivery.outcome, delivery.status_code) == ("failed", None)


async def test_a_subject_with_a_line_break_fails_the_send_for_good() -> None:
    smtp = SmtpServer(host="127.0.0.1", port=9, policy=LOOPBACK)
    delivery = await send_email(
        smtp, to="a@x.example", subject="hi\r\nBcc: b@y.example", body="b", idempotency_key="k"
    )
    assert (delivery.outcome, delivery.response) == ("failed", "the subject contains CR or LF")


def test_one_plain_address_is_accepted() -> None:
    assert recipient_refusal("ana.maria+vip@mail.example.org") is None


async def test_a_compressed_answer_is_decompressed_only_up_to_the_cap(canned: Canned) -> None:
    import gzip

    bomb = gzip.compress(b"0" * 10_000_000)  # ~10 KB on the wire, 10 MB decoded
    canned.answer = (
        b"HTTP/1.1 400 Bad Request\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb
    )
    async with egress_client(policy=LOOPBACK, max_body=65536, timeout=5.0) as client:
        answer = await post_json(client, f"http://127.0.0.1:{canned.port}/x", {}, max_body=65536)
    assert (answer.status_code, len(answer.body), answer.truncated) == (400, 65536, True)
    assert answer.body == b"0" * 65536
    assert "accept-encoding: identity" in canned.heads[0].lower()


async def test_a_no_content_answer_without_length_does_not_wait_for_a_body(canned: Canned) -> None:
    canned.answer = b"HTTP/1.1 204 No Content\r\n\r\n"
    delivery = await _post(f"http://127.0.0.1:{canned.port}/x", LOOPBACK)
    assert delivery.outcome == "sent"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("certified", "ok"), [("svc.example", True), ("other.example", False)])
async def test_https_to_a_checked_address_verifies_the_url_host_name_and_sends_it_as_sni(
    certified: str, ok: bool
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(certified).configure_cert(server_context)
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, context: names.append(name)  # type: ignore[assignment,func-returns-value]
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    try:
        async with egress_client(policy=LOOPBACK, resolve=resolve, tls=client_context, timeout=5.0) as client:
            if ok:
                answer = await client.post(f"https://svc.example:{port}/x", json={})
                assert answer.status_code == 200
                assert f"host: svc.example:{port}" in heads[0].decode().lower()
            else:
                with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                    await client.post(f"https://svc.example:{port}/x", json={})
    finally:
        server.close()
        await server.wait_closed()
    assert names[:1] == ["svc.example"]


_SECRET = st.text(alphabet=string.ascii_letters + string.digits, min_size=8, max_size=30).map(
    lambda s: f"S{s}9"
)


@given(user=_SECRET, password=_SECRET, value=_SECRET, name=st.sampled_from(["token", "sig", "key", "x"]))
def test_redaction_never_shows_userinfo_or_a_query_value(
    user: str, password: str, value: str, name: str
) -> None:
    shown = redact_url(f"https://{user}:{password}@hooks.example/in?{name}={value}&other=1")
    assert user not in shown and password not in shown and value not in shown
    assert shown.startswith("https://<redacted>@hooks.example/in?") and f"{name}=<redacted>" in shown


@given(st.text(max_size=200))
def test_the_url_check_and_redaction_never_raise_on_arbitrary_text(text: str) -> None:
    url_refusal(text, DEFAULT)
    url_refusal(f"http://{text}/", DEFAULT)
    redact_url(text)
    redact_url(f"https://{text}")


# ---- the direct path: the same request bytes and answers as httpx's --------------------------------------


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


_ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Thing: a\r\nX-Thing: b\r\n\r\nok",
    b"HTTP/1.1 503 Busy\r\nContent-Type: text/plain; charset=latin-1\r\nContent-Length: 3\r\n\r\n\xe9t\xe9",
    b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1/elsewhere\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + b"x" * 300,
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_gzip(b"y" * 5000)), _gzip(b"y" * 5000)),
    b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\nContent-Length: 0\r\n\r\n",
]


@pytest.mark.parametrize("answer", _ANSWERS)
@pytest.mark.parametrize(
    ("path", "payload", "headers"),
    [
        ("/hook", {"contactKey": "u1", "step": 0, "body": "Hi \u00e9 \u2603"}, {"Idempotency-Key": "sf-1"}),
        ("/a b/%7e?q=1 2&r=\u00e9", [1, 2.5, None, True], {"Authorization": "Bearer t", "Accept": "x/y"}),
        ("/h", {}, {"X-Name": "caf\u00e9"}),  # not plain ASCII: httpx's path
        ("/h", {}, {"Content-Type": "text/plain"}),  # framing: httpx's path
    ],
)
async def test_the_direct_path_sends_what_httpx_sends_and_reads_the_same_answer(
    canned: Canned, answer: bytes, path: str, payload: object, headers: dict[str, str]
) -> None:
    canned.answer = answer
    url = f"http://127.0.0.1:{canned.port}{path}"
    seen = []
    for direct in (True, False):
        async with egress_client(policy=LOOPBACK, max_body=100, timeout=5.0) as client:
            if not direct:
                client.direct = None  # the same transport, reached through httpx's client
            for _ in range(2):  # a second request on the kept connection, after any cookie was set
                try:
                    got: object = await post_json(client, url, payload, headers=headers, max_body=100)  # type: ignore[arg-type]
                except UnicodeEncodeError as exc:  # httpx's path refuses it the same way each time
                    got = type(exc)
                else:
                    assert isinstance(got, Answer)
                    got = (got.status_code, got.headers.multi_items(), got.body, got.truncated, got.text)
                seen.append(got)
    assert seen[:2] == seen[2:]
    assert canned.heads[:2] == canned.heads[2:] and canned.bodies[:2] == canned.bodies[2:]
    assert all("cookie" not in head.lower().replace("set-cookie", "") for head in canned.heads)


async def test_the_direct_path_refuses_other_schemes_and_credentials_go_through_httpx(canned: Canned) -> None:
    async with egress_client(policy=LOOPBACK, timeout=5.0) as client:
        with pytest.raises(EgressRefusedError, match="only http and https"):
            await post_json(client, "ftp://127.0.0.1/x", {})
        answer = await post_json(client, f"http://user:pw@127.0.0.1:{canned.port}/x", {})
        refused = await post_webhook(
            client, url="http://127.0.0.1:9/x", payload={}, idempotency_key="k", attempts=1
        )
    assert answer.status_code == 200
    assert "authorization: basic dxnlcjpwdw==" in canned.heads[0].lower()
    assert refused.outcome == "retry" and "ConnectError" in (refused.response or "")
    async with egress_client(policy=DEFAULT, timeout=5.0) as client:
        refusal = await post_webhook(
            client, url=f"http://127.0.0.1:{canned.port}/x", payload={}, idempotency_key="k"
        )
    assert refusal.outcome == "failed" and "loopback" in (refusal.response or "")
