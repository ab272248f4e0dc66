"""The process-wide caches of settings, the Redis client and the log's secrets, reset between
tests."""

from __future__ import annotations


def reset_caches() -> None:
    """Forget the cached settings and client (the client is closed first, not left to GC), and
    the secrets the log read from the environment."""
    from core.log import refresh_secrets
    from core.redis import reset_client
    from core.settings import get_settings

    reset_client()
    get_settings.cache_clear()
    refresh_secrets()
