"""lama-refine-download and model.path=NAME, against a file server on 127.0.0.1 run by the test.

Nothing here reaches the network: the big-lama entry is pointed at the local server, and the
cache folder ($LAMA_REFINE_HOME) is a temporary folder."""

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from lama_refine.app import download as dl
from lama_refine.app.download import listing
from lama_refine.config import load_model, model_path
from lama_refine.errors import UserError
from lama_refine.models import load_generator, zoo
from lama_refine.models.convert import convert
from lama_refine.weights import BUILTIN_MODELS, DEFAULT_MODEL_PATH


class FileServer(http.server.ThreadingHTTPServer):
    """Serves `files` by path; honours `Range: bytes=N-` (unless `ranges` is off); the next
    `cut` responses announce the whole length but send half of it and close the connection."""

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.ranges = True
        self.cut = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self):
        srv = self.server
        requested = self.headers.get("Range")
        srv.requests.append((self.path, requested))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", requested or "")
        if match and srv.ranges:
            start = int(match.group(1))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut > 0:
            srv.cut -= 1
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    monkeypatch.setenv(zoo.HOME_ENV, str(folder))
    monkeypatch.chdir(tmp_path)  # no `big-lama` file or folder in the working directory
    monkeypatch.setattr(dl.time, "sleep", lambda seconds: None)
    return folder


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    """A small real checkpoint that carries its architecture (convert embeds it), as bytes."""
    path = convert(DEFAULT_MODEL_PATH, tmp_path_factory.mktemp("payload") / "demo.safetensors")
    return path.read_bytes()


@pytest.fixture
def server(payload):
    srv = FileServer({"/files/demo.safetensors": payload, "/big-lama.pt": payload[:300_000]})
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def local_big_lama(server, monkeypatch):
    """The big-lama entry, pointed at the test's server, with the digest of what it serves."""
    data = server.files["/big-lama.pt"]
    known = zoo.KnownModel(
        "big-lama",
        server.url("/big-lama.pt"),
        "md5",
        hashlib.md5(data).hexdigest(),
        source="test",
        description="served by the test",
    )
    monkeypatch.setitem(zoo.KNOWN_MODELS, "big-lama", known)
    return data


def run_main(*argv: str) -> int:
    try:
        return dl.main(list(argv))
    except SystemExit as end:
        return end.code


def user_args(server, payload, digest: str | None = None) -> list[str]:
    return [
        "mymodel",
        "--url",
        server.url("/files/demo.safetensors"),
        "--sha256",
        digest or hashlib.sha256(payload).hexdigest(),
        "--quiet",
    ]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_big_lama_is_fetched_verified_and_then_found_by_name(home, server, local_big_lama, capsys):
    assert run_main("big-lama", "--quiet") == 0
    assert (home / "big-lama.pt").read_bytes() == local_big_lama
    assert leftovers(home) == ["big-lama.json", "big-lama.pt"]  # no temporary left
    record = json.loads((home / "big-lama.json").read_text())
    assert record["algorithm"] == "md5" and record["digest"] == hashlib.md5(local_big_lama).hexdigest()
    assert model_path({"path": "big-lama"}) == home / "big-lama.pt"
    assert "model.path=big-lama" in capsys.readouterr().out

    asked = len(server.requests)
    assert run_main("big-lama", "--quiet") == 0  # already there: no second download
    assert len(server.requests) == asked and "already downloaded" in capsys.readouterr().out
    assert run_main("--list") == 0
    assert f"downloaded: {home / 'big-lama.pt'}" in capsys.readouterr().out


def test_a_file_under_the_users_name_keeps_its_suffix_and_loads(home, server, payload):
    assert run_main(*user_args(server, payload)) == 0
    assert leftovers(home) == ["mymodel.json", "mymodel.safetensors"]
    path = model_path({"path": "mymodel"})
    assert path == home / "mymodel.safetensors"
    assert json.loads((home / "mymodel.json").read_text())["digest"] == hashlib.sha256(payload).hexdigest()
    loaded, reference = load_model({"path": "mymodel"}), load_generator(DEFAULT_MODEL_PATH).generator
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values(), strict=True)
    )


def test_a_wrong_checksum_leaves_nothing_and_says_so(home, server, payload):
    # The console script, in its own process: the exit status and the whole of what it prints.
    env = {**os.environ, zoo.HOME_ENV: str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "lama_refine.app.download", *user_args(server, payload, "0" * 64)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "checksum mismatch" in done.stderr and "nothing was kept" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert leftovers(home) == []  # neither the file nor its temporary
    with pytest.raises(UserError, match="lama-refine-download mymodel --url"):
        model_path({"path": "mymodel"})


def test_a_cut_connection_resumes_with_a_range_request(home, server, payload, capsys):
    server.cut = 1
    assert run_main(*user_args(server, payload), "--retries", "0") == 1
    assert "run the same command again to resume" in capsys.readouterr().err
    parts = list(home.glob(".mymodel.safetensors.*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == len(payload) // 2
    assert not (home / "mymodel.safetensors").exists()

    assert run_main(*user_args(server, payload)) == 0
    assert server.requests[-1] == ("/files/demo.safetensors", f"bytes={len(payload) // 2}-")
    assert (home / "mymodel.safetensors").read_bytes() == payload
    assert leftovers(home) == ["mymodel.json", "mymodel.safetensors"]


def test_one_run_retries_a_cut_connection_by_itself(home, server, payload):
    server.cut = 1
    assert run_main(*user_args(server, payload), "--retries", "1") == 0
    assert [r for _, r in server.requests] == [None, f"bytes={len(payload) // 2}-"]
    assert (home / "mymodel.safetensors").read_bytes() == payload


def test_a_server_without_range_support_starts_over(home, server, payload):
    server.ranges = False
    home.mkdir()
    url = server.url("/files/demo.safetensors")
    dl.partial_path(home / "mymodel.safetensors", url).write_bytes(b"stale bytes from an earlier try")
    assert run_main(*user_args(server, payload)) == 0
    assert server.requests[-1][1] is not None  # it asked for the rest, got the whole file
    assert (home / "mymodel.safetensors").read_bytes() == payload


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nosuch"], "unknown model name 'nosuch'.*lama-refine-download nosuch --url URL --sha256 HEX"),
        (["mymodel", "--url", "http://127.0.0.1:9/x.pt"], "refusing to download without a checksum"),
        (["mymodel", "--url", "http://127.0.0.1:9/x.pt", "--sha256", "abc"], "not a sha256 digest"),
        (["mymodel", "--url", "ftp://127.0.0.1/x.pt", "--md5", "0" * 32], "only http:// and https://"),
        (["mymodel", "--url", "http://127.0.0.1:9/big-lama.zip", "--md5", "0" * 32], "is an archive"),
        (["big-lama", "--url", "http://127.0.0.1:9/x.pt", "--md5", "0" * 32], "known model"),
        (["my/model", "--url", "http://127.0.0.1:9/x.pt", "--md5", "0" * 32], "not valid"),
        (["big-lama", "--md5", "0" * 32], "needs --url"),
    ],
)
def test_usage_mistakes_are_one_message_and_exit_2(home, capsys, argv, message):
    assert run_main(*argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err, re.S) and "Traceback" not in err
    assert leftovers(home) == []


def test_an_http_error_is_reported_without_retrying(home, server, payload, capsys):
    args = user_args(server, payload)
    args[2] = server.url("/files/missing.pt")
    assert run_main(*args) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert len(server.requests) == 1


def test_model_path_names_and_paths(home, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "urlopen", lambda *a, **k: pytest.fail("model_path must never download"))
    with pytest.raises(UserError, match=r"(?s)not downloaded yet.*lama-refine-download big-lama$") as error:
        model_path({"path": "big-lama"})
    assert error.value.exit_code == 2
    with pytest.raises(UserError, match="lama-refine-download mymodel --url URL --sha256 HEX"):
        model_path({"path": "mymodel"})
    # A missing checkpoint file stays a path (its error is about the file); so does anything with a separator.
    assert model_path({"path": "missing.ckpt"}) == tmp_path / "missing.ckpt"
    assert model_path({"path": "sub/big-lama"}) == tmp_path / "sub" / "big-lama"
    # A file or folder of that name in the working directory wins over the named model.
    (tmp_path / "big-lama").mkdir()
    assert model_path({"path": "big-lama"}) == tmp_path / "big-lama"
    assert model_path({"path": None}) == DEFAULT_MODEL_PATH


def test_built_in_names_load_the_shipped_files_unless_a_local_file_has_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert model_path({"path": "demo"}) == DEFAULT_MODEL_PATH
    assert model_path({"path": "demo-fill"}) == BUILTIN_MODELS["demo-fill"] != DEFAULT_MODEL_PATH
    fill = load_generator(model_path({"path": "demo-fill"}))
    assert fill.config.get("input_fill") == "diffusion"  # the fill model: not a LaMa option
    assert load_generator(DEFAULT_MODEL_PATH).config.get("input_fill") is None  # the default: plain LaMa
    (tmp_path / "demo-fill").mkdir()
    assert model_path({"path": "demo-fill"}) == tmp_path / "demo-fill"
    assert "demo-fill" in listing()


def test_console_script_is_declared():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'lama-refine-download = "lama_refine.app.download:main"' in text


def test_a_name_that_does_not_resolve_is_said_at_once_with_nothing_kept(home, capsys, monkeypatch):
    attempts = []
    real = dl._attempt
    monkeypatch.setattr(dl, "_attempt", lambda *a, **k: attempts.append(a[0]) or real(*a, **k))
    url = "http://lama-refine-test.invalid/x.pt"  # the reserved .invalid TLD: the lookup fails, no network used
    assert run_main("mymodel", "--url", url, "--md5", "0" * 32, "--quiet") == 1
    err = capsys.readouterr().err
    assert "cannot reach lama-refine-test.invalid (name lookup failed); nothing was downloaded" in err
    assert ".part" not in err and "interrupted" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and attempts == [url]  # no retries: they cannot help
    assert leftovers(home) == []


def test_a_refused_connection_names_the_host_and_no_part_file(home, capsys):
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert (
        run_main("mymodel", "--url", f"http://127.0.0.1:{port}/x.pt", "--md5", "0" * 32, "--quiet", "--retries", "1")
        == 1
    )
    err = capsys.readouterr().err
    assert f"cannot reach 127.0.0.1:{port} (connection refused); nothing was downloaded" in err
    assert ".part" not in err and "bytes are kept" not in err
    assert leftovers(home) == []


def test_a_cut_with_bytes_kept_names_the_part_file_with_its_size(home, server, payload, capsys):
    server.cut = 5
    assert run_main(*user_args(server, payload), "--retries", "0") == 1
    err = capsys.readouterr().err
    part = dl.partial_path(home / "mymodel.safetensors", server.url("/files/demo.safetensors"))
    assert f"{part.stat().st_size} bytes are kept in {part}" in err and part.stat().st_size == len(payload) // 2
