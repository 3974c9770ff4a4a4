"""A LangChain-aware fake server for tests, examples and benchmarks of the adapter (offline, no API key).

:class:`ScriptedOpenAIServer` is the package's ``FakeOpenAIServer`` with request-aware answers, which
LangChain's standard tests and agents need and a fixed per-model answer cannot give:

* a user turn with tools bound (``tool_choice`` not ``none``) gets a tool call: the named tool, else a
  tool the prompt mentions, else the first; arguments are filled from the tool's JSON schema with
  values taken from the prompt (integers in order, a quoted string, else a word);
* a turn after a tool result gets text (so an agent loop ends);
* ``response_format`` json_schema gets a JSON instance of the schema as the content; json_object gets
  an object with the keys the prompt quotes;
* a judge's question about a "proposed answer" (``self_verify``) gets "Yes", or "No" when the
  conversation's question is tagged ``[hard]``;
* sampling (``temperature`` > 0) on a ``[hard]`` prompt gets a different number each time, so the
  samples of a ``consistency`` tier disagree.

Logprobs, ``[hard]`` and ``[fault=...]`` behave exactly as in ``FakeOpenAIServer``, which it wraps
through the behaviour lookup (a per-request override in a context variable), so the protocol code
under test is the package's own.
"""

from __future__ import annotations

import contextvars
import dataclasses
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..testing import FakeOpenAIServer, ModelBehaviour

_OVERRIDE: contextvars.ContextVar[Callable[[ModelBehaviour], ModelBehaviour] | None] = contextvars.ContextVar(
    "scripted_override", default=None
)


class _Behaviours(dict):  # type: ignore[type-arg]
    """The server's model table; ``get`` applies the current request's override."""

    def get(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        behaviour = super().get(key, default)
        override = _OVERRIDE.get()
        return override(behaviour) if behaviour is not None and override is not None else behaviour


@dataclasses.dataclass
class ScriptedOpenAIServer(FakeOpenAIServer):
    """``FakeOpenAIServer`` whose answers follow tools, tool results and response formats."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.models = _Behaviours(self.models)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # aiohttp caches the body: the base handler reads it again
        token = _OVERRIDE.set(script(body))
        try:
            return await super()._chat(request)
        finally:
            _OVERRIDE.reset(token)

    async def _stream(self, request: web.Request, body: dict[str, Any], model: str, text: str,
                      entries: list[dict[str, Any]] | None, tool: dict[str, Any] | None, fault: str | None
                      ) -> web.StreamResponse:
        if tool is not None:  # a tool-call answer has no content (the base server streams both)
            text, entries = "", ([] if entries is not None else None)
        return await super()._stream(request, body, model, text, entries, tool, fault)


_SAMPLES = itertools.count()


def script(body: dict[str, Any]) -> Callable[[ModelBehaviour], ModelBehaviour] | None:
    """How this request should be answered, as a change to the model's behaviour (None: unchanged)."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    prompt = _text(last.get("content"))
    earlier = " ".join(_text(m.get("content")) for m in messages[:-1] if m.get("role") == "user")
    if last.get("role") == "user" and "proposed answer" in prompt and earlier:
        verdict = "No" if "[hard]" in earlier else "Yes"
        return lambda b: dataclasses.replace(b, answer=verdict)
    if (body.get("temperature") or 0) > 0 and "[hard]" in prompt:
        answer = f"the answer is {40 + next(_SAMPLES) % 5}."
        return lambda b: dataclasses.replace(b, answer=answer)
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if tools and last.get("role") == "user" and choice != "none":
        tool = _pick_tool(tools, choice, prompt)
        call = {"name": tool["name"], "arguments": _instance(tool.get("parameters") or {}, prompt, {})}
        return lambda b: dataclasses.replace(b, tool_call=call)
    if tools:  # after a tool result: answer in text
        return lambda b: dataclasses.replace(b, tool_call=None)
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        answer = json.dumps(_instance(spec.get("schema") or {}, prompt, spec.get("schema") or {}))
        return lambda b: dataclasses.replace(b, answer=answer)
    if fmt.get("type") == "json_object":  # JSON mode: the keys the prompt quotes
        keys = [a or b for a, b in re.findall(r"'([^']+)'|\"([^\"]+)\"", prompt)] or ["answer"]
        answer = json.dumps({key: f"a {key}" for key in keys})
        return lambda b: dataclasses.replace(b, answer=answer)
    return None


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _pick_tool(tools: list[dict[str, Any]], choice: Any, prompt: str) -> dict[str, Any]:
    functions = [t.get("function", t) for t in tools]
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name") or choice.get("name")
        return next((f for f in functions if f.get("name") == wanted), functions[0])
    return next((f for f in functions if f.get("name", "\0") in prompt), functions[0])


def _instance(schema: dict[str, Any], prompt: str, root: dict[str, Any]) -> Any:
    """A JSON value of ``schema``, with numbers and strings taken from ``prompt`` where possible."""
    ints = iter(int(n) for n in re.findall(r"(?<![\w.])-?\d+(?!\w|\.\d)", prompt))
    quoted = re.findall(r"'([^']+)'|\"([^\"]+)\"", prompt)
    strings = iter([a or b for a, b in quoted])
    return _value(schema, root or schema, ints, strings, "value")


def _value(schema: dict[str, Any], root: dict[str, Any], ints: Any, strings: Any, name: str) -> Any:
    if "$ref" in schema:
        path = schema["$ref"].lstrip("#/").split("/")
        target: Any = root
        for part in path:
            target = target.get(part, {})
        return _value(target, root, ints, strings, name)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _value(options[0], root, ints, strings, name)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: _value(sub, root, ints, strings, key) for key, sub in props.items()}
    if kind == "array":
        return [_value(schema.get("items") or {}, root, ints, strings, name)]
    if kind == "integer":
        return next(ints, 1)
    if kind == "number":
        return float(next(ints, 1))
    if kind == "boolean":
        return True
    if "enum" in schema:
        return schema["enum"][0]
    return next(strings, f"a {name}")


__all__ = ["ScriptedOpenAIServer", "script"]
