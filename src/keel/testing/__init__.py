"""Fakes shipped with Keel for tests and benchmarks: a fake OpenAI + Anthropic upstream."""

from keel.testing.behavior import Behavior, Fault, ToolCall
from keel.testing.fake_upstream import FakeOptions, FakeUpstream, RecordedRequest

__all__ = ["Behavior", "FakeOptions", "FakeUpstream", "Fault", "RecordedRequest", "ToolCall"]
