"""Pieces of the HTTP storage backend (``io/http.py``): the version a read is pinned to, and
the handling of urllib3 responses and errors (freeing or dropping a connection, translating an
exception into the error tree)."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import urllib3
import urllib3.exceptions as uex

from ..errors import StorageConnectionError, StorageError

DRAIN_LIMIT = 64 * 1024  # error bodies up to this size are read so the connection is kept


@dataclass(frozen=True, slots=True)
class Version:
    """What identifies one version of an object: its size and validators as sent."""

    size: int
    etag: str | None
    last_modified: str | None

    def pin(self) -> dict[str, str]:
        """The precondition headers of a read of this version (``If-Match`` needs a strong
        ETag: a weak one never matches)."""
        if self.etag and not self.etag.startswith("W/"):
            return {"If-Match": self.etag}
        if self.last_modified:
            return {"If-Unmodified-Since": self.last_modified}
        return {}

    def matches(self, other: Version) -> bool:
        """Same size, and the same value for every validator both answers carry."""
        return (self.size == other.size
                and (self.etag is None or other.etag is None or self.etag == other.etag)
                and (self.last_modified is None or other.last_modified is None
                     or self.last_modified == other.last_modified))

    @property
    def tag(self) -> str:
        if self.etag:
            return self.etag.removeprefix("W/").strip('"')
        assert self.last_modified is not None
        try:
            return f"lm{int(parsedate_to_datetime(self.last_modified).timestamp()):x}"
        except (TypeError, ValueError):
            return "lm" + quote(self.last_modified, safe="")



def version_of(response: urllib3.BaseHTTPResponse, size: int, what: str) -> Version:
    etag = response.headers.get("ETag") or None
    last_modified = response.headers.get("Last-Modified") or None
    if etag is None and last_modified is None:
        raise StorageError(f"{what}: the server sends neither ETag nor Last-Modified, so a "
                           "replaced object could not be told apart")
    return Version(size, etag, last_modified)


def refuse(response: urllib3.BaseHTTPResponse) -> None:
    """Drop the connection without reading the body (it may be a whole slide)."""
    response.close()
    response.release_conn()


def discard(response: urllib3.BaseHTTPResponse) -> None:
    """Free the connection: keep it when what is left to read is small, else close it."""
    remaining = getattr(response, "length_remaining", None)  # 0 after a HEAD
    if remaining is not None and remaining <= DRAIN_LIMIT:
        response.drain_conn()
    else:
        response.close()
    response.release_conn()


def translate(exc: Exception, what: str) -> Exception:
    reason = exc.reason if isinstance(exc, uex.MaxRetryError) else exc
    if isinstance(reason, uex.SSLError):
        return StorageError(f"{what}: TLS failed ({type(reason).__name__})")
    if isinstance(reason, (uex.NewConnectionError, uex.ConnectTimeoutError, uex.TimeoutError,
                           uex.ProtocolError, uex.NameResolutionError, OSError)):
        return StorageConnectionError(f"{what}: storage unreachable ({type(reason).__name__})")
    return StorageError(f"{what}: {type(reason).__name__}")
