"""Placeholder: filled in by its own change."""

from __future__ import annotations

from keel.evals.registry import EvaluatorRegistry


def register(registry: EvaluatorRegistry) -> None:
    """Register this module's evaluator types."""
