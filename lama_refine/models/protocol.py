"""What refinement needs to know about a generator, asked in one place.

A generator is refined by cutting one `nn.Sequential`, its *layers*, at its first *trunk block*:
the modules before it are the frozen *front* (run once per scale without gradients), the block
and everything after it the *rear* that the refiner differentiates, n_iters times per scale,
with respect to the front's output (the optimised features). The layers are the generator itself
when it is an `nn.Sequential`, else its attribute `model` (LaMa's generators), or the attribute
its registration names.

Three registries, filled by `register_generator`, `register_block` and `register_handler`:

- generator classes (`GeneratorSpec`): where the layers are, the trunk (block types, or an index
  range), what the front emits, and optionally a `kind` name for LaMa-style `generator: {kind:}`
  configs (`build_generator`);
- trunk block types: any generator whose layers contain a registered block can be refined
  without a registration of its own;
- module handlers, by role, for the perf layer: `lean` (module -> its lean-backward version,
  `lama_refine.lean`), `local_convs` (module -> the convolutions of a module that is a local op,
  or None: `perf.tile_rows` bands a front made of such modules, `lama_refine.tiling`) and
  `image_wide` (module -> True for a parameter-free op on the whole input, run before the bands).
  A module without a handler runs as it is, under plain autograd.

LaMa's two kinds are registered in `models/kinds.py`, the lean versions of their blocks in
`lama_refine/lean.py`. `docs/extending.md` ("Your own generator") registers a new one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from torch import nn

from ..errors import UserError

ROLES = ("lean", "local_convs", "image_wide")
REGISTER_HINT = ("register its trunk block with lama_refine.models.register_block(YourBlock), or the generator with "
                 "lama_refine.models.register_generator(YourNet, blocks=(YourBlock,)) or (..., trunk=(first, stop)); "
                 "see docs/extending.md, 'Your own generator'")

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class GeneratorSpec:
    """How to cut one generator class.

    `layers`: the attribute holding the `nn.Sequential` to cut, None when the generator is one.
    `blocks`: its trunk block types (besides the globally registered ones); `trunk`: instead,
    the trunk's (first, stop) indices in the layers. `front_emits`: names of the front's outputs,
    one name for a tensor (pix2pixHD), several for a tuple (FFC: local and global features).
    `kind`: the name `generator: {kind: ...}` configs use, or None.
    """

    kind: str | None = None
    layers: str | None = "model"
    blocks: tuple[type[nn.Module], ...] = ()
    trunk: tuple[int, int] | None = None
    front_emits: tuple[str, ...] = ("features",)


GENERATORS: dict[type[nn.Module], GeneratorSpec] = {}
GENERATOR_KINDS: dict[str, type[nn.Module]] = {}  # config `kind` -> class
BLOCK_TYPES: list[type[nn.Module]] = []
HANDLERS: dict[str, dict[type[nn.Module], Callable[[Any], Any]]] = {role: {} for role in ROLES}


def register_generator(cls: T, *, kind: str | None = None, layers: str | None = "model",
                       blocks: tuple[type[nn.Module], ...] = (), trunk: tuple[int, int] | None = None,
                       front_emits: tuple[str, ...] = ("features",)) -> T:
    """Declare how `cls` is cut (see `GeneratorSpec`); returns `cls`. With `kind`, `build_generator`
    builds it from `{kind: ..., **constructor kwargs}`."""
    if trunk is not None and (len(trunk) != 2 or not 0 <= trunk[0] < trunk[1]):
        raise UserError(f"register_generator({cls.__name__}): trunk={trunk!r} must be (first, stop) with "
                        "0 <= first < stop, the trunk's indices in the layers")
    GENERATORS[cls] = GeneratorSpec(kind, layers, tuple(blocks), tuple(trunk) if trunk else None, tuple(front_emits))
    if kind is not None:
        GENERATOR_KINDS[kind] = cls
    return cls


def register_block(*block_types: type[nn.Module]) -> None:
    """Trunk block types: the first one in a generator's layers starts the rear, and the perf layer
    treats each as one block (`perf.checkpointing`)."""
    for t in block_types:
        if t not in BLOCK_TYPES:
            BLOCK_TYPES.append(t)


def register_handler(role: str, module_type: type[nn.Module], handler: Callable[[Any], Any]) -> None:
    """`handler(module)` answers `role` (one of `ROLES`) for modules of `module_type` and its subclasses."""
    if role not in HANDLERS:
        raise ValueError(f"unknown handler role {role!r}; expected one of {ROLES}")
    HANDLERS[role][module_type] = handler


def handler(role: str, module: nn.Module) -> Callable[[Any], Any] | None:
    """The handler of `role` registered for `module`'s class or its nearest base, or None."""
    table = HANDLERS[role]
    return next((table[t] for t in type(module).__mro__ if t in table), None)


def spec_of(generator: nn.Module) -> GeneratorSpec:
    """The registration of `generator`'s class (or a base), else the default for an unregistered
    class: its layers are itself (an `nn.Sequential`) or its `model` attribute."""
    spec = next((GENERATORS[t] for t in type(generator).__mro__ if t in GENERATORS), None)
    if spec is not None:
        return spec
    if isinstance(generator, nn.Sequential):
        return GeneratorSpec(layers=None)
    if isinstance(getattr(generator, "model", None), nn.Sequential):
        return GeneratorSpec()
    raise UserError(f"generator of an unregistered kind: class {type(generator).__name__} is neither an "
                    "nn.Sequential nor has an nn.Sequential `model` to split into a front and a rear; "
                    "name its layers with lama_refine.models.register_generator(YourNet, layers='attribute', "
                    "blocks=(YourBlock,)); see docs/extending.md, 'Your own generator'")


def layers(generator: nn.Module) -> nn.Sequential:
    """The `nn.Sequential` the partitioner cuts."""
    spec = spec_of(generator)
    found = generator if spec.layers is None else getattr(generator, spec.layers, None)
    if not isinstance(found, nn.Sequential):
        raise UserError(f"generator {type(generator).__name__}: its registered layers `{spec.layers}` are not an "
                        "nn.Sequential; register_generator(..., layers=...) must name one")
    return found


def is_block(module: nn.Module, spec: GeneratorSpec | None = None) -> bool:
    """A trunk block: a registered block type (or one of `spec.blocks`)."""
    return isinstance(module, (*BLOCK_TYPES, *(spec.blocks if spec else ())))


def trunk_bounds(generator: nn.Module) -> tuple[int, int]:
    """(index of the first trunk block, number of trunk blocks) in the generator's layers."""
    spec, modules = spec_of(generator), layers(generator)
    if spec.trunk is not None:
        first, stop = spec.trunk
        if stop > len(modules):
            raise UserError(f"generator {type(generator).__name__}: registered trunk {spec.trunk} goes past its "
                            f"{len(modules)} layers")
        return first, stop - first
    first, n_blocks, found = 0, 0, False
    for module in modules:
        if is_block(module, spec):
            n_blocks += 1
            found = True
        elif not found:
            first += 1
    if not found:
        names = sorted({type(m).__name__ for m in modules})
        raise UserError(f"generator of an unregistered kind: class {type(generator).__name__} has no trunk block "
                        f"lama-refine knows among its layers ({', '.join(names)}); {REGISTER_HINT}")
    return first, n_blocks


def input_channels(generator: nn.Module) -> int:
    """The channels of the generator's input (image channels + the mask): its first conv's."""
    first_conv = next((m for m in generator.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise UserError(f"generator {type(generator).__name__} has no nn.Conv2d: cannot tell its input channels")
    return first_conv.in_channels


__all__ = [
    "BLOCK_TYPES", "GENERATORS", "GENERATOR_KINDS", "GeneratorSpec", "ROLES", "handler", "input_channels", "is_block",
    "layers", "register_block", "register_generator", "register_handler", "spec_of", "trunk_bounds",
]
