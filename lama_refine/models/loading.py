"""Load a LaMa generator from the checkpoint formats users actually have.

One entry point, `load_generator(path)`, accepts:

* a LaMa experiment folder (`config.yaml` + `models/<checkpoint>`),
* a Lightning `.ckpt` (a pickle holding OmegaConf objects and optimizer state),
* a TorchScript export (`big-lama.pt` and the like; only its `state_dict()` is read),
* a plain `torch.save` state dict,
* a `.safetensors` file (what `lama-refine-convert` writes).

Files from other people must never run code on load. Lightning checkpoints
cannot be read by `torch.load(weights_only=True)` as they are, because they name
classes such as `omegaconf.dictconfig.DictConfig`. Rather than trusting those classes, every
name the pickle mentions is bound to an inert stand-in, so the weights-only unpickler accepts
the file while nothing the file names is imported or called. Only the tensors and (as plain
data) the generator section of `hyper_parameters` are used afterwards.
"""

from __future__ import annotations

import errno
import json
import pickle
import struct
import warnings
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn

from lama_refine.models.lama.kinds import BIG_LAMA, build_generator, generator_config

SAFETENSORS_CONFIG_KEY = "lama_refine.generator"
"""safetensors metadata key holding the generator config as JSON (written by convert.py)."""

MapLocation = str | torch.device | None


class CheckpointError(ValueError):
    """A file that cannot be read as a generator checkpoint (corrupt, truncated, wrong kind)."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint whose tensors do not fit the configured generator architecture."""


@dataclass(frozen=True)
class LoadedGenerator:
    """A ready generator (eval mode, no gradients) and where it came from."""

    generator: nn.Module
    config: dict[str, Any]
    """The resolved `generator:` section (`kind` + constructor arguments) it was built from."""
    source: Path
    format: str
    """One of `lama-experiment`, `lightning`, `torchscript`, `state-dict`, `safetensors`."""


@dataclass(frozen=True)
class _Weights:
    format: str
    state: dict[str, Tensor]
    embedded_config: dict[str, Any] | None


@dataclass(frozen=True)
class _Architecture:
    config: dict[str, Any]
    origin: str


def load_generator(
    path: str | Path, checkpoint: str = "best.ckpt", map_location: MapLocation = "cpu"
) -> LoadedGenerator:
    """Build the generator a checkpoint describes and load its weights.

    `path` is a LaMa experiment folder (then `checkpoint` names the file in `models/`) or a
    checkpoint file of any supported format. The architecture comes from, in order: the
    experiment's `config.yaml`, a yaml beside the file with the same stem, the config stored
    in the file itself, and finally the big-lama default.
    """
    source = Path(path)
    _require_exists(source)
    weights_file = source / "models" / checkpoint if source.is_dir() else source
    _require_exists(weights_file)

    weights = _read_weights(weights_file, map_location)
    architecture = _find_architecture(weights_file, weights.embedded_config)
    generator = _build(architecture, weights_file)
    _load_state(generator, _generator_keys(weights.state), weights_file, architecture)

    device = _device_of(map_location)
    if device is not None:
        generator.to(device)
    generator.eval().requires_grad_(False)
    fmt = "lama-experiment" if source.is_dir() else weights.format
    return LoadedGenerator(generator, architecture.config, source, fmt)


def load_weights(generator: nn.Module, path: str | Path, map_location: MapLocation = "cpu") -> nn.Module:
    """Load a checkpoint's weights into a generator of your own (`model._target_`), strictly.

    Any format `load_generator` reads (safetensors, a state dict or Lightning .ckpt read with
    `weights_only=True`, TorchScript), keys under a `generator.` prefix taken as they are. A file
    that does not fit is an error naming the first missing, unexpected and mis-shaped keys.
    Returns the generator in eval mode without gradients.
    """
    weights_file = Path(path)
    _require_exists(weights_file)
    weights = _read_weights(weights_file, map_location)
    name = type(generator).__name__
    _load_state(generator, _generator_keys(weights.state), weights_file, _Architecture({"kind": name}, f"class {name}"))
    device = _device_of(map_location)
    if device is not None:
        generator.to(device)
    return generator.eval().requires_grad_(False)


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "checkpoint not found", str(path))


def _device_of(map_location: MapLocation) -> torch.device | None:
    """The device to put the generator on, when `map_location` names one."""
    if isinstance(map_location, (str, torch.device)):
        return torch.device(map_location)
    return None


# --------------------------------------------------------------------------- architecture


def _find_architecture(weights_file: Path, embedded: dict[str, Any] | None) -> _Architecture:
    """First available of: experiment config.yaml, same-stem yaml, embedded config, big-lama."""
    for yaml_path in _config_yaml_candidates(weights_file):
        if yaml_path.is_file():
            return _Architecture(_read_generator_yaml(yaml_path), str(yaml_path))
    if embedded is not None:
        return _Architecture(embedded, f"the config stored in {weights_file}")
    return _Architecture(generator_config(BIG_LAMA), "the big-lama default")


def _config_yaml_candidates(weights_file: Path) -> list[Path]:
    """`<exp>/config.yaml` for `<exp>/models/x.ckpt`, then `x.yaml` beside `x.<ext>`.

    For multi-suffix names (`generator.torchscript.pt`) both `generator.torchscript.yaml`
    and `generator.yaml` are tried, so one yaml can describe several exports of one model.
    """
    candidates = []
    if weights_file.parent.name == "models":
        candidates.append(weights_file.parent.parent / "config.yaml")
    candidates.append(weights_file.with_suffix(".yaml"))
    candidates.append(weights_file.with_name(weights_file.name.split(".")[0] + ".yaml"))
    return list(dict.fromkeys(candidates))


def _read_generator_yaml(yaml_path: Path) -> dict[str, Any]:
    """A whole LaMa config.yaml or just its `generator:` section -> resolved generator dict.

    OmegaConf.load resolves nothing, so `${env:TORCH_HOME}` elsewhere in the file is harmless.
    """
    try:
        return generator_config(OmegaConf.load(yaml_path))  # type: ignore[arg-type]  # a LaMa config is a mapping
    except Exception as error:
        raise CheckpointError(f"{yaml_path}: cannot read a generator config: {error}") from error


def _build(architecture: _Architecture, weights_file: Path) -> nn.Module:
    try:
        return build_generator(architecture.config)
    except ValueError as error:
        raise CheckpointError(
            f"{weights_file}: cannot build the generator described by {architecture.origin}: {error}"
        ) from error


# --------------------------------------------------------------------------- reading files


def _read_weights(path: Path, map_location: MapLocation) -> _Weights:
    """Sniff the file's format from its bytes (not its suffix) and read its tensors."""
    try:
        if zipfile.is_zipfile(path):
            if _is_torchscript(path):
                return _read_torchscript(path, map_location)
            return _read_torch_pickle(path, map_location)
        if _looks_like_safetensors(path):
            return _read_safetensors(path)
        return _read_legacy_torch(path, map_location)
    except CheckpointError:
        raise
    except Exception as error:
        detail = (
            _refusal_reason(error) if isinstance(error, pickle.UnpicklingError) else f"{type(error).__name__}: {error}"
        )
        raise CheckpointError(
            f"{path}: not a readable generator checkpoint (expected a LaMa/Lightning .ckpt, a "
            f"TorchScript export, a torch state dict or a .safetensors file; the file may be "
            f"corrupt or truncated): {detail}"
        ) from error


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives carry `constants.pkl` next to `data.pkl`; torch.save files do not."""
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[-1] == "constants.pkl" for name in archive.namelist())


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors = 8-byte little-endian header length, then a JSON object."""
    with path.open("rb") as file:
        head = file.read(9)
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + header_len <= path.stat().st_size


def _read_torchscript(path: Path, map_location: MapLocation) -> _Weights:
    """Read a TorchScript export's parameters; the scripted code itself is never run."""
    with warnings.catch_warnings():
        # torch >= 2.10 deprecates TorchScript; these exports are still what users have.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        module = torch.jit.load(str(path), map_location=map_location)
    return _Weights("torchscript", dict(module.state_dict()), None)


def _read_safetensors(path: Path) -> _Weights:
    state = load_safetensors(str(path), device="cpu")
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
    embedded = None
    if SAFETENSORS_CONFIG_KEY in metadata:
        try:
            embedded = generator_config(json.loads(metadata[SAFETENSORS_CONFIG_KEY]))
        except Exception as error:
            raise CheckpointError(
                f"{path}: metadata {SAFETENSORS_CONFIG_KEY!r} is not a generator config: {error}"
            ) from error
    return _Weights("safetensors", state, embedded)


def _read_legacy_torch(path: Path, map_location: MapLocation) -> _Weights:
    """Pre-zip `torch.save` files: only plain tensor containers are accepted."""
    return _weights_from_object(path, torch.load(path, map_location=map_location, weights_only=True))


def _read_torch_pickle(path: Path, map_location: MapLocation) -> _Weights:
    """`torch.save` zip files (Lightning checkpoints, state dicts), loaded weights-only.

    Every global the pickle names that torch does not already allow is bound to an inert
    stand-in under that name, so the file loads without importing omegaconf, Lightning,
    numpy or anything else it mentions, and without calling anything it asks to call.
    """
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    stand_ins = [(_inert_global(name), name) for name in names]
    try:
        with torch.serialization.safe_globals(stand_ins):  # type: ignore[arg-type]  # stubs: classes are callables
            loaded = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refused to load: {_refusal_reason(error)}") from error
    return _weights_from_object(path, loaded)


def _refusal_reason(error: pickle.UnpicklingError) -> str:
    """torch's reason without its advice to retry with `weights_only=False` (unsafe here)."""
    text = str(error)
    if "WeightsUnpickler error: " in text:
        text = text.split("WeightsUnpickler error: ", 1)[1]
    lines = [line.split(" Please use ")[0].strip() for line in text.splitlines()]
    reasons = [line for line in lines if line and not any(advice in line for advice in _TORCH_ADVICE)]
    return " ".join(reasons) or "its pickle uses operations the safe (weights-only) loader does not allow"


_TORCH_ADVICE = ("weights_only", "Weights only", "Check the documentation", "trust")


def _weights_from_object(path: Path, loaded: Any) -> _Weights:
    """A Lightning checkpoint dict (`state_dict` + `hyper_parameters`) or a bare state dict."""
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        state = _tensors_only(loaded["state_dict"])
        return _Weights("lightning", state, _embedded_generator_config(path, loaded.get("hyper_parameters")))
    if isinstance(loaded, Mapping) and _tensors_only(loaded):
        return _Weights("state-dict", _tensors_only(loaded), None)
    raise CheckpointError(
        f"{path}: holds no generator weights (expected a Lightning checkpoint with a `state_dict`, "
        f"or a mapping of parameter names to tensors; found {_describe(loaded)})"
    )


def _describe(obj: Any) -> str:
    if _is_inert(obj):
        return f"an object made by {obj.__dict__[_STUB_NAME]}, which was not called"
    return type(obj).__name__


def _tensors_only(mapping: Mapping[Any, Any]) -> dict[str, Tensor]:
    return {str(k): v for k, v in mapping.items() if isinstance(v, Tensor)}


def _embedded_generator_config(path: Path, hyper_parameters: Any) -> dict[str, Any] | None:
    """The `generator:` section of a Lightning checkpoint's hyper_parameters, if it has one."""
    plain = _to_plain(hyper_parameters)
    if not isinstance(plain, Mapping) or not isinstance(plain.get("generator"), Mapping):
        return None
    try:
        # Interpolations like `${generator.x}` are relative to the config root.
        return generator_config({"generator": plain["generator"]})
    except Exception as error:
        raise CheckpointError(f"{path}: hyper_parameters['generator'] is not a usable config: {error}") from error


# --------------------------------------------------------------------------- inert stand-ins
#
# torch's weights-only unpickler calls an allowed class (REDUCE / NEWOBJ), then hands it the
# pickled state (BUILD) and, for dict subclasses such as Lightning's AttributeDict, its items
# (SETITEMS). It only lets BUILD and SETITEMS target a few exact types. `collections.Counter`
# is one of them for both, and its instances take attributes, so every object a stand-in
# "creates" is a plain, empty Counter tagged with the pickled name, its arguments and its
# state. The stand-in classes themselves are inert values (e.g. `typing.Any`, or a callback
# class used as a dict key).

_STUB_NAME = "_lama_refine_pickled_name"
_STUB_ARGS = "_lama_refine_args"
_STUB_STATE = "_lama_refine_state"


class _InertGlobal:
    """Base of the stand-ins for pickled globals. Calling one records, never executes."""

    pickled_name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return _inert_object(cls.pickled_name, args)


def _inert_global(name: str) -> type:
    """A distinct stand-in class per pickled name (torch looks globals up by identity)."""
    return type(name.rsplit(".", 1)[-1], (_InertGlobal,), {"pickled_name": name, "__module__": __name__})


def _inert_object(name: str, args: tuple[Any, ...]) -> Counter:
    obj: Counter = Counter()
    obj.__dict__.update({_STUB_NAME: name, _STUB_ARGS: args, _STUB_STATE: None})

    def record_state(state: Any) -> None:
        obj.__dict__[_STUB_STATE] = state

    # Instance attribute: the unpickler checks `hasattr(inst, "__setstate__")` and calls it.
    obj.__dict__["__setstate__"] = record_state
    return obj


def _is_inert(obj: Any) -> bool:
    return type(obj) is Counter and _STUB_NAME in obj.__dict__


def _to_plain(obj: Any) -> Any:
    """Stand-ins -> plain Python, as far as reading a config needs.

    OmegaConf containers keep their children in `_content`, value nodes their value in
    `_val`; dict subclasses (AttributeDict) arrive as the stand-in's items. Anything else
    stays an opaque stand-in.
    """
    if _is_inert(obj):
        state = obj.__dict__[_STUB_STATE]
        if isinstance(state, Mapping) and "_content" in state:
            return _to_plain(state["_content"])
        if isinstance(state, Mapping) and "_val" in state:
            return _to_plain(state["_val"])
        if len(obj):
            return {k: _to_plain(v) for k, v in obj.items()}
        return obj
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- fitting


def _generator_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keep the generator's own `model.N...` keys, whatever wrapper prefix they carry.

    Lightning stores `generator.model.1.weight` next to `discriminator.*` and loss keys;
    wrappers add more (`model.generator.model.1.weight`). Files without any `generator`
    segment are taken to be a bare generator state dict.
    """
    picked = {}
    for key, value in state.items():
        parts = key.split(".")
        if "generator" in parts:
            picked[".".join(parts[parts.index("generator") + 1 :])] = value
    return picked or dict(state)


def _load_state(
    generator: nn.Module, state: dict[str, Tensor], weights_file: Path, architecture: _Architecture
) -> None:
    """Strict load with an error that says which keys do not fit, and how."""
    expected = generator.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(_mismatch_message(weights_file, architecture, missing, unexpected, misshaped))
    generator.load_state_dict({k: _loaded_dtype(v) for k, v in state.items()}, strict=True)


def _loaded_dtype(tensor: Tensor) -> Tensor:
    """Float weights become float32 (fp16 exports are fine); integer buffers stay as they are."""
    return tensor.float() if tensor.is_floating_point() else tensor


def _mismatch_message(
    weights_file: Path,
    architecture: _Architecture,
    missing: list[str],
    unexpected: list[str],
    misshaped: list[tuple[str, tuple, tuple]],
    limit: int = 5,
) -> str:
    def first(items: list[str]) -> str:
        more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    parts = [
        f"{weights_file}: checkpoint does not fit the {architecture.config.get('kind')!r} generator "
        f"described by {architecture.origin}"
    ]
    if missing:
        parts.append(f"missing keys ({len(missing)}): {first(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {first(unexpected)}")
    if misshaped:
        parts.append(
            f"mis-shaped keys ({len(misshaped)}): "
            + first([f"{k} (checkpoint {list(got)} vs model {list(want)})" for k, got, want in misshaped])
        )
    return "; ".join(parts)
