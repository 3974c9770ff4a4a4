"""The LangChain adapter: :class:`ConfidenceRouter` (a chat model) and :class:`TraceCollector`.

See docs/langchain.md. Importing this package imports LangChain; the package root imports it lazily.
"""

from ._messages import TRACE_KEY
from .callbacks import ATTEMPT_EVENT, TRACE_EVENT, TraceCollector
from .router import META, NOSTREAM_TAG, ConfidenceRouter

__all__ = ["ATTEMPT_EVENT", "META", "NOSTREAM_TAG", "TRACE_EVENT", "TRACE_KEY", "ConfidenceRouter", "TraceCollector"]
