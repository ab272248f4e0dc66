"""requirements.txt, what the Lambda zip installs: complete, exact, and what the tests ran.

It must pin every package of the runtime closure of pyproject.toml's dependencies, on the
Lambda platform (CPython 3.12, Linux aarch64), to the version of requirements-dev.lock.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LAMBDA = {
    **default_environment(),
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "aarch64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a file of `name==version` lines."""
    pins = {}
    for requirement in _requirements(path):
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{requirement} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def _runtime_dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**LAMBDA, "extra": e}) for e in extras | {""})


def test_every_requirement_is_pinned_to_the_dev_lock_version() -> None:
    """Each line is `name==version`, the version the tests run with."""
    pins = _pins(REPO / "requirements.txt")
    locked = _pins(REPO / "requirements-dev.lock")
    assert pins
    assert {name: locked.get(name) for name in pins} == pins


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    """pyproject.toml's dependencies are all there, at versions their ranges allow."""
    pins = _pins(REPO / "requirements.txt")
    for dependency in _runtime_dependencies():
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{dependency} is missing from requirements.txt"
        assert dependency.specifier.contains(pins[name], prereleases=True), dependency


def test_requirements_are_the_closure_on_the_lambda_platform() -> None:
    """Every dependency of a pinned package (with the extras asked for) is pinned, no more."""
    pins = _pins(REPO / "requirements.txt")
    extras = {
        canonicalize_name(r.name): set(r.extras) for r in _requirements(REPO / "requirements.txt")
    }
    needed: set[str] = set()
    todo = [(canonicalize_name(r.name), set(r.extras)) for r in _runtime_dependencies()]
    while todo:
        name, wanted = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if _applies(requirement, wanted):
                todo.append((canonicalize_name(requirement.name), set(requirement.extras)))
    assert needed == set(pins)
    assert extras["pyjwt"] == {"crypto"}  # RS256/ES256 (JWKS) need cryptography
    assert {"cryptography", "cffi"} <= needed
