"""Fixtures of the end-to-end tests: one `sls` runner per session (see helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.helpers import Sls


@pytest.fixture(scope="session")
def sls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sls]:
    yield Sls(tmp_path_factory.mktemp("sls-home"), tmp_path_factory.mktemp("sls-events"))
