"""What the CPU running onnxruntime offers its int8 kernels.

On x86-64, onnxruntime's dynamic and QDQ int8 MatMuls multiply uint8 activations by int8
weights. Without VNNI (AVX512-VNNI or AVX-VNNI) the AVX2 kernel sums pairs of products in
16 bits (vpmaddubsw), which saturates when weights use the full int8 range: onnxruntime's
quantization docs advise `reduce_range` (7-bit weights) on such CPUs. Measured on an AVX2-only
EPYC with a tiny BERT: relative error of int8-dynamic 0.048 with 8-bit weights, 0.007 with
7-bit. ARM64 (sdot/smmla) and VNNI CPUs have no such overflow.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

_X86 = {"x86_64", "amd64", "i386", "i686"}
_VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "avx512vnni", "avxvnni"}


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.cache
def int8_saturates() -> bool:
    """True when this CPU's u8 x s8 int8 kernels can saturate with full-range weights.

    An x86 CPU whose flags cannot be read counts as saturating: 7-bit weights cost a little
    precision there, 8-bit ones can cost the model.
    """
    if platform.machine().lower() not in _X86:
        return False
    try:
        flags = cpu_flags(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return True
    return not (flags & _VNNI_FLAGS)
