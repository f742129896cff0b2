"""Download and cache of public data files (standard library only)."""

from __future__ import annotations

import os
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from urllib.error import URLError

from tqdm.auto import tqdm

#: CPA's data bundle (Lotfollahi et al. 2023), which holds the preprocessed Norman 2019 file.
CPA_BINARIES_URL = "https://dl.fbaipublicfiles.com/dlp/cpa_binaries.tar"
#: Path of the Norman 2019 file inside :data:`CPA_BINARIES_URL`.
NORMAN2019_MEMBER = "datasets/Norman2019_raw.h5ad"
#: Environment variable overriding the default cache directory.
CACHE_ENV = "SCSENA_CACHE_DIR"

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """Return the directory where downloaded files are cached.

    Returns
    -------
    ``$SCSENA_CACHE_DIR`` when set, else ``~/.cache/scsena``.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "scsena"


class _ProgressReader:
    """File-like wrapper that advances a progress bar as bytes are read."""

    def __init__(self, raw, bar) -> None:
        self._raw = raw
        self._bar = bar

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._bar.update(len(data))
        return data


def _member_matches(name: str, member: str) -> bool:
    name = name.lstrip("./")
    return name == member or name.endswith("/" + member)


def download_tar_member(
    url: str,
    member: str,
    dest: str | os.PathLike,
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Stream a tar archive from ``url`` and extract a single member to ``dest``.

    The archive is read as a stream: only the requested member is written to disk,
    first to a temporary file next to ``dest`` that is renamed when complete.

    Parameters
    ----------
    url
        Address of the (possibly compressed) tar archive.
    member
        Path of the file inside the archive (a leading folder in the archive is
        tolerated).
    dest
        Where to write the extracted file.
    progress
        Show a progress bar over the bytes downloaded.
    timeout
        Socket timeout in seconds.

    Returns
    -------
    The path of the extracted file.

    Raises
    ------
    ConnectionError
        When the archive cannot be downloaded (for instance offline).
    FileNotFoundError
        When the archive has no such member.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    response = _open_url(url, timeout)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with (
            response,
            tqdm(
                total=_content_length(response),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"Downloading {Path(member).name}",
                disable=not progress,
            ) as bar,
        ):
            found = _extract_member(_ProgressReader(response, bar), member, tmp)
        if not found:
            raise FileNotFoundError(f"{url} has no member {member!r}.")
        os.replace(tmp, dest)
    except (URLError, TimeoutError, ConnectionError) as err:
        raise ConnectionError(f"Download of {url} interrupted: {err}") from err
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _open_url(url: str, timeout: float):
    """Open ``url`` for reading, as a :class:`ConnectionError` when that fails."""
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except (URLError, OSError) as err:
        raise ConnectionError(f"Could not download {url}: {err}") from err


def _content_length(response) -> int | None:
    """The announced size of a response in bytes, when known."""
    headers = getattr(response, "headers", None)
    length = headers.get("Content-Length") if headers is not None else None
    if length is not None and str(length).isdigit():
        return int(length)
    return None


def _extract_member(stream, member: str, out_path: Path) -> bool:
    """Copy ``member`` of the tar ``stream`` to ``out_path``; whether it was found."""
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for info in tar:
            if info.isfile() and _member_matches(info.name, member):
                src = tar.extractfile(info)
                with open(out_path, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                return True
    return False


def fetch_tar_member(
    url: str,
    member: str,
    filename: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    how_to_offline: str = "",
) -> Path:
    """Return a cached copy of a tar member, downloading it on first use.

    Parameters
    ----------
    url
        Address of the tar archive.
    member
        Path of the file inside the archive.
    filename
        File name in the cache directory.
    cache_dir
        Cache directory; default :func:`default_cache_dir`.
    progress
        Show a progress bar while downloading.
    how_to_offline
        Sentence appended to the error message when the download fails.

    Returns
    -------
    Path of the cached file.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / filename
    if target.is_file():
        return target
    try:
        return download_tar_member(url, member, target, progress=progress)
    except ConnectionError as err:
        raise ConnectionError(
            f"{filename} is not in the cache ({cache}) and could not be downloaded from "
            f"{url} ({err.__cause__ or err}). {how_to_offline}"
        ) from err
