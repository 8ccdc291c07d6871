"""Generates the example flows with lfx's own components (no LLM needed).

Run with the lfx venv that `xtask/python/venv.sh lfx lfx==1.13.0` installs:
    ~/.cache/cmp/py/lfx-1.13.0/bin/python examples/flows/generate.py

The Offerings pin each file by its sha256: regenerating changes the hashes,
so update them (and the tests read them from the files) after a change.
"""

import json
import pathlib

from lfx.components.input_output import ChatInput, ChatOutput
from lfx.components.models_and_agents.prompt import PromptComponent
from lfx.graph import Graph

HERE = pathlib.Path(__file__).parent


def write(name: str, graph: Graph, description: str) -> None:
    flow = graph.dump(name=name, description=description)
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


if __name__ == "__main__":
    echo()
    greeting()
