"""Check lama_refine.metrics.lpips against the `lpips` package's own code, without torchvision.

    pip download --no-deps lpips==0.1.4 -d /tmp/lpips
    unzip -q /tmp/lpips/lpips-0.1.4-py3-none-any.whl -d /tmp/lpips/whl
    python tools/check_lpips_against_package.py /tmp/lpips/whl

`lpips` imports torchvision only for `tv.alexnet(...).features` / `tv.vgg16(...).features`, which
torchvision's wheel cannot give on this project's CPU torch; here a stand-in module answers those
calls with lama_refine's feature stacks (the same modules by index), and scipy (used only by
lpips' trainer) is stubbed. Both sides then get the same random backbone and the wheel's real 0.1
heads, and LPIPS is computed by lpips.LPIPS(normalize=True) and by lama_refine.metrics.lpips.LPIPS.distance.
What this checks is everything lpips does around the backbone: the slices, the ScalingLayer,
the unit normalisation, the heads and the spatial mean. The backbone's layout is checked against
torchvision's in tests/metrics/test_lpips.py.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

from lama_refine.metrics import lpips as ours


def stub_modules() -> None:
    class Net(torch.nn.Module):
        def __init__(self, net: str):
            super().__init__()
            self.features = ours.features(net)

    models = types.ModuleType("torchvision.models")
    models.alexnet = lambda pretrained=False, **kwargs: Net("alex")
    models.vgg16 = lambda pretrained=False, **kwargs: Net("vgg")
    torchvision = types.ModuleType("torchvision")
    torchvision.models = models
    sys.modules.update({"torchvision": torchvision, "torchvision.models": models})
    for name in ("scipy", "scipy.ndimage"):
        stub = types.ModuleType(name)
        stub.zoom = None
        sys.modules[name] = stub


def main(wheel_dir: Path) -> float:
    stub_modules()
    sys.path.insert(0, str(wheel_dir))
    import lpips as package

    worst = 0.0
    torch.manual_seed(0)
    for net in ours.NETS:
        heads_file = wheel_dir / "lpips" / "weights" / "v0.1" / f"{net}.pth"
        theirs = package.LPIPS(net=net, pnet_rand=True, verbose=False, model_path=str(heads_file))
        for p in theirs.net.parameters():
            p.data.normal_(0, 0.05)
        backbone = {}
        for piece in (theirs.net.slice1, theirs.net.slice2, theirs.net.slice3, theirs.net.slice4, theirs.net.slice5):
            for index, module in piece.named_children():
                backbone.update({f"{index}.{k}": v for k, v in module.state_dict().items()})
        mine = ours.LPIPS(net)
        mine.features.load_state_dict(backbone, strict=False)  # the last max-pool is not used by either
        heads = torch.load(heads_file, map_location="cpu", weights_only=True)
        mine.lins.load_state_dict({f"{i}.weight": heads[f"lin{i}.model.1.weight"] for i in range(len(mine.lins))})
        a, b = torch.rand(2, 3, 96, 128), torch.rand(2, 3, 96, 128)
        with torch.no_grad():
            expected = theirs(a, b, normalize=True).flatten()
        got = torch.tensor([mine.distance(a[i : i + 1], b[i : i + 1]) for i in range(2)])
        diff = float(((expected - got).abs() / expected).max())
        worst = max(worst, diff)
        print(f"{net}: lpips {expected.tolist()}  lama_refine {got.tolist()}  max relative difference {diff:.2e}")
    return worst


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(0 if main(Path(sys.argv[1])) < 1e-6 else 1)
