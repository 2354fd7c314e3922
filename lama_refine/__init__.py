"""lama-refine: high-resolution LaMa inpainting through multi-scale feature refinement.

The five pluggable parts, their alternatives, and the pipeline that wires them
(docs/extending.md shows how to add your own):

    from lama_refine import inpaint
    result = inpaint(Image.open("photo.jpg"), Image.open("photo_mask.png"))  # PIL or numpy in, same kind out

    from lama_refine import make_inpainter, inpaint_file, read_image, read_mask
    inpainter = make_inpainter(["model.path=big-lama.pt", "pyramid_mask=nearest"])  # config overrides
    inpaint_file(inpainter, "photo.png", "photo_mask.png", "out.png")
    result = inpainter.run(read_image("photo.png"), read_mask("photo_mask.png"))  # tensors in, Refinement out
"""

# 0.1's module paths (lama_refine.refine, ...) keep importing until 0.3, with a DeprecationWarning
from lama_refine import _compat  # noqa: E402
from lama_refine._version import __version__ as __version__
from lama_refine.app.api import inpaint, inpaint_file, make_inpainter
from lama_refine.config import build_inpainter, build_parts, compose
from lama_refine.io import read_image, read_mask, write_result
from lama_refine.models import build_generator, load_generator
from lama_refine.parts.downsample import (
    AllPixelsMaskDownsampler,
    AntialiasedBilinearDownsampler,
    AreaDownsampler,
    AreaMaskDownsampler,
    BlurMaskDownsampler,
    Downsampler,
    GaussianDownsampler,
    MaskDownsampler,
    NearestMaskDownsampler,
    TolerantAllPixelsMaskDownsampler,
)
from lama_refine.parts.partition import (
    BalancedPartitioner,
    DevicePartitioner,
    EvenPartitioner,
    ExplicitPartitioner,
    Partition,
    SinglePartitioner,
    Stage,
    saved_activation_bytes,
)
from lama_refine.parts.pyramid import (
    FixedPyramid,
    FullResolutionPyramid,
    HalvingPyramid,
    Level,
    OriginalPyramid,
    PyramidBuilder,
    TrainResolutionPyramid,
)
from lama_refine.parts.refine import L1Refiner, PlainRefiner, RefineHooks, Refinement, Refiner, ScaleInputs
from lama_refine.pipeline import Inpainter, plain_inpaint

_compat.install()

__all__ = [
    "AllPixelsMaskDownsampler",
    "AntialiasedBilinearDownsampler",
    "AreaDownsampler",
    "AreaMaskDownsampler",
    "BalancedPartitioner",
    "BlurMaskDownsampler",
    "DevicePartitioner",
    "Downsampler",
    "EvenPartitioner",
    "ExplicitPartitioner",
    "FixedPyramid",
    "FullResolutionPyramid",
    "GaussianDownsampler",
    "HalvingPyramid",
    "Inpainter",
    "L1Refiner",
    "Level",
    "MaskDownsampler",
    "NearestMaskDownsampler",
    "OriginalPyramid",
    "Partition",
    "PlainRefiner",
    "PyramidBuilder",
    "RefineHooks",
    "Refinement",
    "Refiner",
    "ScaleInputs",
    "SinglePartitioner",
    "Stage",
    "TolerantAllPixelsMaskDownsampler",
    "TrainResolutionPyramid",
    "build_generator",
    "build_inpainter",
    "build_parts",
    "compose",
    "inpaint",
    "inpaint_file",
    "load_generator",
    "make_inpainter",
    "plain_inpaint",
    "read_image",
    "read_mask",
    "saved_activation_bytes",
    "write_result",
]
