"""docs/extending.md runs: its files are written to a folder outside the package, its user module
is used from Python and, registered by `_target_` in a config folder of the user's, from the CLI."""

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN, Case
from omegaconf import OmegaConf

from lama_refine.app.cli import run
from lama_refine.config import compose

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "extending.md"
CASE = Case(GOLDEN / "odd_nonsquare_2scales")
MODEL = CASE.path / "generator.safetensors"


def doc_files() -> dict[str, str]:
    """Every fenced block that starts with `# file: NAME`, by NAME."""
    blocks = re.findall(r"```(?:python|yaml)\n# file: (\S+)\n(.*?)```", DOC.read_text(), re.S)
    return {name: f"# file: {name}\n{body}" for name, body in blocks}


def doc_command(marker: str = "lama-refine ") -> list[str]:
    """The first `lama-refine ...` line of the doc's bash blocks that contains `marker`, as
    arguments (without the program)."""
    bash = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)
    line = next(line for block in bash for line in block.splitlines() if "lama-refine " in line and marker in line)
    words = shlex.split(line)
    return words[words.index("lama-refine") + 1 :]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """The user's folder: not inside the repository, holding only what the doc says to write."""
    root = tmp_path_factory.mktemp("user")
    assert REPO not in root.parents
    files = doc_files()
    assert {
        "my_parts.py",
        "myconf/refiner/tv.yaml",
        "myconf/pyramid_mask/maxpool.yaml",
        "use_objects.py",
        "use_config.py",
        "my_generator.py",
        "refine_my_generator.py",
        "myconf/model/tiny.yaml",
        "my_refiner.py",
        "myconf/refiner/two_rates.yaml",
        "use_my_refiner.py",
    } <= set(files)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    inputs = root / "photos"
    inputs.mkdir()
    (inputs / "photo.png").write_bytes((CASE.path / "image.png").read_bytes())
    (inputs / "photo_mask.png").write_bytes((CASE.path / "mask.png").read_bytes())
    return root


def python(user_dir: Path, *args: str) -> subprocess.CompletedProcess:
    # one thread: these check behaviour, not speed, and two threads per process oversubscribe shared cores
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([".", str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run([sys.executable, *args], cwd=user_dir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def check_inpainted(path: Path) -> np.ndarray:
    out = np.load(path)
    image, mask = CASE.image()[0].permute(1, 2, 0).numpy(), CASE.mask()[0, 0].numpy()
    assert out.shape == image.shape and np.isfinite(out).all()
    assert np.array_equal(out[mask == 0], image[mask == 0])
    return out


@pytest.mark.slow  # a subprocess
def test_user_parts_built_as_objects_run_on_files_and_tensors(user_dir):
    proc = python(user_dir, "use_objects.py", str(MODEL), "photos/photo.png", "photos/photo_mask.png", "objects.npy")
    check_inpainted(user_dir / "objects.npy")
    assert "scales [(85, 121), (171, 243)]" in proc.stdout
    losses = ast.literal_eval(proc.stdout.split("losses ")[1].strip())
    assert losses[0] == [] and len(losses[1]) == 5


@pytest.mark.slow  # a subprocess
def test_user_config_folder_composes_from_python(user_dir):
    proc = python(user_dir, "use_config.py", str(MODEL), "photos/photo.png", "photos/photo_mask.png", "config.npy")
    assert "refiner TVRefiner mask MaxPoolMaskDownsampler" in proc.stdout
    tv, plain = check_inpainted(user_dir / "config.npy"), check_inpainted(user_dir / "config_plain.npy")
    assert np.abs(tv - plain).max() > 0


@pytest.mark.slow  # a subprocess
def test_the_docs_command_line_uses_the_user_parts_without_editing_the_package(user_dir, tmp_path):
    args = doc_command()
    mine = {"model.path": str(MODEL), "indir": "photos", "outdir": "out"}
    args = [a for a in args if a.split("=", 1)[0] not in mine] + [f"{k}={v}" for k, v in mine.items()]
    args += ["out_ext=.npy", "progress=false", "output.match_input_size=false", *CASE.overrides()]
    python(user_dir, "-m", "lama_refine.app.cli", *args)
    out = check_inpainted(user_dir / "out" / "photo_mask.npy")
    saved = OmegaConf.load(next((user_dir / "out" / ".lama-refine").rglob("config.yaml")))
    assert saved.refiner._target_ == "my_parts.TVRefiner" and saved.refiner.tv_weight == 0.5
    assert saved.pyramid_mask._target_ == "my_parts.MaxPoolMaskDownsampler"
    # the default parts, same settings otherwise, give another result
    run(
        compose(
            [
                f"model.path={MODEL}",
                f"indir={user_dir / 'photos'}",
                f"outdir={tmp_path}",
                "out_ext=.npy",
                "progress=false",
                "output.match_input_size=false",
                *CASE.overrides(),
            ]
        )
    )
    assert np.abs(out - np.load(tmp_path / "photo_mask.npy")).max() > 1e-4


@pytest.mark.slow  # a subprocess
def test_the_docs_own_generator_is_refined_from_python_and_from_the_command_line(user_dir):
    """'Your own generator': a user-written encoder-trunk-decoder, registered by one call; the loss
    falls, the known pixels are kept; the same class and its saved weights through `+model=tiny`."""
    proc = python(user_dir, "refine_my_generator.py", "photos/photo.png", "photos/photo_mask.png", "tiny.npy")
    first, last = map(float, proc.stdout.split("finest-scale loss ")[1].split("->"))
    assert last < first
    check_inpainted(user_dir / "tiny.npy")

    args = [a for a in doc_command("+model=tiny") if a.split("=", 1)[0] not in ("indir", "outdir")]
    python(
        user_dir,
        "-m",
        "lama_refine.app.cli",
        *args,
        "indir=photos",
        "outdir=out_tiny",
        "out_ext=.npy",
        "progress=false",
        "refiner.n_iters=3",
    )
    from_cli = check_inpainted(user_dir / "out_tiny" / "photo_mask.npy")
    saved = OmegaConf.load(next((user_dir / "out_tiny" / ".lama-refine").rglob("config.yaml")))
    assert saved.model._target_ == "my_generator.TinyInpainter" and saved.model.width == 16
    image, hole = CASE.image()[0].permute(1, 2, 0).numpy(), CASE.mask()[0, 0].numpy() == 1
    assert np.abs(from_cli - image)[hole].max() > 0.05  # the hole is the network's, not the input's


@pytest.mark.slow  # a subprocess
def test_the_docs_own_refiner_gets_the_shared_downsamplers_and_forwards_the_hooks(user_dir):
    """'A refiner of your own': its constructor declares the injected names and gets the objects
    the pyramid got; the progress hook hears both delegated runs (2 scales: 1 + n_iters forwards each)."""
    proc = python(user_dir, "use_my_refiner.py", str(MODEL), "photos/photo.png", "photos/photo_mask.png", "two.npy")
    assert "shared downsampler True" in proc.stdout
    assert "forwards 8" in proc.stdout
    assert "DeprecationWarning" not in proc.stderr
    check_inpainted(user_dir / "two.npy")
