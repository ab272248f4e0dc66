"""An AWS environment that never leaves the process: dummy credentials, a region, no
metadata probe and no endpoint or profile override, so moto answers every call."""

from __future__ import annotations

import pytest

_VALUES = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_OVERRIDES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SSM", "AWS_PROFILE")


def offline_aws(patch: pytest.MonkeyPatch) -> None:
    for name, value in _VALUES.items():
        patch.setenv(name, value)
    for name in _OVERRIDES:
        patch.delenv(name, raising=False)
