"""Streaming, checksum-verified, all-or-nothing downloads, and archive member checks.

A download goes to a hidden temporary file next to its destination, is hashed while it streams, and is
renamed into place only when it is complete and its md5 matches. Any failure (network, short body,
wrong checksum, cancel, Ctrl-C) deletes the temporary file, so no half file is ever left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from zeal_core.errors import ConfigError, DataError
from zeal_core.paths import remove_stale_temp_files
from zeal_core.progress import CancelToken, ProgressCallback, check_cancel, report

CHUNK_BYTES = 1024 * 1024  # read and hash 1 MiB at a time
TIMEOUT_S = 30.0  # seconds without any byte before a download gives up
# Archive limits: refuse archives that would unpack to more than this in all (bytes), or more than this
# many times their own size (a compression bomb; real image archives are about 1x, JPEGs do not compress).
MAX_ARCHIVE_TOTAL_BYTES = 20 * 1000**3
MAX_COMPRESSION_RATIO = 100.0


def resolve_url(url: str) -> str:
    """Accept http(s) and file URLs, and turn a plain local path into a file URL.

    Raises:
        ConfigError: Another scheme (ftp, data, ...), or a plain path that does not exist.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https", "file"):
        return url
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive, i.e. a path
        raise ConfigError(f"unsupported URL scheme in {url!r}: use http://, https://, file:// or a "
                          "local path")
    path = Path(url).expanduser()
    if not path.is_file():
        raise ConfigError(f"{url!r} is neither an http(s)/file URL nor an existing file")
    return path.resolve().as_uri()


def file_md5(path: Path, progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> str:
    """md5 hex of a file, read in chunks (reports ``verify`` progress in bytes)."""
    digest = hashlib.md5(usedforsecurity=False)
    total = path.stat().st_size
    done = 0
    with path.open("rb") as file:
        while chunk := file.read(8 * CHUNK_BYTES):
            check_cancel(cancel)
            digest.update(chunk)
            done += len(chunk)
            report(progress, "verify", done, total, f"checking md5 of {path.name}")
    return digest.hexdigest()


def download_file(
    url: str,
    destination: Path,
    md5: str,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    fix_hint: str = "",
    timeout_s: float = TIMEOUT_S,
) -> Path:
    """Download ``url`` to ``destination`` atomically, verifying its md5 before it appears there.

    Args:
        url: http(s) or file URL, or a local path.
        destination: Final file; replaced only by a complete, verified download.
        md5: Expected md5 hex.
        progress: Receives ``download`` events counted in bytes (total from Content-Length, if sent).
        cancel: Checked between chunks.
        fix_hint: Appended to network error messages (e.g. how to use a mirror instead).
        timeout_s: Seconds to wait for the server before giving up.

    Raises:
        DataError: Network failure, HTTP error, short body or checksum mismatch (nothing is left behind).
        Cancelled: ``cancel`` was set (nothing is left behind).
    """
    url = resolve_url(url)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(destination.parent, destination.name)  # left by a download that was killed
    handle, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.",
                                        suffix=".part")
    tmp = Path(tmp_name)
    hint = f" {fix_hint}" if fix_hint else ""
    try:
        digest = hashlib.md5(usedforsecurity=False)
        done = 0
        request = urllib.request.Request(url, headers={"User-Agent": "zeal-drift-lab/0.1"})
        try:
            with os.fdopen(handle, "wb") as file, \
                    urllib.request.urlopen(request, timeout=timeout_s) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                report(progress, "download", 0, total, f"downloading {url}")
                last_reported = 0
                while True:
                    check_cancel(cancel)
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    file.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if done - last_reported >= 4 * CHUNK_BYTES or done == total:
                        last_reported = done
                        size_text = f"{done / 1e6:.1f}" + (f" / {total / 1e6:.1f}" if total else "")
                        report(progress, "download", done, total, f"{size_text} MB")
                file.flush()
                os.fsync(file.fileno())
        except urllib.error.HTTPError as error:
            raise DataError(f"download of {url} failed: HTTP {error.code} {error.reason}.{hint}") from None
        except urllib.error.URLError as error:
            raise DataError(f"cannot reach {url}: {error.reason}. No network?{hint}") from None
        except http.client.IncompleteRead as error:
            raise DataError(f"download of {url} was cut off after {done + len(error.partial):,} bytes "
                            f"(the server closed the connection early); run it again.{hint}") from None
        except TimeoutError as error:
            raise DataError(f"download of {url} timed out ({error}); run it again.{hint}") from None
        except (http.client.HTTPException, ConnectionError) as error:
            raise DataError(f"download of {url} failed: {type(error).__name__}: {error}; run it again."
                            f"{hint}") from None
        if total is not None and done != total:
            raise DataError(f"download of {url} was cut off: got {done:,} of {total:,} bytes; "
                            f"run it again.{hint}")
        actual = digest.hexdigest()
        if actual != md5:
            raise DataError(f"checksum mismatch for {url}: expected md5 {md5}, got {actual} "
                            f"({done:,} bytes). The download is damaged or is a different file; run it "
                            "again, or if this is a mirror of another archive set ZEAL_IMAGENETTE_MD5 to "
                            "its md5.")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the archive is shared data like any other file
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return destination


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse an archive member that could write outside its folder or is not a plain file or folder.

    Raises:
        DataError: Absolute path, ``..``, symbolic or hard link, device, fifo or other special member.
    """
    name = member.name
    path = PurePosixPath(name)
    problem = None
    if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        problem = "has an absolute path"
    elif ".." in path.parts or ".." in PurePosixPath(name.replace("\\", "/")).parts:
        problem = "climbs out of its folder with '..'"
    elif member.issym() or member.islnk():
        problem = f"is a {'symbolic' if member.issym() else 'hard'} link (to {member.linkname!r})"
    elif member.isdev():
        problem = "is a device or fifo"
    elif not (member.isfile() or member.isdir()):
        problem = "is not a plain file or folder"
    if problem:
        raise DataError(f"unsafe archive {archive}: member {name!r} {problem}; refusing to use it. "
                        "Check that the URL (ZEAL_IMAGENETTE_URL) serves the real archive.")


def checked_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Read every member header, checking each (see ``check_member``) and the running unpacked size.

    The size limits are checked as headers are read, so a compression bomb is refused early.

    Raises:
        DataError: An unsafe member, more than 20 GB or 100x the archive size in all, or a damaged archive.
    """
    archive_bytes = max(1, archive.stat().st_size)
    limit = min(MAX_ARCHIVE_TOTAL_BYTES, MAX_COMPRESSION_RATIO * archive_bytes)
    members: list[tarfile.TarInfo] = []
    total = 0
    for member in tar:
        check_member(member, archive)
        total += max(0, member.size)
        if total > limit:
            raise DataError(f"refusing {archive}: it unpacks to more than {total:,} bytes from "
                            f"{archive_bytes:,} (limits: {MAX_ARCHIVE_TOTAL_BYTES:,} bytes and "
                            f"{MAX_COMPRESSION_RATIO:.0f}x the archive); possible compression bomb.")
        members.append(member)
    return members
