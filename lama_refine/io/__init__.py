"""Reading photos and masks, finding them in folder layouts, writing results safely.

One module per job: `jobs` (folder layouts -> `Job`s), `read` (decoding images and masks),
`masks` (grey levels -> holes, a job's `Inputs`), `write` (outputs, atomically). Every name is
re-exported here, so `from lama_refine.io import X` works for all of them.
"""
from lama_refine.io.jobs import Job, alpha_jobs, find_jobs, first_existing, has_image_suffix, lama_jobs, mark_collisions, safe_output, sibling_candidates, split_jobs, walk, why_no_jobs
from lama_refine.io.inputs import Inputs, MaskRule, binarize, dilate, hole_problem, load_inputs, lossy_note, resize_nearest
from lama_refine.io.read import IMAGE_SUFFIXES, InputError, Picture, check_readable, is_lossy, open_image, orient, read_image, read_mask, read_mask_levels, read_picture
from lama_refine.io.write import OUTPUT_SUFFIXES, check_output_suffix, SIXTEEN_BIT_OUTPUTS, output_is_intact, png16_bytes, stale_temporaries, tiff16_bytes, to_hwc, to_uint8, to_uint16, write_atomic, write_result

__all__ = [
    "IMAGE_SUFFIXES", "InputError", "Inputs", "Job", "MaskRule", "OUTPUT_SUFFIXES", "Picture", "SIXTEEN_BIT_OUTPUTS",
    "alpha_jobs", "binarize", "check_output_suffix", "check_readable", "dilate", "find_jobs", "hole_problem", "is_lossy", "lossy_note", "first_existing", "has_image_suffix",
    "lama_jobs", "load_inputs", "mark_collisions", "open_image", "orient", "output_is_intact", "png16_bytes",
    "read_image", "read_mask", "read_mask_levels", "read_picture", "resize_nearest", "safe_output",
    "sibling_candidates", "split_jobs", "stale_temporaries", "tiff16_bytes", "to_hwc", "to_uint16", "to_uint8",
    "walk", "why_no_jobs", "write_atomic", "write_result",
]
