"""The host cache folder is private to this user (issue 11, item 3): created 0700 with its
parents whatever the umask; a folder owned by another uid, writable by group or others, or (for
the predictable default in /tmp) a symbolic link is refused with one ``ConfigError`` line
naming the setting, the folder and the fix; the patch pipeline's cache folder too."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsi_streamer.errors import ConfigError
from wsi_streamer.patches.backends import NativeBackend
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
