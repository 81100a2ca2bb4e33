"""Shard datasets' files in a folder or an S3 bucket (s3://, and S3-compatible endpoints): small text files, whole
folders published at once, and every refusal of the store as one line naming the config key."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from imgcls.utils.errors import DataConfigError
from imgcls.utils.io import atomic_write_text


def is_remote(url: str) -> bool:
    return "://" in str(url)


def join(base: str, *names: str) -> str:
    """`base/name...` for a folder or a URL (a URL is never a `Path`: it would lose the `//`)."""
    return "/".join([str(base).rstrip("/"), *names])


# ---- small files beside the shards (imgcls.json, split.csv): local or S3 ------------------------------------
def s3_client(storage_options: Mapping[str, Any] | None) -> Any:
    """A boto3 S3 client with the same settings litdata gets (`endpoint_url`, keys, region...)."""
    import boto3

    return boto3.client("s3", **dict(storage_options or {}))


def bucket_key(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3":
        raise DataConfigError(f"'{url}': only s3:// object stores (and S3-compatible endpoints) are supported")
    return parsed.netloc, parsed.path.lstrip("/")


NOT_WRITTEN = "nothing there (no such bucket or object): write the shards with python -m imgcls.shards"


def store_error(url: str, key: str, exc: Exception, missing: str = NOT_WRITTEN) -> DataConfigError:
    """One line for what the object store said: no bucket, no object, no access, no endpoint."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) or type(exc).__name__
    reasons = {
        "NoSuchBucket": "the bucket does not exist: check its name (and AWS_ENDPOINT_URL)",
        "404": missing,
        "NoSuchKey": missing,
        "AccessDenied": "access denied: check the credentials (AWS_* variables, ~/.aws) and the bucket's policy",
        "403": "access denied: check the credentials (AWS_* variables, ~/.aws) and the bucket's policy",
        "InvalidAccessKeyId": "the access key is not known there: check AWS_ACCESS_KEY_ID",
        "SignatureDoesNotMatch": "the secret key is wrong: check AWS_SECRET_ACCESS_KEY",
        "EndpointConnectionError": "no server answers at the endpoint: check AWS_ENDPOINT_URL / endpoint_url",
        "NoCredentialsError": "no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or configure ~/.aws",
    }
    return DataConfigError(f"{key}='{url}': {reasons.get(code, f'the object store refused it ({code}: {exc})')}")


def read_text(url: str, key: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """A small text file of a shard dataset; a missing one is a one-line error naming `key`."""
    if not is_remote(url):
        path = Path(url)
        if not path.is_file():
            raise DataConfigError(
                f"{key}='{Path(url).parent}' holds no {path.name}: write the shards with python -m imgcls.shards"
            )
        return path.read_text()
    bucket, name = bucket_key(url)
    try:
        return s3_client(storage_options).get_object(Bucket=bucket, Key=name)["Body"].read().decode()
    except Exception as exc:  # botocore's errors are not importable without it; any refusal becomes one line
        raise store_error(url, key, exc) from None


def write_text(url: str, text: str, key: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write (atomically in a folder; an S3 PUT is atomic by itself)."""
    if not is_remote(url):
        atomic_write_text(url, text)
        return
    bucket, name = bucket_key(url)
    try:
        s3_client(storage_options).put_object(Bucket=bucket, Key=name, Body=text.encode())
    except Exception as exc:
        raise store_error(url, key, exc) from None


def check_writable(url: str, key: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Before hours of writing: the bucket exists and these credentials may use it (a folder is made)."""
    if not is_remote(url):
        Path(url).mkdir(parents=True, exist_ok=True)
        return
    bucket, _ = bucket_key(url)
    try:
        s3_client(storage_options).head_bucket(Bucket=bucket)
    except Exception as exc:
        raise store_error(url, key, exc, f"the bucket does not exist: create it (aws s3 mb s3://{bucket})") from None


def listing(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under `prefix/` (S3 answers up to 1,000 a page): Key, Size, ETag..."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return [o for page in pages for o in page.get("Contents", [])]


def publish(staging: Path, output_dir: str, storage_options: Mapping[str, Any] | None) -> None:
    if not is_remote(output_dir):
        old = Path(f"{output_dir}.old-{os.getpid()}")
        if Path(output_dir).exists():
            os.replace(output_dir, old)
        os.replace(staging, output_dir)
        shutil.rmtree(old, ignore_errors=True)
        return
    bucket, prefix = bucket_key(output_dir)
    client = s3_client(storage_options)
    files = sorted(staging.iterdir(), key=lambda p: p.name == "index.json")  # the index last
    try:
        stale = {o["Key"] for o in listing(client, bucket, prefix)}
        for path in files:
            client.upload_file(str(path), bucket, f"{prefix}/{path.name}")
        for key in sorted(stale - {f"{prefix}/{p.name}" for p in files}):  # chunks of an earlier, larger write
            client.delete_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise store_error(output_dir, "output", exc) from None
