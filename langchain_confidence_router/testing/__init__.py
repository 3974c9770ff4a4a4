"""Test support that users can reuse: a local OpenAI-compatible server with controllable logprobs."""

from .fake_openai import FakeOpenAIServer, ModelBehaviour, StreamRecord

__all__ = ["FakeOpenAIServer", "ModelBehaviour", "StreamRecord"]
