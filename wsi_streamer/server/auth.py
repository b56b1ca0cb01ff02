"""Signed URLs (HMAC-SHA256, the scheme of ../shared/API.md) and slide-scoped viewer tokens.

message = path, then ``?`` and the query parameters other than ``sig`` (``exp`` included)
sorted by name then value and joined as ``name=value`` with ``&``; ``sig`` is its lowercase
hex HMAC-SHA256. A viewer token ``vt`` is the HMAC of ``viewer:{slide_id}:{exp}``.
``exp`` is the last valid instant in Unix seconds: a URL is accepted while ``now <= exp`` (so
at ``now == exp`` too) and expired once the clock is past it. Comparisons are constant-time
(``hmac.compare_digest``); the clock is injectable.

The path is the request path exactly as sent (percent escapes kept, as in the Rust server's
``OriginalUri``), so one signature names one spelling and therefore one routed path. The
query is compared decoded, so to keep that canonical a signed request whose decoded names or
values hold ``&`` or ``=`` is refused (``?a=1%26b%3D2`` would sign like ``?a=1&b=2``), and
``sig``, ``vt`` and ``exp`` may each appear once. A viewer token authorises ``exp`` and ``vt``
and no other parameter, so it cannot mint unbounded cache keys (IIIF puts region and size in
the path: ``server.iiif.require_viewer_scope`` bounds those to what info.json advertises)."""

from __future__ import annotations

import hashlib
import hmac
import string
import time
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import quote, urlencode

from ..errors import (
    InvalidExpiryFormat,
    InvalidParameter,
    InvalidRequest,
    InvalidSignature,
    InvalidSignatureFormat,
    MissingExpiry,
    MissingSignature,
    SignatureExpired,
)
from .params import ascii_int

_HEX = frozenset(string.hexdigits.lower())
MAX_SIGNATURE_LENGTH = 128
MAX_EXP_DIGITS = 12
VIEWER_PARAMS = frozenset({"exp", "vt"})
# Characters a path keeps as they are on the wire (RFC 3986 pchar, plus "/" and "%").
_PATH_SAFE = "/%:@!$&'()*+,;=~-._"


def canonical_message(path: str, params: Iterable[tuple[str, str]]) -> str:
    pairs = sorted((k, v) for k, v in params if k != "sig")
    if not pairs:
        return path
    return path + "?" + "&".join(f"{k}={v}" for k, v in pairs)


def _hmac(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    return _hmac(secret, canonical_message(path, params))


def viewer_token(secret: str, slide_id: str, exp: int) -> str:
    return _hmac(secret, f"viewer:{slide_id}:{exp}")


def wire_path(path: str) -> str:
    """``path`` as it is sent: characters outside ``_PATH_SAFE`` percent-encoded (UTF-8),
    existing escapes kept. This spelling is what gets signed."""
    return quote(path, safe=_PATH_SAFE)


def signed_query(secret: str, path: str, ttl: int, params: Iterable[tuple[str, str]] = (),
                 now: Callable[[], float] = time.time) -> list[tuple[str, str]]:
    """Query parameters (``params`` + ``exp`` + ``sig``) that make ``path`` (sent as
    ``wire_path(path)``) valid for ``ttl`` seconds."""
    query = [(k, v) for k, v in params if k not in ("exp", "sig")]
    query.append(("exp", str(int(now()) + ttl)))
    query.append(("sig", sign(secret, wire_path(path), query)))
    return query


def signed_url(secret: str, path: str, ttl: int, params: Iterable[tuple[str, str]] = (),
               base_url: str = "", now: Callable[[], float] = time.time) -> str:
    query = signed_query(secret, path, ttl, params, now)
    return base_url.rstrip("/") + wire_path(path) + "?" + urlencode(query)


def _check_hex(value: str) -> None:
    if not value or len(value) > MAX_SIGNATURE_LENGTH or not set(value) <= _HEX:
        raise InvalidSignatureFormat("signature must be lowercase hexadecimal")


def _single(params: Sequence[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in params if k == name]


def verify(secret: str, params: Sequence[tuple[str, str]], *, path: str | Callable[[], str],
           viewer_slide: str | None, now: Callable[[], float] = time.time) -> None:
    """Raise the matching ``AuthError`` (or ``InvalidRequest``/``InvalidParameter``, 400s)
    unless the request is authorised.

    ``params``: every decoded (name, value) pair of the query, in order; ``path``: the request
    path exactly as sent, or a function returning it (called only for ``sig`` requests; it
    raises when the request has no signable path); ``viewer_slide``: the slide id when this
    route accepts viewer tokens, else None. ``SignatureExpired`` only when ``now() > exp``."""
    sigs, vts, exps = (_single(params, n) for n in ("sig", "vt", "exp"))
    if len(sigs) > 1 or len(vts) > 1 or (sigs and vts):
        raise InvalidSignatureFormat("sig or vt must appear once (and not both)")
    sig = sigs[0] if sigs else None
    vt = vts[0] if vts else None
    if sig is None and (vt is None or viewer_slide is None):
        raise MissingSignature("this URL must be signed (exp and sig parameters)")
    _check_hex(sig if sig is not None else vt or "")
    if not exps:
        raise MissingExpiry("signed URLs need an exp parameter")
    exp = ascii_int(exps[0], max_digits=MAX_EXP_DIGITS, signed=False) if len(exps) == 1 else None
    if exp is None:
        raise InvalidExpiryFormat("exp must appear once, as an integer (Unix seconds)")
    if exp < now():
        raise SignatureExpired("the signature has expired")
    if sig is not None:
        for name, value in params:
            if "&" in name or "=" in name or "&" in value or "=" in value:
                raise InvalidRequest("signed URLs cannot carry '&' or '=' (%26, %3D) inside "
                                     "parameter names or values")
        signed_path = path if isinstance(path, str) else path()
        if not hmac.compare_digest(sign(secret, signed_path, params), sig):
            raise InvalidSignature("signature does not match this URL")
        return
    assert vt is not None and viewer_slide is not None
    for name, _ in params:
        if name not in VIEWER_PARAMS:
            raise InvalidParameter(f"a viewer token authorises no {name[:32]!r} parameter")
    if not hmac.compare_digest(viewer_token(secret, viewer_slide, exp), vt):
        raise InvalidSignature("viewer token is not valid for this slide")
