"""The operator page at `/`: a playground, recent jobs, and keys and usage for admin keys.

One HTML document (plain HTML and JS in page.py, no build step) that calls the server's own
APIs with the key typed into it: A1111 txt2img + progress to generate, /v1/usage for the jobs,
/v1/admin/keys for the keys.
"""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from shared.console.page import HTML

router = APIRouter()


@router.get("/", include_in_schema=False)
def operator_page() -> HTMLResponse:
    return HTMLResponse(HTML,
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": "default-src 'self'; "
                                 "img-src 'self' data: blob: http: https:; "
                                 "style-src 'self' 'unsafe-inline'; "
                                 "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"})
