"""A user's mistakes before the first image: one clear message, the right exit status, no traceback."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN
from PIL import Image

from lama_refine.app import cli
from lama_refine.app.usage import closest, config_groups, selectable_groups
from lama_refine.config import conf_dir

REPO = Path(__file__).resolve().parents[2]
MODEL = GOLDEN / "three_scales" / "generator.safetensors"


def photos(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(folder / "p.png")
    mask = np.zeros((40, 56), np.uint8)
    mask[10:20, 15:30] = 255
    Image.fromarray(mask).save(folder / "p_mask.png")
    return folder


@pytest.mark.parametrize("spelling", ["cpu", "[cpu]", "CPU", "'cpu'", "[cpu,cpu]"])
def test_devices_cpu_in_every_spelling_passes_the_checks(spelling, tmp_path, monkeypatch):
    from lama_refine.app.usage import check_command_line
    from lama_refine.io import OUTPUT_SUFFIXES

    monkeypatch.chdir(tmp_path)
    cfg = check_command_line(
        [f"indir={photos(tmp_path / 'in')}", f"outdir={tmp_path / 'o'}", f"devices={spelling}"], OUTPUT_SUFFIXES
    )
    assert list(cfg.devices) == ["cpu"] * (2 if "," in spelling else 1)


def cli_in_process(monkeypatch, capsys, *args) -> tuple[int, str]:
    """`lama-refine ARGS` in this process (the checks run before Hydra): (exit status, stderr+stdout)."""
    monkeypatch.setattr(sys, "argv", ["lama-refine", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.entry()
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else code), captured.err + captured.out


def lama_refine(*args, cwd, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "lama_refine.app.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


# Each mistake: the arguments (with {indir}, {tmp} filled in), the exit status, what the message must say.
MISTAKES = [
    ([], 2, ["indir and outdir are required", "image=FILE mask=FILE out=FILE", "usage:"]),
    (["indir={indir}"], 2, ["outdir is required"]),
    (["indir={tmp}/nope", "outdir={tmp}/o"], 2, ["indir={tmp}/nope: no such folder"]),
    (["indir={indir}/p.png", "outdir={tmp}/o"], 2, ["is a file, not a folder", "image="]),
    (["indir={indir}", "outdir={tmp}/o", "maskdir={tmp}/nomasks"], 2, ["maskdir={tmp}/nomasks: no such"]),
    (
        ["indir={indir}", "outdir={tmp}/o", "refiner.n_iter=3"],
        2,
        ["unknown key refiner.n_iter", "did you mean refiner.n_iters?"],
    ),
    (["indir={indir}", "outdir={tmp}/o", "n_iters=3"], 2, ["did you mean refiner.n_iters?"]),
    (["indir={indir}", "outdir={tmp}/o", "+refiner.n_iter=3"], 2, ["unexpected keyword argument 'n_iter'"]),
    (["indir={indir}", "outdir={tmp}/o", "refiner.n_iters=abc"], 2, ["refiner.n_iters=abc: expected a whole number"]),
    (["indir={indir}", "outdir={tmp}/o", "refiner.n_iters=0"], 2, ["n_iters must be >= 1"]),
    (["indir={indir}", "outdir={tmp}/o", "refine=maybe"], 2, ["refine=maybe: expected true or false"]),
    (["indir={indir}", "outdir={tmp}/o", "pyramid.px_budget=-3"], 2, ["pyramid.px_budget=-3: must be at least 1"]),
    (["indir={indir}", "outdir={tmp}/o", "perf.amp=fp8"], 2, ["perf.amp='fp8'", "bf16"]),
    (["indir={indir}", "outdir={tmp}/o", "perf.allocator=mimalloc"], 2, ["perf.allocator='mimalloc'", "auto"]),
    (
        ["indir={indir}", "outdir={tmp}/o", "perf.malloc_trim=often"],
        2,
        ["perf.malloc_trim=often: expected true or false"],
    ),
    (["indir={indir}", "outdir={tmp}/o", "out_ext=.gif"], 2, ["out_ext=.gif", ".png"]),
    (["indir={indir}", "outdir={tmp}/o", "overwrite=sometimes"], 2, ["overwrite=sometimes", "never"]),
    (["indir={indir}", "outdir={tmp}/o", "shard=3/2"], 2, ["shard='3/2'"]),
    (["indir={indir}", "outdir={tmp}/o", "pyramid=foo"], 2, ["pyramid has no option 'foo'", "original"]),
    (["indir={indir}", "outdir={tmp}/o", "pyramid=orignal"], 2, ["did you mean pyramid=original?"]),
    (["indir={indir}", "outdir={tmp}/o", "mask_downsampler=nearest"], 2, ["pyramid_mask=nearest", "loss_mask=nearest"]),
    (["{indir}"], 2, ["did you mean indir="]),
    (["indir={indir}", "outdir={indir}/p.png/out"], 2, ["is a file, so no folder can be made under it"]),
    (
        ["indir={indir}", "outdir={tmp}/o", "model.path={tmp}/nope.ckpt"],
        2,
        ["model.path={tmp}/nope.ckpt: no such file", "built-in demo model"],
    ),
    (["indir={indir}", "outdir={tmp}/o", "devices=[cuda:7]"], 2, ["cuda:7 is not available", "devices=cpu"]),
    (["indir={indir}", "outdir={tmp}/o", "refiner.gpu_ids=5"], 2, ["refiner.gpu_ids=5", "devices=cpu"]),
    # every spelling of a device a newcomer tries (issue 24): parsed, and on this GPU-less machine one line
    (["indir={indir}", "outdir={tmp}/o", "devices=cuda"], 2, ["devices=cuda: cuda:0 is not available", "devices=cpu"]),
    (["indir={indir}", "outdir={tmp}/o", "devices=cuda:1"], 2, ["devices=cuda:1: cuda:1 is not available"]),
    (["indir={indir}", "outdir={tmp}/o", "devices=[gpu]"], 2, ["devices=[gpu]: cuda:0 is not available"]),
    (["indir={indir}", "outdir={tmp}/o", "devices=gpu"], 2, ["devices=gpu: cuda:0 is not available"]),
    (["indir={indir}", "outdir={tmp}/o", "devices=mps"], 2, ["devices=mps: mps is not available on this machine"]),
    (["indir={indir}", "outdir={tmp}/o", "devices=[cpu,cuda:3]"], 2, ["devices=[cpu,cuda:3]: cuda:3 is not available"]),
    (["indir={indir}", "outdir={tmp}/o", "devices=tpu"], 2, ["devices=tpu: 'tpu' is not a device", "devices=cpu"]),
    (["indir={indir}", "outdir={tmp}/o", "devices=[]"], 2, ["devices=[]: names no device"]),
    (["indir={indir}", "outdir={tmp}/o", "mask={indir}/p_mask.png"], 2, ["is for one image", "maskdir="]),
    (["indir={indir}", "outdir={tmp}/o", "trace={indir}/p.png/t"], 2, ["trace={indir}/p.png/t:", "is a file"]),
    (["image={indir}/p.png"], 2, ["missing: mask=, out="]),
    (["image={indir}/p.png", "mask={indir}/p_mask.png"], 2, ["missing: out="]),
    (
        ["image={indir}/nope.png", "mask={indir}/p_mask.png", "out={tmp}/r.png"],
        2,
        ["image={indir}/nope.png: no such file"],
    ),
    (["image={indir}/p.png", "mask={indir}/p_mask.png", "out={tmp}/r.gif"], 2, ["out={tmp}/r.gif", ".webp"]),
    (["image={indir}/p.png", "mask={indir}/p_mask.png", "out={tmp}/r.png", "indir={indir}"], 2, ["one or the other"]),
    (
        ["--multirun", "indir={indir}", "outdir={tmp}/o", "refine=true,maybe"],
        2,
        ["refine=maybe: expected true or false"],
    ),
]


@pytest.mark.parametrize("args, status, says", MISTAKES, ids=[" ".join(m[0]) or "no-arguments" for m in MISTAKES])
def test_each_mistake_is_one_clear_message(args, status, says, tmp_path, monkeypatch, capsys):
    indir = photos(tmp_path / "in")
    fill = {"indir": indir, "tmp": tmp_path}
    monkeypatch.chdir(tmp_path)
    code, output = cli_in_process(monkeypatch, capsys, *(a.format(**fill) for a in args))
    assert code == status, output
    for text in says:
        assert text.format(**fill) in output, output
    assert "Traceback" not in output and "interrupted" not in output
    assert len(output.strip().splitlines()) <= 5, output
    assert not (tmp_path / "o").exists()  # nothing written for a command that cannot run


@pytest.mark.parametrize("value", ["auto", "glibc", "null", "tcmalloc", "jemalloc"])
def test_every_allocator_value_passes_the_checks(value, tmp_path):
    """perf.allocator's default is the string auto: the other values (null among them) still pass."""
    from lama_refine.app.usage import check_command_line
    from lama_refine.io import OUTPUT_SUFFIXES

    cfg = check_command_line(
        [
            f"indir={photos(tmp_path / 'in')}",
            f"outdir={tmp_path / 'o'}",
            f"perf.allocator={value}",
            "perf.malloc_trim=true",
        ],
        OUTPUT_SUFFIXES,
    )
    assert cfg.perf.malloc_trim is True


def test_mistakes_leave_no_traceback_in_a_real_process(tmp_path):
    indir = photos(tmp_path / "in")
    for args, says in [
        ([], "indir and outdir are required"),
        ([f"indir={indir}", f"outdir={tmp_path / 'o'}", "refiner.n_iter=3"], "refiner.n_iters"),
        ([f"indir={indir}", f"outdir={tmp_path / 'o'}", f"model.path={tmp_path / 'x.ckpt'}"], "no such file"),
    ]:
        proc = lama_refine(*args, cwd=tmp_path)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout


def test_debug_true_shows_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        sys, "argv", ["lama-refine", f"indir={tmp_path / 'nope'}", f"outdir={tmp_path / 'o'}", "debug=true"]
    )
    with pytest.raises(ValueError, match="no such folder"):
        cli.entry()


@pytest.mark.parametrize(
    "content, says",
    [(b"", "not a readable generator checkpoint"), (b"garbage" * 100, "not a readable generator checkpoint")],
)
def test_a_model_file_that_is_no_checkpoint_is_one_message_and_no_interruption(content, says, tmp_path):
    indir = photos(tmp_path / "in")
    (tmp_path / "model.ckpt").write_bytes(content)
    proc = lama_refine(
        f"indir={indir}",
        f"outdir={tmp_path / 'o'}",
        f"model.path={tmp_path / 'model.ckpt'}",
        "progress=false",
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and says in output and "model.ckpt" in output, output
    assert "Traceback" not in output and "interrupted" not in output


def test_a_model_of_another_architecture_names_the_keys(tmp_path):
    import shutil

    from lama_refine.weights import DEFAULT_CONFIG_PATH

    indir = photos(tmp_path / "in")
    shutil.copy(MODEL, tmp_path / "mixed.safetensors")  # a small test generator's weights ...
    shutil.copy(DEFAULT_CONFIG_PATH, tmp_path / "mixed.yaml")  # ... under the demo model's architecture
    proc = lama_refine(
        f"indir={indir}",
        f"outdir={tmp_path / 'o'}",
        f"model.path={tmp_path / 'mixed.safetensors'}",
        "progress=false",
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "mixed.safetensors" in output and "does not fit" in output, output
    assert "Traceback" not in output and "interrupted" not in output


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of `size` at `folder` (root only; the test is skipped elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()


def test_an_outdir_on_a_full_disk_says_so(tmp_path):
    indir = photos(tmp_path / "in")
    with small_disk(tmp_path / "disk", "256k") as disk:
        fill(disk)
        proc = lama_refine(f"indir={indir}", f"outdir={disk / 'out'}", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "no space left on device" in output, output
    assert "Traceback" not in output


def test_a_full_disk_while_writing_an_output_is_one_line_in_plain_words(tmp_path):
    from lama_refine.app.cli import run
    from lama_refine.config import compose

    indir = tmp_path / "in"
    indir.mkdir()
    Image.fromarray(np.zeros((200, 240, 3), np.uint8)).save(indir / "p.png")
    mask = np.zeros((200, 240), np.uint8)
    mask[50:60, 50:60] = 255
    Image.fromarray(mask).save(indir / "p_mask.png")
    with small_disk(tmp_path / "disk", "320k") as disk:  # the .npy output is 576 kB
        summary = run(
            compose(
                [
                    f"model.path={MODEL}",
                    f"indir={indir}",
                    f"outdir={disk}",
                    "refine=false",
                    "out_ext=.npy",
                    "progress=false",
                ]
            )
        )
        assert len(summary.failed) == 1 and "no space left on device" in summary.failed[0][1], summary.failed
        assert not [p for p in disk.rglob("*") if p.suffix in (".npy", ".tmp")]


def test_help_lists_only_selectable_groups_and_the_usage(tmp_path):
    proc = lama_refine("--help", cwd=tmp_path)
    assert proc.returncode == 0
    text = proc.stdout
    for group in selectable_groups(conf_dir()):
        assert f"  {group}=" in text
    assert "mask_downsampler=" not in text and "pyramid_mask=" in text and "loss_mask=" in text
    assert "image=FILE mask=FILE out=FILE" in text and "indir=DIR outdir=DIR" in text
    assert "built-in demo model" in text
    # every option listed can be chosen: compose each
    from lama_refine.config import compose

    for group, options in selectable_groups(conf_dir()).items():
        for option in options:
            compose([f"{group}={option}"])


def test_groups_are_read_from_the_config_folder():
    groups = config_groups(conf_dir())
    assert "mask_downsampler" in groups and "mask_downsampler" not in selectable_groups(conf_dir())
    assert groups["pyramid_mask"] == groups["mask_downsampler"] == groups["loss_mask"]
    assert not any(g.startswith("hydra") for g in groups)


@pytest.mark.parametrize(
    "typo, meant",
    [
        ("refiner.n_iter", "refiner.n_iters"),
        ("n_iters", "refiner.n_iters"),
        ("pyramid.px_bugdet", "pyramid.px_budget"),
        ("perf.tile_row", "perf.tile_rows"),
        ("out_ex", "out_ext"),
    ],
)
def test_closest_keys(typo, meant):
    from lama_refine.app.usage import leaf_keys
    from lama_refine.config import compose

    assert meant in closest(typo, list(leaf_keys(compose([]))))


def test_optimize_may_name_a_feature_of_the_users_generator(tmp_path, monkeypatch):
    # the generator's module registers its front's names when imported; the check imports it first
    (tmp_path / "named_front_gen.py").write_text(
        "from torch import nn\n"
        "from lama_refine.models import register_generator\n"
        "class NamedFront(nn.Sequential):\n"
        "    pass\n"
        "register_generator(NamedFront, kind='named_front_test', trunk=(1, 2), front_emits=('coarse_test',))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from lama_refine.models import protocol

    for table in ("GENERATORS", "GENERATOR_KINDS"):  # the registration ends with the test
        monkeypatch.setattr(protocol, table, dict(getattr(protocol, table)))
    monkeypatch.delitem(sys.modules, "named_front_gen", raising=False)
    from lama_refine.app.usage import check_parts
    from lama_refine.config import compose
    from lama_refine.errors import UserError

    cfg = compose(["+model._target_=named_front_gen.NamedFront", "refiner.optimize=coarse_test"])
    check_parts(cfg)
    with pytest.raises(UserError, match="optimize must be one of"):
        check_parts(compose(["+model._target_=named_front_gen.NamedFront", "refiner.optimize=nothing_such"]))
