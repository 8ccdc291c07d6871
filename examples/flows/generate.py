"""Generates the example flows with lfx's own components (no LLM needed).

Run with the lfx venv that `xtask/python/venv.sh lfx lfx==1.13.0` installs:
    ~/.cache/cmp/py/lfx-1.13.0/bin/python examples/flows/generate.py

The Offerings pin each file by its sha256: regenerating changes the hashes
(the order of a flow's edges follows Python's string hashing; run with
PYTHONHASHSEED=0 to get the same order twice), so update them (the tests read
them from the files) after a change.
"""

import json
import pathlib

from lfx.components.input_output import ChatInput, ChatOutput
from lfx.components.models_and_agents.mcp_component import MCPToolsComponent
from lfx.components.models_and_agents.prompt import PromptComponent
from lfx.components.processing.parser import ParserComponent
from lfx.graph import Graph
from lfx.io import MessageTextInput

HERE = pathlib.Path(__file__).parent


# Where the ticket desk flow calls its tools: the connector gateway that
# `cargo xtask up` runs. In a cluster it is the gateway's Service, for example
# http://cmp-gateway.cmp-system.svc; the tests substitute their own gateway.
CONNECTOR_GATEWAY = "http://127.0.0.1:8000"


def write(name: str, graph: Graph, description: str, edit=None) -> None:
    flow = graph.dump(name=name, description=description)
    if edit:
        edit(flow)
    with open(HERE / f"{name}.json", "w") as f:
        json.dump(flow, f, indent=1, sort_keys=True)


def echo() -> None:
    chat_in = ChatInput(_id="ChatInput-echo")
    chat_out = ChatOutput(_id="ChatOutput-echo")
    chat_out.set(input_value=chat_in.message_response)
    write("echo", Graph(chat_in, chat_out), "Echoes the chat input")


def greeting() -> None:
    chat_in = ChatInput(_id="ChatInput-greet")
    prompt = PromptComponent(_id="Prompt-greet")
    prompt.set(template="Hello, {name}! Welcome aboard.", name=chat_in.message_response)
    chat_out = ChatOutput(_id="ChatOutput-greet")
    chat_out.set(input_value=prompt.build_prompt)
    write("greeting", Graph(chat_in, chat_out), "Fills a prompt template with the chat input")


def ticket_desk() -> None:
    """Opens a ticket titled with the chat input in the tenant's ticket desk.

    The MCP Tools component calls the tool `create_ticket` of the Instance's
    connector binding `tickets` through the connector gateway, presenting the
    run's token (the request global CMP_RUN_TOKEN the gateway passes); the
    gateway adds the tenant's own credential. No LLM: the tool is chosen in
    the flow and its argument `title` is wired from the chat input.
    """
    chat_in = ChatInput(_id="ChatInput-desk")
    tools = MCPToolsComponent(_id="MCPTools-desk")
    # A tool's arguments are fields the UI adds once it has listed the server's tools; add the one this flow wires.
    title = MessageTextInput(name="title", display_name="title", info="The ticket's title", tool_mode=True)
    tools._inputs["title"] = title
    tools.inputs = [*tools.inputs, title]
    server = {
        "name": "tickets",
        "config": {
            "url": f"{CONNECTOR_GATEWAY}/v1/connectors/tickets/mcp",
            "headers": {"Authorization": "Bearer {{CMP_RUN_TOKEN}}"},
        },
    }
    tools.set(mcp_server=server, tool="create_ticket", title=chat_in.message_response)
    parser = ParserComponent(_id="Parser-desk")
    parser.set(input_data=tools.build_output, pattern="{text}")
    chat_out = ChatOutput(_id="ChatOutput-desk")
    chat_out.set(input_value=parser.parse_combined_text)

    def chosen_tool(flow: dict) -> None:
        # lfx skips hidden fields; the UI shows the tool field once a server is chosen.
        for node in flow["data"]["nodes"]:
            field = node["data"]["node"]["template"].get("tool")
            if field is not None:
                field.update(show=True, options=["create_ticket"])

    write("ticket-desk", Graph(chat_in, chat_out), "Opens a ticket in the tenant's desk through CMP", chosen_tool)


def knowledge_desk() -> None:
    """Answers the chat input with the best passages of the Instance's knowledge base.

    The MCP Tools component calls `search_knowledge` of the built-in binding
    `knowledge` through the connector gateway, presenting the run's token:
    the token decides the Instance and so the collection searched. The flow
    names no collection, holds no store credential and needs no LLM: its
    answer is the passages, so it can be asserted.
    """
    chat_in = ChatInput(_id="ChatInput-know")
    tools = MCPToolsComponent(_id="MCPTools-know")
    query = MessageTextInput(name="query", display_name="query", info="What to look for", tool_mode=True)
    tools._inputs["query"] = query
    tools.inputs = [*tools.inputs, query]
    server = {
        "name": "knowledge",
        "config": {
            "url": f"{CONNECTOR_GATEWAY}/v1/connectors/knowledge/mcp",
            "headers": {"Authorization": "Bearer {{CMP_RUN_TOKEN}}"},
        },
    }
    tools.set(mcp_server=server, tool="search_knowledge", query=chat_in.message_response)
    parser = ParserComponent(_id="Parser-know")
    parser.set(input_data=tools.build_output, pattern="{text}")
    chat_out = ChatOutput(_id="ChatOutput-know")
    chat_out.set(input_value=parser.parse_combined_text)

    def chosen_tool(flow: dict) -> None:
        for node in flow["data"]["nodes"]:
            field = node["data"]["node"]["template"].get("tool")
            if field is not None:
                field.update(show=True, options=["search_knowledge"])

    write("knowledge-desk", Graph(chat_in, chat_out), "Answers from the Instance's knowledge base, through CMP", chosen_tool)


def tone() -> None:
    """Greets the chat input with the caller's chosen greeting.

    The prompt's `greeting` field loads the request global GREETING (lfx
    resolves load_from_db fields from a run's globals): an Offering declares
    a caller input that CMP places there, and nothing else of the flow can be
    reached by a caller.
    """
    chat_in = ChatInput(_id="ChatInput-tone")
    prompt = PromptComponent(_id="Prompt-tone")
    prompt.set(template="{greeting}, {name}!", name=chat_in.message_response, greeting="Hello")
    chat_out = ChatOutput(_id="ChatOutput-tone")
    chat_out.set(input_value=prompt.build_prompt)

    def from_global(flow: dict) -> None:
        for node in flow["data"]["nodes"]:
            field = node["data"]["node"]["template"].get("greeting")
            if field is not None:
                field.update(load_from_db=True, value="GREETING")

    write("tone", Graph(chat_in, chat_out), "Greets the chat input with the greeting the caller chose", from_global)


if __name__ == "__main__":
    echo()
    greeting()
    ticket_desk()
    knowledge_desk()
    tone()
