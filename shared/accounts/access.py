"""What a stored key may do: its scopes (API shapes, admin) and its requests-per-minute."""
from __future__ import annotations

from shared.errors import Forbidden

ADMIN = "admin"
# the scopes a key can hold: one per API shape (shared.observability.shape_of), and admin
SHAPES = ("a1111", "reactor", "modelslab", "openai", "draw", "form")


def parse_scopes(text: str | None) -> list[str]:
    """A comma-separated scope list, every name checked (a typo would lock a customer out)."""
    scopes = [x.strip() for x in (text or "").split(",") if x.strip()]
    bad = [x for x in scopes if x not in SHAPES + (ADMIN,)]
    if bad:
        raise ValueError(f"unknown scope(s) {bad}; choose from {', '.join(SHAPES + (ADMIN,))}")
    return scopes


def allows(scopes: list[str], shape: str) -> bool:
    """No shape scope means every shape; "admin" alone does not narrow the shapes."""
    shapes = [s for s in scopes if s != ADMIN]
    return shape not in SHAPES or not shapes or shape in shapes


def admit_stored(request, presented: str) -> bool:
    """For check_key: True when `presented` is an active stored key allowed on this route
    (its shape scope, its requests per minute); False when the database does not know it."""
    from shared.accounts import ratelimit, store
    from shared.observability import shape_of

    import hmac

    settings = request.app.state.settings
    if any(hmac.compare_digest(presented.encode(), k.encode()) for k in settings.admins()):
        request.state.key_scopes = [ADMIN]
        return True
    rec = store.resolve(settings.database_url, presented)
    if rec is None:
        return False
    shape = shape_of(request.url.path)
    if not allows(rec.scope_list(), shape):
        raise Forbidden(f"this API key may not use the {shape} API (its scopes: {rec.scopes})")
    request.state.key_scopes = rec.scope_list()
    ratelimit.hit_shared(settings.database_url, rec.id, rec.rpm)  # across containers
    return True


def is_admin(request) -> bool:
    """Whether the caller (already through check_key) holds an admin key: a stored key with
    the admin scope, or one of SDGATE_ADMIN_KEYS."""
    return ADMIN in getattr(request.state, "key_scopes", ())
