"""LPIPS without torchvision: the formula on a hand-computed case, the feature stacks against
torchvision's layout, and the weights through lama-refine-download from a server on 127.0.0.1."""

import hashlib
import io
import logging
import threading

import pytest
import torch
from test_download import FileServer
from torch import nn

from lama_refine.app import download as dl
from lama_refine.metrics import lpips
from lama_refine.models import zoo


def test_formula_on_a_hand_computed_case():
    # Identity "features" tapped once, heads (1, 2, 3): d = mean over pixels of sum_c w_c (u(s(x)) - u(s(y)))_c^2
    metric = lpips.LPIPS("alex")
    metric.features = nn.Sequential(nn.Identity())
    metric.taps = [0]
    metric.lins = nn.ModuleList([nn.Conv2d(3, 1, 1, bias=False)])
    metric.lins[0].weight.data = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    shift, scale = torch.tensor(lpips.SHIFT).view(3, 1), torch.tensor(lpips.SCALE).view(3, 1)
    # after the scaling layer: pixel 1 is (3, 4, 0) in x and (0, 0, 2) in y; pixel 2 is (1, 0, 0) in both
    sx = torch.tensor([[3.0, 1.0], [4.0, 0.0], [0.0, 0.0]])
    sy = torch.tensor([[0.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    x, y = (shift + scale * sx).view(1, 3, 1, 2), (shift + scale * sy).view(1, 3, 1, 2)
    # pixel 1: unit vectors (.6, .8, 0) and (0, 0, 1): 1 * .36 + 2 * .64 + 3 * 1 = 4.64; pixel 2: 0
    assert metric(x, y).item() == pytest.approx(4.64 / 2, rel=1e-5)
    assert metric(x, x).item() == 0


def test_layers_sum_over_the_taps_and_distance_maps_zero_one_to_minus_one_one():
    torch.manual_seed(0)
    metric = lpips.LPIPS("alex")
    for p in metric.parameters():
        p.data.normal_()
    a, b = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    by_hand = sum(
        (lin(((lpips.unit(fa) - lpips.unit(fb)) ** 2)).mean()).item()
        for lin, fa, fb in zip(
            metric.lins, metric.layer_outputs(a * 2 - 1), metric.layer_outputs(b * 2 - 1), strict=False
        )
    )
    assert metric.distance(a, b) == pytest.approx(by_hand, rel=1e-5)
    assert metric.distance(a, a) == 0


# torchvision's alexnet().features / vgg16().features: (index, weight shape) of each conv
TORCHVISION = {
    "alex": [
        (0, (64, 3, 11, 11)),
        (3, (192, 64, 5, 5)),
        (6, (384, 192, 3, 3)),
        (8, (256, 384, 3, 3)),
        (10, (256, 256, 3, 3)),
    ],
    "vgg": [
        (0, (64, 3, 3, 3)),
        (2, (64, 64, 3, 3)),
        (5, (128, 64, 3, 3)),
        (7, (128, 128, 3, 3)),
        (10, (256, 128, 3, 3)),
        (12, (256, 256, 3, 3)),
        (14, (256, 256, 3, 3)),
        (17, (512, 256, 3, 3)),
        (19, (512, 512, 3, 3)),
        (21, (512, 512, 3, 3)),
        (24, (512, 512, 3, 3)),
        (26, (512, 512, 3, 3)),
        (28, (512, 512, 3, 3)),
    ],
}
# lpips' slice outputs for a 224x224 input: AlexNet relu1..5, VGG16 relu1_2 .. relu5_3
TAP_SIZES = {
    "alex": [(64, 55), (192, 27), (384, 13), (256, 13), (256, 13)],
    "vgg": [(64, 224), (128, 112), (256, 56), (512, 28), (512, 14)],
}


@pytest.mark.parametrize("net", lpips.NETS)
def test_feature_stacks_have_torchvisions_keys_and_lpips_taps(net):
    state = lpips.features(net).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items() if k.endswith("weight")} == {
        f"{i}.weight": shape for i, shape in TORCHVISION[net]
    }
    with torch.no_grad():
        outs = lpips.LPIPS(net).layer_outputs(torch.zeros(1, 3, 224, 224))
    assert [(o.shape[1], o.shape[2]) for o in outs] == TAP_SIZES[net]


def as_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture
def served_weights(tmp_path, monkeypatch):
    """Random AlexNet-shaped files in torchvision's and lpips' formats, served on 127.0.0.1, with
    the lpips-alex bundle pointed at them (the backbone by its 8-digit prefix, as published)."""
    monkeypatch.setenv(zoo.HOME_ENV, str(tmp_path / "home"))
    torch.manual_seed(1)
    feats = lpips.features("alex").state_dict()
    backbone = {f"features.{k}": torch.randn_like(v) for k, v in feats.items()}
    backbone["classifier.1.weight"] = torch.randn(8, 8)  # torchvision's file holds the classifier too
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(lpips.CHANNELS["alex"])}
    files = {"/alexnet-owt.pth": as_bytes(backbone), "/alex.pth": as_bytes(heads)}
    srv = FileServer(files)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    prefix = hashlib.sha256(files["/alexnet-owt.pth"]).hexdigest()[:8]
    bundle = (
        zoo.KnownModel("lpips-alex-backbone", srv.url("/alexnet-owt.pth"), "sha256", prefix, "test", "test"),
        zoo.KnownModel(
            "lpips-alex-lin",
            srv.url("/alex.pth"),
            "sha256",
            hashlib.sha256(files["/alex.pth"]).hexdigest(),
            "test",
            "test",
        ),
    )
    monkeypatch.setitem(lpips.WEIGHTS, "alex", bundle)
    monkeypatch.setitem(lpips.BUNDLES, "lpips-alex", bundle)
    for known in bundle:
        monkeypatch.setitem(dl.METRIC_FILES, known.name, known)
    yield backbone, heads, srv
    srv.shutdown()
    srv.server_close()


def test_weights_download_verified_and_load(served_weights, capsys):
    backbone, heads, _ = served_weights
    assert lpips.missing_files("alex") == ["lpips-alex-backbone", "lpips-alex-lin"]
    assert dl.main(["lpips-alex", "--quiet"]) == 0
    assert "used by LPIPS in lama-refine-eval" in capsys.readouterr().out
    metric = lpips.load("alex")
    assert torch.equal(metric.features[3].weight, backbone["features.3.weight"])
    assert torch.equal(metric.lins[4].weight, heads["lin4.model.1.weight"])
    a, b = torch.rand(1, 3, 48, 40), torch.rand(1, 3, 48, 40)
    assert 0 < metric.distance(a, b) and metric.distance(a, a) == 0
    assert "lpips-alex" in dl.listing() and "not downloaded: lama-refine-download lpips-alex" not in dl.listing()


def test_a_backbone_whose_digest_does_not_start_with_the_prefix_is_refused(served_weights, monkeypatch, capsys):
    good = lpips.WEIGHTS["alex"][0]
    bad = zoo.KnownModel(good.name, good.url, "sha256", "00000000", "test", "test")
    monkeypatch.setitem(dl.METRIC_FILES, good.name, bad)
    with pytest.raises(SystemExit) as end:
        dl.main(["lpips-alex", "--quiet"])
    assert end.value.code == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert lpips.missing_files("alex")[0] == "lpips-alex-backbone"


def test_without_weights_lpips_is_skipped_with_the_download_command(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(zoo.HOME_ENV, str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING, logger="lama_refine.metrics.lpips"):
        assert lpips.load_or_none("alex") is None
    (record,) = caplog.records
    assert "LPIPS skipped" in record.getMessage() and "lama-refine-download lpips-alex" in record.getMessage()
    assert lpips.load_or_none(None) is None
    with pytest.raises(FileNotFoundError, match="lama-refine-download lpips-vgg"):
        lpips.load("vgg")


def test_published_files_are_recorded_with_their_digests():
    for net, (backbone, heads) in lpips.WEIGHTS.items():
        # torchvision's names carry the first 8 hex digits of the SHA-256
        assert backbone.url.startswith("https://download.pytorch.org/models/")
        assert backbone.url.rsplit("-", 1)[1] == backbone.digest + ".pth"
        assert heads.url.endswith(f"/lpips/weights/v0.1/{net}.pth") and len(heads.digest) == 64


@pytest.mark.slow  # refines three crops
def test_evaluation_measures_lpips_once_its_weights_are_downloaded(served_weights, tmp_path):
    import csv

    import numpy as np
    from conftest import GOLDEN
    from PIL import Image

    from lama_refine.app.evaluate import evaluate
    from lama_refine.config import compose

    assert dl.main(["lpips-alex", "--quiet"]) == 0
    photo = np.asarray(Image.open(GOLDEN / "three_scales" / "image.png"))
    for i in range(2):
        (tmp_path / "gt").mkdir(exist_ok=True)
        Image.fromarray(photo[i * 10 : i * 10 + 72, :104]).save(tmp_path / "gt" / f"c{i}.png")
    cfg = compose(
        [
            f"gt_dir={tmp_path / 'gt'}",
            f"outdir={tmp_path / 'out'}",
            "progress=false",
            "visuals=0",
            "warmup=false",
            "refiner.n_iters=2",
            "pyramid=fixed",
            f"model.path={GOLDEN / 'three_scales' / 'generator.safetensors'}",
        ],
        config_name="evaluate",
    )
    result = evaluate(cfg)
    with open(tmp_path / "out" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    values = [float(r["lpips"]) for r in rows[:-1]]
    assert all(v > 0 for v in values) and float(rows[-1]["lpips"]) == pytest.approx(np.mean(values))
    assert result.mean["lpips"] == pytest.approx(np.mean(values))
    assert "LPIPS" in (tmp_path / "out" / "metrics.md").read_text()
