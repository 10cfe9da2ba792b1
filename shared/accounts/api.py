"""The accounts API: GET /v1/usage for the caller (admin keys: every key) and the admin API
for keys, in one JSON error envelope {"error": {message, type, code, request_id}}."""
from __future__ import annotations

import datetime as dt

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shared.accounts import access
from shared.dialects.base import check_key, dialect_route, header_key, owner, read_fields
from shared.errors import (FieldError, Forbidden, NotFound, SdgateError, ValidationFailed,
                           status_of)

MAX_RECORDS = 1000


def render_error(err: SdgateError) -> JSONResponse:
    from shared.observability import request_id

    return JSONResponse({"error": {"message": err.message, "type": type(err).__name__,
                                   "code": err.code, "param": err.param,
                                   "request_id": request_id() or None}},
                        status_code=status_of(err))


router = APIRouter(route_class=dialect_route(render_error), tags=["accounts: usage and keys"])


def _db(request: Request) -> str:
    url = request.app.state.settings.database_url
    if not url:
        raise NotFound("usage records and stored keys need a database: set SDGATE_DATABASE_URL")
    return url


def _admin(request: Request) -> str:
    check_key(request, header_key(request))
    url = _db(request)
    if not access.is_admin(request):
        raise Forbidden("this route needs an admin key (scope admin, or SDGATE_ADMIN_KEYS)")
    return url


def parse_time(name: str, text: str | None, end: bool = False) -> dt.datetime | None:
    """An ISO date or datetime (UTC unless it says otherwise); a bare date as `until` means
    the end of that day."""
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise ValidationFailed(f"{name}: not an ISO date or datetime: {text!r}", param=name,
                               fields=[FieldError(name, "not an ISO date or datetime")]) from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    if end and len(text) == 10:
        t += dt.timedelta(days=1)
    return t


def daily(rows) -> list[dict]:
    """Per UTC day: generations, images delivered and GPU-seconds (the operator page's chart)."""
    days: dict[str, dict] = {}
    for r in rows:
        day = r.started_at.date().isoformat()
        d = days.setdefault(day, {"day": day, "generations": 0, "images": 0, "gpu_seconds": 0.0})
        d["generations"] += 1
        d["gpu_seconds"] = round(d["gpu_seconds"] + (r.gpu_seconds or 0.0), 4)
        if r.status == "ok":
            d["images"] += r.images
    return sorted(days.values(), key=lambda d: d["day"])


@router.get("/v1/usage")
async def get_usage(request: Request, since: str | None = None, until: str | None = None,
                    key_id: str | None = None, limit: int = 100):
    """The caller's usage records (newest first, at most `limit`) and totals over the whole
    range; an admin key sees every key's, or `key_id`'s."""
    check_key(request, header_key(request))
    url = _db(request)
    if key_id is not None and key_id != owner(request) and not access.is_admin(request):
        raise Forbidden("only an admin key may read another key's usage")
    who = key_id if key_id is not None else (None if access.is_admin(request) else owner(request))
    start, end = parse_time("since", since), parse_time("until", until, end=True)
    limit = max(1, min(limit, MAX_RECORDS))
    from shared.accounts import usage

    rows = await anyio.to_thread.run_sync(lambda: usage.query(url, who, start, end))
    return {"object": "usage", "key_id": who, "since": start and start.isoformat(),
            "until": end and end.isoformat(), "totals": usage.totals(rows),
            "daily": daily(rows), "data": [usage.as_dict(r) for r in rows[:limit]],
            "has_more": len(rows) > limit}


def _key(rec) -> dict:
    from shared.accounts import store

    out = {"id": rec.id, "name": rec.name, "status": rec.status, "scopes": rec.scope_list(),
           "created_at": rec.created_at.isoformat()}
    out.update({n: getattr(rec, n) for n in store.LIMITS})
    return out


@router.get("/v1/admin/keys")
async def list_keys(request: Request):
    url = _admin(request)
    from shared.accounts import store

    return {"object": "list", "data": [_key(r) for r in store.list_keys(url)]}


def _limits(data: dict) -> dict:
    from shared.accounts import store

    limits = {n: data[n] for n in store.LIMITS if n in data}
    for n, v in limits.items():
        ok = v is None or (v in ("day", "month") if n == "quota_period" else
                           isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0)
        if not ok:
            raise ValidationFailed(f"{n}: invalid value {v!r}", param=n,
                                   fields=[FieldError(n, "invalid value")])
    return limits


@router.post("/v1/admin/keys")
async def create_key(request: Request):
    """A new key: {name, scopes: [...], limits...}; its secret is in this answer only."""
    url = _admin(request)
    from shared.accounts import store

    data = await read_fields(request)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("name: required", param="name", fields=[FieldError("name",
                                                                                   "required")])
    scopes = data.get("scopes") or []
    try:
        scopes = access.parse_scopes(",".join(scopes) if isinstance(scopes, list) else scopes)
    except (TypeError, ValueError) as e:
        raise ValidationFailed(f"scopes: {e}", param="scopes",
                               fields=[FieldError("scopes", str(e))]) from e
    limits = _limits(data)
    secret, rec = store.create(url, name.strip(), scopes)
    if limits:
        store.set_limit(url, rec.id, **limits)
    return {**_key(store.get(url, rec.id)), "key": secret}


@router.patch("/v1/admin/keys/{kid}")
async def update_key(request: Request, kid: str):
    """Change limits: any of rpm, max_concurrent, quota_images, quota_gpu_seconds,
    quota_period (null: unlimited)."""
    url = _admin(request)
    from shared.accounts import store

    if not store.set_limit(url, kid, **_limits(await read_fields(request))):
        raise NotFound(f"no key {kid}")
    return _key(store.get(url, kid))


@router.delete("/v1/admin/keys/{kid}")
async def revoke_key(request: Request, kid: str):
    url = _admin(request)
    from shared.accounts import store

    if not store.revoke(url, kid):
        raise NotFound(f"no key {kid}")
    return _key(store.get(url, kid))
