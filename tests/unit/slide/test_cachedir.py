"""The host cache folder is private to this user (issue 11, item 3): created 0700 with its
parents whatever the umask; a folder owned by another uid, writable by group or others, or (for
the predictable default in /tmp) a symbolic link is refused with one ``ConfigError`` line
naming the setting, the folder and the fix; the patch pipeline's cache folder too. And the whole
path, once, at start (issue 26, item 5): every parent root's or ours and not writable by others
(sticky excepted), links resolved once and the real path used from then on."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsi_streamer import create_app
from wsi_streamer.config import Config
from wsi_streamer.errors import ConfigError
from wsi_streamer.patches.backends import NativeBackend
from wsi_streamer.server.gunicorn_settings import settings as gunicorn_settings
from wsi_streamer.slide.cachedir import ensure_private_dir
from wsi_streamer.slide.hostcache import HostCache

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_folder_and_missing_parents_are_created_0700(tmp_path: Path, open_umask: None) -> None:
    target = tmp_path / "a" / "b" / "cache"
    HostCache(str(target), 1 << 20).close()
    assert [mode_of(p) for p in (tmp_path / "a", tmp_path / "a" / "b", target)] == [0o700] * 3
    assert mode_of(tmp_path) != 0o777  # an existing parent is left alone


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o1777])
def test_folder_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(ConfigError) as info:
        HostCache(str(folder), 1 << 20, setting="WSI_TILE_CACHE_DIR")
    message = str(info.value)
    assert "\n" not in message and str(folder) in message and "WSI_TILE_CACHE_DIR" in message
    assert "writable by group or others" in message and "chmod it 0700" in message
    assert not (folder / "cache.db").exists()


@needs_root
def test_folder_of_another_uid_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=f"owned by uid {NOBODY}, not by this user"):
        HostCache(str(folder), 1 << 20)
    assert not (folder / "cache.db").exists()


def test_default_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "wsi_streamer-tiles-0"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        ensure_private_dir(str(link), setting="WSI_TILE_CACHE_DIR", default=True)
    ensure_private_dir(str(link), setting="WSI_TILE_CACHE_DIR")  # a configured one: followed


def test_file_in_place_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a directory"):
        ensure_private_dir(str(tmp_path / "file"), setting="cache_dir", default=True)


def test_own_default_folder_readable_by_others_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    folder.chmod(0o755)  # what an older version created
    ensure_private_dir(str(folder), setting="WSI_TILE_CACHE_DIR", default=True)
    assert mode_of(folder) == 0o700
    other = tmp_path / "configured"
    other.mkdir()
    other.chmod(0o755)
    ensure_private_dir(str(other), setting="WSI_TILE_CACHE_DIR")  # the operator's choice
    assert mode_of(other) == 0o755


def test_patch_cache_folder_is_checked_when_configured(tmp_path: Path) -> None:
    folder = tmp_path / "patch-cache"
    folder.mkdir()
    folder.chmod(0o777)
    backend = NativeBackend()
    with pytest.raises(ConfigError, match="cache_dir: cache directory .* writable by group"):
        backend.configure(cache_dir=str(folder))
    folder.chmod(0o700)
    backend.configure(cache_dir=str(folder))
    cache = backend.host_cache
    assert cache is not None and cache.available


# --- the whole path, checked once at start (issue 26, item 5) ----------------------------

OTHER_USER = "wsi26other"


@pytest.fixture
def other_uid() -> Iterator[int]:
    """A second local user, created for the test and removed after it."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creating a second local user needs root and useradd")
    subprocess.run(["userdel", OTHER_USER], capture_output=True, check=False)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    OTHER_USER], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(OTHER_USER).pw_uid
    finally:
        subprocess.run(["userdel", OTHER_USER], check=False, capture_output=True)


def one_line(info: pytest.ExceptionInfo[ConfigError], setting: str, *words: str) -> None:
    message = str(info.value)
    assert message.startswith(f"{setting}: ") and "\n" not in message, message
    for word in words:
        assert word in message, message


def test_app_refuses_a_cache_folder_under_another_users_parent(tmp_path: Path,
                                                              other_uid: int) -> None:
    """The parent belongs to another local user, who could rename the (private) cache folder
    away after the start and put their own in its place: refused when the app starts."""
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, other_uid, other_uid)
    folder = theirs / "cache"
    folder.mkdir(mode=0o700)  # ours and private: the leaf alone passed
    with pytest.raises(ConfigError) as info:
        create_app(Config(slides_dir=str(tmp_path), tile_cache_dir=str(folder)))
    one_line(info, "WSI_TILE_CACHE_DIR", str(folder), str(theirs), f"owned by uid {other_uid}")
    assert not (folder / "cache.db").exists()


def test_metrics_folder_under_another_users_parent_is_refused(
        tmp_path: Path, other_uid: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored after the test
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, other_uid, other_uid)
    with pytest.raises(ConfigError) as info:
        gunicorn_settings(Config(metrics_dir=str(theirs / "metrics")))
    one_line(info, "PROMETHEUS_MULTIPROC_DIR", "metrics folder", f"owned by uid {other_uid}")


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_folder_under_a_parent_writable_by_others_is_refused(tmp_path: Path,
                                                             mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(ConfigError) as info:
        HostCache(str(shared / "a" / "cache"), 1 << 20, setting="WSI_TILE_CACHE_DIR")
    one_line(info, "WSI_TILE_CACHE_DIR", str(shared), f"mode {mode:04o}, not sticky")
    with pytest.raises(ConfigError, match="not sticky"):  # the default folder too
        ensure_private_dir(str(shared / "d"), setting="WSI_TILE_CACHE_DIR", default=True)


def test_folder_under_a_sticky_parent_is_accepted(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    assert ensure_private_dir(str(sticky / "cache"), setting="X") == str(sticky / "cache")


def test_link_component_resolved_once_and_its_swap_changes_nothing(tmp_path: Path) -> None:
    """A link in a world-writable folder, pointing to a private folder: the cache uses the
    real path it resolved at start; the link swapped afterwards (to a folder holding another
    user's entries) is never read."""
    real = tmp_path / "private" / "cache"
    real.parent.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    link = shared / "cache"
    link.symlink_to(real.parent)
    cache = HostCache(str(link / "cache"), 1 << 20, setting="WSI_TILE_CACHE_DIR")
    assert cache.directory == str(real)
    cache.set("tile", b"ours")
    planted = HostCache(str(tmp_path / "planted"), 1 << 20)
    planted.set("tile", b"theirs")
    planted.close()
    link.unlink()
    link.symlink_to(tmp_path / "planted")  # now link/cache names another folder
    assert [cache.get("tile") for _ in range(16)] == [b"ours"] * 16
    cache.close()
    assert HostCache(str(link / "cache"), 1 << 20).directory == str(tmp_path / "planted" / "cache")


def test_link_to_a_folder_under_an_unsafe_parent_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "cache").mkdir(mode=0o700)
    link = tmp_path / "cache"
    link.symlink_to(shared / "cache")
    with pytest.raises(ConfigError) as info:
        ensure_private_dir(str(link), setting="WSI_TILE_CACHE_DIR")
    one_line(info, "WSI_TILE_CACHE_DIR", str(shared), "not sticky")
