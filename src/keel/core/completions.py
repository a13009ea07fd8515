"""A finished chat completion as evaluation sees it, read from an OpenAI response body.

Eval tasks and judges call models through the gateway, over HTTP from the CLI or in process
for online evaluation; both read the answer the same way here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keel.core.errors import UpstreamError
from keel.core.pricing import PriceTable, cost_usd
from keel.core.usage import Usage, usage_from_openai


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    """A finished chat completion as evaluation sees it.

    `text` is the first choice's content ("" when it had none); `logprobs` the first
    choice's `logprobs.content` list when the request asked for logprobs; `cost_usd` None
    when the model has no known price; `trace_id` the trace the gateway recorded it in.
    """

    text: str
    model: str
    latency_ms: float
    usage: Usage | None = None
    cost_usd: float | None = None
    logprobs: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    trace_id: str | None = None
    response: dict[str, Any] | None = None
    cached: bool = False  # served from the eval response cache, not the gateway


def answer_from_completion(
    doc: Any,
    *,
    latency_ms: float,
    trace_id: str | None,
    prices: PriceTable | None,
    price_names: Sequence[str] = (),
) -> ModelAnswer:
    """The answer in an OpenAI chat completion; UpstreamError "malformed" without choices.

    Cost is priced by the response's model, else by `price_names` (the alias called), and
    is None when none of them has a price (or no price table is given).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list) or not doc["choices"]:
        raise UpstreamError("malformed", "the gateway's answer has no choices")
    choice = doc["choices"][0]
    message = choice.get("message") if isinstance(choice, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    lp_content = logprobs.get("content") if isinstance(logprobs, dict) else None
    model = str(doc.get("model") or "")
    usage = usage_from_openai(doc.get("usage"))
    cost = None
    if usage is not None and prices is not None:
        price = prices.snapshot(model, *price_names)
        cost = cost_usd(usage, price) if price is not None else None
    return ModelAnswer(
        text=content if isinstance(content, str) else "",
        model=model,
        latency_ms=latency_ms,
        usage=usage,
        cost_usd=cost,
        logprobs=lp_content if isinstance(lp_content, list) else None,
        finish_reason=choice.get("finish_reason") if isinstance(choice, dict) else None,
        trace_id=trace_id,
        response=doc,
    )
