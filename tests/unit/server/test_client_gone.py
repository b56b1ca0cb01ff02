"""The client-gone check of ``server.deadline`` (issue 26, item 1): a peek at the request's
socket that says "gone" once the peer has closed (or reset) the connection, "there" while it
is connected (silent or with more bytes sent), asked at most every ``CLIENT_CHECK_S``."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from wsi_streamer.limits import CLIENT_CHECK_S
from wsi_streamer.server.deadline import client_gone_check, peer_closed


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def test_peer_closed_follows_the_peer(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    assert ours.getblocking()  # gunicorn's request sockets block: the peek must not
    assert not peer_closed(ours)
    theirs.sendall(b"GET /next HTTP/1.1\r\n")  # a pipelined request: still there
    assert not peer_closed(ours)
    assert ours.recv(100) == b"GET /next HTTP/1.1\r\n"  # the peeks consumed nothing
    theirs.close()
    assert peer_closed(ours)


def test_our_closed_socket_counts_as_gone() -> None:
    ours, theirs = socket.socketpair()
    ours.close()
    theirs.close()
    assert peer_closed(ours)


class Counting:
    """A socket stand-in that counts peeks and says what ``closed`` says."""

    def __init__(self) -> None:
        self.peeks = 0
        self.closed = False

    def recv(self, size: int, flags: int) -> bytes:
        assert flags & socket.MSG_PEEK and flags & socket.MSG_DONTWAIT
        self.peeks += 1
        if self.closed:
            return b""
        raise BlockingIOError


def test_checks_are_rate_limited_and_gone_stays_gone() -> None:
    now = [100.0]
    sock = Counting()
    cancelled = client_gone_check(sock, clock=lambda: now[0])
    for _ in range(1000):  # a burst of tiles: no peek before the interval
        assert not cancelled()
    assert sock.peeks == 0
    now[0] += CLIENT_CHECK_S + 1e-6
    assert not cancelled() and sock.peeks == 1
    sock.closed = True
    assert not cancelled() and sock.peeks == 1  # the last answer stands meanwhile
    now[0] += CLIENT_CHECK_S + 1e-6
    assert cancelled() and sock.peeks == 2
    sock.closed = False
    now[0] += 10
    assert cancelled() and sock.peeks == 2  # once gone, always gone: no more peeks
