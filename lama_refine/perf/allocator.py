"""CPU memory allocator switch (`perf.allocator`): run under jemalloc or tcmalloc instead of glibc.

The default, `auto`, is tcmalloc where its library is installed and the system allocator
elsewhere (`resolve`); `glibc` (or null) is the system allocator whatever is installed.

Why: refinement frees and reallocates feature-map-sized buffers every iteration. glibc's malloc
serves them from its heap once its adaptive mmap threshold has grown, and the holes freed buffers
leave there stay resident: the lean backward peaks at 2.5-4 GiB resident at 736x736 while at most
1.1 GiB is ever live (docs/benchmarks.md). jemalloc and tcmalloc reuse freed blocks by size class,
so resident memory stays near the live set, at glibc's speed (a fixed small mmap threshold,
`perf.mmap_threshold_kb`, also returns the memory but page-faults it in again on every
iteration, which costs 1.6x in time).

A process's allocator cannot be swapped once Python runs, so the switch works by preloading the
library: `lama-refine perf.allocator=jemalloc ...` re-executes itself once with `LD_PRELOAD` set
(the way `torch.backends.xeon.run_cpu --enable-jemalloc` does). The library comes from the
system (`apt install libjemalloc2` / `libtcmalloc-minimal4`, `conda install jemalloc`); a path to
the `.so` is accepted too. From Python, start the interpreter with `LD_PRELOAD` yourself:
`preload_env()` says what to set.

glibc's own knobs live here too: `libc()` (mallopt, malloc_trim) and `malloc_trim()`
(`perf.malloc_trim`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys
import sysconfig
from pathlib import Path

log = logging.getLogger(__name__)

# perf.allocator value -> file names of the library, preferred first
LIBRARIES: dict[str, tuple[str, ...]] = {
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so"),
}
DEFAULT_NAMES = (None, "", "glibc", "system", "default", "none", "null")
AUTO = "auto"  # the default: tcmalloc where installed, else the system allocator
REEXEC_MARK = "LAMA_REFINE_ALLOCATOR_REEXEC"  # set in the re-executed process: never loop
# What tcmalloc gives over glibc, measured (docs/benchmarks.md, the allocator tables)
TCMALLOC_GAIN = (
    "at 1152x768 with the big-lama model, peak RSS 1.21 GiB instead of 2.4-3.5 GiB on glibc, "
    "at the same speed (docs/benchmarks.md, --plan anchor)"
)
TCMALLOC_INSTALL = (
    "apt install libtcmalloc-minimal4 (Debian/Ubuntu); elsewhere gperftools' tcmalloc (conda install gperftools)"
)


def normalise(value: str | None) -> str | None:
    """None for the system allocator, AUTO, else a key of LIBRARIES or a path to a shared library."""
    if value is None or str(value).strip().lower() in DEFAULT_NAMES:
        return None
    value = str(value).strip()
    if value.lower() in (*LIBRARIES, AUTO):
        return value.lower()
    if "/" in value or value.endswith((".so",)) or ".so." in value:
        return value
    raise ValueError(
        f"perf.allocator={value!r}: expected auto (tcmalloc where installed), glibc or null "
        f"(the system's), {' or '.join(LIBRARIES)}, or a path to the allocator's .so file"
    )


def resolve(value: str | None) -> str | None:
    """The allocator `perf.allocator=value` asks for: `auto` is tcmalloc where its library is
    installed, else None (the system's); any other value as `normalise` gives it."""
    allocator = normalise(value)
    if allocator == AUTO:
        return "tcmalloc" if find_library("tcmalloc") is not None else None
    return allocator


def assumed(value: str | None) -> str | None:
    """The allocator the memory model takes a run with `perf.allocator=value` to have: an explicit
    one is taken to be in effect (the CLI preloads it; `check` warns where it is not); `auto` is
    tcmalloc only where this process runs on it already (the CLI's re-exec), since from Python,
    without LD_PRELOAD, it means the system allocator."""
    allocator = normalise(value)
    if allocator == AUTO:
        return "tcmalloc" if is_loaded("tcmalloc") else None
    return allocator


def search_dirs() -> list[Path]:
    """Where allocator libraries are installed: the environment's lib folder (conda, venv) first."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"]
    for root in ("/usr/local/lib", "/usr/lib", "/lib"):
        if multiarch:
            dirs.append(Path(root) / multiarch)
        dirs.append(Path(root))
    dirs += [Path("/usr/lib64"), Path("/lib64")]
    return list(dict.fromkeys(dirs))


def find_library(allocator: str) -> Path | None:
    """The shared library for `allocator` (a LIBRARIES key or a path), or None if not installed."""
    if allocator not in LIBRARIES:
        path = Path(allocator).expanduser()
        return path if path.is_file() else None
    for name in LIBRARIES[allocator]:
        for folder in search_dirs():
            if (folder / name).is_file():
                return folder / name
    found = ctypes.util.find_library(allocator.replace("tcmalloc", "tcmalloc_minimal"))
    return Path(found) if found and Path(found).is_absolute() and Path(found).is_file() else None


def is_loaded(allocator: str, maps: str | None = None) -> bool:
    """Whether this process has `allocator`'s library mapped (Linux: /proc/self/maps)."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return False
    stems = (
        ("libjemalloc",)
        if allocator == "jemalloc"
        else ("libtcmalloc",)
        if allocator == "tcmalloc"
        else (Path(allocator).name.split(".so")[0],)
    )
    return any(stem in line for line in maps.splitlines() for stem in stems)


def preload_env(allocator: str, environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """A copy of `environ` with the allocator's library first in LD_PRELOAD, or None if not found.

    For tcmalloc, gperftools' report of allocations over 1 GiB on stderr ("tcmalloc: large
    alloc ...", printed by some builds; Debian's libtcmalloc-minimal4 2.10 did not) is turned off
    unless the environment sets its threshold: a 4K feature map is that large."""
    library = find_library(allocator)
    if library is None:
        return None
    env = dict(os.environ if environ is None else environ)
    previous = [p for p in env.get("LD_PRELOAD", "").split(":") if p and p != str(library)]
    env["LD_PRELOAD"] = ":".join([str(library), *previous])
    if "tcmalloc" in library.name:
        env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(2**62))
    return env


def reexec_with_preload(allocator: str | None) -> None:
    """If `allocator` (the run's `PerfConfig.allocator`; `auto`: tcmalloc where installed) is one
    this process lacks, re-execute the process, same command line, with the library in LD_PRELOAD.

    Returns (doing nothing) when none is asked for, it is already loaded, it is not installed
    (the pipeline then warns, or for `auto` says once what tcmalloc would give), this is already
    the re-executed process, or the platform is not Linux. Otherwise does not return.
    """
    if not sys.platform.startswith("linux") or os.environ.get(REEXEC_MARK):
        return
    allocator = resolve(allocator)
    if allocator is None:
        return
    if is_loaded(allocator):
        return
    env = preload_env(allocator)
    if env is None:
        return
    env[REEXEC_MARK] = "1"
    command = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *command[1:]], env)


_said: set[str] = set()  # the INFO lines of `auto` already logged by this process


def _info_once(key: str, message: str, *args: object) -> None:
    if key not in _said:
        _said.add(key)
        log.info(message, *args)


def check_auto() -> bool:
    """`perf.allocator=auto`: True when it is in effect (tcmalloc loaded, or not installed: the
    system allocator); says once per process, at INFO, what tcmalloc would give and how to get it
    where it is not in use."""
    library = find_library("tcmalloc")
    if library is None:
        _info_once(
            "missing",
            "perf.allocator=auto: tcmalloc is not installed, so this run uses the system "
            "allocator. tcmalloc keeps resident memory near the live tensors: %s. To get it: %s. "
            "perf.allocator=glibc chooses the system allocator without this note.",
            TCMALLOC_GAIN,
            TCMALLOC_INSTALL,
        )
        return True
    if is_loaded("tcmalloc"):
        return True
    _info_once(
        "not-loaded",
        "perf.allocator=auto: tcmalloc is installed but not loaded in this process (only "
        "the lama-refine command re-runs itself with it); start Python with LD_PRELOAD=%s to use it: %s.",
        library,
        TCMALLOC_GAIN,
    )
    return False


def check(value: str | None) -> bool:
    """Warn if `perf.allocator` asks for an allocator this process is not running; True if in effect.
    `auto` only informs (`check_auto`)."""
    allocator = normalise(value)
    if allocator == AUTO:
        return check_auto()
    if allocator is None or is_loaded(allocator):
        return True
    library = find_library(allocator)
    how = (
        f"start the process with LD_PRELOAD={library}, or pass perf.allocator={value} on the lama-refine command line"
        if library is not None
        else f"no {allocator} library found in {', '.join(map(str, search_dirs()[:4]))}, ...: install it "
        f"(Debian/Ubuntu: apt install {'libjemalloc2' if allocator == 'jemalloc' else 'libtcmalloc-minimal4'}) "
        f"or give its path, perf.allocator=/path/to/lib.so"
    )
    log.warning("perf.allocator=%s is not in effect (running on the system allocator): %s", value, how)
    return False


@functools.cache
def libc() -> ctypes.CDLL | None:
    """glibc, for its malloc knobs (mallopt, malloc_trim), or None where the C library is another."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return lib


def on_glibc_malloc(value: str | None = None) -> bool:
    """Whether glibc's malloc serves this process: glibc is the C library and no other allocator
    (jemalloc, tcmalloc, or the library `value` names) is mapped."""
    allocator = normalise(value)
    others = [*LIBRARIES, *([allocator] if allocator is not None and allocator not in (AUTO, *LIBRARIES) else [])]
    return libc() is not None and not any(is_loaded(a) for a in others)


def malloc_trim() -> bool:
    """glibc's `malloc_trim(0)`: hand the free memory at the heap's top, and the free pages inside
    it, back to the system; False where there is no glibc (a no-op) or nothing was released."""
    lib = libc()
    return bool(lib.malloc_trim(0)) if lib is not None else False


__all__ = [
    "AUTO",
    "LIBRARIES",
    "assumed",
    "check",
    "check_auto",
    "find_library",
    "is_loaded",
    "libc",
    "malloc_trim",
    "normalise",
    "on_glibc_malloc",
    "preload_env",
    "reexec_with_preload",
    "resolve",
    "search_dirs",
]
