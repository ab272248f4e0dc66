"""The process-wide caches of settings and the Redis client, reset between tests."""

from __future__ import annotations


def reset_caches() -> None:
    """Forget the cached settings and client; the client is closed first, not left to GC."""
    from core.redis import reset_client
    from core.settings import get_settings

    reset_client()
    get_settings.cache_clear()
