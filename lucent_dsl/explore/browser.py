"""Checking a site in a real browser: headless Chromium driven over the DevTools protocol (a pipe, no packages).

`Chromium` starts `chromium --headless --remote-debugging-pipe` with a fresh profile and no network
services of its own, and speaks the DevTools protocol over file descriptors 3 and 4 (JSON messages
ending in a NUL byte). `check_site` opens every page of a site reachable from its index, and
reports, per page, the console errors, the uncaught exceptions, the failed loads and the images
whose `naturalWidth` is 0 (lazy images are switched to eager and awaited first).

    with Chromium() as browser:
        report = check_site(browser, "http://127.0.0.1:8000/index.html")

Example:
    >>> encode({"id": 1, "method": "Page.enable"})
    b'{"id": 1, "method": "Page.enable"}\\x00'
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urldefrag, urljoin

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
IMAGES_JS = """(async () => {
  const imgs = [...document.images];
  for (const i of imgs) i.loading = 'eager';
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  return imgs.map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth}));
})()"""
LAUNCH = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
)
LINKS_JS = "[...document.querySelectorAll('a[href]')].map(a => a.href)"


class BrowserError(RuntimeError):
    """Chromium did not start, closed its pipe, or did not answer in time."""


def encode(message: dict[str, Any]) -> bytes:
    """A DevTools message as the pipe carries it."""
    return json.dumps(message).encode() + b"\0"


def _above_four(fd: int) -> int:
    """`fd` moved to a number above 4 (the child's 3 and 4 are the DevTools pipe); the old number is closed."""
    import fcntl

    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


def find_chromium() -> str | None:
    """The path of a Chromium-like browser on PATH, or None."""
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class Chromium:
    """A headless Chromium with one page, driven over the DevTools pipe. Use as a context manager."""

    def __init__(
        self, executable: str | None = None, *, width: int = 1000, height: int = 1200, timeout: float = 30.0
    ) -> None:
        found = executable or find_chromium()
        if found is None:
            raise BrowserError(
                f"no Chromium found on PATH (looked for {', '.join(CANDIDATES)}); apt-get install chromium"
            )
        self.executable: str = found
        self.size, self.timeout = (width, height), timeout
        self.events: list[dict[str, Any]] = []
        self._id = 0
        self._buffer = b""

    def __enter__(self) -> Chromium:  # noqa: PYI034 - not subclassed
        self.profile = tempfile.mkdtemp(prefix="lucent-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        to_child_r, from_child_w = (_above_four(fd) for fd in (to_child_r, from_child_w))

        # the child reads commands on fd 3 and writes answers on fd 4: a tiny Python launcher moves the pipe
        # ends there and execs Chromium (no preexec_fn, which is unsafe while other threads run)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LAUNCH,
                str(to_child_r),
                str(from_child_w),
                self.executable,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={self.size[0]},{self.size[1]}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(to_child_r, from_child_w),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.size[0], height=self.size[1],
                  deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.proc.terminate()
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        finally:
            for fd in (self._to_child, self._from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)

    # --- the protocol -------------------------------------------------------------------------------

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not answer within {self.timeout:g} s")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium closed its DevTools pipe (exit code {self.proc.poll()})")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(line)

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept in `events`)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_child, encode(msg))
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str) -> dict[str, Any]:
        """Wait for the next event `method` (already received ones count), and return it."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:60]}...: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def open(self, url: str) -> list[str]:
        """Load `url` and wait for its load event; return the errors it logged meanwhile."""
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")
        return self.errors()

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and failed loads received so far (and forget them)."""
        out, keep = [], []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(
                    "console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                )
            elif m == "Runtime.exceptionThrown":
                out.append("exception: " + str(p.get("exceptionDetails", {}).get("text")))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
            elif m == "Network.loadingFailed":
                out.append(f"load failed: {p.get('errorText')}")
            elif m == "Network.responseReceived" and p.get("response", {}).get("status", 200) >= 400:
                out.append(f"HTTP {p['response']['status']}: {p['response'].get('url')}")
            elif m != "Page.loadEventFired":
                continue
            else:
                keep.append(e)
        self.events = keep
        return out

    def screenshot(self, path: str | os.PathLike[str]) -> None:
        """Save the visible page as a PNG."""
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


def _pages(browser: Chromium, start: str, limit: int) -> Iterator[tuple[str, list[str], list[dict], list[str]]]:
    seen, todo = {start}, [start]
    root = start.rsplit("/", 1)[0] + "/"
    while todo and len(seen) <= limit:
        url = todo.pop(0)
        errors = browser.open(url)
        images = browser.evaluate(IMAGES_JS)
        links = browser.evaluate(LINKS_JS)
        errors += browser.errors()
        yield url, errors, images, links
        for link in links:
            target = urldefrag(urljoin(url, link)).url
            if target.startswith(root) and target.endswith(".html") and target not in seen:
                seen.add(target)
                todo.append(target)


def check_site(browser: Chromium, index_url: str, *, limit: int = 500) -> dict[str, dict[str, Any]]:
    """Open every page reachable from `index_url` (inside its folder, at most `limit`); per page URL:
    `errors` (console, exceptions, failed loads), `broken` (images with naturalWidth 0), `images`, `links`."""
    out = {}
    for url, errors, images, links in _pages(browser, index_url, limit):
        out[url] = {"errors": errors, "broken": [i["src"] for i in images if not i["width"]], "images": len(images),
                    "links": links}
    return out
