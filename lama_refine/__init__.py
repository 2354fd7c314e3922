"""lama-refine: high-resolution LaMa inpainting through multi-scale feature refinement.

The five pluggable parts and the pipeline that wires them:

    from lama_refine import compose, build_inpainter, read_image, read_mask
    inpainter = build_inpainter(compose(["model.path=big-lama", "indir=.", "outdir=out"]))
    result = inpainter(read_image("photo.png"), read_mask("photo_mask.png"))  # (1, 3, H, W) in [0, 1]
"""
from .config import build_inpainter, build_parts, compose
from .downsample import (AllPixelsMaskDownsampler, BlurMaskDownsampler, Downsampler, GaussianDownsampler,
                         MaskDownsampler, NearestMaskDownsampler)
from .io import read_image, read_mask, write_result
from .models import build_generator
from .partition import DevicePartitioner, EvenPartitioner, Partition, Stage
from .pipeline import Inpainter, plain_inpaint
from .pyramid import Level, OriginalPyramid, PyramidBuilder
from .refine import L1Refiner, Refinement, Refiner, ScaleInputs

__version__ = "0.1.0"

__all__ = [
    "AllPixelsMaskDownsampler",
    "BlurMaskDownsampler",
    "DevicePartitioner",
    "Downsampler",
    "EvenPartitioner",
    "GaussianDownsampler",
    "Inpainter",
    "L1Refiner",
    "Level",
    "MaskDownsampler",
    "NearestMaskDownsampler",
    "OriginalPyramid",
    "Partition",
    "PyramidBuilder",
    "Refinement",
    "Refiner",
    "ScaleInputs",
    "Stage",
    "build_generator",
    "build_inpainter",
    "build_parts",
    "compose",
    "plain_inpaint",
    "read_image",
    "read_mask",
    "write_result",
]
