"""tests/browser/cdp.py: what the browser tests share: headless chromium (Debian's, on a fresh
profile) driven over the DevTools protocol (websocket-client), a page with JavaScript,
navigation, full-page screenshots and axe-core (no critical or serious violations), and the
way a test script ends (exit 0, or 1 with the reason on stderr)."""
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket


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


def wait_js(p, expr, what, timeout=20):
    """Polls EXPR in the page until it gives a truthy value (returned), or fails after TIMEOUT."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = p.js(expr)
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timeout waiting for {what}")


def open_page(page_ws, *domains):
    """A Page on PAGE_WS with Page, Runtime, Log and DOMAINS enabled, 1280×900."""
    p = Page(page_ws)
    for d in ("Page", "Runtime", "Log") + domains:
        p.call(d + ".enable")
    p.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
           deviceScaleFactor=1, mobile=False)
    return p


def check_no_csp_violations(p):
    """Nothing the strict CSP had to block (as Log.entryAdded events so far)."""
    csp = [e for e in p.events if e.get("method") == "Log.entryAdded"
           and "Content Security Policy" in e["params"]["entry"].get("text", "")]
    check(not csp, f"CSP violations: {csp}")


def run(main, name):
    """Exits with MAIN's result; on any exception 1, with NAME and the reason on stderr."""
    try:
        sys.exit(main())
    except Exception as e:  # the test's log says why
        print(f"{name}: FAIL: {e}", file=sys.stderr)
        sys.exit(1)
