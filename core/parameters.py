"""Settings stored as SSM SecureString parameters, resolved once per cold start.

A deployed function's environment holds the *name* of a parameter, never its value:
`UPSTASH_REDIS_REST_TOKEN_SSM_PARAMETER=/agent-rebalance/prod/upstash-token`. `resolve`
returns the environment with each such variable's value filled in (decrypted), in one
`GetParameters` call for all of them. A plain value wins over a parameter name, and under
`sls invoke local` (which sets `IS_LOCAL=true`) names are ignored: dev keeps working from
ordinary variables, without AWS.

boto3 is imported here, inside `fetch`, and only when a name is present: the request path of
dev and of the tests never loads it, and a deployed function pays for it once per cold start
(the Lambda runtime ships boto3; the zip does not).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from core.errors import ConfigError
from core.log import register_secrets

SUFFIX = "_SSM_PARAMETER"
# GetParameters takes at most 10 names per call; a function needs at most 5.
MAX_NAMES = 10

Fetch = Callable[[Sequence[str]], "Fetched"]


@dataclass(frozen=True)
class Fetched:
    """Decrypted values by parameter name, and the names SSM does not know."""

    values: dict[str, str] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Resolved:
    """The environment with parameter values filled in; `missing` maps variable -> name."""

    environ: dict[str, str]
    missing: dict[str, str]


def wanted(environ: Mapping[str, str]) -> dict[str, str]:
    """{VARIABLE: parameter name} for each variable given by name and not by value."""
    found = {}
    for key, name in environ.items():
        variable = key.removesuffix(SUFFIX)
        if key.endswith(SUFFIX) and name.strip() and not environ.get(variable, "").strip():
            found[variable] = name.strip()
    return found


def resolve(environ: Mapping[str, str], fetch: Fetch | None = None) -> Resolved:
    """`environ` with every `X_SSM_PARAMETER` resolved into `X`; no call when there is none."""
    names = wanted(environ)
    if not names or environ.get("IS_LOCAL") == "true":
        return Resolved(dict(environ), {})
    fetched = (fetch or fetch_from_ssm)(sorted(set(names.values())))
    register_secrets(*fetched.values.values())
    values = {var: fetched.values[name] for var, name in names.items() if name in fetched.values}
    missing = {var: name for var, name in names.items() if name in fetched.missing}
    return Resolved({**environ, **values}, missing)


def fetch_from_ssm(names: Sequence[str]) -> Fetched:
    """One decrypted `GetParameters` call; an AWS failure is a `ConfigError` naming the names."""
    if len(names) > MAX_NAMES:
        raise ConfigError({SUFFIX.lstrip("_"): f"at most {MAX_NAMES} parameters, got {len(names)}"})
    # Imported here: once per cold start, and only where a name is configured.
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    # Bounded: a stalled SSM must fail the cold start well inside the function's timeout.
    config = Config(connect_timeout=2, read_timeout=2, retries={"max_attempts": 2})
    try:
        answer = boto3.client("ssm", config=config).get_parameters(
            Names=list(names), WithDecryption=True
        )
    except (BotoCoreError, ClientError) as exc:
        why = f"cannot read SSM parameters {', '.join(names)}: {type(exc).__name__}"
        raise ConfigError({"SSM": why}) from exc
    return Fetched(
        {p["Name"]: p["Value"] for p in answer["Parameters"]},
        frozenset(answer.get("InvalidParameters", [])),
    )
