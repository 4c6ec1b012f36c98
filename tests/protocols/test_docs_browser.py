"""``/docs`` in a real browser: Debian's headless Chromium runs a predict call from the page, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import BUNDLED
from tests.support import running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running(tmp_path_factory, {"MODEL_PATH": str(BUNDLED / "lin_reg.bin")}, workers=1) as srv:
        yield srv


@pytest.fixture
def page(tmp_path, server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # a persistent context is how Playwright takes a fresh --user-data-dir
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            page.outside = []  # type: ignore[attr-defined]

            def only_our_server(route):
                if route.request.url.startswith(server.url + "/"):
                    return route.continue_()
                page.outside.append(route.request.url)  # type: ignore[attr-defined]
                return route.abort()

            context.route("**/*", only_our_server)  # offline: anything not from the service fails
            yield page
        finally:
            context.close()


def test_predict_from_the_docs_page(server, page):
    page.goto(server.url + "/docs")
    operation = page.locator("#operations-Predict-predict")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    body = operation.locator("textarea.body-param__text")
    example = json.loads(body.input_value())
    assert example == {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.01}
    operation.locator("button.execute").click()

    result = operation.locator(".live-responses-table .response .response-col_description pre")
    result.first.wait_for()
    status = operation.locator(".live-responses-table .response .response-col_status").first.inner_text()
    answer = json.loads(result.first.inner_text())
    assert status.strip() == "200"
    assert set(answer) == {"duration", "model_version"}
    assert 0 < answer["duration"] < 120
    assert page.outside == []  # type: ignore[attr-defined]
    assert page.locator(".errors-wrapper").count() == 0
