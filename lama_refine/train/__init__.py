"""Training of the built-in demo model: data, LaMa-style masks, losses and the loop.

`python -m lama_refine.train` runs it (config: `conf/train.yaml`); the model card is
`docs/default-model.md`.
"""
