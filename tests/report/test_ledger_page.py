"""submissions/index.html in a real headless Chromium: it loads without console errors, the table has one row per
ledger entry, the plot is a non-empty image; and the page's parts without a browser."""
from __future__ import annotations

import os

import pytest
from PIL import Image

from kit.report import ledger_page
from kit.submit import ledger
from tests.report import browser


def filled_ledger(folder, report=None) -> list[dict]:
    rows = [{"time": "2026-12-02T10:00:00", "run": "scored", "sha256": "1" * 64, "val_log_loss": 0.031,
             "public_score": "0.0350", "private_score": "0.0340", "kaggle_status": "COMPLETE", "report": report},
            {"time": "2026-12-02T11:00:00", "run": "<b>odd & name</b>", "sha256": "2" * 64, "val_log_loss": 0.04},
            {"time": "2026-12-02T12:00:00", "run": "pending", "sha256": "3" * 64, "kaggle_status": "PENDING"}]
    for row in rows:
        ledger.append(folder, row)
    return ledger.read(folder)


def test_the_page_lists_every_row_escaped_and_links_the_runs_report(tmp_path):
    report = tmp_path / "runs" / "scored" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    page = ledger_page.write_page(tmp_path / "subs", filled_ledger(tmp_path / "subs", report))
    text = page.read_text()
    assert text.count("<tr><td>") == 3 and "&lt;b&gt;odd &amp; name&lt;/b&gt;" in text and "<b>odd" not in text
    assert 'href="../runs/scored/report.html"' in text and "<script" not in text
    with Image.open(tmp_path / "subs" / "ledger.png") as plot:
        assert plot.size[0] > 100 and len(set(plot.convert("L").getdata())) > 2  # drawn, not blank


def test_an_empty_ledger_still_draws_a_page_that_says_so(tmp_path):
    page = ledger_page.write_page(tmp_path, [])
    assert "0 in the ledger" in page.read_text() and (tmp_path / "ledger.png").stat().st_size > 1000


@pytest.mark.skipif(browser.chromium() is None and not os.environ.get("KIT_NEED_BROWSER"),
                    reason="no chromium (Debian's `chromium`; .ci/run installs it)")
def test_the_page_in_a_real_headless_browser(tmp_path):
    assert browser.chromium(), "KIT_NEED_BROWSER is set but no chromium is installed"
    folder = tmp_path / "subs"
    page = ledger_page.write_page(folder, filled_ledger(folder))
    seen = browser.load(browser.chromium(), page.as_uri(), {
        "rows": "document.querySelectorAll('#ledger tbody tr').length",
        "plot": "[document.getElementById('plot').complete, document.getElementById('plot').naturalWidth,"
                " document.getElementById('plot').naturalHeight]",
        "title": "document.title"})
    assert seen["errors"] == [] and seen["rows"] == 3 and seen["title"] == "kit: submissions"
    complete, width, height = seen["plot"]
    assert complete and width > 100 and height > 100
    (folder / ledger_page.PLOT).unlink()  # the check can fail: a missing plot is a load error and no image
    broken = browser.load(browser.chromium(), page.as_uri(), {"plot": "document.getElementById('plot').naturalWidth"})
    assert broken["plot"] == 0 and broken["errors"]
