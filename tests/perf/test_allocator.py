"""perf.allocator: parsing, library search, LD_PRELOAD re-exec, and the warning when not in effect."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lama_refine.perf import allocator
from lama_refine.perf.switches import PerfConfig, apply_process_settings


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("glibc", None),
        ("null", None),
        ("", None),
        ("JeMalloc", "jemalloc"),
        ("tcmalloc", "tcmalloc"),
        ("/opt/lib/libjemalloc.so.2", "/opt/lib/libjemalloc.so.2"),
        ("auto", "auto"),
        (" Auto ", "auto"),
    ],
)
def test_normalise(value, expected):
    assert allocator.normalise(value) == expected


def test_unknown_allocator_is_a_clear_config_error():
    with pytest.raises(ValueError, match="perf.allocator='mimalloc'"):
        PerfConfig(allocator="mimalloc")


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], "auto"),
        (["indir=x", "perf.allocator=jemalloc"], "jemalloc"),
        (["perf.allocator=glibc"], None),
    ],
)
def test_the_reexec_reads_the_allocator_of_the_checked_config(argv, expected, monkeypatch, tmp_path):
    """The CLI re-executes with what the composed config's PerfConfig says, not what argv spells."""
    from lama_refine.app import cli

    seen = []
    monkeypatch.setattr(cli, "reexec_with_preload", lambda value: seen.append(allocator.normalise(value)))
    monkeypatch.setattr(cli, "check_command_line", lambda overrides, suffixes: cli_config(overrides))
    monkeypatch.setattr(cli, "is_single_image", lambda cfg: True)
    monkeypatch.setattr(cli, "run_single", lambda cfg: type("S", (), {"failed": []})())
    monkeypatch.setattr(sys, "argv", ["lama-refine", *argv])
    with pytest.raises(SystemExit):
        cli.entry()
    assert seen == [expected]


def test_a_sweep_over_allocators_does_not_reexec(monkeypatch):
    from lama_refine.app import cli

    monkeypatch.setattr(cli, "reexec_with_preload", lambda value: pytest.fail("no re-exec for a sweep"))
    monkeypatch.setattr(cli, "check_command_line", lambda overrides, suffixes: cli_config([]))
    monkeypatch.setattr(cli, "is_single_image", lambda cfg: False)
    monkeypatch.setattr(cli, "main", lambda: None)
    monkeypatch.setattr(sys, "argv", ["lama-refine", "--multirun", "perf.allocator=glibc,jemalloc"])
    cli.entry()


def cli_config(overrides):
    from lama_refine.config import compose

    return compose([o for o in overrides if o.startswith("perf.")])


def test_is_loaded_reads_the_memory_map():
    maps = (
        "7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n7f20-7f30 r-xp 0 0 0 /usr/bin/python3\n"
    )
    assert allocator.is_loaded("jemalloc", maps)
    assert not allocator.is_loaded("tcmalloc", maps)
    assert allocator.is_loaded("/somewhere/else/libjemalloc.so.2", maps)


def test_preload_env_puts_the_library_first_and_keeps_the_rest(tmp_path):
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    env = allocator.preload_env(str(lib), {"LD_PRELOAD": "/x/libother.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"] == f"{lib}:/x/libother.so" and env["PATH"] == "/bin"
    assert allocator.preload_env(str(tmp_path / "missing.so"), {}) is None


def test_the_default_is_auto():
    assert PerfConfig().allocator == "auto"
    from lama_refine.config import compose, perf_config

    assert perf_config(compose([])).allocator == "auto"


def fake_tcmalloc(monkeypatch, tmp_path, installed: bool, loaded: bool = False) -> Path:
    """find_library finds a tcmalloc at a temp path (or none); is_loaded says `loaded` for it."""
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    monkeypatch.setattr(allocator, "find_library", lambda name: lib if installed and name == "tcmalloc" else None)
    monkeypatch.setattr(allocator, "is_loaded", lambda name, maps=None: loaded and name == "tcmalloc")
    return lib


@pytest.mark.parametrize("installed, expected", [(True, "tcmalloc"), (False, None)])
def test_auto_resolves_to_tcmalloc_where_installed(installed, expected, monkeypatch, tmp_path):
    fake_tcmalloc(monkeypatch, tmp_path, installed)
    assert allocator.resolve("auto") == expected
    assert allocator.resolve("glibc") is None and allocator.resolve("jemalloc") == "jemalloc"


@pytest.mark.parametrize("loaded, expected", [(True, "tcmalloc"), (False, None)])
def test_the_memory_model_assumes_auto_is_tcmalloc_only_where_loaded(loaded, expected, monkeypatch, tmp_path):
    fake_tcmalloc(monkeypatch, tmp_path, installed=True, loaded=loaded)
    assert allocator.assumed("auto") == expected
    assert allocator.assumed("jemalloc") == "jemalloc"  # explicit: taken to be in effect


@pytest.mark.parametrize("installed", [True, False])
def test_reexec_with_auto_preloads_tcmalloc_only_where_installed(installed, monkeypatch, tmp_path):
    lib = fake_tcmalloc(monkeypatch, tmp_path, installed)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv(allocator.REEXEC_MARK, raising=False)
    monkeypatch.delenv("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", raising=False)
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, args, env: calls.append(env))
    allocator.reexec_with_preload("auto")
    if not installed:
        assert calls == []
        return
    (env,) = calls
    assert env["LD_PRELOAD"].split(":")[0] == str(lib) and env[allocator.REEXEC_MARK] == "1"
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) > 2**40  # no "large alloc" lines on stderr


def test_reexec_with_auto_is_skipped_when_loaded_or_reexecuted(monkeypatch, tmp_path):
    fake_tcmalloc(monkeypatch, tmp_path, installed=True, loaded=True)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("tcmalloc is loaded already"))
    monkeypatch.delenv(allocator.REEXEC_MARK, raising=False)
    allocator.reexec_with_preload("auto")
    fake_tcmalloc(monkeypatch, tmp_path, installed=True, loaded=False)
    monkeypatch.setenv(allocator.REEXEC_MARK, "1")
    allocator.reexec_with_preload("auto")


def auto_messages(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "lama_refine.perf.allocator"]


@pytest.fixture
def fresh_notes(monkeypatch):
    """A process that has said nothing yet about perf.allocator=auto."""
    monkeypatch.setattr(allocator, "_said", set())


def test_auto_without_tcmalloc_says_once_at_info_what_it_would_give(caplog, monkeypatch, tmp_path, fresh_notes):
    fake_tcmalloc(monkeypatch, tmp_path, installed=False)
    with caplog.at_level(logging.INFO, logger="lama_refine.perf.allocator"):
        assert allocator.check("auto")
        apply_process_settings(PerfConfig())  # a second pipeline in the same process
        allocator.check("auto")
    (record,) = auto_messages(caplog)
    assert record.levelno == logging.INFO
    text = record.getMessage()
    assert "system allocator" in text and allocator.TCMALLOC_GAIN in text
    assert "apt install libtcmalloc-minimal4" in text and "conda install gperftools" in text


def test_auto_with_tcmalloc_not_loaded_says_once_how_to_preload_it(caplog, monkeypatch, tmp_path, fresh_notes):
    lib = fake_tcmalloc(monkeypatch, tmp_path, installed=True, loaded=False)
    with caplog.at_level(logging.INFO, logger="lama_refine.perf.allocator"):
        assert not allocator.check("auto")
        allocator.check("auto")
    (record,) = auto_messages(caplog)
    assert record.levelno == logging.INFO and f"LD_PRELOAD={lib}" in record.getMessage()


def test_auto_in_effect_and_glibc_say_nothing(caplog, monkeypatch, tmp_path, fresh_notes):
    fake_tcmalloc(monkeypatch, tmp_path, installed=True, loaded=True)
    with caplog.at_level(logging.DEBUG, logger="lama_refine.perf.allocator"):
        assert allocator.check("auto")
        assert allocator.check("glibc") and allocator.check(None)
    assert auto_messages(caplog) == []


def test_explicit_tcmalloc_missing_still_warns(caplog, monkeypatch, tmp_path, fresh_notes):
    fake_tcmalloc(monkeypatch, tmp_path, installed=False)
    with caplog.at_level(logging.INFO, logger="lama_refine.perf.allocator"):
        assert not allocator.check("tcmalloc")
        assert not allocator.check("tcmalloc")
    records = auto_messages(caplog)
    assert [r.levelno for r in records] == [logging.WARNING] * 2
    assert "not in effect" in records[0].getMessage() and "libtcmalloc-minimal4" in records[0].getMessage()


def test_not_in_effect_warns_with_what_to_do(caplog, tmp_path):
    missing = str(tmp_path / "libjemalloc.so.2")
    with caplog.at_level(logging.WARNING, logger="lama_refine.perf.allocator"):
        assert not allocator.check(missing)
    assert "perf.allocator" in caplog.text and "not in effect" in caplog.text
    with caplog.at_level(logging.WARNING, logger="lama_refine.perf.allocator"):
        apply_process_settings(PerfConfig(allocator=None))  # the system allocator: nothing to say


def _a_real_shared_library() -> Path | None:
    """Any preloadable library stands in for an allocator in the re-exec test: libm is everywhere."""
    for folder in allocator.search_dirs():
        if (folder / "libm.so.6").is_file():
            return folder / "libm.so.6"
    return None


@pytest.mark.slow  # a subprocess
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD re-exec is Linux only")
def test_reexec_preloads_the_library_once():
    lib = _a_real_shared_library()
    if lib is None:
        pytest.skip("no libm.so.6 in the search folders")
    code = (
        "import os, sys; from lama_refine.perf.allocator import reexec_with_preload, REEXEC_MARK; "
        "reexec_with_preload(sys.argv[1].split('=', 1)[1]); "
        "print(os.environ.get('LD_PRELOAD'), os.environ.get(REEXEC_MARK), sys.argv[1:])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.REEXEC_MARK)}
    # libm is mapped into every Python already, so is_loaded() would skip the re-exec: name it by a
    # symlink whose stem is not mapped yet
    link = Path(os.environ.get("TMPDIR", "/tmp")) / f"liblamarefinetest{os.getpid()}.so.6"
    link.unlink(missing_ok=True)
    link.symlink_to(lib)
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, f"perf.allocator={link}", "indir=x"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    finally:
        link.unlink()
    assert out[0] == str(link) and out[1] == "1" and "'indir=x']" in out[-1]


@pytest.mark.slow  # a subprocess
@pytest.mark.skipif(allocator.find_library("jemalloc") is None, reason="jemalloc is not installed here")
def test_jemalloc_is_in_effect_under_the_cli_reexec():
    code = (
        "import sys; from lama_refine.perf.allocator import reexec_with_preload, is_loaded; "
        "reexec_with_preload('jemalloc'); print(is_loaded('jemalloc'))"
    )
    env = {k: v for k, v in os.environ.items() if k != allocator.REEXEC_MARK}
    out = subprocess.run(
        [sys.executable, "-c", code, "perf.allocator=jemalloc"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    assert out == "True"
