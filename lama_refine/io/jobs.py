"""Finding jobs in folder layouts (README "Batch processing").

- LaMa's: every `*mask*.png` under `indir` (recursive) is a mask; its image is the mask's name
  cut at the last `_mask`, with `.png` or another image suffix. The output is named after the mask.
- split (IOPaint's): images under `indir`, masks under `maskdir` at the same relative path and
  stem (any image suffix), or `maskdir` is one mask file for every image. The output is named
  after the image. With `mask.from_alpha`, images only: the hole is where the image is transparent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lama_refine.io.read import IMAGE_SUFFIXES, InputError


@dataclass(frozen=True)
class Job:
    """One image to inpaint: its mask (None: the hole is the image's transparency), and the
    output's path relative to outdir (without suffix). `problem` is set when pairing the files
    already failed (e.g. no image for this mask): the job is reported, never run."""

    image: Path
    mask: Path | None
    relative: Path  # the output is outdir / relative.with_suffix(ext)
    problem: str | None = None

    @property
    def name(self) -> Path:
        """The file that names this job in reports: the mask where there is one, else the image."""
        return self.mask if self.mask is not None else self.image

    def output(self, outdir: Path, ext: str) -> Path:
        return safe_output(outdir, self.relative, ext)


def safe_output(outdir: Path, relative: Path, ext: str) -> Path:
    """outdir / relative with `ext`, refused (InputError) if it would land outside outdir: an
    absolute or `..` relative path, or a symlinked folder under outdir that points elsewhere."""
    relative = Path(relative)
    if relative.is_absolute() or relative.anchor or ".." in relative.parts:
        raise InputError(f"{relative}: refused, its output would be written outside outdir {outdir}")
    out = Path(outdir) / relative.with_suffix(ext)
    root = Path(outdir).resolve()
    # resolve() follows the symlinks that exist; the output itself is replaced by rename, so only
    # the folder it lands in matters.
    if not out.parent.resolve().is_relative_to(root):
        raise InputError(f"{relative}: refused, {out.parent} leads outside outdir {outdir} (symlink?)")
    return out


def walk(root: Path, exclude: Iterable[Path] = ()) -> Iterator[Path]:
    """Every file and folder under `root`, recursively, following symlinked folders once each.

    Skipped: names starting with `.` (hidden files, macOS `._*` companions, our own temporary
    files and `.lama-refine/` logs) and the trees in `exclude` (an outdir inside indir, so that
    a rerun does not take its own outputs for inputs)."""
    excluded = {p.resolve() for p in exclude}
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen or Path(top).resolve() in excluded:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(dirs + files):
            path = Path(top) / name
            if not name.startswith(".") and not (excluded and path.resolve() in excluded):
                yield path


def has_image_suffix(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def sibling_candidates(base: Path, stem: str) -> list[Path]:
    """`base/stem` with each image suffix, lower case then upper case, `.png` first."""
    return [base / (stem + s) for s in IMAGE_SUFFIXES] + [base / (stem + s.upper()) for s in IMAGE_SUFFIXES]


def first_existing(candidates: list[Path]) -> Path | None:
    """The first candidate that is a file; else the first that exists at all (a folder named
    like an image is then reported as such); else None."""
    return next((c for c in candidates if c.is_file()), None) or next((c for c in candidates if c.exists()), None)


def _missing(what: str, name: Path, candidates: list[Path]) -> str:
    others = "/".join(
        dict.fromkeys(c.suffix.lower() for c in candidates[1:] if c.suffix.lower() != candidates[0].suffix)
    )
    return f"{name}: no {what} (looked for {candidates[0]}, also as {others})"


def lama_jobs(root: Path, exclude: Iterable[Path] = ()) -> list[Job]:
    """LaMa's layout: every `*mask*.png` under root, with its image."""
    jobs = []
    for mask in walk(root, exclude):
        if "mask" not in mask.name or mask.suffix.lower() != ".png":
            continue
        candidates = sibling_candidates(mask.parent, mask.name.rsplit("_mask", 1)[0])
        image = first_existing(candidates)
        problem = None if image is not None else _missing("image for this mask", mask, candidates)
        if mask.is_dir():
            problem = f"{mask}: is a folder, not an image file"
        jobs.append(Job(image or candidates[0], mask, mask.relative_to(root), problem))
    return jobs


def split_jobs(root: Path, maskdir: Path, exclude: Iterable[Path] = ()) -> list[Job]:
    """IOPaint's layout: images under root; masks under maskdir at the same relative path and
    stem (any image suffix), or maskdir is a single mask file used for every image."""
    exclude = [*exclude, maskdir]
    images = [p for p in walk(root, exclude) if has_image_suffix(p)]
    if not maskdir.is_dir():
        return [Job(image, maskdir, image.relative_to(root)) for image in images]
    jobs, used = [], {}
    for image in images:
        rel = image.relative_to(root)
        candidates = sibling_candidates(maskdir / rel.parent, rel.stem)
        mask = first_existing(candidates)
        if mask is not None:
            used[mask] = image
        problem = None if mask is not None else _missing("mask for this image in maskdir", image, candidates)
        jobs.append(Job(image, mask or candidates[0], rel, problem))
    by_stem = {m.with_suffix(""): m for m in used}
    for mask in walk(maskdir):
        if not has_image_suffix(mask) or mask in used:
            continue
        rel = mask.relative_to(maskdir)
        twin = by_stem.get(mask.with_suffix(""))
        problem = (
            f"{mask}: ignored, {twin} is the mask of {used[twin]}"
            if twin is not None
            else f"{mask}: no image for this mask (looked for {root / rel.with_suffix('')}.* under indir)"
        )
        jobs.append(Job(root / rel, mask, rel, problem))
    return jobs


def alpha_jobs(root: Path, exclude: Iterable[Path] = ()) -> list[Job]:
    """Images only (mask.from_alpha): every image under root; the hole is its transparency."""
    return [Job(p, None, p.relative_to(root)) for p in walk(root, exclude) if has_image_suffix(p)]


def mark_collisions(jobs: list[Job]) -> list[Job]:
    """Two jobs with one output name (`a.jpg` and `a.png` in the split layout): the later one is
    reported instead of overwriting or skipping the first one's output."""
    owners: dict[str, Job] = {}
    marked = []
    for job in jobs:
        key = str(job.relative.with_suffix("")).lower()  # case-insensitive file systems collide too
        first = owners.setdefault(key, job)
        if first is not job and job.problem is None:
            job = Job(
                job.image,
                job.mask,
                job.relative,
                f"{job.name}: its output name {job.relative.with_suffix('')} is already taken by {first.name}",
            )
        marked.append(job)
    return marked


def why_no_jobs(root: Path, exclude: Iterable[Path] = ()) -> str | None:
    """Why LaMa's layout found no job under `root` although it holds images: masks that are not
    `*mask*.png` (JPEG, WEBP, ...), or images without masks. None for a folder without images."""
    masks: list[Path] = []
    images: list[Path] = []
    for path in walk(root, exclude):
        if path.is_file() and has_image_suffix(path):
            (masks if "mask" in path.name.lower() else images).append(path)
    if masks:
        kinds = "/".join(sorted({p.suffix.lower() for p in masks}))
        return (
            f"no *mask*.png masks under indir={root}, but {len(masks)} {kinds} mask(s), e.g. "
            f"{masks[0].relative_to(root)}: LaMa's layout takes PNG masks only (a JPEG mask's compression "
            "noise grows the hole); save them as PNG, or put them in their own folder and give maskdir="
        )
    if images:
        return (
            f"no masks under indir={root}, only {len(images)} image(s), e.g. {images[0].relative_to(root)}: "
            f"LaMa's layout wants each photo's mask beside it as <photo>_mask.png (e.g. "
            f"{images[0].with_name(images[0].stem + '_mask.png').relative_to(root)}); masks in another folder: "
            "maskdir=DIR; holes from transparency: mask.from_alpha=true"
        )
    return None


def find_jobs(
    indir: str | os.PathLike,
    maskdir: str | os.PathLike | None = None,
    from_alpha: bool = False,
    exclude: Iterable[str | os.PathLike] = (),
) -> list[Job]:
    """Every job under `indir`, sorted by output name (the order shards split): LaMa's layout
    when `maskdir` is None, else the split layout; `from_alpha` takes holes from transparency.
    `exclude`: folders not to search (the outdir when it lies inside indir)."""
    root = Path(indir)
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist or is not a folder")
    excluded = [Path(p) for p in exclude]
    if from_alpha and maskdir is not None:
        raise ValueError("mask.from_alpha=true takes holes from the images: leave maskdir unset")
    if maskdir is not None and not Path(maskdir).exists():
        raise FileNotFoundError(f"maskdir {maskdir} does not exist")
    if from_alpha:
        jobs = alpha_jobs(root, excluded)
    elif maskdir is None:
        jobs = lama_jobs(root, excluded)
    else:
        jobs = split_jobs(root, Path(maskdir), excluded)
    jobs.sort(key=lambda j: (str(j.relative), str(j.name)))
    return mark_collisions(jobs)
