"""The shipped front door (deploy/nginx, deploy/kubernetes) against a real gunicorn.

- signed URLs: an expired ``exp`` ends access through nginx exactly as it does directly, with the
  app up and with the app down (nginx never answers from its cache for an authenticated URL);
- nginx's access log holds no ``sig``/``vt`` value (query strings and referers are cut);
- nginx's own error pages (400, 413, 414, 431, 502, 504) are the API's JSON error shape;
- slow-header clients: 40 connections trickling one header byte a second at the door the
  Kubernetes Service targets leave normal requests answered (gunicorn's gthread workers read
  headers with no deadline, so they must never be the door). The bare-gunicorn variant is the
  demonstration of the attack (``xfail``, not strict).

Skipped without an nginx binary. The slide is ``CMU-1-Small-Region.svs`` or its generated twin
(``slide_of_kind("aperio")``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from threading import Event, Thread

import pytest

from tests.integration.test_deploy import (
    REPO_ROOT,
    SMALL_SLIDE,
    Reply,
    _sub_once,
    front_door,
    load_manifests,
    nginx_binary,
    render_nginx,
    run_nginx,
    start,
    stop,
    wait_for_port,
)
from tests.servers import free_port
from wsi_streamer.server.auth import signed_url, viewer_token

SECRET = "front-door-test-secret"
TILE = f"/tiles/{SMALL_SLIDE}/0/0/0.jpg"


# ---------------------------------------------------------------------------------------------
# processes


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> Reply:
    """Send ``head`` (request line + headers, ``Connection: close`` added) byte for byte and read
    the reply until the server closes."""
    request = head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    header_blob, _, payload = data.partition(b"\r\n\r\n")
    status_line, *lines = header_blob.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        payload = _unchunk(payload)
    return Reply(int(status_line.split()[1]), headers, payload)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def get(port: int, target: str, headers: dict[str, str] | None = None,
        timeout: float = 30) -> Reply:
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return raw_request(port, head.encode(), timeout=timeout)


@pytest.fixture(scope="module")
def slides_dir(tmp_path_factory: pytest.TempPathFactory,
               slide_of_kind: Callable[[str], Path]) -> Path:
    nginx_binary()  # skip before starting anything
    slides = tmp_path_factory.mktemp("slides")
    shutil.copy2(slide_of_kind("aperio"), slides / SMALL_SLIDE)
    return slides


@dataclass
class Gunicorn:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        stop(self.proc, signal.SIGINT)


GunicornFactory = Callable[..., Gunicorn]
NginxFactory = Callable[..., "Nginx"]


@pytest.fixture
def start_gunicorn(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[GunicornFactory]:
    """``gunicorn -c gunicorn.conf.py`` on a free loopback port, auth on, local slides; keyword
    arguments are extra ``WSI_*`` variables."""
    started: list[Gunicorn] = []

    def launch(**env_extra: str) -> Gunicorn:
        tmp = tmp_path_factory.mktemp("gunicorn")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
        env.update(WSI_HOST="127.0.0.1", WSI_PORT=str(port), WSI_WORKERS="1",
                   WSI_THREADS="4", WSI_SLIDES_DIR=str(slides_dir),
                   WSI_TILE_CACHE_DIR=str(tmp / "tiles"), WSI_CACHE_MAX_AGE="600",
                   WSI_AUTH_ENABLED="true", WSI_AUTH_SECRET=SECRET)
        env.update(env_extra)
        log = tmp / "gunicorn.log"
        proc = start([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], log,
                     cwd=REPO_ROOT, env=env)
        server = Gunicorn(port, proc, log)
        started.append(server)
        wait_for_port(port, proc, log, timeout=30)
        return server

    yield launch
    for server in started:
        server.stop()


@dataclass
class Nginx:
    port: int
    run_dir: Path

    def logs(self) -> str:
        """Everything nginx wrote: stdout/stderr (nginx.log) and any *.log file it opened."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.run_dir.glob("*.log")))


@pytest.fixture
def start_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxFactory]:
    """nginx with deploy/nginx (or ``main``/``site``, texts of nginx.conf/wsi_streamer.conf),
    proxying to 127.0.0.1:<upstream>; ``edits``: (pattern, replacement) applied to one line
    each of the site config."""
    binary = nginx_binary()
    procs: list[subprocess.Popen[bytes]] = []

    def launch(upstream_port: int, edits: tuple[tuple[str, str], ...] = (),
               site: str | None = None, main: str | None = None) -> Nginx:
        run_dir = tmp_path_factory.mktemp("nginx")
        port = free_port()
        conf = render_nginx(run_dir, port, upstream_port, site, main)
        site_path = run_dir / "wsi_streamer.conf"
        text = site_path.read_text()
        for pattern, repl in edits:
            text = _sub_once(text, pattern, repl)
        site_path.write_text(text)
        procs.append(run_nginx(binary, run_dir, conf, port))
        return Nginx(port, run_dir)

    yield launch
    for proc in procs:
        stop(proc, signal.SIGTERM)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# signed URLs and nginx's cache


def served_while_valid(attempt: Callable[[int], list[Reply]], first_ttl: int = 3,
                       tries: int = 4) -> tuple[int, list[Reply]]:
    """``attempt(exp)`` makes its requests with URLs valid until ``exp`` (now + a ttl); the
    first attempt whose last reply arrived by ``exp`` on this machine's clock (the one the app
    checks, so every request of it was checked before ``exp``) is returned: each of its
    replies must be a 200. A slower attempt (a loaded machine: the first tile is a cold decode)
    proves nothing either way and is retried with twice the ttl. Counted, not timed: no wall
    clock bound decides the verdict."""
    ttl = first_ttl
    for _ in range(tries):
        exp = int(time.time()) + ttl
        replies = attempt(exp)
        if time.time() <= exp:
            return exp, replies
        ttl *= 2
    raise AssertionError(f"no attempt finished its requests within its ttl (last {ttl // 2} s)")


def signed_tile(exp: int) -> str:
    """``TILE`` signed to expire at ``exp``."""
    return signed_url(SECRET, TILE, 0, now=lambda: exp)


@pytest.mark.timeout(180)
def test_expired_signed_url_is_refused_through_nginx(start_gunicorn: GunicornFactory,
                                                     start_nginx: NginxFactory) -> None:
    app = start_gunicorn()
    nginx = start_nginx(app.port)
    exp, replies = served_while_valid(
        lambda exp: [get(nginx.port, signed_tile(exp)) for _ in range(3)])
    url = signed_tile(exp)
    for reply in replies:  # valid: served through nginx
        assert reply.status == 200, reply.body[:300]
    statuses = [reply.headers.get("x-cache-status") for reply in replies]

    # the app's own verdict decides when the URL has expired
    wait_until(lambda: get(app.port, url).status == 401, timeout=exp - time.time() + 30,
               what="exp to pass")
    assert get(app.port, url).json()["error"] == "signature_expired"
    for _ in range(3):
        reply = get(nginx.port, url)
        assert reply.status == 401, (reply.status, reply.headers.get("x-cache-status"))
        assert reply.json()["error"] == "signature_expired"
    assert time.time() > exp
    assert statuses == ["BYPASS"] * 3, "signed URLs are never answered from nginx's cache"


@pytest.mark.timeout(180)
def test_expired_signed_url_is_refused_while_the_app_is_down(
        start_gunicorn: GunicornFactory, start_nginx: NginxFactory) -> None:
    app = start_gunicorn()
    nginx = start_nginx(app.port)

    def targets(exp: int) -> tuple[str, str]:
        return signed_tile(exp), (f"/slides/{SMALL_SLIDE}/dzi_files/8/0_0.jpg?exp={exp}"
                                  f"&vt={viewer_token(SECRET, SMALL_SLIDE, exp)}")

    exp, replies = served_while_valid(
        lambda exp: [get(nginx.port, target) for _ in range(2) for target in targets(exp)])
    for reply in replies:
        assert reply.status == 200, reply.body[:300]
    app.stop()
    wait_until(lambda: time.time() > exp + 1, timeout=exp - time.time() + 30,
               what="exp to pass")
    for target in targets(exp):
        reply = get(nginx.port, target)
        assert reply.status == 502, (target, reply.status, reply.headers.get("x-cache-status"))
        assert reply.json() == {"error": "connection_error",
                                "message": "tile server unavailable", "status": 502}


@pytest.mark.timeout(60)
def test_public_tiles_are_still_cached(start_gunicorn: GunicornFactory,
                                       start_nginx: NginxFactory) -> None:
    app = start_gunicorn(WSI_AUTH_ENABLED="false")
    nginx = start_nginx(app.port)
    for target in (TILE, TILE + "?quality=50", f"/slides/{SMALL_SLIDE}/thumbnail?max_size=64"):
        assert get(nginx.port, target).headers["x-cache-status"] == "MISS", target

        def hit(target: str = target) -> bool:
            return get(nginx.port, target).headers["x-cache-status"] == "HIT"

        wait_until(hit, timeout=5, what=f"a cache HIT for {target}")
    # any other query (signed, tokened, unknown, percent-encoded names) goes to the app
    for query in ("?exp=1&sig=ab", "?vt=ab&exp=1", "?quality=50&exp=1", "?s%69g=ab&exp=1",
                  "?quality=50&quality=60x"):
        for _ in range(2):
            reply = get(nginx.port, TILE + query)
            assert reply.headers.get("x-cache-status") == "BYPASS", query


# ---------------------------------------------------------------------------------------------
# nginx's access log


@pytest.mark.timeout(60)
def test_access_log_holds_no_signature(start_gunicorn: GunicornFactory,
                                       start_nginx: NginxFactory) -> None:
    app = start_gunicorn()
    nginx = start_nginx(app.port)
    url = signed_url(SECRET, TILE, 600)
    sig = url.split("sig=")[1]
    exp = int(time.time()) + 600
    vt = viewer_token(SECRET, SMALL_SLIDE, exp)
    view = signed_url(SECRET, f"/view/{SMALL_SLIDE}", 600)
    view_sig = view.split("sig=")[1]
    assert get(nginx.port, url).status == 200
    dzi_tile = f"/slides/{SMALL_SLIDE}/dzi_files/8/0_0.jpg"
    # a viewer page's tile request: token in the query, the signed page URL as Referer
    reply = get(nginx.port, f"{dzi_tile}?exp={exp}&vt={vt}",
                headers={"Referer": f"http://127.0.0.1:{nginx.port}{view}"})
    assert reply.status == 200
    wait_until(lambda: dzi_tile in nginx.logs(), timeout=10, what="the access log line")
    logs = nginx.logs()
    assert TILE in logs, "requests are logged (path only)"
    for secret_value in (sig, vt, view_sig):
        assert secret_value not in logs, logs[-2000:]
    assert "sig=" not in logs and "vt=" not in logs


# ---------------------------------------------------------------------------------------------
# nginx's own errors


def _assert_json_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"] == "application/json", reply.headers
    body = reply.json()
    assert body["status"] == status and body["error"] == code, body
    assert set(body) == {"error", "message", "status"} and body["message"]


@pytest.mark.timeout(60)
def test_nginx_own_errors_are_json(start_nginx: NginxFactory) -> None:
    # An upstream that accepts connections (the kernel's backlog) and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        nginx = start_nginx(silent.getsockname()[1],
                            edits=((r"proxy_read_timeout \d+s;", "proxy_read_timeout 1s;"),))
        port = nginx.port
        _assert_json_error(get(port, "/tiles/" + "a" * 9000), 414, "uri_too_long")
        _assert_json_error(get(port, TILE, headers={"X-Big": "b" * 9000}), 431,
                           "headers_too_large")
        too_big = raw_request(port, f"GET {TILE} HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Length: 20000\r\n".encode(), b"x" * 20000)
        _assert_json_error(too_big, 413, "request_too_large")
        _assert_json_error(raw_request(port, b"NOT A REQUEST\r\n"), 400, "bad_request")
        _assert_json_error(get(port, TILE), 504, "connection_error")
        # the error bodies are internal: requested directly they are nginx's (JSON) 404
        _assert_json_error(get(port, "/_wsi_errors/414"), 404, "not_found")
    finally:
        silent.close()
    down = start_nginx(free_port())  # nothing listens there
    _assert_json_error(get(down.port, TILE), 502, "connection_error")


# ---------------------------------------------------------------------------------------------
# slow clients


SLOW_CLIENTS = 40
NORMAL_REQUESTS = 8
# A normal request through a working door takes milliseconds; the slow clients never finish
# their headers while the test runs, so a stalled door fails this bound, not a close race.
NORMAL_TIMEOUT = 8.0


class SlowClients:
    """``count`` connections that send a request line, then one header byte per second and
    never end their headers, until ``stop()``."""

    def __init__(self, port: int, count: int) -> None:
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=10)
                      for _ in range(count)]
        self.bytes_sent = [0] * count
        self.errors: list[str] = []
        self._stop = Event()
        self._thread = Thread(target=self._run, daemon=True)

    def start(self) -> None:
        for sock in self.socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        self._thread.start()

    def _run(self) -> None:
        for _ in range(120):  # at most two minutes of trickling
            for i, sock in enumerate(self.socks):
                try:
                    sock.send(b"a")
                    self.bytes_sent[i] += 1
                except OSError as exc:
                    self.errors.append(f"client {i}: {exc}")
            if self._stop.wait(1.0):
                return

    def held_open(self) -> int:
        """Connections the server still holds open without having answered them."""
        held = 0
        for sock in self.socks:
            sock.setblocking(False)
            try:
                data = sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                held += 1
            except OSError:
                pass
            else:
                assert not data, "the server answered an incomplete request"
        return held

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            sock.close()


def _attack(door_port: int, health_port: int) -> None:
    slow = SlowClients(door_port, SLOW_CLIENTS)
    try:
        slow.start()
        wait_until(lambda: min(slow.bytes_sent) >= 2, timeout=20,
                   what="every slow client to be trickling")
        answered = 0
        for _ in range(NORMAL_REQUESTS):
            try:
                reply = get(door_port, "/health", timeout=NORMAL_TIMEOUT)
            except TimeoutError:
                break
            assert reply.status == 200 and reply.json()["status"] == "healthy"
            answered += 1
        held = slow.held_open()
        errors = list(slow.errors)
    finally:
        slow.stop()
    assert answered == NORMAL_REQUESTS, (
        f"{answered}/{NORMAL_REQUESTS} normal requests answered within {NORMAL_TIMEOUT} s while "
        f"{SLOW_CLIENTS} clients trickled headers: the door stalls")
    assert held == SLOW_CLIENTS and not errors, (held, errors[:3])
    # gunicorn itself is fine afterwards
    assert get(health_port, "/health").status == 200


def _pod_gunicorn(start_gunicorn: GunicornFactory, config: dict[str, str]) -> Gunicorn:
    """gunicorn sized and bound like the shipped pod (ConfigMap), on a free port."""
    return start_gunicorn(WSI_HOST=config["WSI_HOST"], WSI_WORKERS=config["WSI_WORKERS"],
                          WSI_THREADS=config["WSI_THREADS"])


@pytest.mark.timeout(90)
def test_slow_header_clients_do_not_stall_the_shipped_front_door(
        start_gunicorn: GunicornFactory, start_nginx: NginxFactory) -> None:
    """Attack the container the Kubernetes Service targets, configured as shipped."""
    docs = load_manifests()
    config = next(d for d in docs if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"] == "wsi-streamer-config")["data"]
    assert SLOW_CLIENTS > int(config["WSI_WORKERS"]) * int(config["WSI_THREADS"])
    _, nginx_conf = front_door(docs)
    app = _pod_gunicorn(start_gunicorn, config)
    if nginx_conf is None:  # the Service reaches gunicorn itself
        door_port = app.port
    else:
        main, site = nginx_conf
        door_port = start_nginx(app.port, site=site, main=main).port
    _attack(door_port, app.port)


@pytest.mark.timeout(90)
@pytest.mark.xfail(reason="demonstration: gthread reads headers with no deadline, so slow "
                          "clients take every thread of bare gunicorn", strict=False)
def test_slow_header_clients_stall_bare_gunicorn(start_gunicorn: GunicornFactory) -> None:
    docs = load_manifests()
    config = next(d for d in docs if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"] == "wsi-streamer-config")["data"]
    app = _pod_gunicorn(start_gunicorn, config)
    _attack(app.port, app.port)

