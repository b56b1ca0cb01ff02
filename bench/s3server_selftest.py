"""``python -m bench.s3server --selftest``: boto3 against a live ``bench.s3server``."""

from __future__ import annotations

import os
import tempfile
import time

from .s3server import start_in_thread


def selftest() -> None:
    import boto3
    import botocore.config

    with tempfile.TemporaryDirectory() as root:
        data = os.urandom(3_000_000)
        os.makedirs(os.path.join(root, "dir"))
        for name in ("a.svs", "dir/b.tif"):
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)
        server = start_in_thread(root, "bench", latency_s=0.02)
        try:
            s3 = boto3.client(
                "s3", endpoint_url=f"http://127.0.0.1:{server.port}", region_name="us-east-1",
                aws_access_key_id="x", aws_secret_access_key="x",
                config=botocore.config.Config(retries={"max_attempts": 1}))
            s3.head_bucket(Bucket="bench")
            head = s3.head_object(Bucket="bench", Key="a.svs")
            assert head["ContentLength"] == len(data), head
            t0 = time.perf_counter()
            got = s3.get_object(Bucket="bench", Key="a.svs", Range="bytes=1000-1999",
                                IfMatch=head["ETag"])
            elapsed = time.perf_counter() - t0
            assert got["Body"].read() == data[1000:2000], "wrong range"
            assert got["ContentRange"] == "bytes 1000-1999/3000000", got["ContentRange"]
            assert 0.02 <= elapsed < 0.5, elapsed
            tail = s3.get_object(Bucket="bench", Key="a.svs", Range="bytes=-10")["Body"].read()
            assert tail == data[-10:]
            try:
                s3.get_object(Bucket="bench", Key="a.svs", IfMatch='"nope"', Range="bytes=0-1")
                raise AssertionError("If-Match ignored")
            except s3.exceptions.ClientError as exc:
                assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 412
            listing = s3.list_objects_v2(Bucket="bench", MaxKeys=1)
            assert [o["Key"] for o in listing["Contents"]] == ["a.svs"] and listing["IsTruncated"]
            more = s3.list_objects_v2(Bucket="bench",
                                      ContinuationToken=listing["NextContinuationToken"])
            assert [o["Key"] for o in more["Contents"]] == ["dir/b.tif"], more
            dirs = s3.list_objects_v2(Bucket="bench", Delimiter="/")
            assert [p["Prefix"] for p in dirs["CommonPrefixes"]] == ["dir/"], dirs
            stats = server.stats.snapshot()
            assert stats["bytes"] == 1010 and stats["by_op"]["get"] == 2, stats
        finally:
            server.shutdown()
    print("selftest ok:", stats)
