"""`sls deploy` refuses functions whose settings are missing or would ship a secret's value,
before building anything.

Runs in a minimal copy of the service with dummy AWS credentials: were the guard missing,
the deploy would go on to package and then fail on AWS, never with these messages.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import REPO, run_sls, service_copy, sls_environ

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _service_copy(root: Path) -> Path:
    return service_copy(root, ("deploy", "core", "handlers"))


def _deploy(
    tmp: pytest.TempPathFactory, env_extra: dict[str, str], blank: str = ""
) -> tuple[Path, str]:
    """`sls deploy` in a copy, with `blank`'s line of serverless.yml set to '' if given."""
    tree = _service_copy(tmp.mktemp("guard"))
    if blank:
        config = tree / "serverless.yml"
        text = config.read_text()
        line = next(line for line in text.splitlines() if line.strip().startswith(blank + ":"))
        config.write_text(text.replace(line, f"{line.split(':')[0]}: ''"))
    output = _deploy_with(tree, {**sls_environ(tmp.mktemp("home")), **env_extra})
    assert not (tree / ".serverless").exists() or not list((tree / ".serverless").glob("*.zip"))
    assert not (tree / ".requirements-cache").exists()
    return tree, output


def test_deploy_of_secret_values_from_the_shell_is_refused_naming_them(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Stage dev with secrets exported (for `sls invoke local`): nothing is built or sent."""
    _, output = _deploy(
        tmp_path_factory,
        {"AUTH_JWT_SECRET": "jwt-secret-from-shell", "UPSTASH_REDIS_REST_TOKEN": "AXrt-shell"},
    )
    assert "Refusing to deploy secret values in plain text" in output
    for function in ("submit", "status", "metrics"):
        assert f"  {function}: UPSTASH_REDIS_REST_TOKEN, AUTH_JWT_SECRET\n" in output
    assert "  drain: UPSTASH_REDIS_REST_TOKEN\n" in output
    assert "jwt-secret-from-shell" not in output and "AXrt-shell" not in output


def test_deploy_without_a_parameter_name_is_refused_naming_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A required setting with neither a value nor a parameter name: every function is named."""
    _, output = _deploy(tmp_path_factory, {}, blank="upstashTokenParameter")
    assert "Refusing to deploy functions with empty settings" in output
    for function in ("submit", "status", "metrics", "drain"):
        assert f"  {function}: UPSTASH_REDIS_REST_TOKEN\n" in output
    assert "AUTH_JWKS_URL" not in output  # the JWT secret's parameter name is there


def _deploy_with(tree: Path, env: dict[str, str], *params: str) -> str:
    """`sls deploy` in `tree`, which must fail; its output."""
    run = run_sls(tree, env, "deploy", *(f"--param={p}" for p in params))
    assert run.returncode != 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def test_jwks_mode_needs_issuer_and_audience(tmp_path_factory: pytest.TempPathFactory) -> None:
    """AUTH_JWKS_URL without AUTH_ISSUER/AUTH_AUDIENCE would accept any audience: refused."""
    tree = _service_copy(tmp_path_factory.mktemp("guard-jwks"))
    env = sls_environ(tmp_path_factory.mktemp("home"))
    env.update(UPSTASH_REDIS_REST_URL="https://u.example")
    output = _deploy_with(tree, env, "authJwksUrl=https://issuer.example/jwks.json")
    for function in ("submit", "status", "metrics", "ws"):
        assert f"  {function}: AUTH_ISSUER (JWKS mode), AUTH_AUDIENCE (JWKS mode)\n" in output
    assert "  drain:" not in output
    output = _deploy_with(
        tree,
        env,
        "authJwksUrl=https://issuer.example/jwks.json",
        "authIssuer=https://issuer.example/",
    )
    assert "  submit: AUTH_AUDIENCE (JWKS mode)\n" in output


def test_trusting_the_authorizer_needs_one_on_every_jwt_route(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """AUTH_TRUST_AUTHORIZER=true with the authorizer left commented out: each JWT route is
    named; the scrape route, which takes no JWT, is not."""
    tree = _service_copy(tmp_path_factory.mktemp("guard-authorizer"))
    env = sls_environ(tmp_path_factory.mktemp("home"))
    env.update(UPSTASH_REDIS_REST_URL="https://u.example")
    output = _deploy_with(tree, env, "authTrustAuthorizer=true")
    assert "without a JWT authorizer on" in output
    for route in (
        "submit: POST /api/agent/rebalance\n",
        "status: GET /api/agent/rebalance/{jobId}\n",
        "metrics: GET /api/agent/rebalance/metrics\n",
    ):
        assert route in output
    assert "prometheus" not in output
    assert "empty settings" not in output


GUARD_PROBE = """
const Guard = require(process.argv[1]);
const fns = JSON.parse(process.argv[2]);
const serverless = {
  processedInput: {commands: ['deploy']},
  service: {
    provider: {
      environment: {UPSTASH_REDIS_REST_URL: 'u', UPSTASH_REDIS_REST_TOKEN_SSM_PARAMETER: '/p'},
    },
    getAllFunctions: () => Object.keys(fns),
    getFunction: (name) => fns[name],
  },
  getProvider: () => ({getStage: () => 'prod'}),
  classes: {Error: Error},
};
try { new Guard(serverless).check(); console.log('ok'); } catch (e) { console.log(e.message); }
"""


@pytest.mark.parametrize(
    ("environment", "route", "expected"),
    [
        ({"AUTH_TRUST_AUTHORIZER": "true"}, {"authorizer": {"name": "jwt"}}, "ok"),
        ({"AUTH_TRUST_AUTHORIZER": "true"}, {}, "without a JWT authorizer"),
        (
            {"AUTH_JWKS_URL": "https://i/jwks", "AUTH_ISSUER": "i", "AUTH_AUDIENCE": "a"},
            {},
            "ok",
        ),
        ({"AUTH_JWKS_URL": "https://i/jwks", "AUTH_ISSUER": "i"}, {}, "AUTH_AUDIENCE"),
    ],
)
def test_the_guard_passes_safe_auth_settings(
    environment: dict[str, str], route: dict[str, object], expected: str
) -> None:
    """The guard alone (node, no sls): a complete configuration passes, an unsafe one not."""
    functions = {
        "submit": {
            "environment": environment,
            "events": [{"httpApi": {"method": "POST", "path": "/api/agent/rebalance", **route}}],
        }
    }
    run = subprocess.run(
        [
            "node",
            "-e",
            GUARD_PROBE,
            str(REPO / "deploy" / "settings-guard.js"),
            json.dumps(functions),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert expected in run.stdout
