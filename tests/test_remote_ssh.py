"""Remote devices over SSH against a real SSH server on loopback.

The server is asyncssh's (create_server) with a generated host key, one authorized client
key, SFTP, and a process factory that runs each command through /bin/sh on this machine,
as sshd does. Its commands run in their own folder with TMPDIR set, so the tests can see
that the remote temp folder is gone after success and after failure.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from edgegolf.devices.bench import BenchSettings, bench
from edgegolf.devices.profiles import get_profile
from edgegolf.devices.remote import RemoteOptions
from edgegolf.errors import DeviceError
from tests.builders.bundles import build_bundle
from tests.builders.cli import run_cli
from tests.builders.ssh import LoopbackServer

TEXTS = ["the bank shares fell after results", "the band released a new album", "the team won the game"] * 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LoopbackServer(tmp_path_factory.mktemp("sshd"))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def odd_artifact(tmp_path_factory) -> Path:
    """A bare .onnx whose folder and file name hold spaces and ';' (quoting must hold)."""
    folder = tmp_path_factory.mktemp("art") / "my models; rm -rf x"
    bundle = build_bundle(folder, max_length=32)
    odd = folder / "tiny model;touch PWNED.onnx"
    (bundle.folder / "model.onnx").rename(odd)
    (bundle.folder / "manifest.json").unlink()  # a bare graph + tokenizer.json
    return odd


@pytest.fixture(scope="module")
def odd_python(tmp_path_factory) -> Path:
    """This interpreter behind a path with a space and ';' (a wrapper, so the venv stays active)."""
    path = tmp_path_factory.mktemp("py") / "py thon;touch PWNED"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A real interpreter that has neither onnxruntime nor numpy: a fresh venv without pip."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    check = subprocess.run([str(python), "-c", "import onnxruntime"], capture_output=True, timeout=60)
    assert check.returncode != 0, "the bare venv must lack onnxruntime"
    return python


def _url(server: LoopbackServer, port: int | None = None) -> str:
    return f"ssh://tester@127.0.0.1:{port or server.port}"


def _known(server: LoopbackServer, tmp_path: Path, lines: str | None = None) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(server.known_hosts_line() if lines is None else lines)
    return path


def _assert_temp_removed(server: LoopbackServer) -> None:
    """The last command removed a temp folder made under the server's TMPDIR, and none is left."""
    assert server.commands[-1].startswith(f"rm -rf -- {server.tmp}/edgegolf-")
    assert list(server.tmp.glob("edgegolf-*")) == []


def _settings() -> BenchSettings:
    return BenchSettings(batches=(1, 2), seqs=(8, 16), warmup=2, runs=15, max_seconds=2.0, min_runs=5)


def test_remote_bench_brings_back_plausible_numbers(server, odd_artifact, odd_python, tmp_path):
    options = RemoteOptions(known_hosts=_known(server, tmp_path), identity=(server.client_key_file,),
                            python=str(odd_python))
    result = bench(odd_artifact, [get_profile(_url(server))], _settings(), texts=TEXTS, remote=options)
    device = result["devices"][0]
    assert device["kind"] == "ssh" and device["where"] == _url(server) and device["estimate"] is False
    assert [(s["batch"], s["seq"]) for s in device["shapes"]] == [(1, 8), (1, 16), (2, 8), (2, 16)]
    for shape in device["shapes"]:
        lat = shape["latency"]
        assert 5 <= lat["runs"] <= 15 and len(lat["samples_ms"]) == lat["runs"]
        assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p99_ms"] < 1000
        assert shape["throughput_per_s"] > 0
    import onnxruntime

    assert device["runtime"]["onnxruntime"] == onnxruntime.__version__
    assert device["cold_start"]["total_ms"] > 0 and (device["cold_start"]["batch"], device["cold_start"]["seq"]) == (2, 16)
    assert 10e6 < device["peak_rss_bytes"] < 2e9  # a python with onnxruntime and numpy loaded
    _assert_temp_removed(server)
    assert not (server.cwd / "PWNED").exists() and not Path("PWNED").exists()  # no word ran as a command
    assert any("'" in command for command in server.commands)  # the odd paths went through shlex.quote


def test_cli_remote_bench_json(server, odd_artifact, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, stdout, stderr = run_cli(
        ["-q", "bench", odd_artifact, "--device", _url(server), "--seq", "8", "--runs", "5", "--warmup", "1",
         "--known-hosts", _known(server, tmp_path), "--identity", server.client_key_file,
         "--remote-python", sys.executable, "--json", out], capsys)
    assert code == 0, stderr
    assert "ssh://tester@127.0.0.1" in stdout and "| 1 | 8 |" in stdout
    assert json.loads(out.read_text())["bench"]["devices"][0]["kind"] == "ssh"


def test_unreachable_host_is_an_error(server, odd_artifact, tmp_path, capsys):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    code, stdout, stderr = run_cli(["bench", odd_artifact, "--device", _url(server, closed), "--seq", "8",
                                    "--known-hosts", _known(server, tmp_path), "--identity", server.client_key_file],
                                   capsys)
    assert code == 2 and stdout == ""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: device ssh://tester@127.0.0.1:") and "is unreachable (connection refused)" in last


def test_wrong_key_is_refused(server, odd_artifact, tmp_path, capsys):
    wrong = tmp_path / "id_wrong"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(wrong))
    code, stdout, stderr = run_cli(["bench", odd_artifact, "--device", _url(server), "--seq", "8",
                                    "--known-hosts", _known(server, tmp_path), "--identity", wrong], capsys)
    assert code == 2 and stdout == ""
    assert "refused authentication for tester" in stderr and str(wrong) in stderr
    assert list(server.tmp.glob("edgegolf-*")) == []


def test_unknown_host_key_is_refused_then_accepted_with_the_flag(server, odd_artifact, tmp_path, capsys):
    known = _known(server, tmp_path, lines="")
    args = ["-q", "bench", odd_artifact, "--device", _url(server), "--seq", "8", "--runs", "5", "--warmup", "1",
            "--known-hosts", known, "--identity", server.client_key_file, "--remote-python", sys.executable]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 2 and stdout == ""
    fingerprint = server.host_key.get_fingerprint()
    assert f"has an unknown host key {fingerprint}" in stderr and "--accept-new-host-key" in stderr
    assert known.read_text() == ""
    code, stdout, stderr = run_cli([*args, "--accept-new-host-key"], capsys)
    assert code == 0, stderr
    assert known.read_text() == server.known_hosts_line()  # recorded
    code, _, stderr = run_cli(args, capsys)  # and trusted from now on, without the flag
    assert code == 0, stderr


def test_changed_host_key_is_refused_even_with_the_flag(server, odd_artifact, tmp_path):
    other = asyncssh.generate_private_key("ssh-ed25519")
    known = _known(server, tmp_path, lines=server.known_hosts_line(other))
    options = RemoteOptions(known_hosts=known, accept_new_host_key=True, identity=(server.client_key_file,),
                            python=sys.executable)
    with pytest.raises(DeviceError, match="differs from the one in"):
        bench(odd_artifact, [get_profile(_url(server))], _settings(), texts=TEXTS, remote=options)
    assert known.read_text() == server.known_hosts_line(other)  # untouched


def test_remote_python_without_onnxruntime(server, odd_artifact, bare_python, tmp_path, capsys):
    code, stdout, stderr = run_cli(["bench", odd_artifact, "--device", _url(server), "--seq", "8",
                                    "--known-hosts", _known(server, tmp_path), "--identity", server.client_key_file,
                                    "--remote-python", bare_python], capsys)
    assert code == 2 and stdout == ""
    assert f"remote python '{bare_python}' lacks numpy, onnxruntime" in stderr
    _assert_temp_removed(server)  # after the failure too


def test_remote_python_that_does_not_exist(server, odd_artifact, tmp_path):
    options = RemoteOptions(known_hosts=_known(server, tmp_path), identity=(server.client_key_file,),
                            python=str(tmp_path / "no such python"))
    with pytest.raises(DeviceError, match="was not found"):
        bench(odd_artifact, [get_profile(_url(server))], _settings(), texts=TEXTS, remote=options)


def test_graph_with_external_data_is_copied_whole(server, tmp_path):
    """A graph whose weights live in a side file (as dynamo exports do) runs remotely too."""
    import onnx

    bundle = build_bundle(tmp_path / "ext", max_length=32)
    model = onnx.load(str(bundle.folder / "model.onnx"))
    (bundle.folder / "weights").mkdir()
    onnx.save_model(model, str(bundle.folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights/model.onnx.data", size_threshold=64)
    assert (bundle.folder / "weights" / "model.onnx.data").is_file()
    (bundle.folder / "manifest.json").unlink()
    options = RemoteOptions(known_hosts=_known(server, tmp_path), identity=(server.client_key_file,),
                            python=sys.executable)
    result = bench(bundle.folder / "model.onnx", [get_profile(_url(server))],
                   BenchSettings(seqs=(8,), runs=5, warmup=1, min_runs=5), texts=TEXTS, remote=options)
    assert result["devices"][0]["shapes"][0]["latency"]["runs"] == 5
    _assert_temp_removed(server)


def test_a_port_that_never_speaks_ssh_times_out(odd_artifact, tmp_path):
    """TCP connects, but no SSH banner ever comes: an error after the connect timeout, not a hang."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        options = RemoteOptions(known_hosts=tmp_path / "none", connect_timeout=1.0)
        with pytest.raises(DeviceError, match=r"is unreachable \(no answer within the connect timeout\)"):
            bench(odd_artifact, [get_profile(f"ssh://x@127.0.0.1:{silent.getsockname()[1]}")], _settings(),
                  texts=TEXTS, remote=options)
    finally:
        silent.close()


def test_a_server_without_sftp_is_an_error_and_the_temp_folder_still_goes(odd_artifact, tmp_path):
    (tmp_path / "no-sftp").mkdir()
    bare = LoopbackServer(tmp_path / "no-sftp", sftp=False)
    try:
        options = RemoteOptions(known_hosts=_known(bare, tmp_path), identity=(bare.client_key_file,),
                                python=sys.executable)
        with pytest.raises(DeviceError, match="copying files over SFTP failed"):
            bench(odd_artifact, [get_profile(_url(bare))], _settings(), texts=TEXTS, remote=options)
        _assert_temp_removed(bare)
    finally:
        bare.close()


def test_remote_compare_interleaves_both_graphs_on_the_device(server, tmp_path, capsys):
    """Two bundles that both call their graph model.onnx: each goes to its own remote folder."""
    from tests.builders.embedder import save_embedder

    a = build_bundle(tmp_path / "a", max_length=64)
    b = build_bundle(tmp_path / "b", max_length=64)
    save_embedder(b.folder / "model.onnx", 32, 4096)  # wider output: clearly slower
    (b.folder / "manifest.json").unlink()  # a bare graph now (the manifest hash no longer matches)
    out = tmp_path / "compare.json"
    code, stdout, stderr = run_cli(
        ["-q", "compare", a.folder, b.folder / "model.onnx", "--device", _url(server), "--seq", "48", "--rounds", "4",
         "--runs-per-round", "6", "--known-hosts", _known(server, tmp_path), "--identity", server.client_key_file,
         "--remote-python", sys.executable, "--json", out], capsys)
    assert code == 0, stderr
    from edgegolf.reports import validate

    doc = json.loads(out.read_text())
    validate(doc)
    c = doc["compare"]
    assert c["where"] == _url(server) and c["a"]["latency"]["runs"] == c["b"]["latency"]["runs"] == 24
    assert c["ratio_b_over_a"] > 1.5 and c["beyond_noise"] is True and "slower than A" in stdout
    _assert_temp_removed(server)
