"""The measuring commands of the command line, `edgegolf bench`, `report` and `compare`, and the
options they share; edgegolf/cli.py registers them on its app. Like the rest of the CLI they
parse and print: the timing is edgegolf.devices', the documents edgegolf.reports'."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgegolf.devices.kinds import kind_names

log = logging.getLogger("edgegolf")

DeviceOption = Annotated[str, typer.Option(help="Device profiles, comma-separated: cpu-1,cpu-2, cuda, torch-cuda, "
                                           "ssh://user@host[:port], or names from --profiles (kinds: "
                                           f"{', '.join(kind_names())}; see edgegolf devices).")]
BatchOption = Annotated[str, typer.Option("--batch", help="Batch sizes, comma-separated, e.g. 1,8.")]
SeqOption = Annotated[str, typer.Option("--seq", help="Sequence lengths in tokens, comma-separated, e.g. 32,128.")]
ProfilesOption = Annotated[Optional[Path], typer.Option(
    help="A TOML file of user device profiles (one profiles.NAME table each).")]
JsonOption = Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON (versioned schema).")]
HtmlOption = Annotated[Optional[Path], typer.Option("--html", help="Also write a self-contained HTML page with plots.")]
WarmupOption = Annotated[int, typer.Option(help="Untimed calls before timing each shape.")]
RunsOption = Annotated[int, typer.Option(help="Timed calls per shape (at most).")]
MaxSecondsOption = Annotated[float, typer.Option(help="Time budget per shape; at least 20 runs are always timed.")]
KnownHostsOption = Annotated[Optional[Path], typer.Option(help="ssh: known_hosts file (default ~/.ssh/known_hosts).")]
AcceptNewOption = Annotated[bool, typer.Option(help="ssh: trust and record an unknown host key (never a changed one).")]
IdentityOption = Annotated[Optional[list[Path]], typer.Option(help="ssh: private key file (repeatable).")]
RemotePythonOption = Annotated[Optional[str], typer.Option(help="ssh: the device's python with onnxruntime and numpy.")]


def _bench_section(artifact, device, batch, seq, profiles, warmup, runs, max_seconds, cold_start, known_hosts,
                   accept_new_host_key, identity, remote_python, torch_model):
    from edgegolf.devices.bench import BenchSettings, bench, parse_int_list, resolve_devices
    from edgegolf.devices.profiles import load_profiles_toml
    from edgegolf.devices.remote import RemoteOptions

    custom = load_profiles_toml(profiles) if profiles else None
    settings = BenchSettings(batches=parse_int_list(batch, "batch"), seqs=parse_int_list(seq, "seq"), warmup=warmup,
                             runs=runs, max_seconds=max_seconds, cold_start=cold_start)
    remote = RemoteOptions(known_hosts=known_hosts, accept_new_host_key=accept_new_host_key,
                           identity=tuple(identity or ()), python=remote_python)
    return bench(artifact, resolve_devices(device, custom), settings, remote=remote, torch_model=torch_model)


def _emit(document, json_path, html_path) -> None:
    from edgegolf.reports import render_markdown, write_outputs

    written = write_outputs(document, json_path=json_path, html_path=html_path)
    print(render_markdown(document))
    for path in written:
        log.info("wrote %s", path)


def bench_command(
    artifact: Annotated[Path, typer.Argument(help="A bundle folder, or an .onnx file with tokenizer.json beside it.")],
    device: DeviceOption = "cpu-1", batch: BatchOption = "1", seq: SeqOption = "128",
    profiles: ProfilesOption = None, warmup: WarmupOption = 10, runs: RunsOption = 100,
    max_seconds: MaxSecondsOption = 5.0,
    cold_start: Annotated[bool, typer.Option(
        help="Also time load + first inference and peak RSS in a fresh process.")] = True,
    json_path: JsonOption = None, html_path: HtmlOption = None, known_hosts: KnownHostsOption = None,
    accept_new_host_key: AcceptNewOption = False, identity: IdentityOption = None,
    remote_python: RemotePythonOption = None,
    torch_model: Annotated[Optional[Path], typer.Option(
        help="torch-cuda: the Hugging Face model folder to time.")] = None,
) -> None:
    """Time an artifact on device profiles over batch sizes and sequence lengths; Markdown on stdout."""
    from edgegolf.reports import new_document

    section = _bench_section(artifact, device, batch, seq, profiles, warmup, runs, max_seconds, cold_start,
                             known_hosts, accept_new_host_key, identity, remote_python, torch_model)
    _emit(new_document("bench", bench=section), json_path, html_path)


def report_command(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by edgegolf compress.")],
    json_path: JsonOption = None, html_path: HtmlOption = None,
    bench: Annotated[bool, typer.Option("--bench", help="Also benchmark the bundle now (see edgegolf bench).")] = False,
    device: DeviceOption = "cpu-1", batch: BatchOption = "1", seq: SeqOption = "128",
    profiles: ProfilesOption = None, warmup: WarmupOption = 10, runs: RunsOption = 100,
    max_seconds: MaxSecondsOption = 5.0, known_hosts: KnownHostsOption = None,
    accept_new_host_key: AcceptNewOption = False, identity: IdentityOption = None,
    remote_python: RemotePythonOption = None,
) -> None:
    """A bundle's report: the stage table from its manifest (size, latency, accuracy per stage), plus an optional fresh bench."""  # noqa: E501  (--help shows it whole)
    from edgegolf.reports import bundle_section, new_document

    section = bundle_section(bundle)
    measured = _bench_section(bundle, device, batch, seq, profiles, warmup, runs, max_seconds, True, known_hosts,
                              accept_new_host_key, identity, remote_python, None) if bench else None
    _emit(new_document("report", bundle=section, bench=measured), json_path, html_path)


def compare_command(
    a: Annotated[Path, typer.Argument(help="Artifact A: a bundle folder or an .onnx file.")],
    b: Annotated[Path, typer.Argument(help="Artifact B, timed interleaved with A.")],
    device: Annotated[str, typer.Option(
        help="One profile: cpu-1, cpu-2, ..., cuda, or ssh://user@host[:port].")] = "cpu-1",
    batch: Annotated[int, typer.Option(help="Batch size.")] = 1,
    seq: Annotated[int, typer.Option(help="Sequence length in tokens.")] = 128,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds (A then B, B then A, ...).")] = 10,
    runs_per_round: Annotated[int, typer.Option(help="Timed calls of each artifact per round.")] = 10,
    phase: Annotated[str, typer.Option(help="prefill: the graph on --seq tokens; decode (causal-lm, batch 1): one "
                                            "generated token after a cache of --seq tokens.")] = "prefill",
    profiles: ProfilesOption = None, json_path: JsonOption = None, html_path: HtmlOption = None,
    known_hosts: KnownHostsOption = None, accept_new_host_key: AcceptNewOption = False,
    identity: IdentityOption = None, remote_python: RemotePythonOption = None,
) -> None:
    """Time two artifacts in the same run, interleaved: the ratio B/A and whether it is beyond the noise."""
    from edgegolf.devices.compare import compare
    from edgegolf.devices.profiles import get_profile, load_profiles_toml
    from edgegolf.devices.remote import RemoteOptions
    from edgegolf.reports import new_document

    profile = get_profile(device, load_profiles_toml(profiles) if profiles else None)
    remote = RemoteOptions(known_hosts=known_hosts, accept_new_host_key=accept_new_host_key,
                           identity=tuple(identity or ()), python=remote_python)
    section = compare(a, b, profile, batch=batch, seq=seq, rounds=rounds, runs_per_round=runs_per_round,
                      remote=remote, phase=phase)
    _emit(new_document("compare", compare=section), json_path, html_path)
