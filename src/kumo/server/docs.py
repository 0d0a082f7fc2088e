"""The API's docs page (Swagger UI), served whole by the server: its JavaScript, CSS and icon
come from the fastapi-offline package, so the page works on a cluster without internet."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = files("fastapi_offline") / "static"


def install(app: FastAPI, url: str) -> None:
    """The page at ``url``, its files under ``url/static``; both open without a token."""
    static = f"{url}/static"
    app.mount(static, StaticFiles(directory=str(ASSETS)), name="docs-static")

    @app.get(url, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "",
            title=f"{app.title} API",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon.png",
            # No badge from the public validator (validator.swagger.io): nothing leaves.
            swagger_ui_parameters={"validatorUrl": None},
        )
