"""The description and its page: GET /openapi.json, GET /docs (Swagger UI, served from the
swagger-ui-bundle package, no CDN) and GET /, which links to both."""

import base64
import hashlib

from flask import Blueprint, Response, send_from_directory, url_for
from marshmallow import fields, validate
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import NotFound

from booking.http import apidoc
from booking.http.openapi import get_spec
from booking.http.schemas import ResponseSchema
from booking.resources import Resource

# Named "openapi" as it always was: its endpoints name its operations in /openapi.json.
bp = Blueprint("openapi", __name__)


class LinksSchema(ResponseSchema):
    docs = fields.String(required=True, validate=validate.OneOf(["/docs"]))
    openapi = fields.String(required=True, validate=validate.OneOf(["/openapi.json"]))


@bp.get("/")
@apidoc.doc("Where to start: the docs page and this description", tag="service", database=False)
@apidoc.response(200, "Links.", LinksSchema)
def index() -> dict:
    return {"docs": url_for("openapi.docs"), "openapi": url_for("openapi.spec")}


@bp.get("/openapi.json")
@apidoc.doc("This OpenAPI description", tag="service", database=False)
@apidoc.other_responses(
    {200: {"description": "OpenAPI 3.", "content": {apidoc.JSON: {"schema": {"type": "object"}}}}}
)
def spec() -> dict:
    return get_spec()


DOCS_SCRIPT = (
    'SwaggerUIBundle({{url: "{spec}", dom_id: "#swagger-ui", validatorUrl: null,\n'
    "                  deepLinking: true, defaultModelsExpandDepth: 0}});"
)

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Booking API</title>
  <link rel="stylesheet" href="{css}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{js}"></script>
  <script>{script}</script>
</body>
</html>
"""

# The only files of swagger-ui-bundle the page loads; the rest of the package (its own
# index.html, which fetches a spec from another host) is not served.
DOCS_ASSETS = {"swagger-ui.css", "swagger-ui-bundle.js"}


def _content_security_policy(script: str) -> str:
    """Only this origin, and of inline scripts only the page's own (by its hash)."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return (
        f"default-src 'none'; script-src 'self' 'sha256-{digest}'; "
        # Swagger UI sets style attributes and draws its icons as data: images.
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@bp.after_request
def _docs_headers(response: Response) -> Response:
    """The spec, the page and its assets: not to be sniffed, framed or mixed with others."""
    script = DOCS_SCRIPT.format(spec=url_for("openapi.spec"))
    response.headers["Content-Security-Policy"] = _content_security_policy(script)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    return response


@bp.get("/docs")
@apidoc.doc("This description rendered by Swagger UI", tag="service", database=False)
@apidoc.other_responses(
    {
        200: {
            "description": "An HTML page.",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    }
)
def docs() -> Response:
    page = DOCS_PAGE.format(
        css=url_for("openapi.docs_asset", filename="swagger-ui.css"),
        js=url_for("openapi.docs_asset", filename="swagger-ui-bundle.js"),
        script=DOCS_SCRIPT.format(spec=url_for("openapi.spec")),
    )
    return Response(page, mimetype="text/html")


@bp.get("/docs/assets/<path:filename>")
def docs_asset(filename: str) -> Response:
    """Swagger UI's files from the swagger-ui-bundle package: the page works offline."""
    if filename not in DOCS_ASSETS:
        raise NotFound()
    return send_from_directory(swagger_ui_path, filename, max_age=86400)


RESOURCE = Resource(bp)
