"""OpenAI clients whose every request carries the current span's `traceparent`.

The header is added by a request event hook of the client's HTTP client, so it
is the span current where the request is sent (the calling thread or task). The
`openai` package is imported only when one of these is called: the rest of the
SDK works without it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from keel.sdk.client import get_client
from keel.sdk.propagation import trace_headers

if TYPE_CHECKING:
    import openai


def _add_traceparent(request: Any) -> None:
    try:
        headers = trace_headers()
        if headers and "traceparent" not in request.headers:
            request.headers.update(headers)
    except Exception as exc:  # a client we do not know: never fail the request
        get_client().log.internal_error("adding traceparent to a request", exc)


async def _add_traceparent_async(request: Any) -> None:
    _add_traceparent(request)


def _with_hook(http_client: Any, hook: Any) -> None:
    hooks = dict(http_client.event_hooks)
    hooks["request"] = [*hooks.get("request", []), hook]
    http_client.event_hooks = hooks


def _gateway_defaults(kwargs: dict[str, Any]) -> None:
    """Point at the Keel gateway unless told otherwise (arguments or OPENAI_* variables)."""
    config = get_client().config
    if kwargs.get("base_url") is None and not os.environ.get("OPENAI_BASE_URL"):
        kwargs["base_url"] = f"{config.host}/v1"
    if kwargs.get("api_key") is None and not os.environ.get("OPENAI_API_KEY") and config.api_key:
        kwargs["api_key"] = config.api_key


def openai_client(**kwargs: Any) -> openai.OpenAI:
    """`openai.OpenAI(**kwargs)` sending the current span's `traceparent` with every request.

    Without `base_url` (argument or OPENAI_BASE_URL) it talks to the Keel gateway at
    `{host}/v1`; without `api_key` (argument or OPENAI_API_KEY) it uses the Keel API
    key. An `http_client` you pass is kept, with the header hook added to it.
    """
    import openai

    _gateway_defaults(kwargs)
    if kwargs.get("http_client") is None:
        kwargs["http_client"] = openai.DefaultHttpxClient(
            event_hooks={"request": [_add_traceparent]}
        )
    else:
        _with_hook(kwargs["http_client"], _add_traceparent)
    return openai.OpenAI(**kwargs)


def async_openai_client(**kwargs: Any) -> openai.AsyncOpenAI:
    """`openai.AsyncOpenAI(**kwargs)` sending the current span's `traceparent` (see above)."""
    import openai

    _gateway_defaults(kwargs)
    if kwargs.get("http_client") is None:
        kwargs["http_client"] = openai.DefaultAsyncHttpxClient(
            event_hooks={"request": [_add_traceparent_async]}
        )
    else:
        _with_hook(kwargs["http_client"], _add_traceparent_async)
    return openai.AsyncOpenAI(**kwargs)
