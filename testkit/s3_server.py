"""An S3-compatible server for the tests: moto's standalone server, speaking the real S3
protocol over HTTP on a loopback port (MinIO stands in where Docker exists)."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

ACCESS_KEY, SECRET_KEY, REGION = "test-access-key", "test-secret-key", "us-east-1"


@dataclass(frozen=True)
class S3Bucket:
    endpoint: str
    name: str

    def settings(self) -> dict[str, Any]:
        """The service's settings for this bucket."""
        return {
            "media_backend": "s3",
            "media_s3_bucket": self.name,
            "media_s3_endpoint": self.endpoint,
            "media_s3_region": REGION,
            "media_s3_access_key_id": ACCESS_KEY,
            "media_s3_secret_access_key": SECRET_KEY,
        }

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def keys(self) -> set[str]:
        listing = self.client().list_objects_v2(Bucket=self.name)
        return {item["Key"] for item in listing.get("Contents", [])}


@contextmanager
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def new_bucket(endpoint: str) -> S3Bucket:
    bucket = S3Bucket(endpoint, f"media-{uuid.uuid4().hex[:12]}")
    bucket.client().create_bucket(Bucket=bucket.name)
    return bucket
