"""tests/browser/report_browser.py: the report pages in a real browser (Debian's chromium,
headless, driven over the DevTools protocol): rows and statuses in the DOM, the as_of selector
submitted as a plain GET form, the measure page's chart, full-page screenshots, and axe-core
run inside each page (no critical or serious violations).

    python report_browser.py BASE_URL OUT_DIR AXE_JS

Run by tests/integration/test_report_browser.c with the project venv's python (it needs
websocket-client). Exit 0 when every check passed; the reason on stderr otherwise."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import (check, check_no_csp_violations, open_page, run, start_chromium,  # noqa: E402
                 stop_chromium)

MEASURE = "g2-uiturn-4-supporters"


def main():
    base, out, axe_path = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out, exist_ok=True)
    axe_src = open(axe_path, encoding="utf-8").read()
    chrome, profile, page_ws = start_chromium()
    try:
        p = open_page(page_ws)

        # The table, as the evaluator left it.
        p.goto(base + "/")
        check(p.js("document.documentElement.lang") == "ja", "lang is not ja")
        check(p.js("document.scripts.length") == 0, "the page has scripts")
        rows = p.js("[...document.querySelectorAll('tr[data-status]')].map(r => "
                    "[r.id, r.dataset.status, r.querySelector('.status .word').textContent])")
        check(len(rows) == 9, f"expected 9 rows, got {len(rows)}")
        st = {r[0][2:]: (r[1], r[2]) for r in rows}
        check(st[MEASURE] == ("lagging", "遅れ"), f"{MEASURE}: {st[MEASURE]}")
        check(p.js("getComputedStyle(document.body).fontFamily").find("Noto") >= 0,
              "the stylesheet did not load")
        p.screenshot(os.path.join(out, "report-index.png"))
        axe_index = p.axe(axe_src, "/")

        # The as_of selector is a plain GET form: pick the end of R4 and submit.
        p.load_after("document.querySelector('#as_of').value = '2023-03-31';"
                     "document.querySelector('form.as-of').submit()")
        check("as_of=2023-03-31" in p.js("location.search"), "as_of not in the URL")
        s = p.js(f"document.getElementById('m-{MEASURE}').dataset.status")
        check(s == "no_data", f"as_of=2023-03-31: {MEASURE} is {s}")
        p.screenshot(os.path.join(out, "report-index-r4.png"))

        # Back to the latest table, then the measure page through its link.
        p.goto(base + "/?as_of=2024-03-01")
        p.load_after(f"document.querySelector('#m-{MEASURE} a').click()")
        check(p.js("location.pathname") == f"/measures/{MEASURE}", "link did not open the measure")
        check(p.js("document.querySelectorAll('svg.chart circle.point').length") >= 1,
              "no reading in the chart")
        check(p.js("!!document.querySelector('svg.chart line.pace')"), "no pace line")
        check(p.js("document.querySelector('#status').dataset.status") == "lagging",
              "measure status")
        note = p.js("document.querySelector('td.note').textContent")
        check("<script>" in note and p.js("document.scripts.length") == 0,
              f"note not rendered as text: {note!r}")
        p.screenshot(os.path.join(out, "report-measure.png"))
        axe_measure = p.axe(axe_src, "/measures/" + MEASURE)

        p.goto(base + f"/measures/{MEASURE}?lang=en&as_of=2024-03-01")
        check(p.js("document.documentElement.lang") == "en", "lang=en")
        p.screenshot(os.path.join(out, "report-measure-en.png"))

        # Nothing the strict CSP had to block: the pages need nothing it forbids.
        check_no_csp_violations(p)
        print(json.dumps({"axe_index": axe_index, "axe_measure": axe_measure}))
        return 0
    finally:
        stop_chromium(chrome, profile)


if __name__ == "__main__":
    run(main, "report_browser")
