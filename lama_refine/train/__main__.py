"""`python -m lama_refine.train [overrides]`: train the demo model (Hydra config `conf/train.yaml`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lama_refine.config import conf_dir


@hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from lama_refine.train.loop import train

    train(cfg)


if __name__ == "__main__":
    main()
