"""The data plane of S3 (issue 21): ranged ``GetObject`` signed here (AWS Signature Version 4)
and sent over one urllib3 connection pool per process, with no boto3 machinery per read.
``io/s3_curl.py`` sends the same requests (``SignedGet``) with libcurl; both answers
(``s3_get.Answer``) are read by one retry loop (``s3_get.get_range_lean``).

CPU per ranged GET of 38 KB (``python -m bench.s3client --gets 2000``, loopback, 2 shared cores):
boto3 1.1-1.2 ms with one thread, 1.5-1.7 ms with 16; this module 0.37-0.38 ms and 0.54-0.67 ms,
of which urllib3 and http.client take ~80%, the signature 0.02 ms. obstore (PyPI) costs 0.14 ms
and 0.18-0.27 ms but is not used: it hangs in a forked child (a DataLoader worker) once the
parent has used it, and has no deadline per read (``docs/training.md``). Credentials still
come from boto3's chain (a ``boto3.Session``'s resolved, refreshable credentials: profiles, SSO,
IMDS, web identity), read per request with ``get_frozen_credentials()`` (refreshed by botocore
when they expire); ``None`` (anonymous access) sends unsigned requests. The signature is the
one botocore's ``S3SigV4Auth`` computes for the same request (``tests/unit/io/test_s3_lean.py``
checks it).

Semantics kept from the boto3 road (``io/s3.py`` owns them): 429/5xx and broken connections
retried with backoff (``max_attempts`` in all), ``If-Match`` pinning (412 -> ``ObjectChanged``),
requester pays (``x-amz-request-payer``), the total deadline per read (``transfer``) and storage
slots. An error answer is turned into botocore's ``ClientError`` (code from the XML body, region
from ``x-amz-bucket-region``) so that ``io/s3.py`` translates it as it translates boto3's.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import botocore.exceptions as bex
import urllib3

from .http_parts import refuse
from .s3_get import Answer, TooLong
from .transfer import Clock, read_body

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
RETRY_STATUS = (429, 500, 502, 503, 504)
BACKOFF, BACKOFF_MAX = 0.1, 2.0  # seconds: the pause before retry n is BACKOFF * 2 ** (n - 1)
ERROR_BODY = 64 * 1024  # the most of an error answer read (its XML names the code)
_CODE = re.compile(rb"<Code>([^<]{1,128})</Code>")
_REGION = re.compile(rb"<Region>([^<]{1,64})</Region>")
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class FrozenCredentials(Protocol):
    access_key: str
    secret_key: str
    token: str | None


class SigV4:
    """AWS Signature Version 4 for header-signed S3 requests without a body. Thread-safe (the
    signing key is derived once per day and secret)."""

    def __init__(self, region: str, service: str = "s3") -> None:
        self.region, self.service = region, service
        self._keys: dict[tuple[str, str], bytes] = {}

    def _key(self, secret: str, day: str) -> bytes:
        key = self._keys.get((secret, day))
        if key is None:
            key = ("AWS4" + secret).encode()
            for part in (day, self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {(secret, day): key}  # one live key: a rotated secret replaces it
        return key

    def sign(self, method: str, url: str, headers: dict[str, str],
             credentials: FrozenCredentials, now: datetime.datetime | None = None
             ) -> dict[str, str]:
        """``headers`` plus ``X-Amz-Date``, ``X-Amz-Content-SHA256``, the session token if
        any, and ``Authorization``; every header given is signed, with ``host`` (from ``url``,
        its default port dropped). ``url``'s path must be percent-encoded as sent."""
        parts = urlsplit(url)
        stamp = (now.strftime("%Y%m%dT%H%M%SZ") if now is not None
                 else time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        return self.sign_path(method, signed_host(url), parts.path or "/", parts.query,
                              headers, credentials, stamp)

    def sign_path(self, method: str, host: str, path: str, query: str,
                  headers: dict[str, str], credentials: FrozenCredentials, stamp: str
                  ) -> dict[str, str]:
        """``sign`` for a request already split (``host`` as signed, ``path`` encoded as
        sent) at ``stamp`` (``YYYYMMDDTHHMMSSZ``): no URL parsing per request."""
        day = stamp[:8]
        out = dict(headers)
        out["X-Amz-Date"] = stamp
        out["X-Amz-Content-SHA256"] = EMPTY_SHA256
        if credentials.token:
            out["X-Amz-Security-Token"] = credentials.token
        canonical = {"host": host, **{k.lower(): " ".join(v.split()) for k, v in out.items()}}
        names = sorted(canonical)
        signed = ";".join(names)
        request = "\n".join([method, path, query, *(f"{n}:{canonical[n]}" for n in names),
                             "", signed, EMPTY_SHA256])
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(request.encode()).hexdigest()])
        signature = hmac.digest(self._key(credentials.secret_key, day), to_sign.encode(),
                                "sha256").hex()
        out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope},"
                                f" SignedHeaders={signed}, Signature={signature}")
        return out


def signed_host(url: str) -> str:
    """The ``host`` SigV4 signs for ``url``: its netloc, the scheme's default port dropped."""
    parts = urlsplit(url)
    if (parts.scheme, parts.port) in (("http", 80), ("https", 443)):
        return parts.hostname or parts.netloc
    return parts.netloc


def object_base_url(endpoint: str, bucket: str, custom_endpoint: bool) -> str:
    """The URL objects of ``bucket`` are under: path style on a custom endpoint (MinIO, Ceph,
    a loopback server) and for bucket names that are not DNS labels, virtual-hosted style on
    AWS (botocore's ``auto`` addressing)."""
    parts = urlsplit(endpoint.rstrip("/"))
    if custom_endpoint or not _DNS_BUCKET.match(bucket):
        return f"{parts.scheme}://{parts.netloc}/{quote(bucket, safe='')}"
    return f"{parts.scheme}://{bucket}.{parts.netloc}"


class SignedGet:
    """What a ranged GET of one bucket sends, whatever sends it: the path and the headers
    (range, If-Match, requester pays, SigV4 unless anonymous). Subclasses send it
    (``get``); thread-safe."""

    def __init__(self, base_url: str, region: str,
                 credentials: Callable[[], FrozenCredentials | None], *,
                 requester_pays: bool) -> None:
        self.base_url = base_url.rstrip("/")
        self._host = signed_host(self.base_url)
        self._base_path = urlsplit(self.base_url).path
        self._signer = SigV4(region)
        self._credentials = credentials
        self._extra = {"x-amz-request-payer": "requester"} if requester_pays else {}

    def request(self, key: str, spec: str, if_match: str | None) -> tuple[str, dict[str, str]]:
        """The path (percent-encoded as sent) and headers of ``GET key`` with ``Range:
        bytes=<spec>``."""
        path = f"{self._base_path}/{quote(key, safe='/~')}"
        headers = {"Range": f"bytes={spec}", **self._extra}
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        credentials = self._credentials()
        if credentials is not None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            headers = self._signer.sign_path("GET", self._host, path, "", headers,
                                             credentials, stamp)
        return path, headers

    def get(self, key: str, spec: str, if_match: str | None, clock: Clock) -> Answer:
        """The 200 or 206 answer to ``GET key`` (its body unread), ``ClientError`` for any
        other status, ``StorageTimeout`` past ``clock``'s deadline, urllib3's errors or
        ``OSError`` for an unreachable storage (all after the retries the plane makes)."""
        raise NotImplementedError


class LeanGet(SignedGet):
    """Ranged GETs of one bucket over one urllib3 connection pool (of the bucket's host) made
    on first use in each process (after a fork the child makes its own). Thread-safe."""

    def __init__(self, base_url: str, region: str,
                 credentials: Callable[[], FrozenCredentials | None], *,
                 max_connections: int, connect_timeout: float, read_timeout: float,
                 max_attempts: int, requester_pays: bool) -> None:
        super().__init__(base_url, region, credentials, requester_pays=requester_pays)
        self._max_connections = max_connections
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._retries = urllib3.Retry(
            total=max_attempts - 1, redirect=0, raise_on_redirect=False,
            status_forcelist=RETRY_STATUS, allowed_methods=frozenset({"GET"}),
            backoff_factor=BACKOFF, backoff_max=BACKOFF_MAX, raise_on_status=False,
            respect_retry_after_header=False)
        self._pool: urllib3.HTTPConnectionPool | None = None
        self._pid = -1
        self._lock = threading.Lock()

    @property
    def pool(self) -> urllib3.HTTPConnectionPool:
        """This process's pool: an ``HTTPConnectionPool`` (or its HTTPS kind) used directly,
        not through a ``PoolManager``, whose URL parsing and pool lookup per request cost
        about a fifth of a ranged GET's CPU (issue 21)."""
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = urllib3.connection_from_url(
                    self.base_url, maxsize=self._max_connections, timeout=self._timeout,
                    retries=self._retries)
                self._pid = os.getpid()
            return self._pool

    def get(self, key: str, spec: str, if_match: str | None, clock: Clock) -> Answer:
        path, headers = self.request(key, spec, if_match)
        response = self.pool.urlopen("GET", path, headers=headers, preload_content=False,
                                     redirect=False)
        if response.status in (200, 206):
            return _PoolAnswer(response)
        raise client_error(response, "GetObject")


class _PoolAnswer:
    """An ``Answer`` over a urllib3 response, its body read in chunks against the clock."""

    __slots__ = ("_response",)

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    def body(self, expected: int, clock: Clock) -> bytes:
        data = read_body(self._response, expected + 1, clock)
        if len(data) > expected:
            raise TooLong
        return data

    def release(self) -> None:
        self._response.release_conn()

    def refuse(self) -> None:
        refuse(self._response)


def client_error(response: urllib3.BaseHTTPResponse, operation: str) -> bex.ClientError:
    """botocore's ``ClientError`` for an S3 error answer (the connection released)."""
    try:
        body = response.read(ERROR_BODY, decode_content=True) or b""
    finally:
        response.release_conn()
    return error_of(response.status, response.headers.items(), body, operation)


def error_of(status: int, headers: Iterable[tuple[str, str]], body: bytes,
             operation: str) -> bex.ClientError:
    """botocore's ``ClientError`` for an S3 error answer: the code from its XML body (else
    the status), the region from the body or ``x-amz-bucket-region``."""
    code = _CODE.search(body)
    region = _REGION.search(body)
    error: dict[str, Any] = {"Code": code.group(1).decode("utf-8", "replace") if code
                             else str(status), "Message": ""}
    if region:
        error["Region"] = region.group(1).decode("utf-8", "replace")
    meta = {"HTTPStatusCode": status, "HTTPHeaders": {k.lower(): v for k, v in headers}}
    return bex.ClientError({"Error": error, "ResponseMetadata": meta}, operation)
