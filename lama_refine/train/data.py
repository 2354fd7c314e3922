"""Training photos: where they come from, which are held out, and random crops of them.

The default set is made of openly licensed photos that installable packages ship: the photo
wallpapers of two Debian packages (fetched with `apt-get download` and unpacked with
`dpkg -x` into a cache folder: no root install, no other network access) and the colour and
grey photos bundled with scikit-image (the optional `train` extra). Any folder of images can
replace them (`data.image_dir`), which is what the tests do.

A fixed list of photos is held out for validation and never trained on (`HOLDOUT`).
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from lama_refine.io import IMAGE_SUFFIXES, read_image, to_hwc, to_uint8
from lama_refine.train.mask_families import mixed_mask, seeded_mask

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/lama-refine/data").expanduser()

_MATE = "usr/share/backgrounds/mate/nature/{}.jpg"
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"

# name -> (source, location). Source is a Debian package (location: path inside it) or
# "skimage" (location: the `skimage.data` function). Licenses: docs/default-model.md.
PHOTOS: dict[str, tuple[str, str]] = {
    **{
        f"mate/{n}": ("mate-backgrounds", _MATE.format(n))
        for n in (
            "Aqua",
            "Blinds",
            "Dune",
            "FreshFlower",
            "Garden",
            "GreenMeadow",
            "LadyBird",
            "RainDrops",
            "Storm",
            "TwoWings",
            "Wood",
            "YellowFlower",
        )
    },
    **{
        f"plasma/{n}": ("plasma-workspace-wallpapers", _PLASMA.format(n))
        for n in (
            "BytheWater",
            "ColdRipple",
            "ColorfulCups",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "Kite",
            "OneStandsOut",
            "Path",
            "summer_1am",
        )
    },
    **{
        f"skimage/{n}": ("skimage", n)
        for n in ("astronaut", "coffee", "chelsea", "rocket", "camera", "grass", "gravel", "brick")
    },
}
# Never trained on: validation, the model card's numbers and the shipped examples.
HOLDOUT: tuple[str, ...] = ("mate/LadyBird", "mate/Storm", "plasma/EveningGlow", "plasma/Path")


def fetch_debian_package(package: str, cache: Path = DEFAULT_CACHE) -> Path:
    """Unpack a Debian package into `cache/package` (once) and return that folder.

    `apt-get download` needs no root and only Debian's archive; `dpkg -x` unpacks without
    installing. A `.complete` marker makes an interrupted unpack start over.
    """
    target = cache / package
    if (target / ".complete").exists():
        return target
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` is needed to fetch {package}; pass data.image_dir=FOLDER instead")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        log.info("downloading Debian package %s", package)
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        (deb,) = Path(tmp).glob(f"{package}_*.deb")
        subprocess.run(["dpkg", "-x", str(deb), str(target)], check=True)
    (target / ".complete").touch()
    return target


def _skimage_photo(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as error:  # the optional `train` extra
        raise RuntimeError("scikit-image is needed for the bundled photos: pip install scikit-image") from error
    return getattr(skimage.data, name)()


def as_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Grey or RGBA uint8 -> (H, W, 3) uint8; grey photos are repeated over the channels."""
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3]).astype(np.uint8)


def read_rgb8(path: Path | str) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB, read by the app's own rules (`lama_refine.io.read_image`)."""
    return to_uint8(to_hwc(read_image(path)))


def load_named_photo(name: str, cache: Path = DEFAULT_CACHE) -> np.ndarray:
    """One of `PHOTOS` at full resolution, (H, W, 3) uint8, fetching its package if needed."""
    source, location = PHOTOS[name]
    if source == "skimage":
        return as_rgb_uint8(_skimage_photo(location))
    return read_rgb8(fetch_debian_package(source, cache) / location)


def shrink_to_short_side(image: np.ndarray, max_short_side: int | None) -> np.ndarray:
    """Downscale (Lanczos) so the short side is at most `max_short_side`; never upscale.

    Training crops never need more than this (a crop covers at least crop/short of the
    photo), and holding 1 K instead of 2.5 K photos in memory keeps sampling cheap.
    """
    h, w = image.shape[:2]
    if max_short_side is None or min(h, w) <= max_short_side:
        return image
    r = max_short_side / min(h, w)
    size = (max(1, round(w * r)), max(1, round(h * r)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def folder_images(folder: Path | str) -> dict[str, Path]:
    """Every image under `folder` (recursively), by relative path, sorted for determinism."""
    folder = Path(folder).expanduser()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return {str(p.relative_to(folder)): p for p in files}


def load_photos(
    names: Iterable[str] | None = None,
    image_dir: str | Path | None = None,
    cache: Path | str = DEFAULT_CACHE,
    max_short_side: int | None = 1024,
    exclude: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Photos by name, shrunk to `max_short_side`: from `image_dir` when given, else `PHOTOS`.

    `names` picks a subset (default: all but `exclude`).
    """
    cache = Path(cache).expanduser()
    if image_dir is not None:
        files = folder_images(image_dir)
        names = [n for n in (names or files) if n not in exclude]
        return {n: shrink_to_short_side(read_rgb8(files[n]), max_short_side) for n in names}
    names = [n for n in (names or PHOTOS) if n not in exclude]
    return {n: shrink_to_short_side(load_named_photo(n, cache), max_short_side) for n in names}


def to_tensor(image: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255)


@dataclass
class CropSampler:
    """Random square crops at random zoom, with random LaMa masks: the training batches.

    The zoom is log-uniform between "crop pixels = photo pixels" and "the crop spans the
    photo's short side", so the network sees fine texture and whole-scene layout alike
    (inference meets both: the coarse scale of a pyramid is a whole photo at ~600 px).
    """

    photos: Sequence[Tensor]
    rng: np.random.Generator
    mask_weights: Mapping[str, float] | None = None
    hflip: bool = True

    def crop(self, size: int) -> Tensor:
        """One (3, size, size) crop of a random photo."""
        photo = self.photos[int(self.rng.integers(len(self.photos)))]
        h, w = photo.shape[-2:]
        short = min(h, w)
        if short < size:
            photo = F.interpolate(
                photo[None], scale_factor=size / short, mode="bilinear", align_corners=False, antialias=False
            )[0]
            h, w = photo.shape[-2:]
            short = min(h, w)
        side = int(round(size * 2 ** self.rng.uniform(0, np.log2(short / size))))
        side = min(max(side, size), short)
        top, left = int(self.rng.integers(h - side + 1)), int(self.rng.integers(w - side + 1))
        window = photo[:, top : top + side, left : left + side]
        if side != size:
            window = F.interpolate(
                window[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )[0].clamp_(0, 1)
        if self.hflip and self.rng.random() < 0.5:
            window = window.flip(-1)
        return window

    def batch(self, batch_size: int, size: int) -> tuple[Tensor, Tensor]:
        """images (B, 3, size, size) in [0, 1], masks (B, 1, size, size) in {0, 1}."""
        images = torch.stack([self.crop(size) for _ in range(batch_size)])
        masks = np.stack(
            [mixed_mask(size, size, self.rng, dict(self.mask_weights or {}) or None) for _ in range(batch_size)]
        )
        return images, torch.from_numpy(masks)[:, None]


FAMILY_CYCLE = ("thin", "medium", "thick")


def validation_set(
    photos: Mapping[str, np.ndarray], size: int = 256, per_photo: int = 6, seed: int = 1234, view_short_side: int = 512
) -> tuple[Tensor, Tensor, list[str]]:
    """Fixed crops + seeded masks of held-out photos: (N, 3, s, s), (N, 1, s, s), family names.

    Each photo is viewed with its short side at `view_short_side` (a whole-scene scale, like
    the coarse level of a pyramid) and cut into `per_photo` evenly spaced square crops; the
    masks cycle through the thin / medium / thick families with seeds derived from `seed`.
    """
    images, masks, families = [], [], []
    for p, name in enumerate(sorted(photos)):
        view = to_tensor(shrink_to_short_side(photos[name], view_short_side))
        if min(view.shape[-2:]) < size:  # small photos (tests, folders): upscale to fit a crop
            r = size / min(view.shape[-2:])
            new_size = [max(size, math.ceil(side * r)) for side in view.shape[-2:]]
            view = F.interpolate(view[None], size=new_size, mode="bilinear", align_corners=False)[0].clamp_(0, 1)
        h, w = view.shape[-2:]
        for k in range(per_photo):
            top = (h - size) * (k % 2)
            left = int(round((w - size) * (k // 2) / max(1, (per_photo + 1) // 2 - 1)))
            images.append(view[:, top : top + size, left : left + size])
            family = FAMILY_CYCLE[(p * per_photo + k) % len(FAMILY_CYCLE)]
            families.append(family)
            masks.append(torch.from_numpy(seeded_mask(size, size, family, seed + p * per_photo + k))[None])
    return torch.stack(images), torch.stack(masks), families


__all__ = [
    "CropSampler",
    "DEFAULT_CACHE",
    "HOLDOUT",
    "PHOTOS",
    "as_rgb_uint8",
    "fetch_debian_package",
    "folder_images",
    "load_named_photo",
    "load_photos",
    "read_rgb8",
    "shrink_to_short_side",
    "to_tensor",
    "validation_set",
]
