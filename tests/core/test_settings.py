"""Settings: strict parsing, one error naming every bad variable, secrets kept out of repr."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.settings import Settings

BASE = {"UPSTASH_REDIS_REST_URL": "https://db.upstash.io", "UPSTASH_REDIS_REST_TOKEN": "tok"}


def test_defaults_follow_the_design() -> None:
    s = Settings.from_env(BASE)
    assert (s.rate_limit_max, s.rate_limit_window_s, s.max_body_bytes) == (10, 60, 16384)
    assert (s.job_max_attempts, s.drain_batch_size, s.drain_backoff_factor) == (5, 100, 1.5)
    assert (s.drain_poll_interval_ms, s.drain_poll_max_interval_ms) == (500, 5000)
    assert s.drain_idle_exit_ms is None


def test_one_error_names_every_bad_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "UPSTASH_REDIS_REST_URL": "ftp://x",
                "RATE_LIMIT_MAX": "ten",
                "JOB_MAX_ATTEMPTS": "0",
                "DRAIN_BACKOFF_FACTOR": "0.5",
                "AUTH_TRUST_AUTHORIZER": "maybe",
                "REBALANCE_PROCESSOR": "nocolon",
            }
        )
    assert set(caught.value.problems) == {
        "UPSTASH_REDIS_REST_URL",
        "UPSTASH_REDIS_REST_TOKEN",
        "RATE_LIMIT_MAX",
        "JOB_MAX_ATTEMPTS",
        "DRAIN_BACKOFF_FACTOR",
        "AUTH_TRUST_AUTHORIZER",
        "REBALANCE_PROCESSOR",
    }
    assert "RATE_LIMIT_MAX: expected an integer" in str(caught.value)


def test_values_are_parsed_and_trimmed() -> None:
    s = Settings.from_env(
        {
            **BASE,
            "DRAIN_IDLE_EXIT_MS": " 250 ",
            "AUTH_TRUST_AUTHORIZER": "yes",
            "SIM_FAILURE_RATE": "0.25",
            "REDIS_URL": "redis://localhost:6379",
        }
    )
    assert (s.drain_idle_exit_ms, s.auth_trust_authorizer, s.sim_failure_rate) == (250, True, 0.25)


def test_secrets_never_show_in_repr() -> None:
    s = Settings.from_env(
        {
            **BASE,
            "UPSTASH_REDIS_REST_TOKEN": "very-secret-token",
            "AUTH_JWT_SECRET": "jwt-secret-value-long-enough-for-hs256",
            "REDIS_URL": "redis://:hunter2@host:6379",
        }
    )
    text = repr(s)
    for secret in ("very-secret-token", "jwt-secret-value-long-enough-for-hs256", "hunter2"):
        assert secret not in text


def test_require_names_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="AUTH_JWT_SECRET"):
        Settings.from_env(BASE).require("auth_jwt_secret")


@pytest.mark.parametrize("secret", ["x", "a" * 31, "é" * 15])
def test_short_hs256_secrets_are_refused_with_the_settings_error(secret: str) -> None:
    """Under 32 bytes (of UTF-8, not characters) is a ConfigError naming AUTH_JWT_SECRET."""
    with pytest.raises(ConfigError, match="AUTH_JWT_SECRET: must be at least 32 bytes"):
        Settings.from_env({**BASE, "AUTH_JWT_SECRET": secret})
    assert Settings.from_env({**BASE, "AUTH_JWT_SECRET": "é" * 16}).auth_jwt_secret


def test_security_settings_have_their_defaults_and_bounds() -> None:
    """Token lifetime, JWKS cache, operator scope and read limits: defaults, positive, named."""
    s = Settings.from_env(BASE)
    assert (s.auth_max_token_ttl_s, s.auth_jwks_cache_s, s.metrics_read_scope) == (
        86_400,
        300,
        "metrics:read",
    )
    assert (s.read_rate_limit_max, s.read_rate_limit_window_s) == (120, 60)
    bad = {
        "AUTH_MAX_TOKEN_TTL_S": "0",
        "AUTH_JWKS_CACHE_S": "-1",
        "READ_RATE_LIMIT_MAX": "0",
        "READ_RATE_LIMIT_WINDOW_S": "x",
        "METRICS_READ_SCOPE": " ",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, **bad})
    assert set(caught.value.problems) == set(bad)


def test_log_level_is_case_insensitive_and_checked() -> None:
    base = {"UPSTASH_REDIS_REST_URL": "https://x.upstash.io", "UPSTASH_REDIS_REST_TOKEN": "t"}
    assert Settings.from_env({**base, "LOG_LEVEL": "debug"}).log_level == "DEBUG"
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        Settings.from_env({**base, "LOG_LEVEL": "chatty"})
