"""The host cache's folder (and the metrics folder) must be private to this user: another local
user who can write there could plant entries (or swap the folder for a link), so it is created
mode 0700 and an existing one is refused unless this uid owns it and nobody else can write to it.

Its whole path is checked too, once, at start: a user who controls a parent can rename the
folder away and put their own in its place at any time after the check (a cache serving their
tiles). Symbolic links in a configured path are resolved once and the real path is used from
then on (the caller keeps ``ensure_private_dir``'s answer), so a link swapped later changes
nothing; every directory above the folder must then be owned by root or by this user and not
writable by group or others, unless it is sticky (``/tmp``: only an entry's owner may rename
it) or a root-owned mount point (a Kubernetes ``emptyDir`` is world-writable by design; root
chose it). Whoever could swap a component after that check is root or this user."""

from __future__ import annotations

import logging
import os
import stat
from typing import NoReturn

from ..errors import ConfigError

logger = logging.getLogger(__name__)
PRIVATE_MODE = 0o700


def ensure_private_dir(path: str, *, setting: str, default: bool = False,
                       what: str = "cache directory") -> str:
    """Create ``path`` and its missing parents with mode 0700, check it and every directory
    above it (module docstring); the path to use from now on (links resolved; a ``default``
    folder keeps its name, a link there is refused).

    Raises ``ConfigError`` (one line naming ``setting``, the folder (``what``) and the fix)
    when it is not a directory, is owned by another uid, or is writable by group or others; a
    ``default`` folder (a predictable name in the shared temp dir) is also refused when it is a
    symbolic link, and tightened to 0700 when it is ours but readable by others. ``OSError`` when it
    cannot be created or examined (full or read-only disk): the caller runs without a cache."""
    _make_private_dirs(path)
    if not hasattr(os, "getuid"):  # no uids to compare (Windows)
        return path
    parent, name = os.path.split(os.path.abspath(path))
    real = (os.path.join(os.path.realpath(parent), name) if default
            else os.path.realpath(path))
    uid = os.getuid()
    fix = f"or set {setting} to a private directory of this user"
    _check_parents(os.path.dirname(real), setting, what, path, fix)
    st = os.lstat(real)
    if stat.S_ISLNK(st.st_mode):
        _refuse(setting, path, "a symbolic link", f"remove it {fix}", what)
    if not stat.S_ISDIR(st.st_mode):
        _refuse(setting, path, "not a directory", f"remove it {fix}", what)
    if st.st_uid != uid:
        _refuse(setting, path, f"owned by uid {st.st_uid}, not by this user (uid {uid})",
                f"chown it to uid {uid} and chmod it 0700, {fix}", what)
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        _refuse(setting, path, f"writable by group or others (mode {mode:04o})",
                f"chmod it 0700, {fix}", what)
    if default and mode & 0o077:
        os.chmod(path, PRIVATE_MODE)
        logger.info("host cache %s: mode %04o tightened to 0700", path, mode)
    return real


def _check_parents(folder: str, setting: str, what: str, path: str, fix: str) -> None:
    """Every directory from ``folder`` (a real path) up to ``/``: owned by root or this user,
    and not writable by group or others unless sticky or a root-owned mount point."""
    uid = os.getuid()
    while True:
        st = os.stat(folder)
        mode = stat.S_IMODE(st.st_mode)
        above = os.path.dirname(folder)
        problem = None
        if st.st_uid not in (0, uid):
            problem = f"owned by uid {st.st_uid}, who can swap it"
        elif mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX and not (
                st.st_uid == 0 and above != folder and os.stat(above).st_dev != st.st_dev):
            problem = f"writable by group or others (mode {mode:04o}, not sticky)"
        if problem:
            _refuse(setting, path, f"under {folder}, which is {problem}",
                    f"use a folder whose every parent is root's or this user's and not "
                    f"writable by others, {fix}", what)
        if above == folder:
            return
        folder = above


def _refuse(setting: str, path: str, problem: str, fix: str, what: str) -> NoReturn:
    raise ConfigError(f"{setting}: {what} {path} is {problem}; {fix}")


def _make_private_dirs(path: str) -> None:
    """``os.makedirs`` with mode 0700 for every folder it creates, parents included (whatever
    the umask); folders that already exist are left as they are."""
    missing: list[str] = []
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_MODE)
        except FileExistsError:
            continue  # another worker made it meanwhile; checked below like any other
        os.chmod(folder, PRIVATE_MODE)
