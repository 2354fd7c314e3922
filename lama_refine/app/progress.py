"""Progress bars shared by the command line and the Python API."""

from __future__ import annotations

from tqdm import tqdm


class ScaleProgress:
    """A nested tqdm bar over one image's scales and iterations, showing the current loss."""

    def __init__(self, enabled: bool, position: int = 1):
        self.enabled = enabled
        self.position = position  # 1: under a batch's bar over images
        self.bar: tqdm | None = None

    def __call__(self, scale: int, n_scales: int, it: int, n_iters: int, loss) -> None:
        if not self.enabled:
            return
        if it == 0 or self.bar is None:  # a bar may start mid-scale (early stop, a resumed scale)
            self.close()
            self.bar = tqdm(total=n_iters, desc=f"scale {scale + 1}/{n_scales}", leave=False, position=self.position)
        self.bar.update(1)
        if loss is not None:
            self.bar.set_postfix(loss=f"{float(loss):.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


__all__ = ["ScaleProgress"]
