"""Settings: read once from the environment, validated, secrets hidden from `repr`.

Every variable the project reads is declared in `Settings` below, with its default. Parsing
collects every problem before raising, so one `ConfigError` names every bad variable.
Only `UPSTASH_REDIS_REST_URL` and `UPSTASH_REDIS_REST_TOKEN` are always required; the auth
variables are checked by the code that authenticates (the drain does not need them).

A deployed function gets secrets as SSM parameter names (`X_SSM_PARAMETER`), resolved once by
`core.parameters` before parsing; a plain `X` wins (dev, `sls invoke local`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from core.errors import ConfigError
from core.keys import JOB_TTL_S
from core.parameters import Fetch, resolve

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    Options = TypeVar("Options", bound=DataclassInstance)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _secret() -> Any:
    return field(default="", repr=False)


@dataclass(frozen=True)
class Settings:
    upstash_redis_rest_url: str = ""
    upstash_redis_rest_token: str = _secret()
    redis_url: str = field(default="", repr=False)
    upstash_timeout_ms: int = 3000
    upstash_retries: int = 1

    auth_jwt_secret: str = _secret()
    auth_jwks_url: str = ""
    auth_issuer: str = ""
    auth_audience: str = ""
    auth_trust_authorizer: bool = False
    metrics_scrape_token: str = _secret()

    # Security limits (SECURITY.md): token lifetime, JWKS cache, operator scope, read limits.
    auth_max_token_ttl_s: int = 24 * 3600
    auth_jwks_cache_s: int = 300
    metrics_read_scope: str = "metrics:read"
    read_rate_limit_max: int = 120
    read_rate_limit_window_s: int = 60

    rate_limit_max: int = 10
    rate_limit_window_s: int = 60
    max_body_bytes: int = 16 * 1024
    job_ttl_s: int = JOB_TTL_S

    job_max_attempts: int = 5
    job_lease_seconds: int = 60
    retry_base_delay_ms: int = 1000
    retry_max_delay_ms: int = 60_000
    serialize_by: str = "wallet"
    job_valid_for_s: int | None = None

    drain_batch_size: int = 300
    drain_concurrency: int = 300
    drain_poll_interval_ms: int = 500
    drain_poll_max_interval_ms: int = 5000
    drain_backoff_factor: float = 1.5
    drain_idle_exit_ms: int | None = None
    drain_safety_margin_ms: int = 3000

    # The elastic drain (core/elastic.py): wake on submit, fan out on backlog, heartbeats.
    drain_wake: bool = False
    drain_max_parallel: int = 1
    drain_fanout_backlog: int = 100
    drain_heartbeat_ms: int = 15_000
    drain_wake_lock_ms: int = 10_000
    drain_function_name: str = ""

    rebalance_processor: str = "core.processors.simulated:process"
    rebalance_webhook_url: str = ""
    rebalance_webhook_secret: str = _secret()
    rebalance_webhook_timeout_ms: int = 10_000
    sim_latency_ms: int = 50
    sim_failure_rate: float = 0.0

    # The WebSocket API's management endpoint (`https://<api>.execute-api.<region>.amazonaws.com/
    # <stage>`): where the drain posts status changes. Empty: the drain pushes nothing.
    ws_api_endpoint: str = ""

    log_level: str = "INFO"

    @property
    def upstash_timeout_s(self) -> float:
        return self.upstash_timeout_ms / 1000

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, fetch: Fetch | None = None
    ) -> Settings:
        """Parse `environ` (default `os.environ`); raise `ConfigError` naming every problem.

        Variables given as SSM parameter names are resolved first (`fetch`: for tests).
        """
        resolved = resolve(os.environ if environ is None else environ, fetch)
        env = resolved.environ
        values = _defaults()
        problems: dict[str, str] = {}
        for f in fields(cls):
            name, annotation = f.name.upper(), str(f.type)  # postponed: the annotation's text
            raw = env.get(name)
            if raw is None or (raw.strip() == "" and annotation != "str"):
                continue
            try:
                values[f.name] = _PARSERS[annotation](raw.strip())
            except ValueError as exc:
                problems[name] = str(exc)
        for name, why in _check(values).items():
            problems.setdefault(name, why)
        _explain_missing_parameters(problems, resolved.missing)
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` (by field name), held to the rules of `from_env`: a value a
        caller computes (a CLI option, the dev stack's own URL) cannot skip the checks."""
        values = {f.name: getattr(self, f.name) for f in fields(self)} | changes
        if problems := _check(values):
            raise ConfigError(problems)
        return type(self)(**values)

    def require(self, *names: str) -> None:
        """Fail with one `ConfigError` unless every named variable is set."""
        missing = {n.upper(): "is required" for n in names if not getattr(self, n.lower())}
        if missing:
            raise ConfigError(missing)


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields(Settings)}


def setting(name: str, convert: Callable[[Any], Any] | None = None) -> Any:
    """A field of an options dataclass (`QueuePolicy`, `DrainOptions`, ...) that mirrors the
    setting `name`: its default is the setting's default (through `convert`), so each default
    is stated once, here in `Settings`, and `options_from` fills it from parsed settings."""
    default = Settings.__dataclass_fields__[name].default
    if default is MISSING:
        raise TypeError(f"setting {name} has no default")
    value = convert(default) if convert else default
    return field(default=value, metadata={"setting": name, "convert": convert})


def options_from(cls: type[Options], settings: Settings) -> Options:
    """An options dataclass with every `setting(...)` field taken from `settings`."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        if name := f.metadata.get("setting"):
            convert = f.metadata["convert"]
            raw = getattr(settings, name)
            values[f.name] = convert(raw) if convert else raw
    return cls(**values)


def _parse_bool(raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _parse_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None


def _parse_float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None


_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": _parse_int,
    "int | None": _parse_int,
    "float": _parse_float,
    "bool": _parse_bool,
}

# SERIALIZE_BY -> the job field that names what must not run twice at once: `public_key`
# (a wallet), `user_id`, or "" (no serialization).
SERIALIZE_FIELDS = {"wallet": "public_key", "user": "user_id", "none": ""}

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_POSITIVE = (
    "upstash_timeout_ms",
    "auth_max_token_ttl_s",
    "auth_jwks_cache_s",
    "read_rate_limit_max",
    "read_rate_limit_window_s",
    "rate_limit_max",
    "rate_limit_window_s",
    "max_body_bytes",
    "job_ttl_s",
    "job_max_attempts",
    "job_lease_seconds",
    "retry_base_delay_ms",
    "retry_max_delay_ms",
    "drain_batch_size",
    "drain_concurrency",
    "drain_poll_interval_ms",
    "drain_poll_max_interval_ms",
    "drain_max_parallel",
    "drain_fanout_backlog",
    "drain_heartbeat_ms",
    "drain_wake_lock_ms",
    "rebalance_webhook_timeout_ms",
)
_NON_NEGATIVE = (
    "upstash_retries",
    "drain_idle_exit_ms",
    "drain_safety_margin_ms",
    "sim_latency_ms",
)


def _check(v: dict[str, Any]) -> dict[str, str]:
    """Cross-field and range rules; returns {VARIABLE: reason}."""
    problems = _check_connection(v)
    for name in _POSITIVE:
        if v[name] <= 0:
            problems[name.upper()] = "must be greater than 0"
    for name in _NON_NEGATIVE:
        if v[name] is not None and v[name] < 0:
            problems[name.upper()] = "must not be negative"
    if v["drain_backoff_factor"] < 1:
        problems["DRAIN_BACKOFF_FACTOR"] = "must be at least 1"
    if not 0 <= v["sim_failure_rate"] <= 1:
        problems["SIM_FAILURE_RATE"] = "must be between 0 and 1"
    if v["retry_max_delay_ms"] < v["retry_base_delay_ms"]:
        problems["RETRY_MAX_DELAY_MS"] = "must be at least RETRY_BASE_DELAY_MS"
    if ":" not in v["rebalance_processor"]:
        problems["REBALANCE_PROCESSOR"] = "must look like module:function"
    problems.update(_check_jobs(v))
    problems.update(_check_security(v))
    return problems


def _check_jobs(v: dict[str, Any]) -> dict[str, str]:
    problems: dict[str, str] = {}
    if v["serialize_by"] not in SERIALIZE_FIELDS:
        *others, last = SERIALIZE_FIELDS
        problems["SERIALIZE_BY"] = f"must be {', '.join(others)} or {last}"
    if v["job_valid_for_s"] is not None and not 1 <= v["job_valid_for_s"] <= 86400:
        problems["JOB_VALID_FOR_S"] = "must be between 1 and 86400 seconds"
    v["log_level"] = v["log_level"].upper()
    if v["log_level"] not in _LOG_LEVELS:
        problems["LOG_LEVEL"] = "must be one of " + ", ".join(_LOG_LEVELS)
    endpoint = v["ws_api_endpoint"]
    if endpoint and (
        urlparse(endpoint).scheme not in ("http", "https") or not urlparse(endpoint).netloc
    ):
        problems["WS_API_ENDPOINT"] = "must be an http(s) URL"
    return problems


def _check_security(v: dict[str, Any]) -> dict[str, str]:
    problems: dict[str, str] = {}
    if secret_problem := jwt_secret_problem(v["auth_jwt_secret"]):
        problems["AUTH_JWT_SECRET"] = secret_problem
    if not v["metrics_read_scope"].strip():
        problems["METRICS_READ_SCOPE"] = "must not be empty"
    return problems


MIN_JWT_SECRET_BYTES = 32  # HS256's key should be as long as its hash (RFC 7518 3.2)


def jwt_secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign HS256 tokens, or None (an unset secret is not a problem)."""
    if secret and len(secret.encode()) < MIN_JWT_SECRET_BYTES:
        return f"must be at least {MIN_JWT_SECRET_BYTES} bytes for HS256"
    return None


def _check_connection(v: dict[str, Any]) -> dict[str, str]:
    problems: dict[str, str] = {}
    url = v["upstash_redis_rest_url"]
    if not url:
        problems["UPSTASH_REDIS_REST_URL"] = "is required"
    elif urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
        problems["UPSTASH_REDIS_REST_URL"] = "must be an http(s) URL"
    if not v["upstash_redis_rest_token"]:
        problems["UPSTASH_REDIS_REST_TOKEN"] = "is required"
    redis_url = v["redis_url"]
    if redis_url and urlparse(redis_url).scheme not in ("redis", "rediss", "unix"):
        problems["REDIS_URL"] = "must be a redis://, rediss:// or unix:// URL"
    return problems


# --- SSM parameters (deployed secrets, see core.parameters) ---


def _explain_missing_parameters(problems: dict[str, str], missing: Mapping[str, str]) -> None:
    """A variable that failed because its parameter does not exist says so; an optional one
    whose parameter is missing stays empty, like an unset variable."""
    for variable, name in missing.items():
        if variable in problems:
            problems[variable] = f"SSM parameter {name} does not exist"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, parsed on first use (one cold start, one parse)."""
    return Settings.from_env()
