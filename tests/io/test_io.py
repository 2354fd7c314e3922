"""Folder layouts, image and mask reading rules, bad files, and the writers."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lama_refine.io import (
    IMAGE_SUFFIXES,
    InputError,
    Job,
    MaskRule,
    find_jobs,
    load_inputs,
    orient,
    png16_bytes,
    read_image,
    read_mask,
    read_picture,
    safe_output,
    stale_temporaries,
    tiff16_bytes,
    to_uint8,
    write_atomic,
    write_result,
)

RNG = np.random.default_rng(5)


def photo(h=12, w=16, channels=3) -> np.ndarray:
    return (RNG.random((h, w, channels)) * 255).astype(np.uint8)


def save(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def box_mask(h=12, w=16) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[3:7, 4:9] = 255
    return m


# --- layouts -----------------------------------------------------------------------------------


def test_lama_layout_is_recursive_and_finds_images_of_any_suffix(tmp_path):
    save(tmp_path / "a.png", photo())
    save(tmp_path / "a_mask001.png", box_mask())
    save(tmp_path / "a_mask002.png", box_mask())
    save(tmp_path / "deep" / "b.jpg", photo())
    save(tmp_path / "deep" / "b_mask.png", box_mask())
    jobs = find_jobs(tmp_path)
    assert [str(j.relative) for j in jobs] == ["a_mask001.png", "a_mask002.png", "deep/b_mask.png"]
    assert jobs[2].image == tmp_path / "deep" / "b.jpg" and all(j.problem is None for j in jobs)


def test_lama_layout_reports_a_mask_without_image_and_ignores_hidden_files_and_outdir(tmp_path):
    save(tmp_path / "lonely_mask.png", box_mask())
    save(tmp_path / "._x_mask.png", box_mask())  # macOS companion file
    save(tmp_path / "out" / "a_mask.png", box_mask())  # a previous run's output inside indir
    jobs = find_jobs(tmp_path, exclude=[tmp_path / "out"])
    assert len(jobs) == 1 and "lonely_mask.png: no image for this mask" in jobs[0].problem


def test_split_layout_pairs_by_relative_path_and_stem(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    save(images / "p1.jpg", photo())
    save(masks / "p1.png", box_mask())
    save(images / "sub" / "p2.webp", photo())
    save(masks / "sub" / "p2.bmp", box_mask())
    save(images / "nomask.png", photo())
    save(masks / "orphan.png", box_mask())
    jobs = {str(j.relative): j for j in find_jobs(images, masks)}
    assert jobs["p1.jpg"].mask == masks / "p1.png" and jobs["p1.jpg"].problem is None
    assert jobs["sub/p2.webp"].mask == masks / "sub" / "p2.bmp"
    assert "nomask.png: no mask for this image" in jobs["nomask.png"].problem
    assert "orphan.png: no image for this mask" in jobs["orphan.png"].problem


def test_one_mask_for_every_image(tmp_path):
    for name in ("x.png", "y.jpg", "z/w.tif"):
        save(tmp_path / "in" / name, photo())
    one = save(tmp_path / "one_mask.png", box_mask())
    jobs = find_jobs(tmp_path / "in", one)
    assert [j.mask for j in jobs] == [one] * 3 and all(j.problem is None for j in jobs)


def test_two_images_with_one_output_name_are_not_both_run(tmp_path):
    save(tmp_path / "in" / "a.jpg", photo())
    save(tmp_path / "in" / "a.png", photo())
    jobs = find_jobs(tmp_path / "in", save(tmp_path / "m.png", box_mask()))
    assert [j.problem is None for j in jobs] == [True, False]
    assert "already taken" in jobs[1].problem


def test_from_alpha_jobs_need_no_masks_and_exclude_maskdir(tmp_path):
    save(tmp_path / "a.png", photo(channels=4))
    assert [j.mask for j in find_jobs(tmp_path, from_alpha=True)] == [None]
    with pytest.raises(ValueError, match="from_alpha"):
        find_jobs(tmp_path, tmp_path / "a.png", from_alpha=True)


# --- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_every_format_reads_as_lamas_convert_rgb(tmp_path, suffix):
    path = save(tmp_path / f"p{suffix}", photo())
    expected = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    assert torch.equal(read_image(path)[0].permute(1, 2, 0), torch.from_numpy(expected))


def test_rgba_drops_alpha_and_grey_is_replicated(tmp_path):
    rgba = photo(channels=4)
    rgba[..., 3] = 0  # fully transparent: alpha is dropped, not composited
    assert torch.equal(read_image(save(tmp_path / "a.png", rgba)), read_image(save(tmp_path / "b.png", rgba[..., :3])))
    grey = photo()[..., 0]
    image = read_image(save(tmp_path / "g.png", grey))
    assert image.shape == (1, 3, 12, 16) and torch.equal(image[:, 0], image[:, 2])
    assert torch.equal(image[0, 0], torch.from_numpy(grey.astype(np.float32) / 255))


def test_16bit_grey_is_value_over_65535(tmp_path):
    grey = (RNG.random((12, 16)) * 65535).astype(np.uint16)
    picture = read_picture(save(tmp_path / "g16.png", grey))
    assert picture.bits == 16
    assert torch.allclose(picture.image[0, 1], torch.from_numpy(grey.astype(np.float32) / 65535))


def test_16bit_colour_png_keeps_its_precision(tmp_path):
    pytest.importorskip("cv2", reason="16-bit colour reading uses the optional OpenCV")
    rgb = (RNG.random((12, 16, 3)) * 65535).astype(np.uint16)
    (tmp_path / "c16.png").write_bytes(png16_bytes(rgb))
    picture = read_picture(tmp_path / "c16.png")
    assert picture.bits == 16
    assert np.array_equal(np.clip(picture.image[0].permute(1, 2, 0).numpy() * 65535, 0, 65535).astype(np.uint16), rgb)


def test_16bit_colour_without_opencv_falls_back_to_8_bits_with_a_note(tmp_path, monkeypatch):
    import lama_refine.io.read as io

    monkeypatch.setattr(io, "_read_16bit_colour", lambda path: None)
    rgb = (RNG.random((12, 16, 3)) * 65535).astype(np.uint16)
    (tmp_path / "c16.png").write_bytes(png16_bytes(rgb))
    picture = read_picture(tmp_path / "c16.png")
    assert picture.bits == 8 and "8-bit precision" in picture.notes[0]
    assert np.array_equal(np.round(picture.image[0].permute(1, 2, 0).numpy() * 255), rgb >> 8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillows_exif_transpose(orientation, tmp_path):
    from PIL import ImageOps

    array = photo(5, 7)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path / "o.jpg", array, exif=exif, quality=100)
    with Image.open(path) as im:
        theirs = np.asarray(ImageOps.exif_transpose(im))
        raw = np.asarray(im)
    assert np.array_equal(orient(raw, orientation), theirs)


def test_exif_orientation_is_applied_to_image_and_mask(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    image = save(tmp_path / "p.jpg", photo(12, 16), exif=exif)
    mask = save(tmp_path / "p_mask.png", box_mask(12, 16), exif=exif)
    inputs = load_inputs(Job(image, mask, Path("p_mask.png")))
    assert inputs.image.shape[-2:] == (16, 12) and inputs.mask.shape[-2:] == (16, 12)
    assert torch.equal(inputs.mask[0, 0], torch.from_numpy(np.rot90(box_mask(12, 16) > 0, -1).astype(np.float32)))


# --- mask rules ----------------------------------------------------------------------------------


def grey_mask_job(tmp_path, levels: np.ndarray, image=None) -> Job:
    image = save(tmp_path / "p.png", photo(*levels.shape) if image is None else image)
    return Job(image, save(tmp_path / "p_mask.png", levels), Path("p_mask.png"))


def test_default_mask_rule_is_lamas_any_nonzero(tmp_path):
    levels = np.array([[0, 1, 127], [128, 254, 255]], np.uint8)
    job = grey_mask_job(tmp_path, levels)
    whole = MaskRule(max_hole=1.0)  # 5 of 6 pixels are hole: over the default max_hole
    assert load_inputs(job, whole).mask[0, 0].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert torch.equal(load_inputs(job, whole).mask, read_mask(job.mask))


def test_threshold_and_invert(tmp_path):
    job = grey_mask_job(tmp_path, np.array([[0, 1, 127], [128, 254, 255]], np.uint8))
    assert load_inputs(job, MaskRule(threshold=127)).mask[0, 0].tolist() == [[0, 0, 0], [1, 1, 1]]
    assert load_inputs(job, MaskRule(invert=True)).mask[0, 0].tolist() == [[1, 0, 0], [0, 0, 0]]


def test_dilate_grows_holes_by_n_pixels_in_a_square(tmp_path):
    levels = np.zeros((9, 9), np.uint8)
    levels[4, 4] = 255
    mask = load_inputs(grey_mask_job(tmp_path, levels), MaskRule(dilate=2)).mask[0, 0]
    expected = np.zeros((9, 9), np.float32)
    expected[2:7, 2:7] = 1
    assert torch.equal(mask, torch.from_numpy(expected))


def test_mask_of_another_size_fails_unless_resize(tmp_path):
    job = grey_mask_job(tmp_path, box_mask(6, 8), image=photo(12, 16))
    with pytest.raises(InputError, match=r"p_mask.png: mask is 6x8 but its image .*p.png is 12x16"):
        load_inputs(job)
    inputs = load_inputs(job, MaskRule(resize=True))
    assert inputs.mask.shape[-2:] == (12, 16) and "resized" in inputs.notes[0]
    assert inputs.mask[0, 0, 6, 8] == 1 and inputs.mask[0, 0, 0, 0] == 0


def test_from_alpha_takes_transparent_pixels_as_holes(tmp_path):
    rgba = photo(channels=4)
    rgba[..., 3] = 255
    rgba[2:4, 3:6, 3] = 0
    rgba[5, 5, 3] = 200  # partly transparent counts too (threshold 0)
    inputs = load_inputs(Job(save(tmp_path / "a.png", rgba), None, Path("a.png")), MaskRule(from_alpha=True))
    assert inputs.mask.sum() == 7 and inputs.mask[0, 0, 5, 5] == 1
    with pytest.raises(InputError, match="no alpha channel"):
        load_inputs(Job(save(tmp_path / "b.png", photo()), None, Path("b.png")), MaskRule(from_alpha=True))


# --- bad files -----------------------------------------------------------------------------------


def test_bad_files_raise_one_clear_error_naming_the_file(tmp_path, monkeypatch):
    good = save(tmp_path / "good.png", photo())
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    (tmp_path / "notimage.png").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    locked = save(tmp_path / "locked.png", photo())
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    cases = {
        "truncated.png": "truncated or corrupt",
        "notimage.png": "not an image",
        "empty.png": "empty file",
        "folder.png": "is a folder",
        "missing.png": "no such file",
        "locked.png": "permission denied",
        "dangling.png": "broken symbolic link",
    }
    for name, problem in cases.items():
        with pytest.raises(InputError) as e:
            read_image(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name)) and problem in str(e.value)


# --- writing -------------------------------------------------------------------------------------


def test_default_png_is_lamas_truncation(tmp_path):
    image = torch.rand(1, 3, 5, 6)
    write_result(tmp_path / "o.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), to_uint8(image[0].permute(1, 2, 0).numpy()))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_outputs_round_trip(tmp_path, suffix):
    rgb = (RNG.random((7, 9, 3)) * 65535).astype(np.uint16)
    image = torch.from_numpy(rgb.astype(np.float32) / 65535).permute(2, 0, 1)[None]
    write_result(tmp_path / f"o{suffix}", image, bits=16)
    with Image.open(tmp_path / f"o{suffix}") as im:  # Pillow decodes 16-bit colour to the high byte
        assert im.size == (9, 7) and np.array_equal(np.asarray(im.convert("RGB")), (rgb >> 8).astype(np.uint8))
    cv2 = pytest.importorskip("cv2")
    assert np.array_equal(cv2.imread(str(tmp_path / f"o{suffix}"), cv2.IMREAD_UNCHANGED)[..., ::-1], rgb)


def test_16bit_grey_input_gives_16bit_output_that_reads_back_equal(tmp_path):
    grey = (RNG.random((12, 16)) * 65535).astype(np.uint16)
    picture = read_picture(save(tmp_path / "g16.png", grey))
    write_result(tmp_path / "o.png", picture.image, bits=picture.bits)
    pytest.importorskip("cv2")
    back = read_picture(tmp_path / "o.png")
    assert back.bits == 16 and torch.equal(back.image, picture.image)


def test_jpeg_webp_quality_and_lossless_webp(tmp_path):
    image = torch.rand(1, 3, 16, 16)
    write_result(tmp_path / "lo.jpg", image, quality=10)
    write_result(tmp_path / "hi.jpg", image, quality=95)
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size
    write_result(tmp_path / "o.webp", image, quality=100)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.webp")), to_uint8(image[0].permute(1, 2, 0).numpy()))


def test_unsupported_output_suffix(tmp_path):
    with pytest.raises(ValueError, match="unsupported output extension"):
        write_result(tmp_path / "o.gif", torch.rand(1, 3, 4, 4))


def test_outputs_outside_outdir_are_refused(tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "link").symlink_to(tmp_path, target_is_directory=True)
    assert safe_output(outdir, Path("a/b_mask.png"), ".png") == outdir / "a" / "b_mask.png"
    for relative in (
        Path("../evil_mask.png"),
        Path("a/../../evil_mask.png"),
        Path("/etc/evil_mask.png"),
        Path("link/evil_mask.png"),
    ):
        with pytest.raises(InputError, match="refused"):
            safe_output(outdir, relative, ".png")


def test_write_atomic_leaves_nothing_on_failure_and_stale_temporaries_are_removed(tmp_path):
    def fail(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "o.png", fail)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "sub").mkdir()
    (tmp_path / ".o.png.abc123.tmp").write_bytes(b"left by a killed run")
    (tmp_path / "sub" / ".o[1].v2.png.x_9y.tmp").write_bytes(b"another")
    (tmp_path / ".hidden.tmp").write_bytes(b"not ours")
    assert stale_temporaries(tmp_path) == {
        tmp_path / "o.png": [tmp_path / ".o.png.abc123.tmp"],
        tmp_path / "sub" / "o[1].v2.png": [tmp_path / "sub" / ".o[1].v2.png.x_9y.tmp"],
    }


def test_outputs_get_the_usual_file_mode(tmp_path):
    write_result(tmp_path / "o.png", torch.rand(1, 3, 4, 4))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "o.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_tiff16_and_png16_are_valid_files(tmp_path):
    rgb = (RNG.random((3, 4, 3)) * 65535).astype(np.uint16)
    for name, data in (("a.png", png16_bytes(rgb)), ("a.tif", tiff16_bytes(rgb))):
        (tmp_path / name).write_bytes(data)
        with Image.open(tmp_path / name) as im:
            im.load()
            assert im.size == (4, 3)
    assert IMAGE_SUFFIXES[0] == ".png"


# ---------------------------------------------------------------------------------------------
# Masks that are probably wrong (issue 24)
# ---------------------------------------------------------------------------------------------


def lossy_mask_job(tmp_path, suffix: str, **kw) -> tuple[Job, np.ndarray]:
    """A photo and its box mask saved lossily: compression noise rings the box's edges."""
    mask = np.zeros((64, 80), np.uint8)
    mask[13:37, 21:50] = 255  # edges off JPEG's 8x8 blocks, and a diagonal: noise on both sides
    mask[np.add.outer(np.arange(64), -np.arange(80)) == 5] = 255
    image = save(tmp_path / "p.png", photo(64, 80))
    return Job(image, save(tmp_path / f"p_mask{suffix}", mask, **kw), Path("p_mask")), mask > 0


@pytest.mark.parametrize(
    "suffix, kw, lossy",
    [
        (".jpg", {"quality": 75}, True),
        (".webp", {"quality": 80}, True),
        (".webp", {"lossless": True}, False),
        (".png", {}, False),
    ],
)
def test_lossy_masks_are_told_by_their_bytes(tmp_path, suffix, kw, lossy):
    from lama_refine.io import is_lossy

    job, _ = lossy_mask_job(tmp_path, suffix, **kw)
    assert is_lossy(job.mask) is lossy
    renamed = job.mask.with_suffix(".png")  # the bytes decide, not the name
    job.mask.rename(renamed)
    assert is_lossy(renamed) is lossy


def test_a_jpeg_masks_compression_noise_is_no_hole_and_is_noted(tmp_path):
    job, box = lossy_mask_job(tmp_path, ".jpg", quality=75)
    inputs = load_inputs(job)
    assert torch.equal(inputs.mask[0, 0].bool(), torch.from_numpy(box))  # the drawn box, no ring around it
    assert any("lossy (JPEG) mask" in n and "mask.lossy_threshold" in n for n in inputs.notes)
    noisy = load_inputs(job, MaskRule(lossy_threshold=0))  # LaMa's rule on the JPEG: the ring is hole
    assert noisy.hole_fraction > inputs.hole_fraction


def test_png_masks_keep_lamas_rule_bit_for_bit(tmp_path):
    levels = RNG.integers(0, 256, (20, 24)).astype(np.uint8)
    levels[levels > 100] = 0  # well under max_hole
    job = grey_mask_job(tmp_path, levels)
    inputs = load_inputs(job)
    assert torch.equal(inputs.mask, read_mask(job.mask)) and not inputs.notes


def test_a_hole_over_max_hole_fails_the_file_naming_invert_and_max_hole(tmp_path):
    mask = np.full((10, 10), 255, np.uint8)
    mask[:4] = 0  # 60 % hole as drawn (an inverted 40 % hole)
    job = grey_mask_job(tmp_path, mask)
    with pytest.raises(InputError) as error:
        load_inputs(job)
    message = str(error.value)
    assert message.startswith(f"{job.mask}: the hole covers 60.0% of the photo, more than mask.max_hole=0.5")
    assert "mask.invert=true" in message and "mask.max_hole=1.0" in message and "\n" not in message
    assert load_inputs(job, MaskRule(invert=True)).hole_fraction == pytest.approx(0.4)
    assert load_inputs(job, MaskRule(max_hole=1.0)).hole_fraction == pytest.approx(0.6)
    with pytest.raises(InputError, match="covers 40.0%"):
        load_inputs(job, MaskRule(invert=True, max_hole=0.3))
    with pytest.raises(InputError, match="covers 70.0%"):
        load_inputs(job, MaskRule(dilate=1, max_hole=0.65))  # counted after dilation


def test_why_no_jobs_names_jpeg_masks_and_images_without_masks(tmp_path):
    from lama_refine.io import why_no_jobs

    save(tmp_path / "a" / "p.jpg", photo())
    save(tmp_path / "a" / "p_mask.jpg", box_mask())
    assert find_jobs(tmp_path / "a") == []
    why = why_no_jobs(tmp_path / "a")
    assert "no *mask*.png masks" in why and "1 .jpg mask(s), e.g. p_mask.jpg" in why and "maskdir=" in why
    save(tmp_path / "b" / "p.jpg", photo())
    why = why_no_jobs(tmp_path / "b")
    assert "only 1 image(s), e.g. p.jpg" in why and "p_mask.png" in why and "mask.from_alpha=true" in why
    (tmp_path / "c").mkdir()
    assert why_no_jobs(tmp_path / "c") is None
