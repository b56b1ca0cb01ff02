"""S3 errors translated to the ``errors`` tree, for both data planes (boto3's ``ClientError``
and ``BotoCoreError``, urllib3's errors): the only place that knows S3's error codes.

``NoSuchKey``/404 -> ``SlideNotFound``; 412 on a read pinned with ``IfMatch`` (the object was
replaced) -> ``ObjectChanged``; unreachable endpoint -> ``StorageConnectionError``; anything
else -> ``StorageError``, with a one-line hint for the errors of a first start (credentials,
bucket, region).
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions as bex
import urllib3

from ..errors import ObjectChanged, SlideNotFound, StorageConnectionError, StorageError

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def translate(exc: Exception, what: str, slide_id: str | None = None) -> Exception:
    if isinstance(exc, bex.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NOT_FOUND and slide_id is not None and code != "NoSuchBucket":
            return SlideNotFound(slide_id)
        if (code == "PreconditionFailed" or status == 412) and slide_id is not None:
            return ObjectChanged(slide_id)  # an IfMatch read of a replaced object
        hint = client_hint(exc, code, status, slide_id)
        if hint:
            return StorageError(f"{what}: {hint}")
        return StorageError(f"{what}: storage answered {code or status}")
    if isinstance(exc, (bex.ConnectionError, bex.ConnectionClosedError, bex.ReadTimeoutError,
                        urllib3.exceptions.HTTPError, OSError)):
        return StorageConnectionError(f"{what}: storage unreachable ({type(exc).__name__})")
    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError)):
        return StorageError(f"{what}: {_NO_CREDENTIALS}")
    if isinstance(exc, bex.ProfileNotFound):
        return StorageError(f"{what}: {exc} (check AWS_PROFILE)")
    if isinstance(exc, bex.BotoCoreError):
        return StorageError(f"{what}: {type(exc).__name__}")
    return exc


# What a newcomer should do, for the errors of a first start (one line each; no host detail,
# since these messages also reach HTTP clients).
_NO_CREDENTIALS = ("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                   "or AWS_PROFILE (a profile in ~/.aws/credentials), or run with an instance "
                   "or pod role")
_DENIED = {"AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId",
           "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
_WRONG_REGION = {"PermanentRedirect", "301", "AuthorizationHeaderMalformed",
                 "IllegalLocationConstraintException"}


def client_hint(exc: bex.ClientError, code: str, status: Any,
                 slide_id: str | None) -> str | None:
    """The advice for an S3 answer a misconfiguration causes, or None."""
    if code == "NoSuchBucket" or (slide_id is None and code in _NOT_FOUND):
        return ("the bucket does not exist: check WSI_S3_BUCKET (and WSI_S3_ENDPOINT for a "
                "non-AWS storage)")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return (f"access denied ({code}): the key is not valid here: check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
    if code in _DENIED or status == 403:
        return (f"access denied ({code or status}): the credentials in use may not read "
                "this bucket: check AWS_ACCESS_KEY_ID / AWS_PROFILE and the bucket policy "
                "(s3:ListBucket, s3:GetObject)")
    if code in _WRONG_REGION or status == 301:
        meta = exc.response.get("ResponseMetadata", {})
        region = (meta.get("HTTPHeaders", {}).get("x-amz-bucket-region")
                  or exc.response.get("Error", {}).get("Region"))
        where = f"set WSI_S3_REGION={region}" if region else "check WSI_S3_REGION"
        return f"the bucket is in another region ({code or status}): {where}"
    return None
