"""Device kinds: one registered object per kind answers everything that differs between them.

A profile (edgegolf/devices/profiles.py) is data: a name, a kind, threads, cores. Its kind
says what the profile needs, whether this machine has it, which onnxruntime providers and
threads a session gets, how `edgegolf bench` and `edgegolf compare` time an artifact on it,
and which profiles it brings built in. Adding a kind is one `@register_kind` class:

    @register_kind
    class MyBoard(DeviceKind):
        name = "my-board"
        needs = "the vendor's onnxruntime build"
        def providers(self, profile): return ["MyBoardExecutionProvider"]
        def builtin_profiles(self): return [DeviceProfile("my-board", kind="my-board")]

The base class is the common case: ONNX run in this process through edgegolf.runtime, on
`providers(profile)` with `threads(profile)` intra-op threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgegolf.errors import DeviceError, EdgegolfError, MissingExtraError, RecipeError

if TYPE_CHECKING:
    from edgegolf.devices.profiles import DeviceProfile

_KINDS: dict[str, "DeviceKind"] = {}  # registration order: the built-ins, then plugins


def register_kind(cls: type["DeviceKind"]) -> type["DeviceKind"]:
    """Class decorator: profiles with `kind = cls.name` are measured as `cls` says."""
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise ValueError(f"{cls.__qualname__} has no kind name; set the class attribute name = 'my-kind'")
    if cls.name in _KINDS and type(_KINDS[cls.name]) is not cls:
        raise ValueError(f"device kind {cls.name!r} is already registered by {type(_KINDS[cls.name]).__qualname__}")
    _KINDS[cls.name] = cls()
    return cls


def kind_names() -> tuple[str, ...]:
    return tuple(_KINDS)


def get_kind(name: str) -> "DeviceKind":
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise RecipeError(f"device kind {name!r} is unknown; accepted: {', '.join(_KINDS)}") from None


def all_kinds() -> list["DeviceKind"]:
    return list(_KINDS.values())


class DeviceKind:
    name: ClassVar[str] = ""
    needs: ClassVar[str] = "nothing beyond the base install"  # shown by `edgegolf devices`
    takes_cores: ClassVar[bool] = False  # profiles of this kind may pin CPU ids
    takes_url: ClassVar[bool] = False  # profiles of this kind name a remote address
    times_onnx_here: ClassVar[bool] = True  # runs ONNX graphs in this process (compress, compare)
    compares: ClassVar[bool] = True  # `edgegolf compare` can time two ONNX graphs on it (compare_samples)
    unset_threads: ClassVar[str] = "-"  # how `edgegolf devices` shows a profile without a thread count

    # --- profiles ------------------------------------------------------------------------
    def builtin_profiles(self) -> list["DeviceProfile"]:
        """Profiles selectable by name wherever a device is asked for."""
        return []

    def listed_examples(self) -> list["DeviceProfile"]:
        """Extra rows `edgegolf devices` shows for this kind (e.g. the form of an address)."""
        return []

    def profile_named(self, name: str) -> "DeviceProfile | None":
        """A profile made on the fly from what the user typed (ssh:// urls), else None."""
        return None

    def validate(self, profile: "DeviceProfile", where: str) -> None:
        """Kind-specific checks of a profile's fields (RecipeError naming the field)."""

    # --- this machine --------------------------------------------------------------------
    def availability(self) -> tuple[bool, str]:
        """(usable here, why not), checked for real by asking the runtime this kind needs."""
        try:
            self.check(None)
        except EdgegolfError as exc:  # DeviceError, MissingExtraError...: what is missing, in words
            return False, str(exc)
        return True, ""

    def check(self, profile: "DeviceProfile | None") -> None:
        """Refuse, with what to install, unless this machine can run the kind."""
        from edgegolf.devices.profiles import DeviceProfile

        self.providers(profile or DeviceProfile(self.name, kind=self.name))

    # --- onnxruntime sessions --------------------------------------------------------------
    def providers(self, profile: "DeviceProfile") -> list[str] | None:
        """The onnxruntime providers a session on this profile uses (None: onnxruntime's CPU default)."""
        return None

    def threads(self, profile: "DeviceProfile") -> int | None:
        """onnxruntime intra-op threads (None: the provider decides)."""
        return profile.resolved_threads

    # --- measuring --------------------------------------------------------------------------
    def check_bench(self, profile: "DeviceProfile", *, torch_model: str | Path | None) -> None:
        """What `edgegolf bench` needs, checked before anything is timed."""
        self.providers(profile)

    def bench(self, artifact, profile: "DeviceProfile", settings, texts: list[str], *, remote,
              torch_model: str | Path | None) -> dict[str, Any]:
        """One device's entry of the bench section (edgegolf/reports/schema)."""
        from edgegolf.devices.bench import bench_local

        return bench_local(artifact, profile, settings, texts)

    def compare_samples(self, artifacts, feeds, profile: "DeviceProfile", warmup: int, rounds: int,
                        runs_per_round: int, remote) -> tuple[list[list[float]], float, dict[str, Any]]:
        """(samples of A and B, load average, runtime) of `edgegolf compare`, interleaved."""
        from edgegolf.devices.bench import local_runtime
        from edgegolf.devices.compare import local_samples

        samples, load = local_samples(artifacts, feeds, profile, warmup, rounds, runs_per_round)
        return samples, load, local_runtime()


def _not_an_onnx_target(profile: "DeviceProfile") -> DeviceError:
    here = ", ".join(k.name for k in all_kinds() if k.times_onnx_here)
    return DeviceError(f"device {profile.name!r} (kind {profile.kind}) is not an onnxruntime target on this host; "
                       f"accepted here: {here} (edgegolf bench times ssh and torch-cuda devices)")


@register_kind
class Cpu(DeviceKind):
    """This host's CPU, in-process; threads (and optionally cores) fixed by the profile."""

    name = "cpu"
    takes_cores = True
    unset_threads = "all"  # every core

    def builtin_profiles(self) -> list["DeviceProfile"]:
        from edgegolf.devices.profiles import DeviceProfile

        return [
            DeviceProfile("cpu-1", threads=1, description="one CPU thread: the honest stand-in for one edge core"),
            DeviceProfile("cpu-2", threads=2, description="two CPU threads"),
            DeviceProfile("cpu-4", threads=4, description="four CPU threads"),
            DeviceProfile("cpu-all", threads=None, description="as many threads as this machine has cores"),
        ]


class _OrtGpu(DeviceKind):
    """An onnxruntime-gpu execution provider on GPU 0."""

    provider: ClassVar[str] = ""
    install: ClassVar[str] = "an NVIDIA GPU"

    def providers(self, profile: "DeviceProfile") -> list[str] | None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.provider not in available:
            raise MissingExtraError(
                f"device {profile.name!r} needs onnxruntime's {self.provider}, which onnxruntime {ort.__version__} "
                f"here lacks (it has {', '.join(available)}); install onnxruntime-gpu in place of onnxruntime on a "
                f"machine with {self.install}"
            )
        return [self.provider]

    def threads(self, profile: "DeviceProfile") -> int | None:
        return None

    def builtin_profiles(self) -> list["DeviceProfile"]:
        from edgegolf.devices.profiles import DeviceProfile

        return [DeviceProfile(self.name, kind=self.name, description=self.__doc__ or "")]


@register_kind
class Cuda(_OrtGpu):
    """onnxruntime's CUDA execution provider on GPU 0"""

    name = "cuda"
    needs = "an NVIDIA GPU and onnxruntime-gpu (pip install onnxruntime-gpu, replacing onnxruntime)"
    provider = "CUDAExecutionProvider"


@register_kind
class TensorRT(_OrtGpu):
    """onnxruntime's TensorRT execution provider on GPU 0"""

    name = "tensorrt"
    needs = "an NVIDIA GPU, onnxruntime-gpu and TensorRT libraries"
    provider = "TensorrtExecutionProvider"
    install = "an NVIDIA GPU and TensorRT"


@register_kind
class TorchCuda(DeviceKind):
    """The PyTorch model (not the ONNX artifact) on GPU 0, fp16, replayed as a CUDA graph."""

    name = "torch-cuda"
    needs = "an NVIDIA GPU, a CUDA build of torch, and a Hugging Face model folder to time"
    times_onnx_here = False
    compares = False  # it times the PyTorch model, not ONNX graphs

    def builtin_profiles(self) -> list["DeviceProfile"]:
        from edgegolf.devices.profiles import DeviceProfile

        return [DeviceProfile("torch-cuda", kind="torch-cuda",
                              description="the PyTorch model on GPU 0 in fp16, replayed as a CUDA graph")]

    def check(self, profile: "DeviceProfile | None") -> None:
        from edgegolf.devices.cuda import check_torch_cuda

        check_torch_cuda()

    def providers(self, profile: "DeviceProfile") -> list[str] | None:
        raise _not_an_onnx_target(profile)

    def check_bench(self, profile: "DeviceProfile", *, torch_model: str | Path | None) -> None:
        self.check(profile)
        if torch_model is None:
            raise RecipeError("device 'torch-cuda' times the PyTorch model; accepted: --torch-model DIR, the "
                              "Hugging Face folder the bundle was made from")

    def bench(self, artifact, profile, settings, texts, *, remote, torch_model) -> dict[str, Any]:
        from edgegolf.devices.bench import bench_torch_cuda_entry

        return bench_torch_cuda_entry(artifact, profile, settings, texts, Path(torch_model))


@register_kind
class Ssh(DeviceKind):
    """A remote device reached over SSH; runner.py times the graph there."""

    name = "ssh"
    needs = ("the remote extra (pip install 'edgegolf[remote]'), key authentication, and python3 with "
             "onnxruntime and numpy on the device")
    takes_url = True
    times_onnx_here = False

    def listed_examples(self) -> list["DeviceProfile"]:
        from edgegolf.devices.profiles import DeviceProfile

        return [DeviceProfile("ssh://user@host[:port]", kind="ssh", url="ssh://user@host",
                              description="any device you can reach over SSH with a key")]

    def profile_named(self, name: str) -> "DeviceProfile | None":
        from edgegolf.devices.profiles import DeviceProfile

        if isinstance(name, str) and name.startswith("ssh://"):
            return DeviceProfile(name=name, kind="ssh", url=name, description="remote device over SSH")
        return None

    def validate(self, profile: "DeviceProfile", where: str) -> None:
        from edgegolf.devices.profiles import parse_ssh_url

        parse_ssh_url(profile.url, where=where)  # raises on a malformed url

    def availability(self) -> tuple[bool, str]:
        from edgegolf.extras import EXTRAS, has_extra

        if not has_extra("asyncssh"):
            return False, f"the remote extra: {EXTRAS['remote'][1]}"
        return True, "reachability is checked when it is used"

    def providers(self, profile: "DeviceProfile") -> list[str] | None:
        raise _not_an_onnx_target(profile)

    def threads(self, profile: "DeviceProfile") -> int | None:
        return profile.threads  # the device's own count when None: resolved there, not here

    def check_bench(self, profile: "DeviceProfile", *, torch_model: str | Path | None) -> None:
        """Reachability and the remote extra are checked when the device is used."""

    def bench(self, artifact, profile, settings, texts, *, remote, torch_model) -> dict[str, Any]:
        from edgegolf.devices.bench import bench_ssh

        return bench_ssh(artifact, profile, settings, texts, remote)

    def compare_samples(self, artifacts, feeds, profile, warmup, rounds, runs_per_round, remote):
        from edgegolf.devices.compare import remote_samples

        return remote_samples(artifacts, feeds, profile, warmup, rounds, runs_per_round, remote)


def kind_of(profile: "DeviceProfile") -> DeviceKind:
    return get_kind(profile.kind)


def builtin_profiles() -> dict[str, "DeviceProfile"]:
    """Every registered kind's built-in profiles, by name, in registration order."""
    return {p.name: p for kind in all_kinds() for p in kind.builtin_profiles()}


def profile_from_name(name: str) -> "DeviceProfile | None":
    for kind in all_kinds():
        made = kind.profile_named(name)
        if made is not None:
            return made
    return None


__all__ = ["DeviceKind", "all_kinds", "builtin_profiles", "get_kind", "kind_names", "kind_of", "profile_from_name",
           "register_kind"]
