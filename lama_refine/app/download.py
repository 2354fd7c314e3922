"""`lama-refine-download`: the one place inpainting's side of lama-refine touches the network, and
only when asked (training the demo model, `python -m lama_refine.train`, fetches its photos with
`apt-get download`: `train/data.py`).

    lama-refine-download big-lama                                 a known model (lama_refine.models.zoo)
    lama-refine-download mymodel --url URL --sha256 HEX           any other checkpoint, under your name
    lama-refine-download --list                                   known and downloaded names

The file goes to `$LAMA_REFINE_HOME` (default `~/.cache/lama-refine`) as `NAME<suffix>` and is
then loaded by `model.path=NAME`. Bytes arrive in a hidden `.NAME<suffix>.<url hash>.part` file
beside it; a cut connection keeps that file and the next attempt (or the next run of the same
command) asks the server for the rest with an HTTP Range request. Only when the whole file's
digest matches is it renamed to its final name; a mismatch deletes it, so nothing unverified is
ever left where `model.path` would find it. Standard library (urllib) and tqdm only.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import http.client
import json
import os
import socket
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from tqdm import tqdm

from lama_refine.errors import UserError
from lama_refine.io import write_atomic
from lama_refine.metrics.lpips import BUNDLES as METRIC_BUNDLES
from lama_refine.models import zoo
from lama_refine.weights import BUILTIN_MODELS

CHUNK = 1 << 20
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z")


# Weights of the evaluation metrics (lama_refine.metrics.lpips): known files like the models, fetched by a
# bundle's name (`lpips-alex`: backbone and heads), but not models, so not in the model zoo.
METRIC_FILES = {m.name: m for files in METRIC_BUNDLES.values() for m in files}


def known_file(name: str) -> zoo.KnownModel | None:
    return zoo.KNOWN_MODELS.get(name) or METRIC_FILES.get(name)


def digest_matches(actual: str, expected: str) -> bool:
    """A full digest must be equal; a known file published with only a prefix of its SHA-256
    (torchvision's names carry 8 hex digits) must start with it, as torchvision's loader checks.
    Digests given on the command line are always full length (zoo.check_digest)."""
    return actual == expected or (len(expected) >= 8 and actual.startswith(expected))


class Interrupted(Exception):
    """One attempt ended before the whole file arrived; what did arrive is kept in the .part file."""


def partial_path(target: Path, url: str) -> Path:
    """The temporary file of a download: hidden, beside the target, one per URL, so a resumed
    download never continues bytes that came from another address."""
    tag = hashlib.sha1(url.encode()).hexdigest()[:10]
    return target.with_name(f".{target.name}.{tag}.part")


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _content_range_start(value: str | None) -> int | None:
    """`bytes 100-199/200` -> 100."""
    if not value or not value.startswith("bytes "):
        return None
    first = value[6:].split("-", 1)[0]
    return int(first) if first.isdigit() else None


def _attempt(url: str, part: Path, timeout: float, progress: bool, label: str) -> None:
    """Fetch what `part` lacks (all of it when it is absent); Interrupted if the body ends early."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "lama-refine-download", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as error:
        if error.code == 416 and have:  # the part already holds everything: the digest decides
            return
        raise
    with response:
        if have and (response.status != 206 or _content_range_start(response.headers.get("Content-Range")) != have):
            have = 0  # the server sent the whole file (no Range support): start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        with (
            part.open("ab" if have else "wb", buffering=0) as file,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while True:
                try:
                    block = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as error:
                    raise Interrupted(f"{type(error).__name__}: {error}") from error
                if not block:
                    break
                try:
                    file.write(block)
                except OSError as error:  # a full disk is not a network problem: no retry
                    raise UserError(
                        f"cannot write {part}: {error.strerror or error}; what arrived is kept: "
                        "make room and run the same command again to resume",
                        exit_code=1,
                    ) from error
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size < total:  # http.client ends a cut body quietly: count the bytes
        raise Interrupted(f"the connection closed after {size} of {total} bytes")


NAME_LOOKUP = "name lookup failed"


def unreachable_reason(reason: object) -> str | None:
    """Plain words for an error that means the server was never reached (a failed name lookup, a
    refused or timed-out connection); None for one met after it answered."""
    if isinstance(reason, socket.gaierror):
        return NAME_LOOKUP
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "no answer: the connection timed out"
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "network unreachable"
    return None


def fetch(
    url: str,
    target: Path,
    algorithm: str,
    digest: str,
    *,
    retries: int = 3,
    timeout: float = 60,
    progress: bool = True,
    wait: float = 1.0,
) -> Path:
    """Download `url` to `target` (a file), verified against `digest`; resume a partial download.

    Raises UserError: exit 1 for a failed or interrupted download (the partial file is kept for
    the next run), at once for a name that does not resolve (retrying cannot help), and for a
    checksum mismatch (the download is deleted)."""
    part = partial_path(target, url)
    for attempt in range(retries + 1):
        try:
            _attempt(url, part, timeout, progress, target.name)
            break
        except HTTPError as error:  # the server answered, and no: retrying will not help
            raise UserError(f"download of {url} failed: HTTP {error.code} {error.reason}", exit_code=1) from error
        except (Interrupted, URLError, OSError, http.client.HTTPException) as error:
            reason = error.reason if isinstance(error, URLError) else error
            kept = part.stat().st_size if part.exists() else 0
            if part.exists() and not kept:
                part.unlink(missing_ok=True)  # an empty .part resumes nothing; it would only be named
            unreachable = unreachable_reason(reason)
            if unreachable is not None and not kept:  # the name did not resolve or no one answered
                if unreachable == NAME_LOOKUP or attempt == retries:
                    raise UserError(
                        f"cannot reach {urlparse(url).netloc} ({unreachable}); nothing was downloaded: "
                        "check the network connection (or the proxy settings) and run the same "
                        "command again",
                        exit_code=1,
                    ) from error
            elif attempt == retries:
                keeps = (
                    f"{kept} bytes are kept in {part}: run the same command again to resume"
                    if kept
                    else "nothing was downloaded: run the same command again"
                )
                raise UserError(f"download of {url} interrupted ({reason}); {keeps}", exit_code=1) from error
            tqdm.write(
                f"download interrupted ({reason}); "
                + (f"resuming from byte {kept}" if kept else "trying again")
                + f" (attempt {attempt + 2} of {retries + 1})"
            )
            time.sleep(wait * 2**attempt)
    actual = file_digest(part, algorithm)
    if not digest_matches(actual, digest):
        part.unlink(missing_ok=True)
        raise UserError(
            f"checksum mismatch for {url}: expected {algorithm} {digest}, got {actual}; "
            "the download was deleted, nothing was kept",
            exit_code=1,
        )
    os.replace(part, target)
    return target


def write_record(name: str, target: Path, url: str, algorithm: str, digest: str) -> None:
    record = {
        "name": name,
        "file": target.name,
        "url": url,
        "algorithm": algorithm,
        "digest": digest,
        "size": target.stat().st_size,
        "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(record, indent=1) + "\n"
    write_atomic(zoo.record_path(name, target.parent), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def download(
    name: str,
    url: str | None = None,
    algorithm: str | None = None,
    digest: str | None = None,
    *,
    force: bool = False,
    retries: int = 3,
    progress: bool = True,
) -> Path:
    """Put the model `name` into the cache folder and return its file; UserError for every mistake.

    Without `url`, `name` must be a known model; with it, any name but a known one, and a digest."""
    zoo.check_name(name)
    if url is None:
        if digest is not None:
            raise UserError(f"--{algorithm} needs --url: the digest of which file?")
        known = known_file(name)
        if known is None:
            raise UserError(
                f"unknown model name {name!r}; known names: {', '.join(zoo.KNOWN_MODELS)} "
                f"(metrics: {', '.join(METRIC_BUNDLES)}).\n"
                f"To download any other checkpoint under this name: {zoo.download_command(name)}"
            )
        url, algorithm, digest = known.url, known.algorithm, known.digest
    else:
        if known_file(name) is not None or name in METRIC_BUNDLES:
            bundle = next(
                (b for b, files in METRIC_BUNDLES.items() if name == b or name in {m.name for m in files}), None
            )
            command = f"lama-refine-download {bundle}" if bundle else zoo.download_command(name)
            what = "metric's weights" if bundle else "model"
            raise UserError(
                f"{name!r} is a known {what} with a fixed URL and digest: download it with "
                f"`{command}`, or give your file another name"
            )
        if digest is None or algorithm is None:
            raise UserError(
                "refusing to download without a checksum: add --sha256 HEX (or --md5 HEX), the "
                "digest its publisher gives"
            )
        if urlparse(url).scheme not in ("http", "https"):
            raise UserError(f"--url {url!r}: only http:// and https:// addresses are downloaded")
        if Path(urlparse(url).path).suffix.lower() in ARCHIVE_SUFFIXES:
            raise UserError(
                f"--url {url!r} is an archive: download and unpack it yourself, then pass the "
                "folder or checkpoint to model.path"
            )
        digest = zoo.check_digest(algorithm, digest)

    folder = zoo.home()
    target = folder / (name + zoo.url_suffix(url))
    previous = zoo.cached_file(name, folder)
    record = zoo.read_record(name, folder)
    same = record is not None and record.get("algorithm") == algorithm and record.get("digest") == digest
    if not force and previous == target and (same or digest_matches(file_digest(target, algorithm), digest)):
        if not same:
            write_record(name, target, url, algorithm, digest)
        print(f"{name} is already downloaded: {target}")
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot create the model folder {folder} ({error.strerror}); set {zoo.HOME_ENV} to a writable folder",
            exit_code=1,
        ) from error
    print(f"downloading {name} from {url}\n  -> {target}")
    fetch(url, target, algorithm, digest, retries=retries, progress=progress)
    write_record(name, target, url, algorithm, digest)
    if previous is not None and previous != target:  # the name's old file, under another suffix
        previous.unlink(missing_ok=True)
    use = "LPIPS in lama-refine-eval" if name in METRIC_FILES else f"model.path={name}"
    print(f"{algorithm} {digest} verified; used by {use}")
    return target


def download_bundle(name: str, *, force: bool = False, retries: int = 3, progress: bool = True) -> list[Path]:
    """Every file of a metric's bundle (`lpips-alex`), each verified and kept as its own name."""
    return [download(m.name, force=force, retries=retries, progress=progress) for m in METRIC_BUNDLES[name]]


def listing() -> str:
    """The known names and the downloaded ones, with where they are."""
    have = zoo.downloaded()
    lines = [f"named models in {zoo.home()} (set {zoo.HOME_ENV} to use another folder):"]
    for name, known in zoo.KNOWN_MODELS.items():
        state = f"downloaded: {have[name]}" if name in have else f"not downloaded: {zoo.download_command(name)}"
        lines.append(f"  {name:<16} {known.description}\n  {'':<16} {state}")
    for name, path in have.items():
        if name not in zoo.KNOWN_MODELS and name not in METRIC_FILES:
            record = zoo.read_record(name) or {}
            lines.append(f"  {name:<16} downloaded: {path} (from {record.get('url', '?')})")
    for bundle, files in METRIC_BUNDLES.items():
        state = "downloaded" if all(m.name in have for m in files) else f"not downloaded: lama-refine-download {bundle}"
        lines.append(
            f"  {bundle:<16} LPIPS weights for lama-refine-eval ({', '.join(m.name for m in files)})\n"
            f"  {'':<16} {state}"
        )
    lines.append(
        "built in (no download): " + ", ".join(f"{name} ({path.name})" for name, path in BUILTIN_MODELS.items())
    )
    lines.append("use one with model.path=NAME; any other checkpoint: lama-refine-download NAME --url URL --sha256 HEX")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="lama-refine-download",
        description=f"Download a named model into $LAMA_REFINE_HOME (default ~/.cache/lama-refine), verify "
        f"its checksum, and make it loadable as model.path=NAME. Known names: "
        f"{', '.join(zoo.KNOWN_MODELS)}. Nothing else in lama-refine downloads anything.",
    )
    parser.add_argument("name", nargs="?", help="a known model name, or your name for the file at --url")
    parser.add_argument("--url", help="download this http(s) address instead of a known model's")
    digests = parser.add_mutually_exclusive_group()
    digests.add_argument("--sha256", metavar="HEX", help="the file's SHA-256 (required with --url, or --md5)")
    digests.add_argument("--md5", metavar="HEX", help="the file's MD5")
    parser.add_argument("--list", action="store_true", help="show the known and the downloaded names")
    parser.add_argument("--force", action="store_true", help="download again even if the file is there")
    parser.add_argument("--retries", type=int, default=3, help="resume a cut connection this often (default 3)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.list or args.name is None:
        print(listing())
        return 0
    algorithm, digest = ("sha256", args.sha256) if args.sha256 else ("md5", args.md5) if args.md5 else (None, None)
    try:
        if args.name in METRIC_BUNDLES and args.url is None and digest is None:
            download_bundle(args.name, force=args.force, retries=max(0, args.retries), progress=not args.quiet)
        else:
            download(
                args.name,
                args.url,
                algorithm,
                digest,
                force=args.force,
                retries=max(0, args.retries),
                progress=not args.quiet,
            )
    except UserError as error:
        parser.exit(error.exit_code, f"lama-refine-download: error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(130, "lama-refine-download: interrupted; run the same command again to resume\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
