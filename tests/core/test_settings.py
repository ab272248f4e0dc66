"""Settings: strict parsing, one error naming every bad variable, secrets kept out of repr."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from core import log, parameters
from core.errors import ConfigError
from core.settings import Settings
from tests.support.aws import offline_aws

BASE = {"UPSTASH_REDIS_REST_URL": "https://db.upstash.io", "UPSTASH_REDIS_REST_TOKEN": "tok"}


def test_defaults_follow_the_design() -> None:
    s = Settings.from_env(BASE)
    assert (s.rate_limit_max, s.rate_limit_window_s, s.max_body_bytes) == (10, 60, 16384)
    assert (s.job_max_attempts, s.drain_batch_size, s.drain_backoff_factor) == (5, 300, 1.5)
    assert (s.drain_poll_interval_ms, s.drain_poll_max_interval_ms) == (500, 5000)
    assert s.drain_idle_exit_ms is None


def test_the_option_classes_take_their_defaults_and_values_from_settings() -> None:
    """Each default is stated once, in `Settings`: the queue, drain and elastic options
    built bare equal those built from default settings, and follow non-default ones."""
    from dataclasses import fields

    from core.drain import DrainOptions
    from core.elastic import ElasticOptions
    from core.queue import QueuePolicy

    defaults = Settings()
    tuned = Settings.from_env(
        {
            **BASE,
            "JOB_LEASE_SECONDS": "7",
            "SERIALIZE_BY": "user",
            "DRAIN_BATCH_SIZE": "11",
            "DRAIN_IDLE_EXIT_MS": "0",
            "DRAIN_MAX_PARALLEL": "3",
        }
    )
    for cls in (QueuePolicy, DrainOptions, ElasticOptions):
        assert cls() == cls.from_settings(defaults)
        mirrored = [f.metadata["setting"] for f in fields(cls) if "setting" in f.metadata]
        assert mirrored and all(hasattr(defaults, name) for name in mirrored)
    assert QueuePolicy.from_settings(tuned).lease_ms == 7000
    assert QueuePolicy.from_settings(tuned).serialize_field == "user_id"
    assert DrainOptions.from_settings(tuned).batch_size == 11
    assert DrainOptions.from_settings(tuned).idle_exit_ms == 0
    assert ElasticOptions.from_settings(tuned).max_parallel == 3


def test_replace_holds_a_copy_to_the_rules_of_the_environment() -> None:
    s = Settings.from_env(BASE)
    assert s.replace(drain_batch_size=7).drain_batch_size == 7
    assert s.replace(log_level="debug").log_level == "DEBUG"
    with pytest.raises(ConfigError) as caught:
        s.replace(drain_idle_exit_ms=-1, retry_max_delay_ms=1)
    assert set(caught.value.problems) == {"DRAIN_IDLE_EXIT_MS", "RETRY_MAX_DELAY_MS"}
    assert s.drain_batch_size == 300  # the original is untouched


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


# --- secrets as SSM parameter names (core.parameters), resolved against moto ---

NAMED = {
    "UPSTASH_REDIS_REST_URL_SSM_PARAMETER": "/agent-rebalance/prod/upstash-url",
    "UPSTASH_REDIS_REST_TOKEN_SSM_PARAMETER": "/agent-rebalance/prod/upstash-token",
    "AUTH_JWT_SECRET_SSM_PARAMETER": "/agent-rebalance/prod/auth-jwt-secret",
}


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An in-process moto SSM with dummy credentials; nothing leaves the process."""
    offline_aws(monkeypatch)
    with mock_aws():
        yield boto3.client("ssm")


def _put(ssm: Any, name: str, value: str) -> None:
    ssm.put_parameter(Name=name, Value=value, Type="SecureString")


def test_parameter_names_resolve_to_decrypted_values_in_one_call(ssm: Any) -> None:
    """Each `X_SSM_PARAMETER` becomes X's value, read decrypted from SSM."""
    _put(ssm, NAMED["UPSTASH_REDIS_REST_URL_SSM_PARAMETER"], "https://eu1-x.upstash.io")
    _put(ssm, NAMED["UPSTASH_REDIS_REST_TOKEN_SSM_PARAMETER"], "AXrt-real-token-0123")
    _put(
        ssm, NAMED["AUTH_JWT_SECRET_SSM_PARAMETER"], "jwt-signing-secret-4567-long-enough-for-hs256"
    )
    s = Settings.from_env(NAMED)
    assert s.upstash_redis_rest_url == "https://eu1-x.upstash.io"
    assert (s.upstash_redis_rest_token, s.auth_jwt_secret) == (
        "AXrt-real-token-0123",
        "jwt-signing-secret-4567-long-enough-for-hs256",
    )
    assert "jwt-signing-secret-4567-long-enough-for-hs256" not in log.redact(
        "key jwt-signing-secret-4567-long-enough-for-hs256"
    )


def test_a_plain_value_wins_and_no_name_means_no_call() -> None:
    """Dev and `sls invoke local`: plain variables are used as they are, SSM is never asked."""

    def refuse(names: Any) -> parameters.Fetched:
        raise AssertionError(f"SSM asked for {names}")

    s = Settings.from_env(
        {**BASE, **NAMED, "AUTH_JWT_SECRET": "plain-secret-long-enough-for-hs256!"}, fetch=refuse
    )
    assert (s.upstash_redis_rest_token, s.auth_jwt_secret) == (
        "tok",
        "plain-secret-long-enough-for-hs256!",
    )
    assert Settings.from_env(BASE, fetch=refuse).upstash_redis_rest_token == "tok"
    with pytest.raises(ConfigError, match="UPSTASH_REDIS_REST_TOKEN: is required"):
        Settings.from_env({**NAMED, "IS_LOCAL": "true"}, fetch=refuse)  # sls invoke local


def test_missing_required_parameter_is_named_and_optional_one_stays_empty(ssm: Any) -> None:
    """A missing Upstash token names its parameter; a missing JWT secret is simply empty."""
    _put(ssm, NAMED["UPSTASH_REDIS_REST_URL_SSM_PARAMETER"], "https://eu1-x.upstash.io")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(NAMED)
    why = "SSM parameter /agent-rebalance/prod/upstash-token does not exist"
    assert caught.value.problems == {"UPSTASH_REDIS_REST_TOKEN": why}
    _put(ssm, NAMED["UPSTASH_REDIS_REST_TOKEN_SSM_PARAMETER"], "AXrt-real-token-0123")
    assert Settings.from_env(NAMED).auth_jwt_secret == ""


def test_unreachable_ssm_is_a_config_error_naming_the_parameters(
    ssm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer from SSM fails the cold start with the names, bounded in time."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:9")
    with pytest.raises(ConfigError) as caught:
        parameters.fetch_from_ssm(["/agent-rebalance/prod/upstash-token"])
    assert "/agent-rebalance/prod/upstash-token" in caught.value.problems["SSM"]


def test_settings_without_names_never_import_boto3() -> None:
    """The cold path of dev, tests and plain-variable deployments stays free of boto3."""
    probe = (
        "import sys; from core.settings import Settings; "
        f"Settings.from_env({BASE!r}); print('boto3' in sys.modules, 'botocore' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False", "False"]
