"""``GET /openapi.json`` and ``GET /docs``: Swagger UI from the ``swagger_ui_bundle`` package, no CDN.

The page and its assets come from the installed package (``swagger-ui-bundle-v2``, Swagger UI
5.x, which renders OpenAPI 3.1), so the docs work offline.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from flask import Blueprint, Response, current_app, send_from_directory
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import NotFound

from .openapi import DOCS_ASSETS, build_spec, spec_version

bp = Blueprint("docs", __name__)
ASSETS = Path(str(swagger_ui_path))

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Ride duration API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js" charset="utf-8"></script>
  <script src="docs/swagger-initializer.js" charset="utf-8"></script>
</body>
</html>
"""

# Relative URLs: the page works behind a path prefix too. A file, not inline, so a strict CSP fits.
INITIALIZER = """window.onload = function () {
  window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true,
                               layout: "BaseLayout", presets: [SwaggerUIBundle.presets.apis],
                               displayRequestDuration: true});
};
"""


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI 3.1 document (built once per process and serving model version)."""
    version = spec_version(current_app)
    cached = current_app.extensions.get("openapi_json")
    if cached is None or cached[0] != version:
        cached = current_app.extensions["openapi_json"] = (version, orjson.dumps(build_spec(current_app)))
    return Response(cached[1], mimetype="application/json")


@bp.get("/docs")
def docs_page() -> Response:
    return Response(PAGE, mimetype="text/html")


@bp.get("/docs/<filename>")
def docs_asset(filename: str) -> Response:
    """Only the page's own assets (the package's demo page would load a remote spec)."""
    if filename not in DOCS_ASSETS:
        raise NotFound("not an asset of the API page")
    if filename == "swagger-initializer.js":
        return Response(INITIALIZER, mimetype="text/javascript")
    response = send_from_directory(ASSETS, filename, max_age=86400)
    if filename.endswith(".js"):
        response.mimetype = "text/javascript"
    return response
