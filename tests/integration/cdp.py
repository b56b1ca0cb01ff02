"""Headless Chromium driven over the DevTools protocol on a pipe, for the viewer tests.

``--remote-debugging-pipe``: the browser reads protocol commands from its fd 3 and writes
replies and events to its fd 4, each message one JSON text ending in NUL. So no debugging port
is opened at all, and the browser's resolver maps every host but 127.0.0.1 to "not found": it
talks to the test's own loopback servers and nothing else.

Tests wait for a condition in the page (``Page.wait_for``: a JavaScript expression evaluated
every 50 ms until it is truthy, with its own real-time deadline), never for virtual time.
Every read from the browser has a deadline too, so a browser that hangs fails the test in
seconds."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-extensions", "--disable-domain-reliability", "--hide-scrollbars",
    "--mute-audio", "--remote-debugging-pipe",
    # Every host name and IP literal but 127.0.0.1 fails to resolve: loopback only.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
# bash moves the pipe ends it was given to the browser's fds 3 and 4, closes the originals,
# then becomes the browser.
_LAUNCH = 'exec 3<&"$1" 4>&"$2"; eval "exec $1<&- $2>&-"; shift 2; exec "$@"'
COMMAND_TIMEOUT = 15.0  # seconds for any one protocol command


class BrowserError(AssertionError):
    pass


class Chromium:
    """One browser process (its own profile under ``workdir``); use as a context manager."""

    def __init__(self, binary: Path, workdir: Path, size: tuple[int, int] = (1280, 800)
                 ) -> None:
        self.size = size
        self.log_path = workdir / "chromium.log"
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends at 10 or above, so that moving them to 3 and 4 cannot clobber.
        child_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["/bin/bash", "-c", _LAUNCH, "chromium", str(child_in), str(child_out),
                 str(binary), *FLAGS, f"--user-data-dir={workdir / 'profile'}",
                 f"--window-size={size[0]},{size[1]}", "about:blank"],
                pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._next_id = 0

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    # --- protocol ----------------------------------------------------------------------------
    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """One command; its ``result``. ``BrowserError`` on a protocol error or no reply
        within ``timeout`` seconds. Events received meanwhile are dropped."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data):]
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no reply to {waiting_for} in time\n{self.log()}")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"the browser closed the pipe\n{self.log()}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    @contextmanager
    def page(self) -> Iterator[Page]:
        """A fresh tab in its own browser context (no cache, cookies or storage shared with
        other pages), ``size`` CSS pixels at scale 1; disposed of afterwards."""
        context = self.send("Target.createBrowserContext")["browserContextId"]
        try:
            target = self.send("Target.createTarget", {"url": "about:blank",
                                                       "browserContextId": context})
            session = self.send("Target.attachToTarget", {"targetId": target["targetId"],
                                                          "flatten": True})["sessionId"]
            page = Page(self, session)
            width, height = self.size
            page.send("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            yield page
        finally:
            if self.proc.poll() is None:
                self.send("Target.disposeBrowserContext", {"browserContextId": context})

    def close(self) -> None:
        """Ask the browser to quit; kill its process group if it has not within 10 s."""
        if self.proc.poll() is None:
            try:
                self.send("Browser.close", timeout=5)
            except (BrowserError, OSError):
                pass
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class Page:
    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session

    def send(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        return self.browser.send(method, params, self.session, timeout)

    def goto(self, url: str) -> None:
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}")

    def evaluate(self, expression: str) -> Any:
        """The expression's value (JSON-able), or None when it threw (page still loading)."""
        result = self.send("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True})
        if "exceptionDetails" in result:
            return None
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll ``expression`` every 50 ms until truthy; return its value. ``BrowserError``
        with the page's text after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                body = self.evaluate("document.body && document.body.outerHTML") or ""
                raise BrowserError(f"not true after {timeout} s: {expression}\n"
                                   f"{str(body)[-1500:]}")
            time.sleep(0.05)

    def dom(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML") or "")

    def screenshot(self) -> np.ndarray:
        """The viewport as an RGB array (height, width, 3)."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            return np.asarray(img.convert("RGB"))
