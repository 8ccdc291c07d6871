"""An independent MCP client for the connector gateway's tests: the official
MCP Python SDK's Client (PyPI `mcp`) over Streamable HTTP.

    python client.py URL TOKEN MODE STEPS_JSON

MODE is "auto" (server/discover, falling back to initialize) or "legacy"
(the initialize handshake and a session). STEPS_JSON is a list of steps:
["list"], ["call", NAME, ARGS], ["version"]. Prints one JSON line per step:
{"tools": [...]} or {"text": ..., "is_error": ...} or {"version": the
negotiated protocol revision} or {"error": ...}.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main() -> None:
    try:
        await asyncio.wait_for(run(), timeout=60)
    except TimeoutError:
        print(json.dumps({"error": "timed out after 60 s"}), flush=True)


async def run() -> None:
    url, token, mode, steps = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            for step in steps:
                try:
                    if step[0] == "version":
                        print(json.dumps({"version": client.protocol_version}), flush=True)
                    elif step[0] == "list":
                        tools = await client.list_tools()
                        print(json.dumps({"tools": sorted(t.name for t in tools.tools)}), flush=True)
                    else:
                        result = await client.call_tool(step[1], step[2])
                        text = " ".join(getattr(c, "text", "") for c in result.content)
                        print(json.dumps({"text": text, "is_error": bool(result.is_error)}), flush=True)
                except Exception as error:  # each step's failure is reported, and the next step runs
                    print(json.dumps({"error": str(error)}), flush=True)
    except Exception as error:
        print(json.dumps({"error": f"connecting: {error!r}"}), flush=True)


asyncio.run(main())
