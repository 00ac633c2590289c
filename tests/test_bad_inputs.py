"""Every bad input edgegolf is tested with, run through the real `edgegolf` entry point.

Each case builds its bad input from real files in a fresh folder, runs the command there
(in-process through `edgegolf.cli.main`, or as a subprocess where the environment or the
import matters), and must end with exit code 2, exactly one line on stderr that starts with
`error:` and names the problem, no traceback, and no file left behind that was not there
before the run (no output folder, no `.out.partial-*` staging folder).

docs/bad-inputs.md is generated from these cases and a test checks it matches what they
produce now, so the table cannot drift. After changing a message, rewrite it with

    python -m tests.test_bad_inputs --write-docs
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgegolf.errors import EXIT_ERROR, EXIT_FITS
from tests.builders.bad_files import asks_for_remote_code, edit_json
from tests.builders.paths import ROOT
from tests.builders.st_folders import save_st_folder_with_lstm

DOC = ROOT / "docs" / "bad-inputs.md"
UNREACHABLE_HUB = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused


@dataclass(frozen=True)
class Models:
    """Real inputs built once per session: a tiny BERT folder, a tiny bundle, an SSH server on loopback."""

    bert: Path
    bundle: Path
    ssh: Any  # tests.builders.ssh.LoopbackServer: asyncssh's server, a generated host key, one client key


@dataclass(frozen=True)
class Case:
    input: str  # what is wrong, for people
    build: Callable[[Path, Models], list[str]]  # makes the bad input in a folder; the arguments after `edgegolf`
    words: str  # the error line must contain this
    code: int = EXIT_ERROR
    subprocess: bool = False  # run `python -m edgegolf` (import time, environment)
    env: dict[str, str] = field(default_factory=dict)
    shown: str | None = None  # the command as the table shows it, when the arguments are too long to print
    without: tuple[str, ...] = ()  # packages absent in this run (a subprocess), as without their extra


@dataclass(frozen=True)
class Outcome:
    command: str
    code: int
    line: str  # the `error:` line (or, for exit 0, the line naming what happened)
    stderr: str
    stdout: str
    left_behind: list[str]


# --- builders: real bad files ----------------------------------------------------------------
def model(tmp: Path, m: Models, name: str = "model") -> str:
    shutil.copytree(m.bert, tmp / name)
    return name


def bundle(tmp: Path, m: Models, name: str = "bundle") -> str:
    shutil.copytree(m.bundle, tmp / name)
    return name


def write(tmp: Path, name: str, content: str | bytes) -> str:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return name


def mkdir(tmp: Path, name: str) -> str:
    (tmp / name).mkdir()
    return name


def compress(*extra: str) -> Callable[[Path, Models], list[str]]:
    """`compress model EXTRA -o out` on a copy of the tiny BERT."""
    return lambda tmp, m: ["compress", model(tmp, m), *extra, "-o", "out"]


def with_recipe(text: str | bytes) -> Callable[[Path, Models], list[str]]:
    return lambda tmp, m: ["compress", model(tmp, m), "--recipe", write(tmp, "recipe.toml", text), "-o", "out"]


def with_data(make: Callable[[Path], None]) -> Callable[[Path, Models], list[str]]:
    def build(tmp: Path, m: Models) -> list[str]:
        (tmp / "data").mkdir()
        make(tmp / "data")
        return ["compress", model(tmp, m), "--data", "data", "-o", "out"]
    return build


def with_model(change: Callable[[Path], None]) -> Callable[[Path, Models], list[str]]:
    def build(tmp: Path, m: Models) -> list[str]:
        change(tmp / model(tmp, m))
        return ["compress", "model", "-o", "out"]
    return build


def verify(change: Callable[[Path], None], *extra: str, command: str = "verify") -> Callable[[Path, Models], list[str]]:
    """`edgegolf verify bundle` (or another command that reads bundles) on a changed copy of the tiny bundle."""
    def build(tmp: Path, m: Models) -> list[str]:
        change(tmp / bundle(tmp, m))
        return [command, "bundle", *extra]
    return build


def relist(folder: Path) -> None:
    """Rewrite the manifest's hashes, as someone would who swapped a file on purpose."""
    from edgegolf.runtime.manifest import write_manifest

    manifest = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("files", "format", "format_version")})


def flip_byte(folder: Path, name: str) -> None:
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / name).write_bytes(bytes(data))


def list_outside(name: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        from edgegolf.runtime.manifest import sha256_file

        (folder.parent / "outside.bin").write_bytes(b"not part of the bundle")
        digest = sha256_file(folder.parent / "outside.bin")
        edit_json(folder / "manifest.json", lambda m: m["files"].update({name: {"sha256": digest, "bytes": 22}}))
    return change


def link_outside(folder: Path) -> None:
    from edgegolf.runtime.manifest import sha256_file

    (folder.parent / "secret.txt").write_text("not part of the bundle")
    os.symlink("../secret.txt", folder / "vocab.txt")
    digest = sha256_file(folder.parent / "secret.txt")
    edit_json(folder / "manifest.json", lambda m: m["files"].update({"vocab.txt": {"sha256": digest, "bytes": 22}}))


def corrupt_onnx(keep: int | None) -> Callable[[Path], None]:
    """Truncate model.onnx to `keep` bytes, or (None) overwrite it with bytes that are not protobuf."""
    def change(folder: Path) -> None:
        path = folder / "model.onnx"
        path.write_bytes(path.read_bytes()[:keep] if keep is not None else b"\xff" * 64)
        relist(folder)  # the hashes match: only loading the graph can tell
    return change


def pickled_weights(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    torch.save(load_file(str(weights)), folder / "pytorch_model.bin")
    weights.unlink()


def one_class(data: Path) -> None:
    (data / "sport").mkdir()
    for i in range(3):
        (data / "sport" / f"{i}.txt").write_text("The striker scored twice.")


def empty_texts(data: Path) -> None:
    for label in ("sport", "tech"):
        (data / label).mkdir()
        (data / label / "1.txt").write_text("  \n")


def remote_bench(*, port: str = "server", known: str = "server", key: str = "client") -> Callable[[Path, Models], list[str]]:
    """`edgegolf bench` of the tiny bundle on ssh://tester@127.0.0.1:PORT, with its own known_hosts and key."""
    def build(tmp: Path, m: Models) -> list[str]:
        import asyncssh

        server = m.ssh
        if port == "closed":
            with socket.socket() as probe:  # a port nobody listens on
                probe.bind(("127.0.0.1", 0))
                number = probe.getsockname()[1]
        else:
            number = server.port
        lines = {"server": server.known_hosts_line(), "empty": "",
                 "other": server.known_hosts_line(asyncssh.generate_private_key("ssh-ed25519"))}[known]
        write(tmp, "known_hosts", lines)
        if key == "client":
            shutil.copyfile(server.client_key_file, tmp / "id_key")
        else:
            asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(tmp / "id_key"))
        return ["bench", bundle(tmp, m), "--device", f"ssh://tester@127.0.0.1:{number}", "--seq", "8",
                "--known-hosts", "known_hosts", "--identity", "id_key"]
    return build


LONG_TEXT = "the bank shares fell " * 50_000  # 1,050,000 characters

# `python -c WITHOUT a,b ARGS...` runs `edgegolf ARGS...` with packages a and b absent: an
# import of either raises ModuleNotFoundError, exactly as where the extra is not installed
# (the packages themselves are untouched; nothing of theirs is imitated).
WITHOUT = r"""
import runpy, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
sys.argv = ["edgegolf", *sys.argv[2:]]
runpy.run_module("edgegolf", run_name="__main__", alter_sys=True)
"""


CASES: list[Case] = [
    # paths
    Case("model folder that does not exist", lambda t, m: ["compress", "./no-such-model", "-o", "out"], "does not exist"),
    Case("model source that is a file", lambda t, m: ["compress", write(t, "model.txt", "hi"), "-o", "out"], "is a file"),
    Case("model folder without config.json",
         lambda t, m: ["compress", mkdir(t, "empty-model"), "-o", "out"], "has no config.json"),
    Case("output folder exists, no --force", lambda t, m: ["compress", model(t, m), "-o", mkdir(t, "out")],
         "already exists; pass --force"),
    Case("output is a file (with --force)",
         lambda t, m: ["compress", model(t, m), "-o", write(t, "out", "a file"), "--force"], "is a file, not a bundle folder"),
    Case("recipe file that does not exist", compress("--recipe", "missing.toml"), "does not exist"),
    # recipes
    Case("recipe: bad TOML syntax", with_recipe("[bench\nbatch = 1\n"), "is not valid TOML"),
    Case("recipe: not UTF-8 text", with_recipe(b"\xff\xfe\x00[bench]"), "cannot be read"),
    Case("recipe: unknown section", with_recipe("[quantise]\nscheme = 'int4'\n"), "unknown section 'quantise'"),
    Case("recipe: unknown key", with_recipe("[export]\nopsett = 17\n"), "unknown field 'opsett'"),
    Case("recipe: wrong type", with_recipe("[export]\nopset = '17'\n"), "export.opset = '17' is not an integer"),
    Case("recipe: value out of range", with_recipe("[bench]\nbatch = 0\n"), "below the minimum 1"),
    Case("recipe: section that is not a table", with_recipe("bench = 3\n"), "must be a table"),
    Case("recipe: budget limit below zero", with_recipe("[budget]\nsize_mb = -1\n"), "budget.size_mb = -1.0 is below"),
    # budgets
    Case("budget: unknown limit", compress("--budget", "speed<=3ms"), "limits unknown 'speed'"),
    Case("budget: unit the limit does not take", compress("--budget", "size<=3GB"), "has unit 'gb'"),
    Case("budget: latency in megabytes", compress("--budget", "p50<=8MB"), "has unit 'mb'"),
    Case("budget: size as a multiple of the fp32 export", compress("--budget", "size<=0.1x"),
         "only p50 and p95 take x"),
    Case("budget: negative limit", compress("--budget", "size<=-3MB"), "is malformed"),
    Case("budget: malformed term", compress("--budget", "size<=small"), "is malformed"),
    Case("budget: no limit at all", compress("--budget", ",,"), "sets no limit"),
    # stages
    Case("prune spec: unknown key", compress("--prune", "layerz=1"), "layerz"),
    Case("prune spec: fraction above 1", compress("--prune", "heads=2"), "prune.heads = 2.0 is out of range"),
    Case("prune spec: term without a value", compress("--prune", "layers"), "is not key=value"),
    Case("prune: more layers than the model has", compress("--prune", "layers=99"),
         "prune.layers = 99 asks for more layers than the model has; accepted: 1 to 2"),
    Case("quantize scheme that does not exist", compress("--quantize", "int3"), "quantize.scheme = 'int3'"),
    Case("int4 block size that is not a power of two", compress("--quantize", "int4", "--block-size", "33"),
         "block_size = 33 is not accepted"),
    Case("int4 block size that is not a number", compress("--quantize", "int4", "--block-size", "abc"),
         "Invalid value for '--block-size'"),
    Case("calibration method that does not exist", compress("--quantize", "int8-static", "--calibration", "magic"),
         "quantize.method = 'magic'"),
    Case("device profile that does not exist", compress("--device", "tpu-9"), "device profile 'tpu-9' is unknown"),
    Case("task that does not exist", compress("--task", "translation"), "task = 'translation' is not accepted"),
    Case("option that does not exist", compress("--nonsense"), "No such option: --nonsense"),
    Case("evaluation limit below zero", compress("--eval-limit", "-5"), "evaluate.limit = -5 is below the minimum 0"),
    # data
    Case("data path that does not exist", compress("--data", "no-data"), "does not exist"),
    Case("data: empty folder", with_data(lambda d: None), "has no non-empty .txt files"),
    Case("data: folder with one class", with_data(one_class), "has one class ('sport')"),
    Case("data: only empty text files", with_data(empty_texts), "has no non-empty .txt files"),
    # models
    Case("hub id while the hub is unreachable", lambda t, m: ["compress", "org/some-model", "-o", "out"],
         "cannot fetch 'org/some-model' from the Hugging Face hub", subprocess=True,
         env={"HF_ENDPOINT": UNREACHABLE_HUB}),
    Case("model with only pickled weights (.bin)", with_model(pickled_weights), "pass --allow-pickle"),
    Case("config that asks for remote code", with_model(asks_for_remote_code), "--trust-remote-code"),
    Case("config.json that is not JSON", with_model(lambda f: (f / "config.json").write_text("{oops")),
         "cannot read the model config"),
    Case("weights that do not fit the config",
         with_model(lambda f: edit_json(f / "config.json", lambda c: c.update(hidden_size=48, num_attention_heads=3))),
         "cannot load a AutoModel model"),
    Case("text-classification asked of a model without a classifier", compress("--task", "text-classification"),
         "with no classification head"),
    Case("sentence-transformers folder with a module edgegolf cannot reproduce (LSTM)",
         lambda t, m: ["compress", save_st_folder_with_lstm(t / "model").name, "-o", "out"],
         "which edgegolf cannot reproduce"),
    # bundles, checked by `edgegolf verify` through edgegolf.runtime.load
    Case("bundle: one byte of model.onnx changed", verify(lambda b: flip_byte(b, "model.onnx")),
         "model.onnx differs from its manifest hash", subprocess=True),
    Case("bundle: one byte of tokenizer.json changed", verify(lambda b: flip_byte(b, "tokenizer.json")),
         "tokenizer.json differs from its manifest hash"),
    Case("bundle with a changed byte, given to edgegolf bench",
         verify(lambda b: flip_byte(b, "model.onnx"), command="bench"),
         "model.onnx differs from its manifest hash"),
    Case("bundle: a listed file is missing", verify(lambda b: (b / "tokenizer.json").unlink()),
         "missing from the bundle"),
    Case("bundle: manifest lists a ../ path", verify(list_outside("../outside.bin")), "which contains '..'"),
    Case("bundle: manifest lists an absolute path", verify(list_outside("/etc/passwd")), "lists an absolute path"),
    Case("bundle: symlink pointing outside", verify(link_outside), "resolves (through a symlink) outside the bundle"),
    Case("bundle: unknown manifest format_version",
         verify(lambda b: edit_json(b / "manifest.json", lambda m: m.update(format_version=99))),
         "format_version is 99; this runtime reads version 1"),
    Case("bundle: manifest.json that is not JSON", verify(lambda b: (b / "manifest.json").write_text("{oops")),
         "is not valid JSON"),
    Case("bundle: no manifest.json", verify(lambda b: (b / "manifest.json").unlink()), "has no manifest.json"),
    Case("bundle: model.onnx is not ONNX (hashes re-listed)", verify(corrupt_onnx(None)),
         "model.onnx is not a loadable ONNX model"),
    Case("bundle: model.onnx truncated (hashes re-listed)", verify(corrupt_onnx(200)),
         "model.onnx is not a loadable ONNX model"),
    Case("bundle path that does not exist", lambda t, m: ["verify", "no-bundle"], "does not exist"),
    # remote devices (edgegolf/devices/remote.py), against a real SSH server on 127.0.0.1
    Case("device: SSH host that does not answer", remote_bench(port="closed"), "is unreachable (connection refused)"),
    Case("device: key the SSH server does not accept", remote_bench(key="wrong"), "refused authentication for tester"),
    Case("device: SSH host key not in known_hosts", remote_bench(known="empty"), "has an unknown host key"),
    Case("device: SSH host key that changed", remote_bench(known="other"), "which differs from the one in known_hosts"),
    # optional extras that are not installed (edgegolf/extras.py)
    Case("search extra missing (optuna not installed)",
         lambda t, m: ["search", model(t, m), "--budget", "size<=10MB", "-o", "out"],
         "edgegolf search needs the 'search' extra (optuna is not installed)", without=("optuna",)),
    Case("remote extra missing (asyncssh not installed)",
         lambda t, m: ["bench", bundle(t, m), "--device", "ssh://tester@127.0.0.1:22", "--seq", "8"],
         "needs the 'remote' extra (asyncssh is not installed)", without=("asyncssh",)),
    Case("parquet extra missing (pyarrow not installed)",
         lambda t, m: ["compress", model(t, m), "--data", write(t, "news.parquet", b"PAR1\x00\x00PAR1"), "-o", "out"],
         "needs the 'parquet' extra (pyarrow is not installed)", without=("pyarrow",)),
    Case("distributed extra missing (accelerate not installed), launched as 2 processes",
         lambda t, m: ["distill", model(t, m), model(t, m, "student"), "-o", "out"],
         "needs the 'distributed' extra (accelerate is not installed)", without=("accelerate",),
         env={"WORLD_SIZE": "2"}),
    Case("optimum extra missing (optimum-onnx not installed)", compress("--exporter", "optimum"),
         "--exporter optimum needs the 'optimum' extra (optimum-onnx is not installed)", without=("optimum",)),
    # the runtime's input
    Case("bundle whose max_length leaves no room for text (cannot truncate)",
         verify(lambda b: edit_json(b / "manifest.json", lambda m: m["model"].update(max_length=1))),
         "manifest max_length is 1; tokenizer.json adds 2 special tokens"),
    Case("text far longer than the model takes (1,050,000 characters)",
         verify(lambda b: None, "--text", LONG_TEXT), "fed as 16 tokens (the bundle's max_length", code=EXIT_FITS,
         shown="edgegolf verify bundle --text 'the bank shares fell ...'"),
]


# --- running a case --------------------------------------------------------------------------
def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` (links not followed) with a hash of what it holds."""
    seen = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        if path.is_symlink():
            seen[key] = "link:" + os.readlink(path)
        elif path.is_file():
            seen[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            seen[key] = "dir"
    return seen


def _run_in_process(args: list[str]) -> tuple[int, str, str]:
    from edgegolf.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["edgegolf", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as stop:
                code = 0 if stop.code is None else int(stop.code)
            except BaseException:  # noqa: BLE001  # a bug: show it the way a user would see it
                import traceback

                traceback.print_exc(file=err)
                code = -1
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def run_case(case: Case, folder: Path, models: Models) -> Outcome:
    folder.mkdir(parents=True, exist_ok=True)
    args = [str(a) for a in case.build(folder, models)]
    before = _snapshot(folder)
    cwd = os.getcwd()
    os.chdir(folder)  # relative paths: the messages read as a user's would
    try:
        if case.subprocess or case.without:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(folder / ".hf-cache"), **case.env}
            start = ["-c", WITHOUT, ",".join(case.without)] if case.without else ["-m", "edgegolf"]
            done = subprocess.run([sys.executable, *start, *args], check=False, capture_output=True,
                                  text=True, env=env, timeout=300)
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        else:
            code, stdout, stderr = _run_in_process(args)
    finally:
        os.chdir(cwd)
    after = _snapshot(folder)
    left = sorted(k for k in after if before.get(k) != after[k] and not k.startswith(".hf-cache"))
    stream = stderr if code != EXIT_FITS else stdout
    lines = [line for line in stream.splitlines() if (line.startswith("error: ") or code == EXIT_FITS)
             and case.words in line] or [line for line in stderr.splitlines() if line.startswith("error: ")]
    line = lines[0] if lines else ""
    for prefix in (str(folder.resolve()), str(folder)):
        line = line.replace(prefix + os.sep, "").replace(prefix, ".")
    env = " ".join(f"{k}={v}" for k, v in case.env.items())
    command = case.shown or " ".join(["edgegolf", *map(shlex.quote, args)])
    return Outcome(_steady(f"{env} {command}".strip()), code, _steady(line), stderr, stdout, left)


def _steady(text: str) -> str:
    """What changes between runs (a free port, a generated key's fingerprint) written as a placeholder."""
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    return re.sub(r"SHA256:[A-Za-z0-9+/=]+", "SHA256:...", text)


def check(case: Case, outcome: Outcome) -> None:
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert outcome.code == case.code, (outcome.code, outcome.stderr)
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error: ")]
    if case.code == EXIT_ERROR:
        assert len(errors) == 1, outcome.stderr
        assert case.words in errors[0], errors[0]
    else:
        assert not errors and case.words in outcome.line, outcome.stdout
    assert outcome.left_behind == [], f"left behind: {outcome.left_behind}"


# --- the table -------------------------------------------------------------------------------
def markdown(outcomes: list[tuple[Case, Outcome]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("`", "'")

    rows = [
        "# Bad inputs and what edgegolf says",
        "",
        "Generated by `python -m tests.test_bad_inputs --write-docs` from the cases in",
        "`tests/test_bad_inputs.py`; `pytest tests/test_bad_inputs.py` fails when this file no longer",
        "matches what the commands print. Each input is built from real files; each command ran in",
        "a folder holding only that input, and left nothing behind: no output folder, no",
        "`.out.partial-*` staging folder. Exit code 2 is bad input; none of these ends in a traceback.",
        "",
        "Texts longer than a bundle's `max_length` tokens are truncated to it (the last row), never",
        "refused: `edgegolf.runtime` and `edgegolf verify` feed at most `max_length` tokens. A bundle",
        "whose `max_length` leaves no room for text beside the special tokens is refused when it loads.",
        "",
        f"{len(outcomes)} inputs:",
        "",
        "| # | input | command | exit code | what edgegolf prints |",
        "|---|---|---|---|---|",
    ]
    for i, (case, outcome) in enumerate(outcomes, 1):
        rows.append(f"| {i} | {cell(case.input)} | `{cell(outcome.command)}` | {outcome.code} | {cell(outcome.line)} |")
    return "\n".join(rows) + "\n"


@contextlib.contextmanager
def build_models(folder: Path, bert: Path | None = None):
    from tests.builders.bundles import build_bundle
    from tests.builders.ssh import LoopbackServer

    if bert is None:
        from tests.builders.models import save_tiny_bert

        bert = save_tiny_bert(folder / "tiny-bert")
    built = build_bundle(folder / "tiny-bundle")
    (folder / "sshd").mkdir()
    server = LoopbackServer(folder / "sshd")
    try:
        yield Models(bert=bert, bundle=built.folder, ssh=server)
    finally:
        server.close()


# --- tests -----------------------------------------------------------------------------------
_OUTCOMES: dict[int, Outcome] = {}  # case index -> outcome, shared with the docs test


@pytest.fixture(scope="module")
def models(tiny_bert, tmp_path_factory):
    with build_models(tmp_path_factory.mktemp("bad-input-models"), bert=tiny_bert) as built:
        yield built


def test_at_least_thirty_cases_with_distinct_inputs():
    assert len(CASES) >= 30
    assert len({c.input for c in CASES}) == len(CASES)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.input for c in CASES])
def test_bad_input(index, models, tmp_path):
    case = CASES[index]
    outcome = run_case(case, tmp_path / "case", models)
    _OUTCOMES[index] = outcome
    check(case, outcome)


def test_docs_table_matches_what_the_cases_produce(models, tmp_path):
    outcomes = []
    for index, case in enumerate(CASES):
        if index not in _OUTCOMES:  # run alone: the cases run here
            _OUTCOMES[index] = run_case(case, tmp_path / str(index), models)
        outcomes.append((case, _OUTCOMES[index]))
    assert DOC.is_file(), "docs/bad-inputs.md is missing: python -m tests.test_bad_inputs --write-docs"
    assert DOC.read_text() == markdown(outcomes), \
        "docs/bad-inputs.md differs from what the commands print now: python -m tests.test_bad_inputs --write-docs"


def _write_docs() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch, build_models(Path(scratch)) as models:
        outcomes = []
        for index, case in enumerate(CASES):
            outcome = run_case(case, Path(scratch) / "cases" / str(index), models)
            check(case, outcome)
            outcomes.append((case, outcome))
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(markdown(outcomes))
    print(f"wrote {DOC.relative_to(ROOT)} ({len(outcomes)} inputs)")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-docs"]:
        sys.exit("usage: python -m tests.test_bad_inputs --write-docs")
    _write_docs()
