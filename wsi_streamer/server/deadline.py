"""Every request's work runs under a budget (``budget.within``): ``WSI_REQUEST_DEADLINE``
seconds, ``MAX_DECODED_BYTES`` of decoded tiles, and, under gunicorn, a check that the client
is still connected, so the tile loops (``slide.region``), native tiles and waits
(``tile.gate``, ``tile.flights``) stop at the next tile when the deadline passes (503
``deadline_exceeded``) or the client has gone (``WorkAbandoned``: logged as 499, nothing
sent). Overview builds have their own budget (``tile.overview``).

The client check peeks at the connection (``gunicorn.socket`` in the WSGI environ): a
non-blocking ``recv(1, MSG_PEEK)`` returns ``b""`` once the peer has closed, raises
``BlockingIOError`` while it is connected and silent, and returns a byte when it has sent more
(a pipelined request: still there). It runs at most every ``CLIENT_CHECK_S``. A client that
half-closes its side after sending the request (rare for HTTP clients; nginx does not) counts
as gone. Servers without a socket in the environ (Flask's test client, TLS sockets, which
refuse peek flags) get no client check, only the deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from flask import Flask, g, request

from ..budget import Budget, within
from ..limits import CLIENT_CHECK_S, MAX_DECODED_BYTES
from .services import services

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def peer_closed(sock: Any) -> bool:
    """Whether the peer of ``sock`` has closed the connection (or it failed); False while it
    is connected, and for sockets that cannot be peeked at (TLS)."""
    try:
        return bool(sock.recv(1, _PEEK) == b"")
    except (BlockingIOError, InterruptedError):
        return False  # connected, nothing to read
    except ValueError:
        return False  # an SSLSocket: no flags allowed
    except OSError:
        return True  # reset, not connected, closed by us


def client_gone_check(sock: Any, interval: float = CLIENT_CHECK_S,
                      clock: Callable[[], float] = time.monotonic) -> Callable[[], bool]:
    """A ``cancelled`` callable for ``budget.within``: ``peer_closed(sock)``, asked at most
    every ``interval`` seconds (in between the last answer stands; once gone, always gone)."""
    last = clock()
    gone = False

    def cancelled() -> bool:
        nonlocal last, gone
        if gone:
            return True
        now = clock()
        if now - last >= interval:
            last = now
            gone = peer_closed(sock)
        return gone

    return cancelled


def _enter() -> None:
    sock = request.environ.get("gunicorn.socket")
    check = client_gone_check(sock) if isinstance(sock, socket.socket) else None
    manager: AbstractContextManager[Budget | None] = within(
        services().config.request_deadline, f"this request ({request.endpoint or 'no route'})",
        check, decoded_bytes=MAX_DECODED_BYTES)
    g.budget_cm = manager
    manager.__enter__()


def _leave(exc: BaseException | None) -> None:
    manager = g.pop("budget_cm", None)
    if manager is not None:
        manager.__exit__(None, None, None)


def init_deadlines(app: Flask) -> None:
    """Run every request of ``app`` under its budget (register after the access log's hooks,
    so that the access line times the whole request)."""
    app.before_request(_enter)
    app.teardown_request(_leave)
