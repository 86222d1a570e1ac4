"""report.html rendered in headless Chromium: the expected sections, no console errors or uncaught
exceptions, no network access, figures decoded, and the tables sort on a header click.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (fd 3 / fd 4,
JSON messages separated by NUL bytes), so no extra Python package is needed.  ``.ci/install``
installs the Debian ``chromium`` package; without it the test is skipped with the reason.
"""
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package 'chromium'; "
                                                          "bash .ci/install installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage"]


class Browser:
    """Minimal DevTools-protocol client over Chromium's remote-debugging pipe."""

    def __init__(self, profile: Path):
        r_cmd, self.w_cmd = os.pipe()
        self.r_res, w_res = os.pipe()

        def fds():  # the child reads commands on fd 3 and writes replies on fd 4
            os.dup2(r_cmd, 3)
            os.dup2(w_res, 4)
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                                      "about:blank"], preexec_fn=fds, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(r_cmd)
        os.close(w_res)
        self.buf, self.next_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable", session=True)

    def _send(self, method, params=None, session=False) -> int:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self.w_cmd, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def _pump(self, until, timeout: float):
        end = time.time() + timeout
        while time.time() < end:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" not in msg:
                    self.events.append(msg)
                hit = until(msg)
                if hit:
                    return msg
            ready, _, _ = select.select([self.r_res], [], [], 0.2)
            if ready:
                chunk = os.read(self.r_res, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self.buf += chunk
        raise TimeoutError("no answer from chromium")

    def call(self, method, params=None, session=False, timeout=30.0) -> dict:
        i = self._send(method, params, session)
        msg = self._pump(lambda m: m.get("id") == i, timeout)
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return msg["result"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url}, session=True)
        self._pump(lambda m: m.get("method") == "Page.loadEventFired", 30.0)

    def js(self, expression: str):
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                        session=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def settle(self, seconds=0.5):
        try:
            self._pump(lambda m: False, seconds)
        except TimeoutError:
            pass

    def problems(self) -> list[str]:
        """Uncaught exceptions, console errors/warnings and error log entries seen so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:300])
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{p['type']}: " + json.dumps(p.get("args", []))[:300])
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + p["entry"].get("text", ""))
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def close(self):
        try:
            self._send("Browser.close")
            self.proc.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self.w_cmd)
            os.close(self.r_res)


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def test_error_detection_works(tmp_path, browser):
    """The checks below could fail: a page with a script error and a console error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); undefinedFunction();</script></body></html>")
    browser.open(bad.as_uri())
    browser.settle()
    probs = browser.problems()
    assert any("boom" in p for p in probs) and any(p.startswith("exception") for p in probs)


def test_report_html_renders_offline_with_sections_and_sortable_tables(tmp_path, browser, capsys):
    from experiments.common import main_guard
    from experiments.report import main
    from tests.test_report_cli import make_cls_runs
    make_cls_runs(tmp_path / "runs", ["random", "entropy", "badge", "bald"], shift={"badge": 200, "entropy": -100},
                  datasets=("d1", "d2"))
    with pytest.raises(SystemExit) as e:
        main_guard(main, [str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--bootstrap", "100"])
    assert e.value.code == 0, capsys.readouterr().err
    browser.open((tmp_path / "rep" / "report.html").as_uri())
    browser.settle()
    assert browser.problems() == []
    assert all(u.startswith(("file:", "data:")) for u in browser.requests()), browser.requests()
    sections = browser.js("Array.from(document.querySelectorAll('section[id]')).map(s => s.id)")
    assert sections == ["overview", "curves", "ranks", "friedman", "ppm", "winlose", "ci", "kendall", "loo", "decision"]
    titles = browser.js("Array.from(document.querySelectorAll('section h2')).map(h => h.textContent)")
    assert "Mean ranks" in titles and "Decision (thesis ch. 4)" in titles
    # every figure decoded (inline PNG with a real size)
    sizes = browser.js("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) >= 6 and all(ok and w > 100 for ok, w in sizes)
    # click the mean_rank header of the aggregated ranks table: rows sort numerically, then reverse
    sort = """(() => {
      const t = Array.from(document.querySelectorAll('#ranks table')).find(t => t.caption &&
                t.caption.textContent === 'aggregated mean ranks');
      const i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent === 'mean_rank');
      const col = () => Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[i].getAttribute('data-v')));
      t.tHead.rows[0].cells[i].click(); const up = col();
      t.tHead.rows[0].cells[i].click(); const down = col();
      return [up, down];
    })()"""
    up, down = browser.js(sort)
    assert up == sorted(up) and down == sorted(down, reverse=True) and up[0] < up[-1]
    browser.settle(0.3)
    assert browser.problems() == []
