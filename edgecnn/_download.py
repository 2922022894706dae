"""Downloads that never leave a file that looks valid: stream to a temporary name, check, rename.

Weights and data sets share this: what they differ in (which hash is published, whether the file is
stored gunzipped, what to tell an offline user) is passed in.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from edgecnn.errors import EdgeCNNError

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """edgecnn's cache: ``$XDG_CACHE_HOME/edgecnn``, else ``~/.cache/edgecnn``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgecnn"


class DownloadError(EdgeCNNError):
    """A file that could not be downloaded or did not match its published hash."""


@dataclass(frozen=True)
class Expected:
    """What a download must match. ``md5`` is over the bytes as served; ``sha256`` and
    ``sha256_prefix`` over the bytes as stored (after gunzip when ``gunzip``)."""

    md5: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    gunzip: bool = False


def download(url: str, destination: Path, expected: Expected, offline_hint: str, progress: bool = True) -> Path:
    """Download ``url`` to ``destination`` and return it; nothing is kept unless it matches ``expected``.

    ``offline_hint`` ends the error when the server cannot be reached (what to place where instead).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.part")
    try:
        try:
            served_md5, stored_sha256 = _stream(url, partial, expected.gunzip, progress)
        except (urllib.error.URLError, OSError, TimeoutError, zlib.error) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"could not download {url} ({reason}); {offline_hint}") from None
        mismatch = _mismatch(expected, served_md5, stored_sha256)
        if mismatch:
            raise DownloadError(
                f"downloaded {url} but {mismatch}; the file is corrupt or was replaced, so it was not kept"
            )
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination


def _mismatch(expected: Expected, served_md5: str, stored_sha256: str) -> str | None:
    if expected.md5 and served_md5 != expected.md5:
        return f"its MD5 {served_md5} is not the published {expected.md5}"
    if expected.sha256 and stored_sha256 != expected.sha256:
        return f"its SHA-256 {stored_sha256[:12]}… is not the published {expected.sha256[:12]}…"
    if expected.sha256_prefix and not stored_sha256.startswith(expected.sha256_prefix):
        return f"its SHA-256 {stored_sha256[:12]}… does not start with {expected.sha256_prefix}"
    return None


def _stream(url: str, target: Path, gunzip: bool, progress: bool) -> tuple[str, str]:
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    served, stored = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gunzip else None
    with urllib.request.urlopen(url, timeout=30) as response, target.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task(f"downloading {url.rsplit('/', 1)[-1]}", total=total)
            while chunk := response.read(_CHUNK):
                served.update(chunk)
                bar.advance(task, len(chunk))
                data = inflate.decompress(chunk) if inflate else chunk
                out.write(data)
                stored.update(data)
        if inflate:
            tail = inflate.flush()
            if not inflate.eof:
                raise zlib.error("the gzip stream ends early")
            out.write(tail)
            stored.update(tail)
    return served.hexdigest(), stored.hexdigest()
