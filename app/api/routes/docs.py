"""The OpenAPI docs, served to everyone, to admins only, or not at all (DOCS_ACCESS)."""

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from app.api.auth import require_admin
from app.config import DocsAccess


def docs_router(access: DocsAccess) -> APIRouter | None:
    if access is DocsAccess.OFF:
        return None
    dependencies = [Depends(require_admin)] if access is DocsAccess.ADMIN else []
    router = APIRouter(include_in_schema=False, dependencies=dependencies)

    @router.get("/openapi.json")
    async def openapi(request: Request) -> dict[str, Any]:
        app: FastAPI = request.app
        return app.openapi()

    @router.get("/docs")
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="seedance-bff API")

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="seedance-bff API")

    return router
