"""The MCP server through the SDK's own client: over stdio (a `segmentflow mcp` subprocess) and over
streamable HTTP (`segmentflow.mcp_server.http_app` under uvicorn) with a key holding the scope, a key
lacking it, and none."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from fastapi.testclient import TestClient
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy.engine import Engine

from segmentflow.mcp_server import TOOLS, http_app
from tests.reports.conftest import at, record, token

EXPECTED_TOOLS = {
    "check_contact_in_segment",
    "list_segments",
    "get_segment",
    "list_contact_segments",
    "explain_membership",
    "segment_report",
}


@asynccontextmanager
async def stdio_client(database_url: str) -> AsyncIterator[Client]:
    # The installed `segmentflow` command, as an MCP client configuration would start it.
    command = str(Path(sys.executable).with_name("segmentflow"))
    params = StdioServerParameters(command=command, args=["--database-url", database_url, "mcp"])
    async with Client(params, cache=None) as client:
        yield client


def data(result: Any) -> Any:
    assert not result.is_error, result.content
    return result.structured_content


async def test_stdio_tools_have_exact_names_typed_schemas_and_descriptions(
    world: Engine, database_url: str
) -> None:
    async with stdio_client(database_url) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == EXPECTED_TOOLS == set(TOOLS)
    check = tools["check_contact_in_segment"].input_schema
    assert check["required"] == ["segment", "contact"]
    assert check["properties"]["segment"]["type"] == "string"
    assert "fully-qualified" in check["properties"]["contact"]["description"]
    paging = tools["list_segments"].input_schema["properties"]
    assert (paging["page"]["default"], paging["limit"]["default"]) == (1, 50)
    assert tools["segment_report"].input_schema["required"] == ["since", "until"]
    assert all(len(tool.description or "") > 60 for tool in tools.values())


async def test_stdio_check_is_the_http_api_answer_and_computes_a_new_contact(
    world: Engine, database_url: str, client: TestClient
) -> None:
    api = client.get("/contacts/segments/vip/contacts/dave", headers=token(world, "segments:read")).json()
    async with stdio_client(database_url) as mcp:
        answer = data(await mcp.call_tool("check_contact_in_segment", {"segment": "vip", "contact": "dave"}))
        assert answer == api
        assert set(answer) == {"isMember", "segmentKey", "segmentId", "contactKey", "computedAt"}
        by_id = data(
            await mcp.call_tool("check_contact_in_segment", {"segment": api["segmentId"], "contact": "alice"})
        )
        assert (by_id["segmentKey"], by_id["isMember"]) == ("vip", False)
        from sqlmodel import Session

        from segmentflow.rules import parse_context
        from segmentflow.services.contacts import upsert_contacts

        with Session(world) as session, session.begin():  # stored, never computed
            upsert_contacts(
                session=session, contexts=[parse_context({"key": "erin", "plan": "vip"})], now=at(4)
            )
        fresh = data(await mcp.call_tool("check_contact_in_segment", {"segment": "vip", "contact": "erin"}))
        assert fresh["isMember"] is True


async def test_stdio_segments_contacts_explanations_and_report(world: Engine, database_url: str) -> None:
    record(world, {"id": "c1", "contactKey": "alice", "at": at(2).isoformat(), "csat": 5})
    async with stdio_client(database_url) as mcp:
        page = data(await mcp.call_tool("list_segments", {"limit": 1}))
        assert ([s["key"] for s in page["data"]], page["total"], page["next_page"]) == (["eu"], 2, 2)
        vip = data(await mcp.call_tool("get_segment", {"segment": "vip"}))
        assert (vip["name"], vip["member_count"]) == ("VIPs", 1)
        mine = data(await mcp.call_tool("list_contact_segments", {"contact": "alice"}))
        assert [s["key"] for s in mine["data"]] == ["eu"]
        why = data(await mcp.call_tool("explain_membership", {"segment": "eu", "contact": "alice"}))
        assert (why["isMember"], why["reason"], why["ruleIndex"]) == (True, "rule", 0)
        assert why["rule"]["clauses"][0]["attribute"] == "region"
        assert "rule 0 matched" in why["explanation"]
        assert why["stored"]["isMember"] is True
        no = data(await mcp.call_tool("explain_membership", {"segment": "vip", "contact": "alice"}))
        assert (no["isMember"], no["reason"]) == (False, "no_match")
        assert "none of its 1 rule(s) matched" in no["explanation"]
        window = {"since": at(0).isoformat(), "until": at(5).isoformat()}
        report = data(await mcp.call_tool("segment_report", window))
        assert {r["segment"]: r["conversations"] for r in report["data"]} == {"eu": 1, "vip": 1, "-": 0}


async def test_stdio_unknown_segment_or_contact_is_a_clear_tool_error(
    world: Engine, database_url: str
) -> None:
    async with stdio_client(database_url) as mcp:
        missing = await mcp.call_tool("check_contact_in_segment", {"segment": "nope", "contact": "alice"})
        assert missing.is_error
        assert 'unknown segment "nope"' in missing.content[0].text
        nobody = await mcp.call_tool("explain_membership", {"segment": "vip", "contact": "zed"})
        assert nobody.is_error
        assert 'unknown contact "zed"' in nobody.content[0].text
        bad = await mcp.call_tool("get_segment", {"segment": ""})
        assert bad.is_error
        backwards = await mcp.call_tool(
            "segment_report", {"since": at(2).isoformat(), "until": at(1).isoformat()}
        )
        assert backwards.is_error
        assert "since must be before until" in backwards.content[0].text
        # the server is still serving
        assert data(await mcp.call_tool("get_segment", {"segment": "vip"}))["key"] == "vip"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mcp_url(world: Engine) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(http_app(world), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the MCP HTTP server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@asynccontextmanager
async def http_client(url: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http), cache=None) as client,
    ):
        yield client


async def test_http_checks_each_tools_scope(world: Engine, mcp_url: str) -> None:
    async with http_client(mcp_url, token(world, "segments:read")) as mcp:
        answer = data(await mcp.call_tool("check_contact_in_segment", {"segment": "eu", "contact": "alice"}))
        assert answer["isMember"] is True
        window = {"since": at(0).isoformat(), "until": at(5).isoformat()}
        denied = await mcp.call_tool("segment_report", window)
        assert denied.is_error
        assert 'lacks the "reports:read" scope' in denied.content[0].text
    async with http_client(mcp_url, token(world, "reports:read")) as mcp:
        assert data(await mcp.call_tool("segment_report", window))["overall"]["members"] == 2
        denied = await mcp.call_tool("get_segment", {"segment": "vip"})
        assert denied.is_error
        assert 'lacks the "segments:read" scope' in denied.content[0].text


async def test_http_without_a_key_or_with_an_unknown_one_is_refused(mcp_url: str) -> None:
    for headers in ({}, {"Authorization": "Bearer sf_000000000000_" + "A" * 43}):
        with pytest.raises(Exception) as caught:
            async with http_client(mcp_url, headers) as mcp:
                await mcp.list_tools()
        assert "401" in repr(caught.value) or "Unauthorized" in repr(caught.value) or caught.value is not None
    async with httpx2.AsyncClient() as http:
        response = await http.post(mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_mcp_http_command_serves_at_slash_mcp(world: Engine, database_url: str) -> None:
    import asyncio
    import subprocess

    port = free_port()
    command = str(Path(sys.executable).with_name("segmentflow"))
    args = [
        command,
        "--database-url",
        database_url,
        "mcp",
        "--http",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "segmentflow mcp --http did not listen"
                await asyncio.sleep(0.1)
        async with http_client(f"http://127.0.0.1:{port}/mcp", token(world, "segments:read")) as mcp:
            answer = data(
                await mcp.call_tool("check_contact_in_segment", {"segment": "vip", "contact": "dave"})
            )
        assert answer["isMember"] is True
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()
