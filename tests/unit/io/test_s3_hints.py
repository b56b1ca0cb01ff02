"""What ``io/s3.py`` tells a newcomer (issue 14): each misconfiguration of a first start is one
line naming what to set (built from botocore's own exceptions, no network)."""

from __future__ import annotations

import botocore.exceptions as bex
import pytest

from wsi_streamer.errors import StorageError
from wsi_streamer.io.s3_errors import translate as _translate


def client_error(code: str, status: int, headers: dict[str, str] | None = None
                 ) -> bex.ClientError:
    return bex.ClientError({"Error": {"Code": code, "Message": ""},
                            "ResponseMetadata": {"HTTPStatusCode": status,
                                                 "HTTPHeaders": headers or {}}}, "HeadBucket")


@pytest.mark.parametrize(("exc", "words"), [
    (bex.NoCredentialsError(), ["no AWS credentials", "AWS_ACCESS_KEY_ID",
                                "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"]),
    (bex.ProfileNotFound(profile="lab"), ["lab", "AWS_PROFILE"]),
    (client_error("404", 404), ["does not exist", "WSI_S3_BUCKET"]),
    (client_error("NoSuchBucket", 404), ["does not exist", "WSI_S3_BUCKET"]),
    (client_error("403", 403), ["access denied", "AWS_PROFILE", "policy"]),
    (client_error("InvalidAccessKeyId", 403), ["access denied", "AWS_ACCESS_KEY_ID"]),
    (client_error("301", 301, {"x-amz-bucket-region": "eu-central-1"}),
     ["another region", "WSI_S3_REGION=eu-central-1"]),
    (client_error("AuthorizationHeaderMalformed", 400), ["another region", "WSI_S3_REGION"]),
])
def test_first_start_errors_say_what_to_do(exc: Exception, words: list[str]) -> None:
    translated = _translate(exc, "bucket slides")
    assert isinstance(translated, StorageError)
    message = str(translated)
    assert message.startswith("bucket slides: ") and "\n" not in message
    for word in words:
        assert word in message, message


def test_a_missing_slide_is_still_not_found() -> None:
    from wsi_streamer.errors import SlideNotFound

    assert isinstance(_translate(client_error("404", 404), "HEAD a.svs", "a.svs"),
                      SlideNotFound)
