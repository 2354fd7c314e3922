"""Named models: what `lama-refine-download NAME` fetches and what `model.path=NAME` loads.

A named model is one file in the cache folder, `$LAMA_REFINE_HOME` (default
`~/.cache/lama-refine`), next to a record `NAME.json` saying where it came from and its checksum:

    ~/.cache/lama-refine/big-lama.pt      the checkpoint, renamed into place after its digest matched
    ~/.cache/lama-refine/big-lama.json    {"name", "file", "url", "algorithm", "digest", "size", ...}

This module only looks things up; it never touches the network. Fetching is
`lama_refine.app.download` (the `lama-refine-download` command), and nothing else downloads.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lama_refine.errors import UserError
from lama_refine.weights import BUILTIN_MODELS

HOME_ENV = "LAMA_REFINE_HOME"
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
DIGEST_LENGTHS = {"md5": 32, "sha256": 64}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".bin")
"""Suffixes a downloaded file keeps from its URL (loading sniffs the format from the bytes, the
suffix is for people looking at the folder)."""


@dataclass(frozen=True)
class KnownModel:
    """A published checkpoint with a digest its publisher gives."""

    name: str
    url: str
    algorithm: str  # a hashlib name in DIGEST_LENGTHS
    digest: str
    source: str  # where the URL and the digest are written down
    description: str

    @property
    def filename(self) -> str:
        return self.name + url_suffix(self.url)


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="big-lama",
            # Both from IOPaint (github.com/Sanster/IOPaint, iopaint/model/lama.py, LAMA_MODEL_URL and
            # LAMA_MODEL_MD5; read at commit 49e0a1806e3e): the TorchScript export of the LaMa authors'
            # big-lama that IOPaint / lama-cleaner download. The authors' own big-lama.zip (a Yandex
            # Disk link in advimman/lama's README) comes with no published digest, so it is not listed.
            url="https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt",
            algorithm="md5",
            digest="e3aa4aaa15225a33ec84f9f4bc47e500",
            source="IOPaint, iopaint/model/lama.py (LAMA_MODEL_URL, LAMA_MODEL_MD5)",
            description="LaMa's big-lama (Places2 + Places Challenge), TorchScript export",
        ),
    )
}


def home() -> Path:
    """The cache folder: `$LAMA_REFINE_HOME`, else `~/.cache/lama-refine` (not created here)."""
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "lama-refine"


def is_name(value: str) -> bool:
    """Could `value` name a model (rather than a path)? Letters, digits, `.`, `_`, `-` only."""
    return bool(NAME_PATTERN.fullmatch(value)) and value not in (".", "..")


def check_name(name: str) -> str:
    if not is_name(name):
        raise UserError(f"model name {name!r} is not valid: use letters, digits, '.', '_' and '-' only")
    return name


def check_digest(algorithm: str, digest: str) -> str:
    """A hex digest of the right length for `algorithm`, lower-cased."""
    digest = digest.strip().lower()
    length = DIGEST_LENGTHS[algorithm]
    if len(digest) != length or not re.fullmatch(r"[0-9a-f]+", digest):
        raise UserError(f"--{algorithm} {digest!r} is not a {algorithm} digest ({length} hex digits)")
    return digest


def url_suffix(url: str) -> str:
    """The checkpoint suffix at the end of the URL's path (`.pt`, ...), '' if it has none of them."""
    from urllib.parse import urlparse

    suffix = Path(urlparse(url).path).suffix.lower()
    return suffix if suffix in CHECKPOINT_SUFFIXES else ""


def record_path(name: str, folder: Path | None = None) -> Path:
    return (folder or home()) / f"{name}.json"


def read_record(name: str, folder: Path | None = None) -> dict[str, Any] | None:
    """The download record of `name`, None if there is none (or it is unreadable)."""
    path = record_path(name, folder)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("file"), str) else None


def cached_file(name: str, folder: Path | None = None) -> Path | None:
    """The downloaded file of `name`, None if it is not downloaded."""
    folder = folder or home()
    record = read_record(name, folder)
    # A known model's file has a fixed name, so it is found even if its record was lost.
    filename = record["file"] if record else (KNOWN_MODELS[name].filename if name in KNOWN_MODELS else None)
    if filename is None or Path(filename).name != filename:
        return None
    path = folder / filename
    return path if path.is_file() else None


def is_known_or_recorded(name: str) -> bool:
    return name in KNOWN_MODELS or read_record(name) is not None


def download_command(name: str) -> str:
    """The command that downloads `name`."""
    if name in KNOWN_MODELS:
        return f"lama-refine-download {name}"
    return f"lama-refine-download {name} --url URL --sha256 HEX"


def resolve(name: str) -> Path:
    """The cached file of a named model; UserError (with the download command) if it is not there."""
    found = cached_file(name)
    if found is not None:
        return found
    if name in KNOWN_MODELS:
        raise UserError(
            f"model.path={name}: the model {name!r} is not downloaded yet (looked in {home()}).\n"
            f"Download it once with:  {download_command(name)}"
        )
    raise UserError(
        f"model.path={name}: no file or folder of that name here, and no downloaded model "
        f"called {name!r} in {home()}.\n"
        f"Built in: {', '.join(BUILTIN_MODELS)}. Known names: {', '.join(KNOWN_MODELS)} "
        f"(lama-refine-download NAME); any other file: "
        f"{download_command(name)}; or give a path to a checkpoint."
    )


def lookup(value: str, path: Path) -> Path:
    """What `model.path=value` (or a command's model argument) names: `path`, the file or folder
    `value` names, where it exists; else, for a model name, the built-in file (`demo`,
    `demo-fill`) or the downloaded one (a UserError with the download command where it is not
    downloaded yet). A missing `x.ckpt` and the like stays a path, so its error is about the file."""
    if path.exists() or not is_name(value):
        return path
    if value in BUILTIN_MODELS:
        return BUILTIN_MODELS[value]
    if is_known_or_recorded(value) or Path(value).suffix.lower() not in CHECKPOINT_SUFFIXES:
        return resolve(value)
    return path


def downloaded() -> dict[str, Path]:
    """Every named model in the cache folder (known or the user's), name -> file."""
    folder = home()
    names = set(KNOWN_MODELS)
    if folder.is_dir():
        names |= {p.stem for p in folder.glob("*.json") if not p.name.startswith(".")}
    found = {name: cached_file(name, folder) for name in sorted(names)}
    return {name: path for name, path in found.items() if path is not None}


__all__ = [
    "CHECKPOINT_SUFFIXES",
    "DIGEST_LENGTHS",
    "HOME_ENV",
    "KNOWN_MODELS",
    "KnownModel",
    "cached_file",
    "check_digest",
    "check_name",
    "download_command",
    "downloaded",
    "home",
    "is_known_or_recorded",
    "is_name",
    "lookup",
    "read_record",
    "record_path",
    "resolve",
]
