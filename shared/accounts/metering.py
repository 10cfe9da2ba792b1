"""Metering: one usage record per generation in every API shape, whatever its outcome
(ok, failed, refused, interrupted), and the per-key concurrency and quota checks made when a
generation is admitted. Records need SDGATE_DATABASE_URL; the Prometheus counters do not."""
from __future__ import annotations

import contextlib
import time

import anyio

from shared.errors import (ClientGone, Forbidden, InvalidRequest, Interrupted, NotFound,
                           PayloadTooLarge, RateLimited, SdgateError, Unauthorized, Unavailable)
from shared.generation import GenerationRequest, GenerationResult

NOT_SECONDS = ("batch", "queue", "upload")  # timings that are not the worker's GPU time
REFUSALS = (InvalidRequest, NotFound, RateLimited, Unavailable, Unauthorized, Forbidden,
            PayloadTooLarge)


def gpu_seconds(timings: dict) -> float:
    """Seconds the worker spent on the generation (load, inference, decode/encode, hires...):
    the measure behind usage records, GPU-second quotas, OpenAI's `usage` and ModelsLab's
    `generationTime`. Not the batch size, the queue wait or the upload."""
    return round(sum(v for k, v in timings.items() if k not in NOT_SECONDS), 4)


def outcome(err: BaseException) -> str:
    """The usage result of a generation that raised `err`."""
    if isinstance(err, (Interrupted, ClientGone)):
        return "interrupted"
    if isinstance(err, REFUSALS):
        return "refused"
    return "failed"


def _url(request) -> str:
    return request.app.state.settings.database_url


def _fields(request, internal: GenerationRequest) -> dict:
    from shared.admission import work
    from shared.observability import shape_of

    return {"task_id": internal.task_id, "key_id": internal.owner or "",
            "shape": shape_of(request.url.path), "route": request.url.path[:200],
            "model": internal.model or "", "images": internal.num_images,
            "width": internal.width, "height": internal.height, "steps": internal.steps,
            "pixels": internal.num_images * internal.width * internal.height,
            "pixel_steps": work(internal),
            "request_id": getattr(request.state, "request_id", "") or ""}


async def begin(request, internal: GenerationRequest) -> None:
    """The generation starts: its key's concurrency and quota are checked (a refusal raises,
    429, recorded as refused) and its `running` record written."""
    request.state.meter_t0 = time.perf_counter()
    url = _url(request)
    if not url:
        return
    from shared.accounts import usage

    stale = request.app.state.settings.job_timeout_seconds + 60  # a crashed run stops counting
    try:
        await anyio.to_thread.run_sync(usage.begin, url, _fields(request, internal), stale)
    except RateLimited as e:
        _count(request.app, _fields(request, internal)["shape"], internal.model, "refused", e)
        raise


@contextlib.asynccontextmanager
async def refusing(request, internal: GenerationRequest):
    """Around the checks before a generation begins: a refusal is recorded, then re-raised."""
    try:
        yield
    except SdgateError as e:
        await refused(request, internal, e)
        raise


async def refused(request, internal: GenerationRequest, err: SdgateError) -> None:
    """A generation refused before it began (compute budget, unknown model, busy queue)."""
    fields = _fields(request, internal)
    _count(request.app, fields["shape"], internal.model, outcome(err), err)
    url = _url(request)
    if url:
        from shared.accounts import usage

        t = usage.now()
        await anyio.to_thread.run_sync(usage.record, url, {
            **fields, "status": outcome(err), "error_code": err.code,
            "error": err.message[:400], "started_at": t, "finished_at": t})


@contextlib.asynccontextmanager
async def finishing(request, internal: GenerationRequest):
    """Around a begun generation: yields `done(result)`; an exception finishes the record with
    its outcome (and is re-raised), `done` with ok or interrupted and the GPU-seconds."""
    state = {"done": False}

    async def done(result: GenerationResult) -> None:
        state["done"] = True
        status = "interrupted" if result.interrupted else "ok"
        await _finish(request, internal, status, result=result)

    try:
        yield done
    except BaseException as e:
        if not state["done"]:
            err = e if isinstance(e, SdgateError) else None
            status = outcome(e) if err is not None else (
                "interrupted" if isinstance(e, anyio.get_cancelled_exc_class()) else "failed")
            with anyio.CancelScope(shield=True):
                await _finish(request, internal, status, err=err)
        raise


async def _finish(request, internal, status: str, result: GenerationResult | None = None,
                  err: SdgateError | None = None) -> None:
    seconds = gpu_seconds(result.timings) if result is not None else 0.0
    images = len(result.images) if result is not None else internal.num_images
    fields = _fields(request, internal)
    _count(request.app, fields["shape"], internal.model if result is None else result.model,
           status, err, images if status == "ok" else 0, seconds)
    url = _url(request)
    if not url:
        return
    from shared.accounts import usage

    t0 = getattr(request.state, "meter_t0", None)
    update = {"status": status, "gpu_seconds": seconds, "images": images,
              "pixels": images * internal.width * internal.height,
              "duration_seconds": round(time.perf_counter() - t0, 4) if t0 else 0.0}
    if result is not None:
        update.update(model=result.model, job_id=result.job_id or "")
    if err is not None:
        update.update(error_code=err.code, error=err.message[:400])
    try:
        await anyio.to_thread.run_sync(lambda: usage.finish(url, internal.task_id, **update))
    except Exception:  # a metering hiccup must not turn a delivered image into an error
        import logging

        logging.getLogger(__name__).exception("usage record of %s", internal.task_id)


def job_finished(app):
    """A JobRunner hook: completes the usage record of a finished background job (ModelsLab's
    processing / fetch flow), wherever it ran (this process or a Modal GPU container)."""
    def hook(job, task_id: str | None) -> None:
        if not task_id:  # not a metered generation (a synchronous operation recorded as a job)
            return
        result = job.result or {}
        ok = job.status.value == "success"
        error = job.error or ""
        status = "ok" if ok else "interrupted" if "interrupted" in error.lower() else "failed"
        seconds = gpu_seconds(result.get("timings", {}))
        images = len(result.get("images", []))
        model = result.get("model") or (job.internal or {}).get("model") or ""
        _count(app, "modelslab", model, status, None, images if ok else 0, seconds)
        url = app.state.settings.database_url
        if not url:
            return
        from shared.accounts import usage

        update = {"status": status, "gpu_seconds": seconds, "job_id": job.id,
                  "duration_seconds": round((job.finished or time.time()) - job.created, 4)}
        if ok:
            update.update(images=images, model=model)
        else:
            update.update(error_code="job_failed", error=error[:400])
        try:
            usage.finish(url, task_id, **update)
        except Exception:
            import logging

            logging.getLogger(__name__).exception("usage record of job %s", job.id)
    return hook


def _count(app, shape: str, model: str | None, status: str, err: SdgateError | None,
           images: int = 0, seconds: float = 0.0) -> None:
    """The Prometheus side of one finished (or refused) generation."""
    m = getattr(app.state, "metrics", None)
    if m is None:
        return
    model = model or "default"
    m.generations.labels(shape, status).inc()
    if err is not None:
        m.errors.labels(err.code).inc()
    if status == "ok":
        m.images.labels(shape, model).inc(images)
        m.generation_seconds.labels(model).observe(seconds)
    if seconds:
        m.gpu_seconds.labels(model).inc(seconds)
