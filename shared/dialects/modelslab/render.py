"""Seed 003 response bodies: success, processing (with the misspelt `messege`), failed, errors.

Clients branch on `status` ("success" | "processing" | "error" | "failed"). Answers (success,
processing, a fetched job, failed ones included) are HTTP 200; a refused request carries the
standard HTTP code the seed promises ("使用标准的 HTTP 响应代码") with upstream's codes as
docs.modelslab.com/error-codes lists them: 400 invalid parameters, 401 key, 404 unknown request id
or path, 413 body too large, 429 rate limit, 500 server error, 503 unavailable.
"""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse

from shared.accounts.metering import gpu_seconds
from shared.errors import (InvalidRequest, ModelNotFound, NotFound, PayloadTooLarge, RateLimited,
                           SdgateError, Unauthorized, status_of)
from shared.jobrunner import register_payload
from shared.jobs import Job, JobStatus

DIALECT = "modelslab"

# The seed's exact bodies.
RATE_LIMIT = {
    "status": "error",
    "message": "Rate limit exceeded",
    "tips": "you are sending same request multiple times, spam filter is enabled, please wait "
            "for 30 seconds and try again",
}
INVALID_KEY = {
    "status": "error",
    "message": "Invalid Api Key",
    "tip": "1. Make sure you are passing Content-Type: application/json in header. 2. Make sure "
           "you are doing POST request with valid JSON. 3. Make sure your JSON does not have "
           "error, use jsonlint to validate json array. 4. Make sure you have valid API key.",
}
FAILED = {"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""}
MODEL_NOT_FOUND = {"status": "error", "message": "Model id not found"}
REQUEST_NOT_FOUND = {"status": "error", "message": "Request not found"}

MESSEGE = "Try to fetch request after given estimated time"  # sic: upstream's field and text
# engine fields a refusal names -> the upstream field the client sent
PARAMS = {"token_merging_ratio": "tomesd"}
TIP = ("Your image is processing in background, you can get this image using fetch API: "
       "POST {fetch} with your key")


def error_body(err: SdgateError) -> dict:
    """The upstream body for an error: the seed's fixed ones, else {status:"error", message}."""
    if isinstance(err, Unauthorized):
        return INVALID_KEY
    if isinstance(err, RateLimited):  # the spam filter's fixed body; key limits say which
        return RATE_LIMIT if err.message == RATE_LIMIT["message"] else {
            "status": "error", "message": err.message}
    if isinstance(err, ModelNotFound):
        return MODEL_NOT_FOUND
    if isinstance(err, (InvalidRequest, NotFound, PayloadTooLarge)):
        if err.fields:
            message: dict[str, list[str]] = {}
            for f in err.fields:
                message.setdefault(f.field, []).append(f.message)
            return {"status": "error", "message": message}
        if err.param:
            return {"status": "error",
                    "message": {PARAMS.get(err.param, err.param): [err.message]}}
        return {"status": "error", "message": err.message}
    return FAILED


def status(err: SdgateError) -> int:
    """The HTTP code of a refusal: the one table (shared/errors.py), except that every bad
    parameter is upstream's 400 (the table's 422 for field errors), a bad model_id included
    (upstream's generation routes document 400, not 404)."""
    if isinstance(err, (InvalidRequest, ModelNotFound)):
        return 400
    return status_of(err)


def render_error(err: SdgateError) -> JSONResponse:
    return JSONResponse(error_body(err), status_code=status(err))


def _id(job: Job) -> int | str:
    return int(job.id) if job.id.isdigit() else job.id


def meta(job: Job) -> dict:
    """Upstream's `meta`: the request's parameters as run, with the seed and model filled in."""
    out = dict(job.request.get("meta", {}))
    if job.result:
        out["seed"] = job.result.get("seed", out.get("seed"))
        out["model"] = job.result.get("model", out.get("model"))
        out["nsfw_content_detected"] = [i.get("nsfw", False) for i in job.result["images"]]
        ran = {"steps": "steps", "guidance": "guidance_scale", "sampler": "scheduler"}
        for name in job.result.get("model_defaults") or []:  # a distilled model's own values
            if job.result.get(name) is not None:
                out[ran[name]] = job.result[name]
    return out


def _success(job: Job) -> dict:
    urls = [i["url"] for i in job.result["images"]]
    timings = job.result.get("timings", {})
    return {
        "status": "success",
        "generationTime": gpu_seconds(timings),  # the usage record's measure
        "id": _id(job),
        "output": job.images_base64 if job.keep_bytes else urls,
        "proxy_links": urls,
        "nsfw_content_detected": any(i.get("nsfw") for i in job.result["images"]),
        "webhook_status": job.webhook_status or "",
        "meta": meta(job),
    }


def _failed(job: Job) -> dict:
    return {**FAILED, "id": _id(job), "error": job.error or ""}


def _processing(job: Job, now: float | None = None) -> dict:
    fetch = job.request.get("fetch_result", "")
    left = max(1.0, job.created + job.eta - (now or time.time()))
    return {
        "status": "processing",
        "tip": TIP.format(fetch=fetch),
        "eta": round(left, 2),
        "messege": MESSEGE,
        "fetch_result": fetch,
        "id": _id(job),
        "output": [],
        "meta": meta(job),
        "future_links": job.future_links,
    }


def job_body(job: Job) -> dict:
    """A job's current state in upstream's shape."""
    if job.status is JobStatus.success:
        return _success(job)
    if job.status is JobStatus.failed:
        return _failed(job)
    return _processing(job)


@register_payload(DIALECT)
def webhook_payload(job: Job) -> dict:
    """The webhook body: the fetch answer plus the caller's track_id."""
    return {**job_body(job), "track_id": job.track_id}
