"""Composing the app's config from command-line style overrides, each mistake one clear `UserError`.

`compose_checked(overrides)` composes the config the way Hydra will and turns every mistake in the
overrides into one message naming what is wrong and the value given, with what to do (for an
unknown key, the closest keys that exist): overrides that parse, keys and group options that
exist, values of the type their default has. The command line (`usage.py`, which adds the checks
on files, folders and the model) and the Python API (`api.py`) both build on it; it imports
neither the command line nor the batch loop. The config it returns is read (`config.read_config`).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.resources
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lama_refine.config import compose, conf_dir, read_config
from lama_refine.errors import UserError

# Groups that hold options for other groups rather than a choice of their own.
LIBRARY_GROUPS = {"mask_downsampler": ("pyramid_mask", "loss_mask")}

# Values a key takes besides ones of its default's type.
ALSO_ALLOWED: dict[str, tuple[Any, ...]] = {"pyramid.px_budget": ("auto",), "overwrite": ("never",)}

# Least values of numeric keys (a part checks its own arguments; these are the app's keys).
AT_LEAST: dict[str, float] = {
    "modulo": 1,
    "out_quality": 1,
    "mask.dilate": 0,
    "mask.threshold": 0,
    "mask.max_hole": 0,
    "mask.lossy_threshold": 0,
    "pyramid.px_budget": 1,
    "pyramid.min_side": 1,
    "pyramid.max_scales": 1,
    "pyramid.n_scales": 1,
    "refiner.erosion_size": 0,
}
AT_MOST: dict[str, float] = {"out_quality": 100, "mask.threshold": 255, "mask.max_hole": 1, "mask.lossy_threshold": 255}

_ABSENT = object()


# ---------------------------------------------------------------------------------------------
# Groups and keys
# ---------------------------------------------------------------------------------------------


def config_groups(*confs: Path) -> dict[str, list[str]]:
    """Every config group under the config folders (`refiner/optimizer` for nested ones) with
    its options, Hydra's own groups left out."""
    groups: dict[str, set[str]] = {}
    for conf in confs:
        for folder in sorted(p for p in conf.rglob("*") if p.is_dir()):
            name = folder.relative_to(conf).as_posix()
            options = {p.stem for p in folder.glob("*.yaml")}
            if options and not name.startswith("hydra"):
                groups.setdefault(name, set()).update(options)
    return {name: sorted(options) for name, options in sorted(groups.items())}


def search_path(parsed: list[Override]) -> list[Path]:
    """The config folders a command line composes from: the app's, then those it adds with
    `hydra.searchpath=[file://DIR,pkg://package.conf]` (a user's own parts, docs/extending.md)."""
    folders = [conf_dir()]
    for o in parsed:
        if o.key_or_group != "hydra.searchpath" or o.is_sweep_override():
            continue
        value = o.value()
        for entry in value if isinstance(value, list) else [value]:
            entry = str(entry)
            if entry.startswith("file://"):
                folders.append(absolute(entry[len("file://") :]))
            elif entry.startswith("pkg://"):
                with contextlib.suppress(ImportError, TypeError, ValueError):
                    folders.append(Path(str(importlib.resources.files(entry[len("pkg://") :]))))
    return [f for f in folders if f.is_dir()]


def selectable_groups(conf: Path) -> dict[str, list[str]]:
    """The groups a user picks an option of with `group=option`."""
    return {k: v for k, v in config_groups(conf).items() if k not in LIBRARY_GROUPS}


def leaf_keys(cfg: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a config that holds a value (not a section)."""
    if isinstance(cfg, DictConfig):
        for key in cfg.keys():
            child = cfg._get_node(key)
            path = prefix + str(key)
            if isinstance(child, DictConfig):
                yield from leaf_keys(child, path + ".")
            else:
                yield path


def closest(key: str, candidates: Sequence[str], n: int = 2) -> list[str]:
    """The candidates nearest `key`: first its siblings in the same section (`refiner.n_iter`
    finds `refiner.n_iters`), else by the last part alone (`n_iters` finds `refiner.n_iters`),
    else by the whole dotted path."""
    section, _, last = key.rpartition(".")
    siblings = {c.rpartition(".")[2]: c for c in candidates if c.rpartition(".")[0] == section}
    near = [siblings[t] for t in difflib.get_close_matches(last, list(siblings), n=n, cutoff=0.6)]
    if near:
        return near
    tails: dict[str, list[str]] = {}
    for c in candidates:
        tails.setdefault(c.rpartition(".")[2], []).append(c)
    by_tail = [c for t in difflib.get_close_matches(last, list(tails), n=n, cutoff=0.8) for c in tails[t]]
    whole = difflib.get_close_matches(key, candidates, n=n, cutoff=0.8)
    return list(dict.fromkeys(by_tail + whole))[:n]


def has_key(cfg: DictConfig, key: str) -> bool:
    """Whether the dotted key exists, set or not (`???` counts as there)."""
    node: Any = cfg
    for part in key.split("."):
        if isinstance(node, DictConfig):
            if part not in node.keys():  # keys() lists `???` values too; `in` on the node would not
                return False
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return False
        if node is None:
            return False
    return True


def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException:
            hint = (
                f"; did you mean indir={text}?"
                if "=" not in text and not text.startswith("-")
                else " (key=value, e.g. refiner.n_iters=5; quote values with spaces or commas)"
            )
            raise UserError(f"cannot read {text!r} as an override{hint}") from None
    return parsed


def sweeps(overrides: Sequence[str], key: str) -> bool:
    """Whether the command line sweeps `key` (`--multirun key=a,b`)."""
    return any(o.key_or_group == key and o.is_sweep_override() for o in parse_overrides(overrides))


def is_group_override(o: Override, groups: dict[str, list[str]]) -> bool:
    return o.key_or_group.replace(".", "/") in groups or o.key_or_group in LIBRARY_GROUPS


def check_group_choice(o: Override, groups: dict[str, list[str]]) -> None:
    group = o.key_or_group.replace(".", "/")
    if group in LIBRARY_GROUPS:
        users = LIBRARY_GROUPS[group]
        value = o.value() if isinstance(o.value(), str) else "OPTION"
        raise UserError(
            f"{o.input_line}: {group} is not chosen by itself; pick the one of the pyramid with "
            f"{users[0]}={value} and the one of the loss with {users[1]}={value} "
            f"(options: {', '.join(groups[group])})"
        )
    for value in choices(o):
        if value not in groups[group]:
            near = difflib.get_close_matches(str(value), groups[group], n=1)
            hint = f"; did you mean {group}={near[0]}?" if near else ""
            raise UserError(
                f"{o.input_line}: {group} has no option {value!r}{hint} (options: {', '.join(groups[group])})"
            )


def choices(o: Override) -> list[Any]:
    """The values an override sets: one, or each value of a --multirun sweep."""
    if o.is_sweep_override():
        return list(o.sweep_string_iterator())
    return [o.value()]


def check_keys(parsed: list[Override], base: DictConfig, groups: dict[str, list[str]]) -> None:
    """Every `key=value` names a key that exists (`+key=value` adds one, `~key` deletes one)."""
    keys = list(leaf_keys(base))
    for o in parsed:
        if o.is_hydra_override() or is_group_override(o, groups) or o.type != OverrideType.CHANGE:
            continue
        key = o.key_or_group
        if has_key(base, key):
            continue
        near = closest(key, keys + list(groups))
        section = key.rpartition(".")[0]
        siblings = [k for k in keys if section and k.startswith(section + ".")]
        hint = (
            f"; did you mean {' or '.join(near)}?"
            if near
            else f" ({section} has {', '.join(siblings)})"
            if siblings
            else ""
        )
        raise UserError(f"{o.input_line}: unknown key {key}{hint}")


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def expected_type(default: Any) -> tuple[tuple[type, ...], str] | None:
    if isinstance(default, bool):
        return (bool,), "true or false"
    if isinstance(default, int):
        return (int,), "a whole number"
    if isinstance(default, float):
        return (int, float), "a number"
    if isinstance(default, (list, ListConfig)):
        return (list,), "a list, e.g. [a,b]"
    return None


def check_types(cfg: DictConfig, defaults: DictConfig) -> None:
    """Each value has the type of its default (`refiner.n_iters=abc` is caught here, not deep in
    the refiner), with the alternatives in ALSO_ALLOWED; numeric keys within their bounds."""
    values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    default_values = OmegaConf.to_container(defaults, resolve=True, throw_on_missing=False)
    for key in leaf_keys(cfg):
        if key.startswith("hydra."):
            continue
        value, default = _get(values, key), _get(default_values, key)
        if default is _ABSENT or default is None or value is None or default == "???":
            continue
        if value in ALSO_ALLOWED.get(key, ()):
            continue
        expected = expected_type(default)
        if expected is not None:
            types, words = expected
            if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
                others = "".join(f" or {v}" for v in ALSO_ALLOWED.get(key, ()))
                raise UserError(f"{key}={_show(value)}: expected {words}{others} (default {_show(default)})")
        if key in AT_LEAST and isinstance(value, (int, float)) and value < AT_LEAST[key]:
            raise UserError(f"{key}={_show(value)}: must be at least {AT_LEAST[key]:g}")
        if key in AT_MOST and isinstance(value, (int, float)) and value > AT_MOST[key]:
            raise UserError(f"{key}={_show(value)}: must be at most {AT_MOST[key]:g}")


def _get(container: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(container, dict) or part not in container:
            return _ABSENT
        container = container[part]
    return container


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if not isinstance(value, str) else (value if value else "''")


def absolute(path: Any) -> Path:
    return Path(to_absolute_path(str(path)))


def compose_checked(overrides: Sequence[str], config_name: str = "config") -> tuple[DictConfig, DictConfig]:
    """The composed config of `config_name` (`config` for lama-refine, `evaluate` for
    lama-refine-eval), read (`config.read_config`: the devices parsed and checked to be
    here), and the defaults it is compared against (same group choices, no values changed, as
    written); each mistake in the overrides as a UserError."""
    parsed = parse_overrides(overrides)
    groups = config_groups(*search_path(parsed))
    for o in parsed:
        if not o.is_hydra_override() and is_group_override(o, groups):
            check_group_choice(o, groups)
    first = [_first_value(o) for o in parsed]  # hydra.* too: hydra.searchpath adds config folders
    group_choices = [
        text for o, text in zip(parsed, first, strict=False) if o.is_hydra_override() or is_group_override(o, groups)
    ]
    base = _compose(group_choices, config_name)
    check_keys(parsed, base, groups)
    cfg = _compose(first, config_name)
    check_types(cfg, base)
    for o in parsed:  # every value of a sweep, one at a time
        if o.is_sweep_override() and not o.is_hydra_override() and not is_group_override(o, groups):
            for value in choices(o)[1:]:
                check_types(
                    _compose(
                        [t for t in first if not t.startswith(o.key_or_group + "=")] + [f"{o.key_or_group}={value}"],
                        config_name,
                    ),
                    base,
                )
    return read_config(cfg, check=True), base


def _first_value(o: Override) -> str:
    prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}.get(o.type, "")
    if o.type == OverrideType.DEL and o.value() is None:
        return f"~{o.key_or_group}"
    value = choices(o)[0] if o.is_sweep_override() else o.get_value_element_as_str()
    return f"{prefix}{o.key_or_group}={value}"


def _compose(overrides: list[str], config_name: str = "config") -> DictConfig:
    try:
        return compose(overrides, config_name=config_name, raw=True)
    except (HydraException, OmegaConfBaseException) as e:
        message = " ".join(str(e).split("\n")[:2]).strip()
        raise UserError(f"{message}") from None
