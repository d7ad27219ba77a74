"""tests/browser/entry_browser.py: the departments' entry page (kpi-ingest's /entry) in a real
browser (Debian's chromium, headless, over the DevTools protocol), as a department uses it:
the sample token pasted, a measure chosen, one value submitted (202 in #result); a Shift_JIS
CSV with a Japanese note put into the file input (DOM.setFileInputFiles), its preview and
per-row results; then, once the evaluator has stored it, the note on the report's measure
page. axe-core on /entry (no critical or serious violations), screenshots of each step.

    python entry_browser.py INGEST_URL REPORT_URL OUT_DIR AXE_JS TOKEN

Run by tests/integration/test_entry_browser.c with the project venv's python. Exit 0 when
every check passed; the reason on stderr otherwise."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import (check, check_no_csp_violations, open_page, run, start_chromium,  # noqa: E402
                 stop_chromium, wait_js)

MEASURE = "g2-uiturn-4-supporters"  # 企画課, persons, level
NOTE = "窓口集計（２月末）・芦別"


def main():
    ingest, report, out, axe_path, token = sys.argv[1:6]
    os.makedirs(out, exist_ok=True)
    axe_src = open(axe_path, encoding="utf-8").read()
    # The file a department's Excel writes: "CSV (comma delimited)", Shift_JIS (cp932), CRLF.
    # Row 3 has a date that does not exist: the server refuses that row only (207).
    csv_path = os.path.join(out, "entry-sjis.csv")
    rows = ["measure_id,observed_at,value,unit,note",
            f"{MEASURE},2024-02-29,28,person,{NOTE}",
            f"{MEASURE},2024-02-30,29,person,存在しない日付"]
    with open(csv_path, "wb") as f:
        f.write(("\r\n".join(rows) + "\r\n").encode("cp932"))

    chrome, profile, page_ws = start_chromium()
    try:
        p = open_page(page_ws, "DOM")

        p.goto(ingest + "/entry")
        check(p.js("document.documentElement.lang") == "ja", "lang is not ja")
        check(p.js("document.getElementById('entry-section').hidden"), "entry shown before a token")
        p.screenshot(os.path.join(out, "entry-start.png"))
        axe_start = p.axe(axe_src, "/entry (no token)")

        # Paste the token and load the department's measures (GET /v1/me).
        p.js(f"document.getElementById('token').value = {json.dumps(token)};"
             "document.getElementById('load').click()")
        wait_js(p, "!document.getElementById('entry-section').hidden && "
                   "document.getElementById('measure').options.length > 0", "the measures")
        dept = p.js("document.getElementById('department').textContent")
        check("企画" in dept, f"department: {dept!r}")
        check(p.js(f"[...document.getElementById('measure').options].some(o => o.value == "
                   f"{json.dumps(MEASURE)})"), f"{MEASURE} is not offered")

        # One value through the form.
        p.js(f"const s = document.getElementById('measure'); s.value = {json.dumps(MEASURE)};"
             "s.dispatchEvent(new Event('change'));"
             "document.getElementById('observed-at').value = '2024-02-20';"
             "document.getElementById('value').value = '26';"
             "document.getElementById('note').value = 'ブラウザから1件';"
             "document.getElementById('submit').click()")
        res = wait_js(p, "(() => { const t = document.getElementById('result').textContent;"
                         " return /受け付けました|エラー|できません|\\d{3}/.test(t) ? t : ''; })()",
                      "the answer in #result")
        check("受け付けました" in res, f"#result: {res!r}")
        check(p.js("!!document.querySelector('#result .ok')"), "#result is not marked ok")
        p.screenshot(os.path.join(out, "entry-single.png"))

        # The Shift_JIS file through the file input, as a person would pick it.
        doc = p.call("DOM.getDocument", depth=-1)
        node = p.call("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="#csv-file")
        p.call("DOM.setFileInputFiles", files=[os.path.abspath(csv_path)], nodeId=node["nodeId"])
        wait_js(p, "!document.getElementById('csv-preview').hidden", "the CSV preview")
        info = p.js("document.getElementById('csv-info').textContent")
        check("Shift_JIS" in info and "データ 2 行" in info, f"#csv-info: {info!r}")
        cells = p.js("[...document.querySelectorAll('#csv-row-2 td')].map(td => td.textContent)")
        check(NOTE in cells, f"the note is not decoded in the preview: {cells}")
        p.screenshot(os.path.join(out, "entry-csv-preview.png"))
        p.js("document.getElementById('csv-send').click()")
        wait_js(p, "document.querySelector('#csv-row-2 .row-result').textContent != '未送信' &&"
                   "!/送信中/.test(document.getElementById('csv-result').textContent)",
                "the per-row results")
        r2 = p.js("document.querySelector('#csv-row-2 .row-result').textContent")
        r3 = p.js("document.querySelector('#csv-row-3 .row-result').textContent")
        summary = p.js("document.getElementById('csv-result').textContent")
        check(r2 == "登録済み", f"row 2: {r2!r}")
        check(r3 not in ("登録済み", "未送信", "—"), f"row 3 should be refused: {r3!r}")
        check("登録 1 行、不備 1 行" in summary, f"#csv-result: {summary!r}")
        check(p.js("document.getElementById('csv-row-3').className") == "row-error",
              "row 3 not marked as an error")
        p.screenshot(os.path.join(out, "entry-csv-result.png"))
        axe_entry = p.axe(axe_src, "/entry (after the CSV)")

        check_no_csp_violations(p)

        # The evaluator stores both readings; the report's measure page shows the note.
        deadline = time.time() + 45
        seen = False
        while not seen and time.time() < deadline:
            p.goto(f"{report}/measures/{MEASURE}")
            notes = p.js("[...document.querySelectorAll('td.note')].map(td => td.textContent)")
            seen = any(NOTE in n for n in notes or [])
            if not seen:
                time.sleep(0.5)
        check(seen, f"the note {NOTE!r} never reached the report's measure page")
        check(p.js("[...document.querySelectorAll('td.note')].some(td => "
                   "td.textContent.includes('ブラウザから1件'))"), "the single value's note")
        p.screenshot(os.path.join(out, "entry-report-measure.png"))
        print(json.dumps({"axe_entry_start": axe_start, "axe_entry": axe_entry}))
        return 0
    finally:
        stop_chromium(chrome, profile)


if __name__ == "__main__":
    run(main, "entry_browser")
