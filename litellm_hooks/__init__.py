"""LiteLLM adapter: a ``confidence/<name>`` custom provider that runs the shared cascade engine."""
