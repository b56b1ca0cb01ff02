"""Where an HTTP origin's redirects may take a read (``HttpStorage``, ``WSI_HTTP_REDIRECTS``).

A redirect followed blindly is a request from the server's network position to wherever the
origin says (another port of the host, a metadata endpoint, the private network). Modes:

- ``origin`` (default): only within the configured origin: same scheme, host and port, and a
  path under the configured prefix (no ``.``/``..`` segments);
- ``none``: never (a 3xx is refused);
- ``public``: any ``http(s)`` origin whose addresses are all public (never loopback,
  link-local, private, reserved or multicast) unless the configured origin itself resolves to
  such an address (a storage on a private network may redirect within it); never from https
  to http, and the caller's own headers (an API key) are not sent to another origin.

A refused redirect raises ``RedirectRefused`` (502) naming the target's origin, never its
query. Names are resolved when the redirect is checked; the connection resolves them again
(a rebinding name could differ in between: use ``origin`` where that matters).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import unquote, urljoin, urlsplit

from ..errors import RedirectRefused

MODES = ("origin", "none", "public")
MAX_REDIRECTS = 5


def origin_of(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``url``, the port made explicit."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def _private(host: str) -> bool:
    """Whether ``host`` is, or resolves to, any non-public address (a name that does not
    resolve counts as private: it cannot be checked)."""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return True
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            return True
    return False


class RedirectPolicy:
    """Checks each redirect of reads under ``base_url`` + ``prefix``. Thread-safe."""

    def __init__(self, mode: str, base_url: str, prefix: str) -> None:
        if mode not in MODES:
            raise ValueError(f"redirects must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.origin = origin_of(base_url)
        self.prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
        self._origin_private: bool | None = None

    def follow(self, current: str, location: str | None, what: str) -> str:
        """The absolute URL to follow ``location`` (a redirect answered to ``current``) to;
        ``RedirectRefused`` when this policy forbids it."""
        if not location:
            raise RedirectRefused(f"{what}: a redirect without a Location")
        target = urljoin(current, location.strip())
        scheme, host, port = origin_of(target)
        shown = f"{scheme}://{host}:{port}"
        if self.mode == "none":
            raise RedirectRefused(f"{what}: the origin redirected to {shown}, and redirects "
                                  "are off (WSI_HTTP_REDIRECTS=none)")
        if scheme not in ("http", "https") or not host:
            raise RedirectRefused(f"{what}: a redirect to a non-HTTP URL")
        if (scheme, host, port) == self.origin:
            path = unquote(urlsplit(target).path)
            if not path.startswith(self.prefix) or any(
                    seg in (".", "..") for seg in path.split("/")):
                raise RedirectRefused(f"{what}: the origin redirected outside its prefix "
                                      f"{self.prefix}")
            return target
        if self.mode == "origin":
            raise RedirectRefused(
                f"{what}: the origin redirected to another origin ({shown}); only redirects "
                "within the configured origin are followed (WSI_HTTP_REDIRECTS=public allows "
                "public hosts)")
        if self.origin[0] == "https" and scheme != "https":
            raise RedirectRefused(f"{what}: a redirect from https to {shown}")
        if _private(host) and not self._origin_is_private():
            raise RedirectRefused(f"{what}: the origin redirected to {shown}, a loopback, "
                                  "link-local or private address")
        return target

    def _origin_is_private(self) -> bool:
        if self._origin_private is None:
            self._origin_private = _private(self.origin[1])
        return self._origin_private
