"""Download a file (or an archive, then extract it) with an md5 check, atomically.

Only the loaders call this, and only when asked (``download=True``). Every failure becomes one
:class:`~mapd.errors.DataError` that says what to fetch by hand and where to put it, because most
machines that run mapd have no internet: a file put there by hand is picked up on the next run
(an archive already present with the right md5 is extracted without touching the network).
"""

from __future__ import annotations

import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from mapd.data.files import md5sum
from mapd.errors import DataError
from mapd.io import atomic_path

TIMEOUT_SECONDS = 60.0
_CHUNK = 1 << 20


def download_file(url: str, *, dest: str | os.PathLike, md5: str) -> Path:
    """Fetch ``url`` to ``dest`` and check its md5; return ``dest``.

    Nothing is fetched if ``dest`` already exists with the expected md5. The file is written to a
    temporary sibling and renamed only once its md5 matches, so ``dest`` is never half-written.

    Raises:
        DataError: the download failed (the message says how to get the file by hand), or the
            downloaded file's md5 is not ``md5`` (the message gives expected and actual).
    """
    dest = Path(dest).expanduser()
    md5 = md5.lower()
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    with atomic_path(dest) as tmp:
        _fetch(url, tmp, dest=dest, md5=md5)
        actual = md5sum(tmp)
        if actual != md5:
            raise DataError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {actual}; the download is "
                f"incomplete or not the expected file (nothing was written to {dest})"
            )
    return dest


def download_archive(
    url: str, *, root: str | os.PathLike, md5: str, filename: str | None = None
) -> Path:
    """Download the tar / tar.gz / zip archive at ``url`` into ``root`` and extract it there.

    The archive is kept as ``root/filename`` (default: the last part of the URL); the top-level
    entries it contains are extracted into a temporary directory inside ``root`` and then renamed
    into ``root``, replacing entries of the same name, so a failed extraction leaves ``root`` as
    it was. Returns ``root``.

    Raises:
        DataError: download failure, md5 mismatch, or an archive that is corrupt, of an unknown
            kind, or has members that would land outside ``root``.
    """
    root = Path(root).expanduser()
    name = filename or PurePosixPath(urllib.parse.urlparse(url).path).name
    if not name:
        raise DataError(f"cannot tell the archive's file name from {url!r}; pass filename=")
    archive = download_file(url, dest=root / name, md5=md5)
    extract_archive(archive, root)
    return root


def extract_archive(archive: str | os.PathLike, root: str | os.PathLike) -> None:
    """Extract a tar (any compression) or zip ``archive`` into ``root`` via a temporary dir."""
    archive, root = Path(archive), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-extract-"))
    try:
        try:
            if tarfile.is_tarfile(archive):
                with tarfile.open(archive) as tar:
                    # "data" refuses absolute paths, "..", links out of the tree and devices
                    tar.extractall(tmp, filter="data")
            elif zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    for member in zf.namelist():
                        parts = PurePosixPath(member).parts
                        if member.startswith(("/", "\\")) or ".." in parts:
                            raise DataError(
                                f"refusing to extract {archive}: member {member!r} would land "
                                f"outside {root}"
                            )
                    zf.extractall(tmp)
            else:
                raise DataError(f"{archive} is neither a tar nor a zip archive")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            raise DataError(f"cannot extract {archive}: {e}") from e
        for entry in sorted(tmp.iterdir()):
            _replace(entry, root / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace(src: Path, target: Path) -> None:
    """Rename ``src`` onto ``target``; an existing ``target`` is moved aside first, then removed."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".tmp-old-{target.name}-{os.getpid()}")
        os.replace(target, old)
    os.replace(src, target)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


def _fetch(url: str, tmp: Path, *, dest: Path, md5: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "mapd"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as resp, open(tmp, "wb") as f:
            shutil.copyfileobj(resp, f, _CHUNK)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"could not download {url} ({reason}). On a host with internet, download it by hand "
            f"and put it at {dest} (md5 {md5}), then run again"
        ) from e
