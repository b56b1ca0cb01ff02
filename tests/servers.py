"""A real gunicorn process for integration tests: started with a ``WSI_*`` environment on a
free loopback port, waited for on ``/health``, logs captured to a file, stopped at exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, TypeVar

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def access_lines(self, path: str) -> list[str]:
        return [line for line in self.log().splitlines()
                if "wsi_streamer.access" in line and f" {path} " in line]


def start_gunicorn(env: Mapping[str, str], log_file: IO[bytes]) -> tuple[
        subprocess.Popen[bytes], str]:
    """``gunicorn -c gunicorn.conf.py`` on a free loopback port with ``env`` over the
    inherited environment, output to ``log_file``; returns the process and its base URL."""
    port = free_port()
    full_env = {**os.environ, "WSI_HOST": "127.0.0.1", "WSI_PORT": str(port), **env}
    gunicorn_bin = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen([str(gunicorn_bin), "-c", "gunicorn.conf.py"], cwd=REPO_ROOT,
                               env=full_env, stdout=log_file, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(process: subprocess.Popen[bytes], url: str, log: Callable[[], str],
                 timeout: float = 30.0) -> None:
    """Until ``/health`` answers 200; ``RuntimeError`` with the log tail if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log()[-2000:]}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or a worker still starting on a loaded machine
        if time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not start: {log()[-2000:]}")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gunicorn's graceful stop), SIGKILL after 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def gunicorn(env: Mapping[str, str], log_path: Path, workers: int = 1, threads: int = 8,
             timeout: float = 30.0) -> Iterator[Server]:
    with open(log_path, "wb") as log:
        process, url = start_gunicorn(
            {"WSI_WORKERS": str(workers), "WSI_THREADS": str(threads), **env}, log)
    server = Server(url, log_path, process)
    try:
        wait_healthy(process, url, server.log, timeout)
        yield server
    finally:
        stop_process(process)


H = TypeVar("H", bound=BaseHTTPRequestHandler)


@contextmanager
def serving(handler: type[H]) -> Iterator[tuple[str, type[H]]]:
    """``handler`` on a loopback port, in a thread, until the block ends: (base URL, handler)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
