"""tests/browser/report_browser.py: the report pages in a real browser (Debian's chromium,
headless, driven over the DevTools protocol): rows and statuses in the DOM, the as_of selector
submitted as a plain GET form, the measure page's chart, full-page screenshots, and axe-core
run inside each page (no critical or serious violations).

    python report_browser.py BASE_URL OUT_DIR AXE_JS

Run by tests/integration/test_report_browser.c with the project venv's python (it needs
websocket-client). Exit 0 when every check passed; the reason on stderr otherwise."""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

MEASURE = "g2-uiturn-4-supporters"


class Page:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, name, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for i, e in enumerate(self.events):
                if e.get("method") == name:
                    del self.events[: i + 1]
                    return e
            self.events.append(json.loads(self.ws.recv()))
        raise RuntimeError(f"timeout waiting for {name}")

    def js(self, expr, await_promise=False):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True,
                      awaitPromise=await_promise)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr[:60]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def goto(self, url):
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def load_after(self, expr):
        """Runs EXPR (which navigates, e.g. a form submit) and waits for the new page."""
        self.events.clear()
        self.js(expr)
        self.wait_event("Page.loadEventFired")

    def screenshot(self, path):
        h = self.js("Math.ceil(document.documentElement.scrollHeight)")
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=int(h),
                  deviceScaleFactor=1, mobile=False)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                  deviceScaleFactor=1, mobile=False)

    def axe(self, axe_src, where):
        self.js(axe_src)
        out = self.js("axe.run(document, {resultTypes: ['violations']}).then(r => "
                      "JSON.stringify(r.violations.map(v => ({id: v.id, impact: v.impact, "
                      "n: v.nodes.length, help: v.help}))))", await_promise=True)
        bad = [v for v in json.loads(out) if v["impact"] in ("critical", "serious")]
        if bad:
            raise AssertionError(f"axe on {where}: {bad}")
        return json.loads(out)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def start_chromium():
    """Starts headless chromium on a fresh profile: (process, profile dir, page websocket)."""
    profile = tempfile.mkdtemp(prefix="kpi-chromium-")
    chrome = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--remote-debugging-port=0", "--remote-allow-origins=*",
         f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.time() + 20
        while port is None and time.time() < deadline:
            line = chrome.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
        check(port, "chromium did not open its DevTools port")
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        return chrome, profile, page_ws
    except BaseException:
        stop_chromium(chrome, profile)
        raise


def stop_chromium(chrome, profile):
    chrome.kill()
    chrome.wait()
    shutil.rmtree(profile, ignore_errors=True)


def main():
    base, out, axe_path = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out, exist_ok=True)
    axe_src = open(axe_path, encoding="utf-8").read()
    chrome, profile, page_ws = start_chromium()
    try:
        p = Page(page_ws)
        p.call("Page.enable")
        p.call("Runtime.enable")
        p.call("Log.enable")
        p.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
               deviceScaleFactor=1, mobile=False)

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
        csp = [e for e in p.events if e.get("method") == "Log.entryAdded"
               and "Content Security Policy" in e["params"]["entry"].get("text", "")]
        check(not csp, f"CSP violations: {csp}")
        print(json.dumps({"axe_index": axe_index, "axe_measure": axe_measure}))
        return 0
    finally:
        stop_chromium(chrome, profile)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # the test's log says why
        print(f"report_browser: FAIL: {e}", file=sys.stderr)
        sys.exit(1)
