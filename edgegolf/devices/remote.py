"""Remote devices over SSH: copy the graph, its inputs and runner.py, run, bring back JSON.

The client is asyncssh (the `remote` extra), so no system ssh is needed. Safety rules:
- host keys are checked against known_hosts; an unknown host is refused unless the user
  accepts it (then it is recorded), and a changed key is always refused;
- every word of a remote command goes through shlex.quote: paths and the interpreter are
  user strings;
- the remote temp folder is removed after success and after failure.
A device that cannot be reached or run is a DeviceError (exit 2), never an estimate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import posixpath
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgegolf.devices.profiles import DeviceProfile, SshTarget, parse_ssh_url
from edgegolf.errors import DeviceError

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("runner.py")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
# `python -c MKDTEMP` makes the remote temp folder: it also proves the interpreter exists.
MKDTEMP = "import tempfile; print(tempfile.mkdtemp(prefix='edgegolf-'))"


@dataclass
class RemoteOptions:
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    accept_new_host_key: bool = False
    identity: tuple[Path, ...] = ()  # private keys; empty: asyncssh's defaults (~/.ssh/id_*, the agent)
    python: str | None = None  # overrides the profile's remote python
    connect_timeout: float = 15.0
    run_timeout: float = 900.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RemoteShape:
    batch: int
    seq: int
    feeds: dict[str, np.ndarray]


def run_remote(
    profile: DeviceProfile,
    onnx_path: Path,
    data_files: Sequence[Path],
    shapes: Sequence[RemoteShape],
    *,
    threads: int | None,
    warmup: int,
    runs: int,
    max_seconds: float | None,
    min_runs: int,
    cold: int,
    options: RemoteOptions,
) -> dict[str, Any]:
    """The runner's JSON from the device: raw samples per shape, cold start, peak RSS, versions."""
    request = {
        "onnx": onnx_path.name, "threads": threads, "warmup": warmup, "runs": runs, "max_seconds": max_seconds,
        "min_runs": min_runs, "cold": cold,
        "shapes": [{"batch": s.batch, "seq": s.seq, "feeds": f"feeds-{i}.npz"} for i, s in enumerate(shapes)],
    }
    files = _graph_files(onnx_path, data_files, "")
    feeds = {f"feeds-{i}.npz": s.feeds for i, s in enumerate(shapes)}
    return run_runner(profile, files, feeds, request, options)


def run_remote_compare(
    profile: DeviceProfile,
    graphs: Sequence[tuple[Path, Sequence[Path], dict[str, np.ndarray]]],
    *,
    threads: int | None,
    warmup: int,
    rounds: int,
    runs_per_round: int,
    options: RemoteOptions,
) -> dict[str, Any]:
    """Two graphs timed on the device in alternating blocks: {"compare": {"samples_ms": [a, b]}, ...}."""
    files: dict[str, Path] = {}
    feeds: dict[str, dict[str, np.ndarray]] = {}
    entries = []
    for i, (onnx_path, data_files, graph_feeds) in enumerate(graphs):
        folder = "ab"[i]  # each graph in its own folder: both may be called model.onnx
        files.update(_graph_files(onnx_path, data_files, folder))
        feeds[f"{folder}/feeds.npz"] = graph_feeds
        entries.append({"onnx": f"{folder}/{onnx_path.name}", "feeds": f"{folder}/feeds.npz"})
    request = {"mode": "compare", "graphs": entries, "threads": threads, "warmup": warmup, "rounds": rounds,
               "runs_per_round": runs_per_round}
    return run_runner(profile, files, feeds, request, options)


def _graph_files(onnx_path: Path, data_files: Sequence[Path], folder: str) -> dict[str, Path]:
    """Remote names of a graph and its external data, keeping their relative layout."""
    files = {posixpath.join(folder, onnx_path.name): onnx_path}
    for data in data_files:
        files[posixpath.join(folder, data.relative_to(onnx_path.parent).as_posix())] = data
    return files


def run_runner(profile: DeviceProfile, files: dict[str, Path], feeds: dict[str, dict[str, np.ndarray]],
               request: dict[str, Any], options: RemoteOptions) -> dict[str, Any]:
    """Copy runner.py, `files`, the `feeds` (as .npz) and request.json to the device, run, return its JSON."""
    from edgegolf.extras import require_extra

    require_extra("remote", "asyncssh", needed_by=f"ssh device {profile.name!r}")
    target = parse_ssh_url(profile.url, where=f"device {profile.name!r}")
    python = options.python or profile.python
    with tempfile.TemporaryDirectory(prefix="edgegolf-remote-") as local:
        uploads: dict[str, Path] = {"runner.py": RUNNER, **files}
        for i, (name, arrays) in enumerate(feeds.items()):
            path = Path(local) / f"feeds-{i}.npz"
            np.savez(path, **arrays)
            uploads[name] = path
        (Path(local) / "request.json").write_text(json.dumps(request), encoding="utf-8")
        uploads["request.json"] = Path(local) / "request.json"
        return asyncio.run(_session(profile.url, target, python, uploads, options))


async def _session(url: str, target: SshTarget, python: str, uploads: dict[str, Path], options: RemoteOptions) -> dict:
    import asyncssh

    try:
        return await _copy_and_run(url, target, python, uploads, options)
    except asyncssh.Error as exc:  # e.g. the connection dropped mid-run
        raise DeviceError(f"device {url}: the SSH session failed ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or exc or type(exc).__name__).strip().splitlines()[0]


async def _copy_and_run(url: str, target: SshTarget, python: str, uploads: dict[str, Path],
                        options: RemoteOptions) -> dict:
    import asyncssh

    conn = await connect(url, target, options)
    async with conn:
        made = await conn.run(f"{shlex.quote(python)} -c {shlex.quote(MKDTEMP)}", check=False,
                              timeout=options.connect_timeout * 4)
        if made.exit_status != 0:
            raise DeviceError(_python_problem(url, python, made))
        lines = str(made.stdout or "").strip().splitlines()
        if not lines or not lines[-1].startswith("/"):
            raise DeviceError(f"device {url}: remote python {python!r} made no temp folder (it printed "
                              f"{(lines or [''])[-1][:80]!r}); accepted: a python whose tempfile.mkdtemp() works")
        folder = lines[-1]
        log.debug("remote temp folder %s on %s", folder, target)
        try:
            try:
                async with conn.start_sftp_client() as sftp:
                    for name, local in uploads.items():
                        remote = posixpath.join(folder, name)
                        if posixpath.dirname(name):
                            await sftp.makedirs(posixpath.dirname(remote), exist_ok=True)
                        await sftp.put(str(local), remote)
            except (asyncssh.Error, OSError) as exc:
                raise DeviceError(f"device {url}: copying files over SFTP failed ({_reason(exc)}); accepted: a device "
                                  "whose SSH server offers SFTP and has room in its temp folder") from None
            command = " ".join(shlex.quote(word) for word in
                               (python, posixpath.join(folder, "runner.py"), posixpath.join(folder, "request.json")))
            try:
                done = await conn.run(command, check=False, timeout=options.run_timeout)
            except TimeoutError:
                raise DeviceError(f"device {url}: the runner ran past {options.run_timeout:g} s; accepted: fewer "
                                  "--runs or a smaller --max-seconds") from None
            return _runner_result(url, python, done)
        finally:
            # always, success or not: a device must not fill up with copies of models
            try:
                await conn.run(f"rm -rf -- {shlex.quote(folder)}", check=False, timeout=60)
            except (asyncssh.Error, OSError, TimeoutError) as exc:  # keep the error that got us here
                log.warning("could not remove %s on %s (%s): remove it by hand", folder, target, _reason(exc))


async def connect(url: str, target: SshTarget, options: RemoteOptions):
    """An authenticated connection whose host key matched known_hosts (or was accepted as new)."""
    import asyncssh

    known_path = Path(options.known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()
    known = asyncssh.import_known_hosts(known_path.read_text(encoding="utf-8")) if known_path.is_file() else \
        asyncssh.import_known_hosts("")
    kwargs: dict[str, Any] = {"port": target.port, "connect_timeout": options.connect_timeout}
    if target.user:
        kwargs["username"] = target.user
    if options.identity:
        missing = [str(p) for p in options.identity if not Path(p).expanduser().is_file()]
        if missing:
            raise DeviceError(f"identity file {missing[0]!r} does not exist; accepted: a private key file")
        kwargs["client_keys"] = [str(Path(p).expanduser()) for p in options.identity]
        kwargs["agent_path"] = None  # only the keys named: what is tried is what the user said
    trusted = known.match(target.host, target.host, target.port)[0]
    accept = options.accept_new_host_key and not trusted
    try:
        conn = await asyncssh.connect(target.host, known_hosts=None if accept else known, **kwargs)
    except asyncssh.HostKeyNotVerifiable:
        fingerprint = await _fingerprint(target)
        if trusted:
            raise DeviceError(f"device {url} presented host key {fingerprint}, which differs from the one in "
                              f"{known_path}: refused (the device was reinstalled, or someone is in between); "
                              "remove the old line from known_hosts only if you know why it changed") from None
        raise DeviceError(f"device {url} has an unknown host key {fingerprint} (not in {known_path}); refused: "
                          "check the fingerprint, then rerun with --accept-new-host-key to record it") from None
    except asyncssh.PermissionDenied:
        who = target.user or "the local user name"
        keys = ", ".join(str(p) for p in options.identity) or "the default keys and agent"
        raise DeviceError(f"device {url} refused authentication for {who} (tried {keys}); accepted: a key in the "
                          "device's authorized_keys, given with --identity FILE") from None
    except asyncssh.DisconnectError as exc:
        raise DeviceError(f"device {url} closed the SSH connection: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno:
            reason = os.strerror(exc.errno).lower()
        else:
            reason = "no answer within the connect timeout" if isinstance(exc, asyncio.TimeoutError) else str(exc)
        raise DeviceError(f"device {url} is unreachable ({reason}); accepted: a host and port where an SSH server "
                          "answers") from None
    if accept:
        _record_host_key(known_path, target, conn.get_server_host_key())
    return conn


async def _fingerprint(target: SshTarget) -> str:
    import asyncssh

    try:
        key = await asyncssh.get_server_host_key(target.host, target.port)
    except (OSError, asyncssh.Error):
        return "(fingerprint unavailable)"
    return key.get_fingerprint() if key is not None else "(fingerprint unavailable)"


def _record_host_key(path: Path, target: SshTarget, key) -> None:
    name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    kind, blob = key.export_public_key("openssh").decode().split()[:2]
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{name} {kind} {blob}\n")
    log.warning("recorded the host key of %s (%s) in %s", name, key.get_fingerprint(), path)


def _python_problem(url: str, python: str, done) -> str:
    if done.exit_status == 127:
        return (f"device {url}: remote python {python!r} was not found; accepted: --remote-python naming the "
                "device's python3")
    last = (str(done.stderr or "").strip().splitlines() or [f"exit status {done.exit_status}"])[-1]
    return f"device {url}: remote python {python!r} failed to start: {last}"


def _runner_result(url: str, python: str, done) -> dict[str, Any]:
    lines = str(done.stdout or "").strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if isinstance(result, dict) and result.get("ok") is True:
        return result
    if isinstance(result, dict) and result.get("error") == "missing_module":
        raise DeviceError(f"device {url}: remote python {python!r} lacks {result['message']}; accepted: a python with "
                          "onnxruntime and numpy (pip install onnxruntime numpy on the device, or --remote-python PATH)")
    if isinstance(result, dict) and result.get("error"):
        raise DeviceError(f"device {url}: the runner failed ({result['error']}): {result.get('message')}")
    last = (str(done.stderr or "").strip().splitlines() or [f"exit status {done.exit_status}, no output"])[-1]
    raise DeviceError(f"device {url}: the runner failed (exit status {done.exit_status}): {last}")
