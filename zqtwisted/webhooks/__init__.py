"""Outgoing webhooks: payloads, response handling, the SSRF guard, the HTTP client, reply sinks.

The consumer is :mod:`zqtwisted.consumers.outgoing_webhooks`; everything it
needs lives here, in small modules: :mod:`.payload` and :mod:`.response` are
pure, :mod:`.guard` and :mod:`.client` do the HTTP, :mod:`.replies` decides
where the bot's answers go.
"""

from zqtwisted.webhooks.settings import OutgoingWebhookSettings

__all__ = ["OutgoingWebhookSettings"]
