"""One error hierarchy for every API shape, and the one table of HTTP statuses.

    SdgateError
     +-- InvalidRequest            a request the user can fix
     |    +-- ValidationFailed     one or more fields out of range / missing
     |    +-- BadImage             not a PNG/JPEG/WebP, broken base64, too many pixels
     |    +-- Unsupported          a feature sdgate refuses rather than ignores
     |    +-- UrlRefused           a webhook / image URL aimed at a private address (SSRF)
     +-- Unauthorized              missing or wrong API key
     +-- Forbidden                 a valid key without the scope this route needs
     +-- NotFound
     |    +-- ModelNotFound
     |    +-- SamplerNotFound
     |    +-- JobNotFound
     +-- PayloadTooLarge           request body over the limit
     +-- RateLimited               spam filter, requests per minute, concurrent jobs
     |    +-- QuotaExceeded        the key's image / GPU-second quota for the period is spent
     +-- StorageFailed             the upload did not happen; no URL is returned
     +-- GenerationFailed          the engine broke; the user did nothing wrong
     +-- Unavailable               overloaded or shutting down
     +-- Interrupted               stopped by an interrupt before it finished
     +-- ClientGone                the client disconnected (never read)

Dialects never pick statuses themselves: they render `status_of(err)` in their own envelope.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FieldError:
    """One invalid field: its dotted location and a human message."""

    field: str
    message: str


class SdgateError(Exception):
    """Base of every error sdgate reports to a client."""

    code = "error"

    def __init__(self, message: str, *, param: str | None = None,
                 fields: list[FieldError] | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.fields = fields or []
        self.retry_after = retry_after  # seconds: rendered as a Retry-After header (429 / 503)


class InvalidRequest(SdgateError):
    """A request the user can fix."""

    code = "invalid_request"


class ValidationFailed(InvalidRequest):
    """One or more fields are missing or out of range."""

    code = "validation_error"


class BadImage(InvalidRequest):
    """An input image that is not a decodable, acceptable image."""

    code = "invalid_image"


class Unsupported(InvalidRequest):
    """A feature sdgate does not offer here; refused, never silently ignored."""

    code = "unsupported"


class UrlRefused(InvalidRequest):
    """An outbound URL that resolves to a loopback, private or otherwise non-public address."""

    code = "url_refused"


class Unauthorized(SdgateError):
    """Missing or wrong API key."""

    code = "invalid_api_key"


class Forbidden(SdgateError):
    """A valid key that may not use this API shape or route (its scopes)."""

    code = "permission_denied"


class NotFound(SdgateError):
    """A named thing that does not exist."""

    code = "not_found"


class ModelNotFound(NotFound):
    """Unknown model / checkpoint name."""

    code = "model_not_found"


class SamplerNotFound(NotFound):
    """Unknown sampler or scheduler name."""

    code = "sampler_not_found"


class JobNotFound(NotFound):
    """Unknown job id."""

    code = "job_not_found"


class PayloadTooLarge(SdgateError):
    """The request body is over the configured limit."""

    code = "payload_too_large"


class RateLimited(SdgateError):
    """Too many requests, or the same request repeated too soon."""

    code = "rate_limited"


class QuotaExceeded(RateLimited):
    """The key's quota for this day or month is used up (429, OpenAI's insufficient_quota);
    Retry-After is the time until the period resets."""

    code = "insufficient_quota"


class StorageFailed(SdgateError):
    """Uploading a result failed; the request fails rather than return a dead URL."""

    code = "storage_error"


class GenerationFailed(SdgateError):
    """The engine failed for a reason that is not the user's."""

    code = "generation_failed"


class Unavailable(SdgateError):
    """The service cannot take the request now."""

    code = "unavailable"


class Interrupted(SdgateError):
    """The generation was interrupted (A1111 /interrupt) before it finished; shapes without a
    way to mark partial images fail with this rather than report them as a success."""

    code = "interrupted"


class ClientGone(SdgateError):
    """The client disconnected; its work was interrupted and nobody reads this answer."""

    code = "client_disconnected"


# The one status table: the most specific class listed wins (looked up along the MRO).
STATUS: dict[type[SdgateError], int] = {
    SdgateError: 500,
    InvalidRequest: 400,
    ValidationFailed: 422,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    PayloadTooLarge: 413,
    RateLimited: 429,
    StorageFailed: 502,
    GenerationFailed: 500,
    Unavailable: 503,
    Interrupted: 409,
    ClientGone: 499,
}


def status_of(err: SdgateError) -> int:
    """HTTP status for an error, from the one table."""
    for cls in type(err).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def from_pydantic(exc, prefix: str = "") -> ValidationFailed:
    """Turn a pydantic ValidationError (or FastAPI's) into ValidationFailed with per-field errors."""
    fields = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "form")]
        name = ".".join(loc) or "body"
        msg = e.get("msg", "invalid value")
        if e.get("type") == "missing":
            msg = "field required"
        fields.append(FieldError(prefix + name, msg))
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields) or "invalid request"
    return ValidationFailed(summary, param=fields[0].field if fields else None, fields=fields)


class ModerationBlocked(InvalidRequest):
    """The safety checker flagged an image where the API refuses rather than replaces it (OpenAI)."""

    code = "moderation_blocked"
