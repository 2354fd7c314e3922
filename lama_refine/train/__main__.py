"""`python -m lama_refine.train [overrides]`: train the demo model (Hydra config `conf/train.yaml`)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import hydra
from omegaconf import DictConfig


def config_path() -> str:
    """The installed `lama_refine.conf` package, else the checkout's top-level `conf/`."""
    try:
        if importlib.util.find_spec("lama_refine.conf") is not None:
            return "pkg://lama_refine.conf"
    except ModuleNotFoundError:
        pass
    return str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(config_path=config_path(), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from .loop import train

    train(cfg)


if __name__ == "__main__":
    main()
