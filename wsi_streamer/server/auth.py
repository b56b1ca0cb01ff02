"""Signed URLs (HMAC-SHA256, the scheme of ../shared/API.md) and slide-scoped viewer tokens.

message = path, then ``?`` and the query parameters other than ``sig`` (``exp`` included)
sorted by name then value and joined as ``name=value`` with ``&``; ``sig`` is its lowercase
hex HMAC-SHA256. A viewer token ``vt`` is the HMAC of ``viewer:{slide_id}:{exp}``.
``exp`` is the last valid instant in Unix seconds: a URL is accepted while ``now <= exp`` (so
at ``now == exp`` too) and expired once the clock is past it. Comparisons are constant-time
(``hmac.compare_digest``); the clock is injectable."""

from __future__ import annotations

import hashlib
import hmac
import string
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import quote, urlencode

from ..errors import (
    InvalidExpiryFormat,
    InvalidSignature,
    InvalidSignatureFormat,
    MissingExpiry,
    MissingSignature,
    SignatureExpired,
)

_HEX = frozenset(string.hexdigits.lower())
MAX_SIGNATURE_LENGTH = 128


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


def signed_query(secret: str, path: str, ttl: int, params: Iterable[tuple[str, str]] = (),
                 now: Callable[[], float] = time.time) -> list[tuple[str, str]]:
    """Query parameters (``params`` + ``exp`` + ``sig``) that make ``path`` valid for ``ttl``
    seconds."""
    query = [(k, v) for k, v in params if k not in ("exp", "sig")]
    query.append(("exp", str(int(now()) + ttl)))
    query.append(("sig", sign(secret, path, query)))
    return query


def signed_url(secret: str, path: str, ttl: int, params: Iterable[tuple[str, str]] = (),
               base_url: str = "", now: Callable[[], float] = time.time) -> str:
    query = signed_query(secret, path, ttl, params, now)
    return base_url.rstrip("/") + quote(path, safe="/%:@!$&'()*+,;=~-._") + "?" + urlencode(query)


def _check_hex(value: str) -> None:
    if not value or len(value) > MAX_SIGNATURE_LENGTH or not set(value) <= _HEX:
        raise InvalidSignatureFormat("signature must be lowercase hexadecimal")


def verify(secret: str, paths: Iterable[str], query: Mapping[str, str],
           params: Iterable[tuple[str, str]], viewer_slide: str | None,
           now: Callable[[], float] = time.time) -> None:
    """Raise the matching ``AuthError`` unless the request is authorised.

    ``paths``: the request path as received and as decoded (either may have been signed);
    ``query``: first value per name; ``params``: every (name, value) pair in the query;
    ``viewer_slide``: the slide id when this route accepts viewer tokens, else None.
    ``SignatureExpired`` only when ``now() > exp``."""
    sig, vt, exp_raw = query.get("sig"), query.get("vt"), query.get("exp")
    if sig is None and (vt is None or viewer_slide is None):
        raise MissingSignature("this URL must be signed (exp and sig parameters)")
    _check_hex(sig if sig is not None else vt or "")
    if exp_raw is None:
        raise MissingExpiry("signed URLs need an exp parameter")
    text = exp_raw.strip()
    if not text.isdigit() or len(text) > 12:
        raise InvalidExpiryFormat("exp must be an integer (Unix seconds)")
    if int(text) < now():
        raise SignatureExpired("the signature has expired")
    if sig is not None:
        pairs = list(params)
        if any(hmac.compare_digest(sign(secret, p, pairs), sig) for p in dict.fromkeys(paths)):
            return
        raise InvalidSignature("signature does not match this URL")
    assert vt is not None and viewer_slide is not None
    if not hmac.compare_digest(viewer_token(secret, viewer_slide, int(text)), vt):
        raise InvalidSignature("viewer token is not valid for this slide")
