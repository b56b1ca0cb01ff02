"""A broken tile cache never breaks the server (issue 11, items 2 and 3). With the cache on a
full filesystem, a read-only one, or a corrupt ``cache.db`` (at startup and while running),
every tile is still served, byte-equal to a healthy server's, and the log says why once. A
pickle planted in the cache is never loaded; a cache folder that is not private stops the
server at startup with one clear line.

Full and read-only filesystems are real: a small tmpfs (``mount -t tmpfs``), filled with a
file or remounted read-only. That needs root and mount(8); without them those tests skip (a
non-root run gets a read-only folder from ``chmod 0500`` instead)."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diskcache
import pytest

from tests.fixtures.fakes import BOOMS, Boom
from tests.fixtures.slides import make_svs
from wsi_streamer import create_app
from wsi_streamer.config import Config
from wsi_streamer.errors import ConfigError
from wsi_streamer.server.services import services

LOGGER = "wsi_streamer.slide.hostcache"
URLS = [f"/tiles/a.svs/0/{x}/{y}.jpg" for x in range(3) for y in range(2)] + [
    "/tiles/a.svs/1/0/0.jpg", "/tiles/a.svs/1/1/0.jpg", "/slides/a.svs/thumbnail?max_size=64"]


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache-failure-slides")
    make_svs(600, 400, levels=2, tile=256, associated=False).write(root, "a.svs")
    return root


@pytest.fixture(scope="module")
def reference(slides: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """What a healthy server answers."""
    app = create_app(Config(slides_dir=str(slides),
                            tile_cache_dir=str(tmp_path_factory.mktemp("healthy"))))
    client = app.test_client()
    return {url: client.get(url).data for url in URLS}


def serve(slides: Path, cache_dir: Path) -> Any:
    return create_app(Config(slides_dir=str(slides), tile_cache_dir=str(cache_dir)))


def assert_all_served(app: Any, reference: dict[str, bytes], urls: list[str] = URLS) -> None:
    client = app.test_client()
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, (url, response.data[:200])
        assert response.data == reference[url], url


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.WARNING]


def assert_said_once(caplog: pytest.LogCaptureFixture, *reasons: str) -> list[str]:
    """Each kind of failure logged once (the kind is the bracketed tag), one naming a reason."""
    found = cache_warnings(caplog)
    kinds = [m.rsplit("[", 1)[1].split(";")[0] for m in found]
    assert found and len(kinds) == len(set(kinds)), found
    assert any(reason in m for m in found for reason in reasons), found
    return found


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real, small filesystem at ``path`` (root and mount(8) only, else the test skips)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small tmpfs needs root and mount(8)")
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(folder: Path) -> None:
    """Write a file until the filesystem holding ``folder`` is full (ENOSPC)."""
    with open(folder / "filler", "wb", buffering=0) as out:
        for chunk in (1 << 16, 4096):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC

    with pytest.raises(OSError):
        (folder / "probe").write_bytes(b"\0" * 4096)


def test_full_filesystem_while_running(slides: Path, reference: dict[str, bytes],
                                       tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with tmpfs(tmp_path / "small", "2m") as fs:
        app = serve(slides, fs / "tiles")
        assert_all_served(app, reference, URLS[:1])
        fill(fs)
        assert_all_served(app, reference)
        assert_all_served(app, reference)
        assert_said_once(caplog, "full")
        services(app).tile_cache.close()


def test_full_filesystem_at_startup(slides: Path, reference: dict[str, bytes], tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    with tmpfs(tmp_path / "small", "1m") as fs:
        fill(fs)
        app = serve(slides, fs / "tiles")
        assert not services(app).tile_cache.available
        assert_all_served(app, reference)
        assert_all_served(app, reference)
        found = assert_said_once(caplog, "No space left", "full")
        assert len(found) == 1 and "cannot be opened" in found[0]


def test_read_only_cache_folder(slides: Path, reference: dict[str, bytes], tmp_path: Path,
                                caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() == 0:  # root ignores permission bits: a read-only filesystem
        with tmpfs(tmp_path / "ro", "1m") as fs:
            (fs / "tiles").mkdir(mode=0o700)
            done = subprocess.run(["mount", "-o", "remount,ro", str(fs)], capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                pytest.skip(f"cannot remount the tmpfs read-only: {done.stderr.strip()}")
            app = serve(slides, fs / "tiles")
            assert_all_served(app, reference)
            assert_all_served(app, reference)
    else:
        folder = tmp_path / "tiles"
        folder.mkdir(mode=0o500)
        app = serve(slides, folder)
        assert_all_served(app, reference)
        assert_all_served(app, reference)
    found = assert_said_once(caplog, "unable to open", "readonly", "Read-only")
    assert len(found) == 1 and "cannot be opened" in found[0]


def test_corrupt_database_at_startup(slides: Path, reference: dict[str, bytes], tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "tiles"
    app = serve(slides, folder)
    assert_all_served(app, reference)
    services(app).tile_cache.close()
    (folder / "cache.db").write_bytes(b"\x13junk, not SQLite " * 2000)
    again = serve(slides, folder)  # a restart: the service still starts
    assert not services(again).tile_cache.available
    assert_all_served(again, reference)
    assert_all_served(again, reference)
    found = assert_said_once(caplog, "not a database")
    assert len(found) == 1 and "cannot be opened" in found[0] and str(folder) in found[0]


def test_corrupt_database_while_running(slides: Path, reference: dict[str, bytes],
                                        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "tiles"
    app = serve(slides, folder)
    assert_all_served(app, reference, URLS[:3])
    (folder / "cache.db").write_bytes(b"\x13junk, not SQLite " * 2000)
    # A worker thread that connects after the damage (diskcache: one connection per thread).
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            assert_all_served(app, reference)
            assert_all_served(app, reference)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and errors == []
    assert_said_once(caplog, "not a database", "malformed")


def test_planted_pickles_are_never_loaded(slides: Path, reference: dict[str, bytes],
                                          tmp_path: Path) -> None:
    folder = tmp_path / "tiles"
    app = serve(slides, folder)
    assert_all_served(app, reference)
    services(app).tile_cache.close()
    raw = diskcache.Cache(str(folder))  # a planter with write access to the folder
    keys = list(raw.iterkeys())
    assert any(k.startswith("structure:") for k in keys) and len(keys) > len(URLS)
    for key in keys:  # diskcache's own pickled values, and pickle bytes for the structures
        raw.set(key, pickle.dumps(Boom()) if key.startswith("structure:") else Boom())
    raw.close()
    BOOMS.clear()
    again = serve(slides, folder)
    assert_all_served(again, reference)
    assert BOOMS == []


def test_startup_refuses_a_world_writable_cache_folder(slides: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(ConfigError) as info:
        serve(slides, folder)
    assert str(info.value).startswith(f"WSI_TILE_CACHE_DIR: cache directory {folder} is "
                                      "writable by group or others (mode 0777)")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_startup_refuses_a_cache_folder_of_another_uid(slides: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534, not by this user"):
        serve(slides, folder)
