"""A real MCP server for the connector gateway's tests: the official MCP
Python SDK's MCPServer (PyPI `mcp`), serving a ticket desk over Streamable
HTTP on loopback.

It checks the credential it receives: every HTTP request must carry, in the
header named by TICKETS_HEADER, one of the values of TICKETS_CREDENTIALS (a
JSON object: presented value -> tenant); anything else gets 401. Each tool
answers with the tenant its credential belongs to, so a test can see whose
credential reached it.

    python tickets_server.py PORT
"""

import json
import os
import sys

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from starlette.responses import JSONResponse

CREDENTIALS = json.loads(os.environ["TICKETS_CREDENTIALS"])
HEADER = os.environ.get("TICKETS_HEADER", "authorization").lower()

desk = MCPServer("tickets")


def tenant(ctx: Context) -> str:
    presented = (ctx.headers or {}).get(HEADER)
    if presented not in CREDENTIALS:
        raise PermissionError("the credential was not presented")
    return CREDENTIALS[presented]


@desk.tool()
def create_ticket(title: str, ctx: Context) -> str:
    """Open a support ticket."""
    return f"{tenant(ctx)}: opened ticket {title!r}"


@desk.tool()
def get_ticket(ticket_id: str, ctx: Context) -> str:
    """Read a support ticket."""
    return f"{tenant(ctx)}: ticket {ticket_id} is open"


@desk.tool()
def delete_everything(ctx: Context) -> str:
    """Delete every ticket (no Offering should allow this)."""
    return f"{tenant(ctx)}: deleted everything"


@desk.tool()
async def slow_report(seconds: float, ctx: Context) -> str:
    """A report that takes a while."""
    who = tenant(ctx)
    await anyio.sleep(seconds)
    return f"{who}: report after {seconds} s"


@desk.tool()
def failing_lookup(ctx: Context) -> str:
    """A lookup that always fails."""
    tenant(ctx)
    raise RuntimeError("the ticket database is down")


def main() -> None:
    port = int(sys.argv[1])
    app = desk.streamable_http_app()

    async def checked(scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            if headers.get(HEADER) not in CREDENTIALS:
                await JSONResponse({"error": "credential refused"}, status_code=401)(scope, receive, send)
                return
        await app(scope, receive, send)

    uvicorn.run(checked, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
