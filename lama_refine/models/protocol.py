"""What refinement needs to know about a generator, asked in one place.

A generator is refined by cutting one `nn.Sequential`, its *layers*, at its first *trunk block*:
the modules before it are the frozen *front* (run once per scale without gradients), the block
and everything after it the *rear* that the refiner differentiates, n_iters times per scale,
with respect to the front's output (the optimised features). The layers are the generator itself
when it is an `nn.Sequential`, else its attribute `model` (LaMa's generators), or the attribute
its registration names.

Three registries, filled by `register_generator`, `register_block` and `register_handler`:

- generator classes (`GeneratorSpec`): where the layers are, the trunk (block types, or an index
  range), what the generator takes as input (`make_input`), what its front emits and what those
  features are called (`front_emits`: the refiner's `optimize=` choices), where its rear ends in
  a tail the perf layer can run in bands (`tail`), and optionally a `kind` name for LaMa-style
  `generator: {kind:}` configs (`build_generator`);
- trunk block types: any generator whose layers contain a registered block can be refined
  without a registration of its own;
- module handlers, by role, for the perf layer: `lean` (module -> its lean-backward version,
  `lama_refine.perf.lean`), `local_convs` (module -> the convolutions of a module that is a local op,
  or None: `perf.tile_rows` bands a front made of such modules, `lama_refine.perf.tiling`) and
  `image_wide` (module -> True for a parameter-free op on the whole input, run before the bands).
  A module without a handler runs as it is, under plain autograd.

Features: the front's output is one tensor, or a tuple of entries in which a non-tensor stands
for an empty branch (LaMa's FFC passes the int 0 for a branch without channels). Code outside a
generator's own modules handles features only through `as_tuple`, `feature_tensors`,
`with_tensors`, `map_tensors` and `feature_names`, so that convention has one owner.

LaMa's two kinds are registered in `models/kinds.py`, the lean versions of their blocks in
`models/lama/lean_blocks.py`. `docs/extending.md` ("Your own generator") registers a new one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from lama_refine.errors import UserError

ROLES = ("lean", "local_convs", "image_wide")
REGISTER_HINT = (
    "register its trunk block with lama_refine.models.register_block(YourBlock), or the generator with "
    "lama_refine.models.register_generator(YourNet, blocks=(YourBlock,)) or (..., trunk=(first, stop)); "
    "see docs/extending.md, 'Your own generator'"
)

T = TypeVar("T", bound=type)

log = logging.getLogger(__name__)

Features = Any  # the front's output: a tensor, or a tuple of tensors and empty branches (non-tensors)
MakeInput = Callable[[Tensor, Tensor], Tensor]  # (image (B, 3, H, W) in [0, 1], mask (B, 1, H, W) in {0, 1}) -> input
FindTail = Callable[[Sequence[nn.Module]], "int | None"]  # last rear stage's modules -> where its bandable tail starts


def hole_zeroed_and_mask(image: Tensor, mask: Tensor) -> Tensor:
    """The default input convention (LaMa's, and most inpainting networks'): the image with the
    hole zeroed, then the mask as a fourth channel: `cat([image * (1 - mask), mask])`."""
    return torch.cat([image * (1 - mask), mask], dim=1)


@dataclass(frozen=True)
class GeneratorSpec:
    """How to cut one generator class.

    `layers`: the attribute holding the `nn.Sequential` to cut, None when the generator is one.
    `blocks`: its trunk block types (besides the globally registered ones); `trunk`: instead,
    the trunk's (first, stop) indices in the layers. `front_emits`: names of the front's outputs,
    one name for a tensor (pix2pixHD), one per entry of a tuple (FFC: "local" and "global"); the
    refiner's `optimize=` picks features by these names. `make_input(image, mask)`: the tensor the
    generator (its first layer) takes (default `hole_zeroed_and_mask`). `tail(modules)`: where, in
    the last rear stage's modules, a tail `lama_refine.perf.tiling.TiledTail` can run in bands starts
    ([ConvTranspose2d, BatchNorm2d | Identity, ReLU, ReflectionPad2d(P), Conv2d(2P + 1), activation];
    `tiling.find_tail` finds one), or None; without it the tail runs whole (`perf.tile_rows`, one INFO
    line). `kind`: the name `generator: {kind: ...}` configs use, or None.
    """

    kind: str | None = None
    layers: str | None = "model"
    blocks: tuple[type[nn.Module], ...] = ()
    trunk: tuple[int, int] | None = None
    front_emits: tuple[str, ...] = ("features",)
    make_input: MakeInput = hole_zeroed_and_mask
    tail: FindTail | None = None
    name: str = "generator"  # the class name, for messages


GENERATORS: dict[type[nn.Module], GeneratorSpec] = {}
GENERATOR_KINDS: dict[str, type[nn.Module]] = {}  # config `kind` -> class
BLOCK_TYPES: list[type[nn.Module]] = []
HANDLERS: dict[str, dict[type[nn.Module], Callable[[Any], Any]]] = {role: {} for role in ROLES}


def register_generator(
    cls: T,
    *,
    kind: str | None = None,
    layers: str | None = "model",
    blocks: tuple[type[nn.Module], ...] = (),
    trunk: tuple[int, int] | None = None,
    front_emits: tuple[str, ...] = ("features",),
    make_input: MakeInput = hole_zeroed_and_mask,
    tail: FindTail | None = None,
) -> T:
    """Declare how `cls` is cut and fed (see `GeneratorSpec`); returns `cls`. With `kind`,
    `build_generator` builds it from `{kind: ..., **constructor kwargs}`."""
    if trunk is not None and (len(trunk) != 2 or not 0 <= trunk[0] < trunk[1]):
        raise UserError(
            f"register_generator({cls.__name__}): trunk={trunk!r} must be (first, stop) with "
            "0 <= first < stop, the trunk's indices in the layers"
        )
    if isinstance(front_emits, str) or not front_emits or "both" in front_emits:
        raise UserError(
            f"register_generator({cls.__name__}): front_emits={front_emits!r} must be a tuple of one "
            "name per output of the front (not 'both', the refiner's name for all of them)"
        )
    GENERATORS[cls] = GeneratorSpec(
        kind,
        layers,
        tuple(blocks),
        (trunk[0], trunk[1]) if trunk else None,  # a tuple (a list passes the check above too)
        tuple(front_emits),
        make_input,
        tail,
        cls.__name__,
    )
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


def _registered(generator: nn.Module) -> GeneratorSpec | None:
    return next((GENERATORS[t] for t in type(generator).__mro__ if t in GENERATORS), None)


def spec_of(generator: nn.Module) -> GeneratorSpec:
    """The registration of `generator`'s class (or a base), else the default for an unregistered
    class: its layers are itself (an `nn.Sequential`) or its `model` attribute."""
    spec = _registered(generator)
    if spec is not None:
        return spec
    if isinstance(generator, nn.Sequential):
        return GeneratorSpec(layers=None, name=type(generator).__name__)
    if isinstance(getattr(generator, "model", None), nn.Sequential):
        return GeneratorSpec(name=type(generator).__name__)
    raise UserError(
        f"generator of an unregistered kind: class {type(generator).__name__} is neither an "
        "nn.Sequential nor has an nn.Sequential `model` to split into a front and a rear; "
        "name its layers with lama_refine.models.register_generator(YourNet, layers='attribute', "
        "blocks=(YourBlock,)); see docs/extending.md, 'Your own generator'"
    )


def layers(generator: nn.Module) -> nn.Sequential:
    """The `nn.Sequential` the partitioner cuts."""
    spec = spec_of(generator)
    found = generator if spec.layers is None else getattr(generator, spec.layers, None)
    if not isinstance(found, nn.Sequential):
        raise UserError(
            f"generator {type(generator).__name__}: its registered layers `{spec.layers}` are not an "
            "nn.Sequential; register_generator(..., layers=...) must name one"
        )
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
            raise UserError(
                f"generator {type(generator).__name__}: registered trunk {spec.trunk} goes past its "
                f"{len(modules)} layers"
            )
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
        raise UserError(
            f"generator of an unregistered kind: class {type(generator).__name__} has no trunk block "
            f"lama-refine knows among its layers ({', '.join(names)}); {REGISTER_HINT}"
        )
    return first, n_blocks


def generator_input(generator: nn.Module | GeneratorSpec, image: Tensor, mask: Tensor) -> Tensor:
    """What `generator` takes for `image` (B, 3, H, W) in [0, 1] with the hole `mask` (B, 1, H, W)
    in {0, 1}: its registered `make_input` (default `hole_zeroed_and_mask`)."""
    spec = generator if isinstance(generator, GeneratorSpec) else _registered(generator) or GeneratorSpec()
    return spec.make_input(image, mask)


def probe_input(generator: nn.Module, size: tuple[int, int], device: Any = None, dtype: Any = None) -> Tensor:
    """The generator's input for an all-known zero image of `size` (h, w) (memory probes and traces),
    on `device` in `dtype` (default: the generator's first parameter's)."""
    weight = next(generator.parameters())
    device = weight.device if device is None else device
    dtype = weight.dtype if dtype is None else dtype
    image = torch.zeros(1, 3, *size, device=device, dtype=dtype)
    return generator_input(generator, image, torch.zeros(1, 1, *size, device=device, dtype=dtype))


def is_empty(entry: Any) -> bool:
    """An empty branch of the front's features: any entry that is not a tensor."""
    return not torch.is_tensor(entry)


def as_tuple(features: Features) -> tuple:
    """The front's output as a tuple (a single tensor becomes a 1-tuple)."""
    return features if isinstance(features, tuple) else (features,)


def feature_tensors(features: Features) -> list[Tensor]:
    """The tensors among the front's output, in order (empty branches left out)."""
    return [f for f in as_tuple(features) if not is_empty(f)]


def with_tensors(template: Features, tensors: Sequence[Tensor]) -> Features:
    """`tensors` put back into `template`'s structure (inverse of `feature_tensors`)."""
    if not isinstance(template, tuple):
        return tensors[0]
    it = iter(tensors)
    return tuple(f if is_empty(f) else next(it) for f in template)


def map_tensors(fn: Callable[[Tensor], Any], features: Features) -> Features:
    """`fn` applied to each tensor of the front's output; empty branches (and the structure) kept."""
    if isinstance(features, tuple):
        return tuple(f if is_empty(f) else fn(f) for f in features)
    return features if is_empty(features) else fn(features)


def feature_names(features: Features, emits: Sequence[str] = ("features",)) -> list[str]:
    """Names of `feature_tensors(features)`, in order: the generator's `front_emits` where they name
    each entry, else `features0`, `features1`, ... (a lone tensor with one name takes that name)."""
    entries = as_tuple(features)
    names = list(emits) if len(emits) == len(entries) else [f"features{i}" for i in range(len(entries))]
    if not isinstance(features, tuple) and len(emits) != 1:
        names = ["features"]
    return [n for n, f in zip(names, entries, strict=False) if not is_empty(f)]


def known_feature_names() -> tuple[str, ...]:
    """Every name a registered generator's front emits (plus the default "features")."""
    names = ["features"]
    for spec in GENERATORS.values():
        names += [n for n in spec.front_emits if n not in names]
    return tuple(names)


_NO_TAIL_REPORTED: set[str] = set()


def tail_start(spec: GeneratorSpec, modules: Sequence[nn.Module]) -> int | None:
    """Where the bandable tail starts in the last rear stage's `modules` (the spec's `tail`), or None,
    said once per generator class at INFO (its tail then runs whole)."""
    start = spec.tail(modules) if spec.tail is not None else None
    if start is None and spec.name not in _NO_TAIL_REPORTED:
        _NO_TAIL_REPORTED.add(spec.name)
        why = "its registered tail() found none" if spec.tail is not None else "none is registered"
        log.info(
            "perf.tile_rows: generator %s has no tail to run in bands (%s: register_generator(..., "
            "tail=lama_refine.perf.tiling.find_tail)); its tail runs whole",
            spec.name,
            why,
        )
    return start


__all__ = [
    "BLOCK_TYPES",
    "Features",
    "GENERATORS",
    "GENERATOR_KINDS",
    "GeneratorSpec",
    "ROLES",
    "as_tuple",
    "feature_names",
    "feature_tensors",
    "generator_input",
    "handler",
    "hole_zeroed_and_mask",
    "is_block",
    "is_empty",
    "known_feature_names",
    "layers",
    "map_tensors",
    "probe_input",
    "register_block",
    "register_generator",
    "register_handler",
    "spec_of",
    "tail_start",
    "trunk_bounds",
    "with_tensors",
]
