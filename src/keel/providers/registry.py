"""The one table from provider name (as written in keel.yaml) to the class that speaks it.

Nothing else in Keel branches on a provider name. A plug-in adds a dialect
with `register_provider("name", factory)`.
"""

from __future__ import annotations

from collections.abc import Callable

from keel.core.deployments import Deployment
from keel.ports import Provider
from keel.providers.anthropic import AnthropicProvider
from keel.providers.openai import OpenAIProvider
from keel.providers.transport import HttpTransport

ProviderFactory = Callable[[Deployment, HttpTransport], Provider]

_PROVIDERS: dict[str, ProviderFactory] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
}


def register_provider(name: str, factory: ProviderFactory) -> None:
    """Make `provider: name` in keel.yaml build deployments with `factory`."""
    _PROVIDERS[name] = factory


def provider_names() -> list[str]:
    """Every provider name keel.yaml accepts."""
    return sorted(_PROVIDERS)


def create_provider(deployment: Deployment, transport: HttpTransport) -> Provider:
    """The provider object serving `deployment`."""
    try:
        factory = _PROVIDERS[deployment.provider]
    except KeyError:
        raise ValueError(
            f"unknown provider {deployment.provider!r}; known: {', '.join(provider_names())}"
        ) from None
    return factory(deployment, transport)
