"""The typed shapes of the HTTP API: the rebalance request and every answer.

pydantic v2 models, the one source of the OpenAPI schemas (`handlers.openapi` generates the
document from them) and of request validation (`core.submit.validate_payload`). Types are
strict, as the contract says: `"yes"` is not a boolean, `"5"` and `1.5` are not integers.
The request refuses unknown top-level fields; the answers allow none either, so a client
generated from the document parses exactly what the API sends.

Loaded on the first request, not at cold import: building the validators costs milliseconds
that the submit handler's cold-import budget does not have.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from core.jobs import JobStatus

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
ASSET_PATTERN = r"^[A-Za-z0-9._:-]{1,32}$"
WEIGHT_SUM_TOLERANCE = 1e-6
MAX_TARGETS = 64
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_STRING_CHARS = 256
STATUSES = tuple(status.value for status in JobStatus)

Asset = Annotated[str, StringConstraints(pattern=ASSET_PATTERN)]
Weight = Annotated[float, Field(strict=True, ge=0, le=1)]
MetadataKey = Annotated[str, StringConstraints(max_length=MAX_METADATA_KEY_CHARS)]
JobId = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]
Count = Annotated[int, Field(ge=0)]
BpsValue = Annotated[StrictInt, Field(ge=0, le=10_000)]
Seconds = Annotated[StrictInt, Field(ge=1, le=86_400)]
Millis = Annotated[float, Field(ge=0, description="milliseconds")]


def _no_default(schema: dict[str, Any]) -> None:
    """An optional field is left out when unset, never sent as null: say so in the schema."""
    schema.pop("default", None)


def _optional(description: str | None = None) -> Any:
    return Field(default=None, description=description, json_schema_extra=_no_default)


def _targets_schema(schema: dict[str, Any]) -> None:
    # pydantic writes the key rule as `patternProperties`, which lets other keys through
    # unchecked; `propertyNames` says what the API enforces: every key matches.
    (weight,) = schema.pop("patternProperties").values()
    schema["propertyNames"] = {"pattern": ASSET_PATTERN}
    schema["additionalProperties"] = weight


def _metadata_value(value: Any) -> str | int | float | bool | None:
    """One scalar: a string of at most 256 characters, a number, a boolean or null.

    A plain validator rather than a union, so a bad value is ONE error naming its key
    (a union reports a failure per member).
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("a metadata number must be finite")
        return value
    if isinstance(value, str):
        if len(value) > MAX_METADATA_STRING_CHARS:
            raise ValueError(f"a metadata string is at most {MAX_METADATA_STRING_CHARS} characters")
        return value
    raise ValueError("a metadata value must be a string, a number, a boolean or null")


MetadataValue = Annotated[
    Any,
    PlainValidator(_metadata_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_METADATA_STRING_CHARS},
                {"type": "number"},
                {"type": "boolean"},
                {"type": "null"},
            ]
        }
    ),
]


class RebalanceRequest(BaseModel):
    """The body of `POST /api/agent/rebalance`; handed to the processor as `payload`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    targets: Annotated[
        dict[Asset, Weight],
        Field(
            min_length=1,
            max_length=MAX_TARGETS,
            description="Asset -> target weight (0..1); the weights sum to 1 within 1e-6 "
            "and at least one is above 0.",
            json_schema_extra=_targets_schema,
        ),
    ]
    # Typed without `| None`: optional means "may be left out", and an explicit null is not
    # an integer (pydantic never validates the default).
    slippageBps: BpsValue = _optional("Maximum slippage in basis points (0..10000).")
    dryRun: StrictBool = Field(default=False, description="Plan the trades, do not place them.")
    validForSeconds: Seconds = _optional(
        "A job not started within this many seconds of its acceptance ends `expired` and "
        "never runs."
    )
    metadata: Annotated[
        dict[MetadataKey, MetadataValue],
        Field(
            max_length=MAX_METADATA_KEYS,
            description="Returned untouched to the processor.",
        ),
    ] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _weights_sum_to_one(cls, targets: dict[str, float]) -> dict[str, float]:
        total = math.fsum(targets.values())
        if abs(total - 1) > WEIGHT_SUM_TOLERANCE:
            raise ValueError(f"the weights must sum to 1 (within 1e-6), not {total:.9g}")
        if not any(weight > 0 for weight in targets.values()):
            raise ValueError("at least one weight must be above 0")
        return targets

    def to_payload(self) -> dict[str, Any]:
        """The request in its wire names, as stored and handed to processors.

        `validForSeconds` appears only when given; every other field is always present.
        """
        payload = self.model_dump(mode="json")
        if payload.get("validForSeconds") is None:
            payload.pop("validForSeconds", None)
        return payload


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Accepted(_Answer):
    """The `202` of a submit."""

    jobId: JobId
    status: Literal["queued"]
    statusUrl: str = Field(description="The job's status URL (also in `Location`).")


class JobStatusView(_Answer):
    """A job's status, as its owner reads it."""

    jobId: JobId
    status: Literal[STATUSES]  # type: ignore[valid-type]
    attempts: Count = Field(description="Deliveries so far, the current one included.")
    createdAt: str = Field(json_schema_extra={"format": "date-time"})
    updatedAt: str = Field(json_schema_extra={"format": "date-time"})
    lastError: str | SkipJsonSchema[None] = _optional(
        "The latest failure, redacted and at most 1,000 characters."
    )
    result: Any = _optional(
        "What the processor returned, redacted; left out when its JSON is over 4 KiB "
        "(then `resultTruncated` is true)."
    )
    resultTruncated: bool | SkipJsonSchema[None] = _optional()


class RateLimitCounts(_Answer):
    hits: Count
    blocked: Count


class MetricsSummary(_Answer):
    """`GET /api/agent/rebalance/metrics`: counts over `days` UTC days, times in ms, gauges now."""

    days: Annotated[int, Field(ge=1, le=7)]
    generatedAt: str = Field(json_schema_extra={"format": "date-time"})
    totalJobs: Count
    failedJobs: Count
    avgExecutionTime: Millis
    p95ExecutionTime: Millis
    rateLimit: RateLimitCounts
    succeededJobs: Count
    retriedJobs: Count
    deadJobs: Count
    cancelledJobs: Count
    expiredJobs: Count
    executions: Count
    p50ExecutionTime: Millis
    p99ExecutionTime: Millis
    queueDepth: Count
    inFlight: Count
    retryingJobs: Count
    deadLetterDepth: Count
    oldestQueuedAgeSeconds: Annotated[float, Field(ge=0)]


class ErrorDetail(_Answer):
    """One bad field of a request: where it is (`loc`, from the body's top) and why."""

    loc: list[str | int]
    msg: str


class ErrorInfo(_Answer):
    code: str = Field(description="Stable, machine-readable: `validation_error`, ...")
    message: str
    details: list[ErrorDetail] | SkipJsonSchema[None] = _optional(
        "On a 422 of the request body: one entry per bad field."
    )


class ErrorResponse(_Answer):
    """Every error this API answers."""

    error: ErrorInfo


class GatewayMessage(BaseModel):
    """What API Gateway itself answers (throttling, authorizer refusal, unknown route)."""

    message: str


SCHEMA_MODELS: tuple[type[BaseModel], ...] = (
    RebalanceRequest,
    Accepted,
    JobStatusView,
    MetricsSummary,
    ErrorResponse,
    GatewayMessage,
)


def parse_request(payload: Any) -> dict[str, Any]:
    """The validated rebalance request as its payload dict, or `core.errors.ValidationError`
    whose `details` name each bad field once."""
    from pydantic import ValidationError as PydanticError

    from core.errors import ValidationError

    try:
        return RebalanceRequest.model_validate(payload).to_payload()
    except PydanticError as exc:
        details = problems(exc)
        fields = ", ".join(".".join(str(part) for part in d["loc"]) or "body" for d in details)
        raise ValidationError(f"invalid request body: {fields}", details=details) from None


def problems(exc: Any) -> list[dict[str, Any]]:
    """pydantic's errors as `[{"loc", "msg"}]`, one per location, in the order found."""
    seen: dict[tuple[str | int, ...], str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(error["loc"])
        msg = str(error["msg"])
        if error["type"] == "value_error":
            msg = str(error.get("ctx", {}).get("error", msg))  # without "Value error, "
        if loc and loc[-1] == "[key]":  # the key itself is bad, not its value
            loc, msg = loc[:-1], f"invalid key: {msg}"
        seen.setdefault(loc, msg)
    return [{"loc": list(loc), "msg": msg} for loc, msg in seen.items()]
