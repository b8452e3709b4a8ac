"""Headless Chromium driven through the DevTools protocol, for the tests of the report and the page."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
    "--hide-scrollbars", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)  # fmt: skip


class DevTools:
    """Just enough of the Chrome DevTools protocol: evaluate JavaScript, set a file input, size and shoot the page."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.next_id = 0

    def send(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def eval(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120):
        """Poll ``expression`` until it is truthy. While a navigation is under way the old or a blank
        document may answer, so an exception counts as "not yet" until the deadline."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                value = last = self.eval(expression)
            except AssertionError as error:
                last = error
            else:
                if value:
                    return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {expression}: last {last!r}")

    def width(self, px: int) -> None:
        """Lay the page out as on a screen ``px`` wide (a phone at 390)."""
        self.send("Emulation.setDeviceMetricsOverride", width=px, height=900, deviceScaleFactor=1, mobile=px < 600)

    def screenshot(self, path: Path) -> None:
        """The whole page, as a PNG at ``path``."""
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))


@contextlib.contextmanager
def chromium(url: str, profile: Path, *extra: str) -> Iterator[DevTools]:
    """Headless Chromium on ``url`` with a fresh profile; skips the test where no chromium is installed."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    command = [executable, *FLAGS, *extra, f"--user-data-dir={profile}", url]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        tools = _attach(proc, profile)
        yield tools
        tools.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _attach(proc: subprocess.Popen, profile: Path) -> DevTools:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text().strip():
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stderr.read().decode()[-2000:] if proc.poll() is not None and proc.stderr else "no DevTools port"
        )
        time.sleep(0.2)
    port = int(port_file.read_text().split()[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
        targets = json.loads(response.read())
    (page,) = [t for t in targets if t["type"] == "page"]
    return DevTools(page["webSocketDebuggerUrl"])
