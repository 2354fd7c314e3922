"""What is LaMa's alone: the lean versions of its blocks (`lean_blocks`), registered with the
generator protocol by `models/kinds.py` beside its two generator kinds. The rest of the package
asks the protocol (`models/protocol.py`) and never names a LaMa class."""
