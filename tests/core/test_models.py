"""The rebalance request's rules, one by one: each bad field is named, types are strict."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import ValidationError
from core.models import parse_request

OK = {"targets": {"BTC": 0.6, "ETH": 0.4}}


def _bad(body: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        parse_request(body)
    assert caught.value.details, "a body error always carries details"
    return caught.value.details


def _locs(body: dict[str, Any]) -> list[list[str | int]]:
    return [detail["loc"] for detail in _bad(body)]


def test_a_minimal_request_gets_every_field_in_its_wire_name() -> None:
    """Defaults filled, `validForSeconds` only when given, weights as numbers."""
    assert parse_request({"targets": {"BTC": 1}}) == {
        "targets": {"BTC": 1.0},
        "slippageBps": None,
        "dryRun": False,
        "metadata": {},
    }


def test_a_full_request_passes_untouched() -> None:
    """Every field at a legal value comes back as sent; metadata values keep their types."""
    body = {
        "targets": {"BTC": 0.5, "eth.e": 0.25, "USDC:sol": 0.25, "a_b-1": 0},
        "slippageBps": 10_000,
        "dryRun": True,
        "validForSeconds": 86_400,
        "metadata": {"s": "x" * 256, "i": 12345678901234567890, "f": 1.5, "b": False, "n": None},
    }
    assert parse_request(body) == body


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["targets"]),
        ({"targets": {}}, ["targets"]),
        ({"targets": {f"A{i}": 1 / 65 for i in range(65)}}, ["targets"]),
        ({"targets": ["BTC"]}, ["targets"]),
        ({"targets": {"BTC": 0.5}}, ["targets"]),
        ({"targets": {"BTC": 0.6, "ETH": 0.6}}, ["targets"]),
        ({"targets": {"BTC": 0, "ETH": 0}}, ["targets"]),
        ({"targets": {"BTC": 1.5}}, ["targets", "BTC"]),
        ({"targets": {"BTC": -0.1, "ETH": 1}}, ["targets", "BTC"]),
        ({"targets": {"BTC": "1"}}, ["targets", "BTC"]),
        ({"targets": {"BTC": True}}, ["targets", "BTC"]),
        ({"targets": {"BTC": None}}, ["targets", "BTC"]),
        ({"targets": {"BT C": 1}}, ["targets", "BT C"]),
        ({"targets": {"": 1}}, ["targets", ""]),
        ({"targets": {"B" * 33: 1}}, ["targets", "B" * 33]),
        ({"targets": {"BTC/USD": 1}}, ["targets", "BTC/USD"]),
        ({"targets": {"ÉTH": 1}}, ["targets", "ÉTH"]),
        ({**OK, "slippageBps": "5"}, ["slippageBps"]),
        ({**OK, "slippageBps": 1.5}, ["slippageBps"]),
        ({**OK, "slippageBps": 5.0}, ["slippageBps"]),
        ({**OK, "slippageBps": True}, ["slippageBps"]),
        ({**OK, "slippageBps": None}, ["slippageBps"]),
        ({**OK, "slippageBps": -1}, ["slippageBps"]),
        ({**OK, "slippageBps": 10_001}, ["slippageBps"]),
        ({**OK, "dryRun": "yes"}, ["dryRun"]),
        ({**OK, "dryRun": 1}, ["dryRun"]),
        ({**OK, "dryRun": "true"}, ["dryRun"]),
        ({**OK, "dryRun": None}, ["dryRun"]),
        ({**OK, "validForSeconds": 0}, ["validForSeconds"]),
        ({**OK, "validForSeconds": 86_401}, ["validForSeconds"]),
        ({**OK, "validForSeconds": "5"}, ["validForSeconds"]),
        ({**OK, "validForSeconds": 1.5}, ["validForSeconds"]),
        ({**OK, "metadata": []}, ["metadata"]),
        ({**OK, "metadata": {str(i): i for i in range(17)}}, ["metadata"]),
        ({**OK, "metadata": {"k" * 65: 1}}, ["metadata", "k" * 65]),
        ({**OK, "metadata": {"k": "v" * 257}}, ["metadata", "k"]),
        ({**OK, "metadata": {"k": [1]}}, ["metadata", "k"]),
        ({**OK, "metadata": {"k": {"nested": 1}}}, ["metadata", "k"]),
        ({**OK, "portfolio": "p1"}, ["portfolio"]),
    ],
)
def test_each_rule_names_the_bad_field(body: dict[str, Any], loc: list[Any]) -> None:
    """One bad field, one detail, at its location, with a reason."""
    details = _bad(body)
    assert [d["loc"] for d in details] == [loc]
    assert details[0]["msg"] and not details[0]["msg"].startswith("Value error")


def test_boundaries_are_legal() -> None:
    """The edges of every range pass: 64 assets, 32-character names, 16 metadata keys."""
    names = [f"{i:0>32}" for i in range(64)]
    targets = {name: 1 / 64 for name in names}
    body = {
        "targets": targets,
        "slippageBps": 0,
        "validForSeconds": 1,
        "metadata": {"k" * 64 if i == 0 else str(i): "v" * 256 for i in range(16)},
    }
    assert parse_request(body)["targets"] == targets


def test_the_weights_sum_within_a_millionth() -> None:
    """Off by less than 1e-6 passes; by more, the targets are named."""
    parse_request({"targets": {"A": 0.3, "B": 0.7 + 9e-7}})
    assert _locs({"targets": {"A": 0.3, "B": 0.7 + 2e-6}}) == [["targets"]]


def test_every_bad_field_is_named_once_and_in_the_message() -> None:
    """Several bad fields: one detail each, all named in the message."""
    with pytest.raises(ValidationError) as caught:
        parse_request(
            {"targets": {"BTC": 2}, "slippageBps": "5", "dryRun": "yes", "extra": 1, "x": 2}
        )
    locs = [d["loc"] for d in caught.value.details or []]
    assert locs == [["targets", "BTC"], ["slippageBps"], ["dryRun"], ["extra"], ["x"]]
    for name in ("targets.BTC", "slippageBps", "dryRun", "extra", "x"):
        assert name in str(caught.value)
