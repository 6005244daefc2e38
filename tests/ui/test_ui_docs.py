"""The API documentation pages in a real browser against `realname serve`: they render the
operations with every request staying on the service's own origin, under a strict CSP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from app.runtime import Runtime
from tests.support import serve
from tests.ui.test_ui_admin import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(runtime.settings, log_path=tmp_path_factory.mktemp("docs") / "serve.log") as base:
        yield base


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    context.set_default_timeout(20_000)
    yield await context.new_page()
    await context.close()


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("/docs", "#operations-verifications-create_verification_v1_verifications_post"),
        ("/redoc", 'h2:has-text("Start verifying an end user")'),
    ],
)
async def test_docs_render_offline_under_the_csp(
    server: str, page: Page, path: str, operation: str
) -> None:
    """/docs and /redoc show the operations, load nothing from another origin, and break no
    rule of their Content-Security-Policy."""
    requested: list[str] = []
    console_errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)

    response = await page.goto(server + path)
    await expect(page.locator(operation).first).to_be_visible()

    assert response is not None
    assert "default-src 'self'" in response.headers["content-security-policy"]
    foreign = [url for url in requested if not url.startswith((server + "/", "data:", "blob:"))]
    assert foreign == []
    assert [e for e in console_errors if "Content Security Policy" in e] == []


def test_assets_come_from_the_installed_package() -> None:
    """The Swagger UI and ReDoc bundles are files of an installed package, not of this repo."""
    from app.routers.docs import ASSETS

    repo = Path(__file__).resolve().parents[2]
    bundles = [ASSETS[n] for n in ("swagger-ui-bundle.js", "redoc.standalone.js")]
    assert all(p.is_file() and not p.is_relative_to(repo / "app") for p in bundles)
