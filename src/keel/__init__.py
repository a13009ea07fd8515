"""Keel: a self-hosted LLMOps platform (gateway, tracing, prompts, evaluation)."""

__version__ = "0.1.0"
