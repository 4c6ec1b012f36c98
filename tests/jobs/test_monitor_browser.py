"""``report.html`` in a real browser: headless Chromium shows the drift table and Evidently's report, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from ride_duration.__main__ import main
from tests.conftest import BUNDLED
from tests.protocols.test_docs_browser import CHROMIUM, FLAGS
from tests.synthetic import write_month

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason="needs Debian's chromium (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    old = write_month(base / "old.parquet", n=3000, seed=1)
    new = write_month(base / "new.parquet", n=3000, seed=3, zones=45, slope=4.0)
    out = base / "report"
    assert main(["monitor", "--reference", str(old), "--current", str(new), "--report-dir", str(out),
                 "--model-path", str(BUNDLED / "lin_reg.bin")]) == 0
    return out


def test_report_html_shows_the_drift_table_and_evidently(report_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            def local_only(route):
                if route.request.url.startswith("file://"):
                    return route.continue_()
                outside.append(route.request.url)
                return route.abort()

            context.route("**/*", local_only)
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            page.goto((report_dir / "report.html").as_uri())
            assert page.locator("#verdict").inner_text() == "Drift detected"
            rows = page.locator("#drift-table tbody tr")
            assert rows.count() == 4
            cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(4)]
            assert [c[0] for c in cells] == ["PULocationID", "DOLocationID", "trip_distance", "prediction"]
            assert cells[0][1] == "Jensen-Shannon distance" and cells[0][4] == "yes"
            assert "alert" in (rows.nth(0).get_attribute("class") or "")
            assert page.locator("#data-quality-table tbody tr").count() >= 5
            # Evidently's own page (a React app, inlined) renders inside the frame
            frame = page.frame_locator("iframe")
            frame.get_by_text("PULocationID").first.wait_for()
            assert frame.locator("svg").first.is_visible()
        finally:
            context.close()
    assert outside == []
