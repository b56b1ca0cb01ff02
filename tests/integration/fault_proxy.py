"""A loopback HTTP proxy that injects storage faults in front of an S3 endpoint (moto).

One request per client connection (``Connection: close`` both ways), so each request sees the
mode in force when it arrives. Modes: ``pass``, ``reset`` (accept, then close without an
answer), ``500``/``503`` (an S3-style XML error), ``delay`` (pass after ``delay_s``),
``truncate`` (forward only half of each response body that has one) and ``trickle`` (the head
at once, then the body one byte every ``delay_s``; ``trickled`` counts the bytes sent so)."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

MODES = ("pass", "reset", "500", "503", "delay", "truncate", "trickle")


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def _with_close(head: bytes) -> bytes:
    lines = [ln for ln in head.split(b"\r\n")
             if not ln.lower().startswith((b"connection:", b"keep-alive:"))]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.mode = "pass"
        self.delay_s = 0.5
        self.log: list[tuple[str, str]] = []  # (mode, request line) of every request
        self.trickled = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def count(self, mode: str | None = None) -> int:
        return sum(1 for m, _ in self.log if mode is None or m == mode)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            head, body = _read_head(conn)
            need = _content_length(head) or 0
            while len(body) < need:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            mode = self.mode
            self.log.append((mode, head.split(b"\r\n", 1)[0].decode("latin-1")))
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                return
            if mode in ("500", "503"):
                xml = (f"<Error><Code>{'InternalError' if mode == '500' else 'SlowDown'}"
                       "</Code><Message>injected</Message></Error>").encode()
                conn.sendall(f"HTTP/1.1 {mode} Injected\r\nContent-Type: application/xml\r\n"
                             f"Content-Length: {len(xml)}\r\nConnection: close\r\n\r\n"
                             .encode() + xml)
                return
            if mode == "delay":
                time.sleep(self.delay_s)
            response = self._forward(_with_close(head) + body)
            if mode == "truncate":
                rhead, _, rbody = response.partition(b"\r\n\r\n")
                if rbody:
                    response = rhead + b"\r\n\r\n" + rbody[: len(rbody) // 2]
            if mode == "trickle":
                rhead, _, rbody = response.partition(b"\r\n\r\n")
                conn.sendall(rhead + b"\r\n\r\n")
                for byte in rbody:
                    if self._closed.wait(self.delay_s):
                        return
                    conn.sendall(bytes([byte]))
                    self.trickled += 1
                return
            conn.sendall(response)
        except OSError:
            pass
        finally:
            conn.close()

    def _forward(self, request: bytes) -> bytes:
        with socket.create_connection(self.upstream, timeout=30) as up:
            up.sendall(request)
            chunks = []
            while True:
                chunk = up.recv(262144)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
