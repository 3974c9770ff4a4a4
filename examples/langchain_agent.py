"""ConfidenceRouter as the model of a LangChain agent (``langchain.agents.create_agent``).

Each model turn of the agent is one cascade: tool-call turns are accepted from the small model
(they carry no content logprobs; configuration ``tool_calls: accept``), and the final answer
escalates when the small model is unsure. Streaming with ``stream_mode="messages"`` shows only the
tokens of the answer that is kept: tiers that may be rejected run untagged for streaming (``nostream``).

Run it as is (a local scripted server: it calls the tool on a user turn and answers after the tool
result; ``[hard]`` makes the small model unsure), or point it at an OpenAI-compatible server with
tool-calling models ``small`` and ``large``::

    python examples/langchain_agent.py
    python examples/langchain_agent.py http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import sys
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from langchain_confidence_router.langchain import ConfidenceRouter


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is 21 degrees and sunny in {city}."


def run(base_url: str, api_key: str = "test") -> dict[str, Any]:
    router = ConfidenceRouter(
        models={name: ChatOpenAI(model=name, base_url=base_url, api_key=api_key) for name in ("small", "large")},
    )
    agent = create_agent(router, tools=[get_weather], system_prompt="Use the tools to answer.")
    result = agent.invoke({"messages": [HumanMessage("What is the weather in 'Lisbon'? [hard]")]})
    turns = [m.response_metadata["confidence_router"] for m in result["messages"]
             if "confidence_router" in m.response_metadata]
    streamed = "".join(
        chunk.text for chunk, _meta in agent.stream({"messages": [HumanMessage("And in 'Porto'? [hard]")]},
                                                    stream_mode="messages")
        if isinstance(chunk, AIMessageChunk)
    )
    return {
        "answer": result["messages"][-1].text,
        "tool_result": result["messages"][2].text,
        "turns": [[(a["model"], a["decision"]) for a in t["attempts"]] for t in turns],
        "streamed": streamed,
    }


def main(base_url: str | None = None) -> dict[str, Any]:
    """Run the example against ``base_url``, or against a local scripted fake server started here."""
    if base_url is not None:
        result = run(base_url)
    else:
        from langchain_confidence_router.langchain.testing import ScriptedOpenAIServer
        from langchain_confidence_router.testing import ModelBehaviour

        behaviours = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour()}
        with ScriptedOpenAIServer(behaviours) as server:
            result = run(server.base_url)
    print(f"tool said: {result['tool_result']!r}")
    for i, turn in enumerate(result["turns"], 1):
        print(f"model turn {i}: {turn}")
    print(f"answer: {result['answer']!r}")
    print(f"streamed (second question): {result['streamed']!r}")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
