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
from lfx.components.models_and_agents.memory import MemoryComponent
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


def tool_flow(name: str, suffix: str, binding: str, tool: str, argument: str, info: str, description: str) -> None:
    """A flow that calls one tool of a connector binding through CMP with the chat input as `argument`.

    The MCP Tools component presents the run's token (the request global
    CMP_RUN_TOKEN the gateway passes) to the connector gateway; no LLM: the
    tool is chosen in the flow. The tool's text answer goes through a Parser
    to the chat output.
    """
    chat_in = ChatInput(_id=f"ChatInput-{suffix}")
    tools = MCPToolsComponent(_id=f"MCPTools-{suffix}")
    # A tool's arguments are fields the UI adds once it has listed the server's tools; add the one this flow wires.
    field = MessageTextInput(name=argument, display_name=argument, info=info, tool_mode=True)
    tools._inputs[argument] = field
    tools.inputs = [*tools.inputs, field]
    server = {
        "name": binding,
        "config": {
            "url": f"{CONNECTOR_GATEWAY}/v1/connectors/{binding}/mcp",
            "headers": {"Authorization": "Bearer {{CMP_RUN_TOKEN}}"},
        },
    }
    tools.set(mcp_server=server, tool=tool, **{argument: chat_in.message_response})
    parser = ParserComponent(_id=f"Parser-{suffix}")
    parser.set(input_data=tools.build_output, pattern="{text}")
    chat_out = ChatOutput(_id=f"ChatOutput-{suffix}")
    chat_out.set(input_value=parser.parse_combined_text)

    def chosen_tool(flow: dict) -> None:
        # lfx skips hidden fields; the UI shows the tool field once a server is chosen.
        for node in flow["data"]["nodes"]:
            template_field = node["data"]["node"]["template"].get("tool")
            if template_field is not None:
                template_field.update(show=True, options=[tool])

    write(name, Graph(chat_in, chat_out), description, chosen_tool)


def ticket_desk() -> None:
    """Opens a ticket titled with the chat input in the tenant's ticket desk: the tool `create_ticket` of the
    Instance's binding `tickets`, to which the gateway adds the tenant's own credential."""
    tool_flow("ticket-desk", "desk", "tickets", "create_ticket", "title", "The ticket's title",
              "Opens a ticket in the tenant's desk through CMP")


def knowledge_desk() -> None:
    """Answers the chat input with the best passages of the Instance's knowledge base: `search_knowledge` of the
    built-in binding `knowledge`, whose collection the run's token decides. The flow names no collection and holds
    no store credential; its answer is the passages, so it can be asserted."""
    tool_flow("knowledge-desk", "know", "knowledge", "search_knowledge", "query", "What to look for",
              "Answers from the Instance's knowledge base, through CMP")


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


def recall() -> None:
    """Answers the chat input with the conversation so far: the Message History component reads the messages
    its runtime stored for the run's session id (full Langflow keeps them; lfx keeps none). CMP derives that
    session id from the Instance and the caller's session, so the answer shows which conversation a run joined."""
    chat_in = ChatInput(_id="ChatInput-recall")
    history = MemoryComponent(_id="Memory-recall")
    history.set(n_messages=20, template="{sender}: {text}")
    prompt = PromptComponent(_id="Prompt-recall")
    prompt.set(template="{question} | so far: {history}", question=chat_in.message_response,
               history=history.retrieve_messages_as_text)
    chat_out = ChatOutput(_id="ChatOutput-recall")
    chat_out.set(input_value=prompt.build_prompt)
    write("recall", Graph(chat_in, chat_out), "Answers with the conversation so far (needs full Langflow)")


if __name__ == "__main__":
    echo()
    greeting()
    ticket_desk()
    knowledge_desk()
    tone()
    recall()
