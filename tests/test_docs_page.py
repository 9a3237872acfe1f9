"""GET /docs: Swagger UI, served by the service itself, renders every route in a real browser."""

import base64
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from booking import create_app
from booking.config import Config
from booking.http.openapi import build_spec
from harness import skip_or_fail

PATHS = list(build_spec(create_app(Config(database_url="postgresql://127.0.0.1:1/x")))["paths"])


def chromium(url: str, profile: Path, *args: str) -> str:
    """Headless Chromium that can reach 127.0.0.1 only: the page must work offline."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        skip_or_fail("chromium is not installed (apt-get install chromium)")
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=20000",
        *args,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_the_page_loads_only_its_own_assets(server):
    page = requests.get(f"{server.url}/docs", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    links = re.findall(r'(?:src|href|url:)\s*=?\s*"([^"]+)"', page.text)
    assert links and all(link.startswith(("/docs/assets/", "/openapi.json")) for link in links)
    for link in links:
        assert requests.get(f"{server.url}{link}", timeout=10).status_code == 200, link


def test_unknown_asset_is_json_404(server):
    response = requests.get(f"{server.url}/docs/assets/..%2F..%2Fsetup.cfg", timeout=10)
    assert response.status_code == 404 and response.json() == {"error": "not_found"}


def test_the_rendered_page_lists_every_route(server, tmp_path):
    dom = chromium(f"{server.url}/docs", tmp_path / "profile", "--dump-dom")
    shown = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert shown == set(PATHS)
    assert "Booking API" in dom


def test_screenshot_of_the_page(server, tmp_path):
    """The README's docs/docs-page.png is taken the same way."""
    png = tmp_path / "docs-page.png"
    chromium(
        f"{server.url}/docs", tmp_path / "profile", "--window-size=1280,1500", f"--screenshot={png}"
    )
    image = png.read_bytes()
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    # A blank page compresses to a few kilobytes; the rendered one is far richer.
    assert len(image) > 40_000


DOCS_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@pytest.mark.parametrize(
    "path", ["/docs", "/docs/assets/swagger-ui.css", "/docs/assets/swagger-ui-bundle.js"]
)
def test_the_page_and_its_assets_carry_security_headers(server, path):
    response = requests.get(f"{server.url}{path}", timeout=10)
    assert response.status_code == 200
    assert {name: response.headers[name] for name in DOCS_HEADERS} == DOCS_HEADERS
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "http" not in policy  # this origin only


def test_the_inline_script_is_the_one_the_policy_allows(server):
    page = requests.get(f"{server.url}/docs", timeout=10)
    (script,) = re.findall(r"<script>(.*?)</script>", page.text, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "name", ["index.html", "swagger-initializer.js", "swagger-ui.js", "oauth2-redirect.html"]
)
def test_only_the_files_the_page_needs_are_served(server, name):
    response = requests.get(f"{server.url}/docs/assets/{name}", timeout=10)
    assert (response.status_code, response.json()) == (404, {"error": "not_found"})
