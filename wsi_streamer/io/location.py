"""Storage URLs parsed once into a ``StorageSpec``.

One grammar for every storage URL: ``scheme://host/prefix`` (``s3://bucket/prefix``,
``https://host[:port]/prefix``) or a folder (``file:///abs/path``, a plain path). Which
schemes have a backend is the factory's table (``io/factory.py``), not this module's business,
so a new backend with the usual grammar needs no edit here. Everything that is not a
well-formed storage URL is a ``ValueError`` naming what is wrong (never echoing credentials).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from ..errors import InvalidSlideId
from .storage import validate_slide_id


@dataclass(frozen=True, slots=True)
class StorageSpec:
    """Where slides live. ``host`` is the bucket (``s3``), ``host[:port]`` (``http(s)``) or
    empty (``file``); ``prefix`` is the key or URL-path prefix under it, percent-decoded and
    without outer slashes, or the folder for ``file`` (as given: may be relative)."""

    scheme: str
    host: str = ""
    prefix: str = ""

    @property
    def url(self) -> str:
        """The canonical URL (percent-encoded path for ``http(s)``)."""
        if self.scheme == "file":
            return "file://" + quote(self.prefix)
        path = "/".join(quote(seg, safe="") for seg in self.prefix.split("/")) \
            if self.prefix and self.scheme in ("http", "https") else self.prefix
        return f"{self.scheme}://{self.host}/{path}"


def parse_storage_url(url: str) -> StorageSpec:
    """``s3://bucket/prefix``, ``https://host[:port]/prefix``, ``file:///path`` or a plain
    path -> ``StorageSpec``. ``ValueError`` for an empty value, a ``file:`` URL that is not
    ``file:///absolute/path``, a missing host, credentials, a query or fragment, a bad port,
    or a prefix with ``.``/``..``/empty segments. The scheme is lower-cased, not checked."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("storage URL is empty")
    url = url.strip()
    if "://" not in url:
        if ":" in url.split("/", 1)[0] and not url.startswith((".", "/")):
            raise ValueError(f"storage URL {_shown(url)!r}: expected scheme://host/prefix "
                             "(s3://, https://, file:///) or a folder path")
        return StorageSpec("file", "", url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme or not scheme.isascii() or not scheme.replace("+", "").isalnum():
        raise ValueError(f"storage URL {_shown(url)!r}: unusable scheme")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"storage URL {_shown(url)!r}: a query string or fragment is not "
                         "supported")
    if "@" in parts.netloc:
        raise ValueError(f"storage URL {_shown(url)!r}: credentials do not belong in the URL "
                         "(use the storage's usual credential chain)")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"storage URL {_shown(url)!r}: expected file:///absolute/path")
        return StorageSpec("file", "", unquote(parts.path))
    if not parts.netloc:
        raise ValueError(f"storage URL {_shown(url)!r}: no host or bucket after {scheme}://")
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in range)
    except ValueError as exc:
        raise ValueError(f"storage URL {_shown(url)!r}: bad port") from exc
    return StorageSpec(scheme, parts.netloc.lower(), _prefix(url, parts.path))


def url_scheme(url: str) -> str | None:
    """The lower-cased scheme of a ``scheme://...`` string (RFC 3986: a letter, then
    letters, digits, ``+``, ``-``, ``.``), or None for anything else (a path)."""
    head, sep, _ = url.partition("://")
    if not sep or not head.isascii() or not head[:1].isalpha() or not head.replace(
            "+", "").replace("-", "").replace(".", "").isalnum():
        return None
    return head.lower()


def split_object_url(url: str) -> tuple[StorageSpec, str]:
    """A single object's URL -> (the storage at its root, the object's id under it):
    ``s3://b/k/x.svs`` -> (``s3://b/``, ``k/x.svs``); ``https://h/a%20b/x.svs`` ->
    (``https://h/``, ``a b/x.svs``); a path -> (its folder, its file name). ``ValueError``
    when the URL names no object (no key, or a trailing slash)."""
    spec = parse_storage_url(url)
    if spec.scheme == "file":
        folder, name = posixpath.split(spec.prefix)
        if not name:
            raise ValueError(f"{_shown(url)!r} names a folder, not a slide file")
        return StorageSpec("file", "", folder or "."), name
    if not spec.prefix or url.rstrip().endswith("/"):
        raise ValueError(f"{_shown(url)!r} names a prefix, not one object")
    return StorageSpec(spec.scheme, spec.host, ""), spec.prefix


def _prefix(url: str, path: str) -> str:
    """The percent-decoded path without outer slashes; each segment decoded on its own so an
    encoded ``/`` inside a segment is refused rather than silently split."""
    stripped = path.strip("/")
    if not stripped:
        return ""
    segments = [unquote(seg) for seg in stripped.split("/")]
    if any("/" in seg for seg in segments):
        raise ValueError(f"storage URL {_shown(url)!r}: an encoded '/' (%2F) in a path segment")
    prefix = "/".join(segments)
    try:
        validate_slide_id(prefix)  # same rules as ids: no empty, '.' or '..' segments
    except InvalidSlideId as exc:
        raise ValueError(f"storage URL {_shown(url)!r}: the path has empty, '.' or '..' "
                         "segments or control characters") from exc
    return prefix


def _shown(url: str) -> str:
    """The URL cut for messages, with anything before an ``@`` (credentials) dropped."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return (scheme + sep + rest)[:200]
