"""core.log: JSON lines with context, secrets never written, one line per record in Lambda."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest

from core import log
from core.settings import Settings

UPSTASH_TOKEN = "AXrtAAIjcDE2ZjYzupstash-token-value"
WEBHOOK_SECRET = "whsec_5f2b9c1d-the-webhook-signing-secret"
SCRAPE = "scrape-token-4f1e2d3c"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTEiLCJwdWJsaWNLZXkiOiJrIn0"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)


@pytest.fixture(autouse=True)
def fresh_secrets() -> Iterator[None]:
    """Each test's environment is read afresh, and the next test's after its own is undone
    (this fixture needs no `monkeypatch`, so it is torn down after it)."""
    log.refresh_secrets()
    yield
    log.refresh_secrets()


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """A root logger writing our JSON into a buffer, with the secrets in the environment."""
    for name, value in {
        "UPSTASH_REDIS_REST_TOKEN": UPSTASH_TOKEN,
        "REBALANCE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "METRICS_SCRAPE_TOKEN": SCRAPE,
        "REDIS_URL": "redis://default:valkey-pass-123@127.0.0.1:6379",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    monkeypatch.delenv("IS_LOCAL", raising=False)
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    buffer = io.StringIO()
    log.configure("DEBUG", stream=buffer)
    yield buffer
    root.handlers, root.level = saved, level


def records(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_event_is_one_json_line_with_bound_request_and_job_ids(lines: io.StringIO) -> None:
    """Bound context (request id, job id) and fields land in one JSON object."""
    with log.bind(request_id="req-1"), log.bind(job_id="job-9"):
        log.event(log.get_logger("core.drain"), "job.acked", ms=12.5)
    (record,) = records(lines)
    assert record["event"] == "job.acked" and record["level"] == "INFO"
    assert record["request_id"] == "req-1" and record["job_id"] == "job-9"
    assert record["ms"] == 12.5 and record["logger"] == "core.drain" and "time" in record


def test_secrets_never_reach_a_log_line(lines: io.StringIO) -> None:
    """Bearer tokens, the Upstash token, the webhook secret, the scrape token and the Redis
    password are masked in fields, nested headers, free text and tracebacks."""
    logger = log.get_logger("test")
    log.event(
        logger,
        "http.request",
        headers={"Authorization": f"Bearer {JWT}", "x-upstash": UPSTASH_TOKEN},
    )
    log.event(
        logger,
        "webhook.sent",
        url="https://hooks.example/x",
        signing=WEBHOOK_SECRET,
        note=f"sig key {WEBHOOK_SECRET}; upstream said Bearer {UPSTASH_TOKEN}",
    )
    logger.warning("scrape with %s failed for %s", f"Bearer {SCRAPE}", JWT)
    logger.info("tcp redis at redis://default:valkey-pass-123@127.0.0.1:6379")
    log.event(
        logger,
        "cfg",
        upstash_redis_rest_token=UPSTASH_TOKEN,
        token=JWT,
        quoted=f'say "{WEBHOOK_SECRET}"',
    )
    try:
        raise RuntimeError(f"POST failed, Authorization: Bearer {JWT} secret {WEBHOOK_SECRET}")
    except RuntimeError:
        logger.exception("processor crashed")
    text = lines.getvalue()
    assert len(text.splitlines()) == 6
    for secret in (
        JWT,
        UPSTASH_TOKEN,
        WEBHOOK_SECRET,
        SCRAPE,
        "valkey-pass-123",
        JWT.split(".")[2],
    ):
        assert secret not in text
    assert "***" in text and "processor crashed" in text and "Traceback" in text


def test_registered_secrets_and_settings_repr_are_masked(lines: io.StringIO) -> None:
    """A secret known only to the code (not the environment) is masked once registered; the
    settings' repr never shows a secret field."""
    log.register_secrets("ssm-loaded-secret-value")
    settings = Settings(
        upstash_redis_rest_url="https://x",
        upstash_redis_rest_token="tok-abcdef",
        rebalance_webhook_secret="whsec-abcdef",
    )
    log.get_logger("test").info("loaded %s and %r", "ssm-loaded-secret-value", settings)
    text = lines.getvalue()
    assert "ssm-loaded-secret-value" not in text
    assert "tok-abcdef" not in text and "whsec-abcdef" not in text


class CountingEnviron(dict[str, str]):
    """A copy of the environment that counts the reads of the secret variables."""

    reads = 0

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        if key in log.SECRET_VARIABLES:
            self.reads += 1
        return super().get(key, default)


def test_the_environment_is_read_once_not_at_every_line(
    lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secret variables are read at the first line only; one set later is masked from
    `refresh_secrets()` on, as `reset_caches` and a reloaded configuration call it."""
    environ = CountingEnviron(os.environ)
    monkeypatch.setattr(os, "environ", environ)
    log.refresh_secrets()
    logger = log.get_logger("test")
    for n in range(50):
        logger.info("line %d with %s", n, UPSTASH_TOKEN)
    assert environ.reads == len(log.SECRET_VARIABLES)
    assert UPSTASH_TOKEN not in lines.getvalue()

    environ["AUTH_JWT_SECRET"] = "rotated-jwt-secret-0042"
    logger.info("cached: %s", "rotated-jwt-secret-0042")
    log.refresh_secrets()
    logger.info("refreshed: %s", "rotated-jwt-secret-0042")
    cached, refreshed = (r["event"] for r in records(lines)[-2:])
    assert cached == "cached: rotated-jwt-secret-0042"  # the cache, not the environment
    assert refreshed == "refreshed: ***"
    assert environ.reads == 2 * len(log.SECRET_VARIABLES)


def test_a_secret_registered_after_the_first_line_is_masked_at_once(lines: io.StringIO) -> None:
    """Registering drops the cache: no refresh is needed for a value the code knows."""
    logger = log.get_logger("test")
    logger.info("warm the cache")
    log.register_secrets("registered-later-0077")
    logger.info("value %s", "registered-later-0077")
    assert records(lines)[-1]["event"] == "value ***"


def test_reset_caches_rereads_the_secret_variables(
    lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the tests' `env` fixture calls between tests refreshes the log's secrets too."""
    from tests.support.caches import reset_caches

    logger = log.get_logger("test")
    logger.info("warm the cache")
    monkeypatch.setenv("METRICS_SCRAPE_TOKEN", "scrape-token-after-reset")
    reset_caches()
    logger.info("scrape with %s", "scrape-token-after-reset")
    assert records(lines)[-1]["event"] == "scrape with ***"


def test_ordinary_words_survive(lines: io.StringIO) -> None:
    """Redaction masks credentials, not the words around them."""
    log.get_logger("test").info("missing bearer token")
    assert records(lines)[0]["event"] == "missing bearer token"


class LambdaLoggerHandler(logging.Handler):
    """Stands in for the handler the Lambda Python runtime puts on the root logger."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.parametrize(
    "host",
    [
        {"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"},  # the Lambda runtime
        {"IS_LOCAL": "true"},  # `sls invoke local`, whose wrapper calls logging.basicConfig()
    ],
)
def test_in_lambda_the_host_handler_is_reused_not_doubled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], host: dict[str, str]
) -> None:
    """Under the Lambda runtime or its local emulation every record is written once, as our
    redacted JSON, by the handler the host put on the root logger."""
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    monkeypatch.delenv("IS_LOCAL", raising=False)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "agent-rebalance-dev-drain")
    for name, value in host.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", UPSTASH_TOKEN)
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    runtime = LambdaLoggerHandler()
    root.handlers = [runtime]
    try:
        log.configure()
        log.configure()  # a warm invocation configures again: still one handler
        log.event(log.get_logger("handlers.drain"), "drain.done", token=UPSTASH_TOKEN)
        assert root.handlers == [runtime]
    finally:
        root.handlers, root.level = saved, level
    (line,) = runtime.lines
    assert json.loads(line)["event"] == "drain.done" and UPSTASH_TOKEN not in line
    assert capsys.readouterr().err == ""


def test_configure_is_idempotent_outside_lambda(lines: io.StringIO) -> None:
    """Calling `configure` again adds no second handler."""
    before = logging.getLogger().handlers[:]
    log.configure("INFO")
    assert logging.getLogger().handlers == before


def test_credentials_in_urls_are_masked() -> None:
    """An error text quoting a URL loses its password and credential-named parameters."""
    text = log.redact(
        "ConnectError for https://svc:s3cr3t-pw@api.example.com/v1?api_key=AKIA123&page=2"
        "&X-Amz-Signature=abcdef&token=tok-9#frag; and http://host/path?q=ok"
    )
    for secret in ("s3cr3t-pw", "AKIA123", "abcdef", "tok-9"):
        assert secret not in text
    assert "page=2" in text and "q=ok" in text and "https://svc:***@api.example.com" in text


def test_in_lambda_every_line_carries_function_cold_start_request_and_trace(
    lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first invocation's lines are the cold start; later ones are not; the trace id is
    the Root of the X-Ray header; a record stamped by the runtime's filter keeps its id."""
    monkeypatch.setattr(log, "_first_request", [])
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "agent-rebalance-prod-drain")
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    monkeypatch.setenv("_X_AMZN_TRACE_ID", trace)
    logger = log.get_logger("handlers.drain")
    logger.info("init")
    with log.bind(request_id="req-1"):
        log.event(logger, "drain.done")
    with log.bind(request_id="req-2"):
        log.event(logger, "drain.done")
    logger.info("from the runtime", extra={"aws_request_id": "req-3"})
    first, cold, warm, stamped = records(lines)
    assert first["cold_start"] is True and "request_id" not in first
    assert (cold["request_id"], cold["cold_start"]) == ("req-1", True)
    assert (warm["request_id"], warm["cold_start"]) == ("req-2", False)
    assert (stamped["request_id"], stamped["cold_start"]) == ("req-3", False)
    for record in (first, cold, warm, stamped):
        assert record["function_name"] == "agent-rebalance-prod-drain"
        assert record["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"


def test_outside_lambda_lines_carry_no_lambda_fields(
    lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make dev` and the CLI keep their lines as they were."""
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-abc;Sampled=0")
    log.get_logger("test").info("hello")
    (record,) = records(lines)
    assert not {"function_name", "cold_start", "trace_id"} & set(record)
