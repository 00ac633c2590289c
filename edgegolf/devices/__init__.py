"""Measuring deployed artifacts: device profiles, latency, peak memory, size.

This package times and measures; it never transforms a model. ONNX artifacts are run
through `edgegolf.runtime`, the same code path an application uses. Importing it loads
neither torch nor onnx (the memory probe's child imports this package too).

Commands live in their own modules, imported where used: bench.py (edgegolf bench),
compare.py, listing.py (edgegolf devices), remote.py + runner.py (ssh:// devices) and
cuda.py (the cuda, tensorrt and torch-cuda targets).
"""

from __future__ import annotations

from edgegolf.devices.inputs import bench_onnx, fixed_shape_feeds
from edgegolf.devices.latency import LatencyStats, latency_stats, measure_latency
from edgegolf.devices.memory import peak_rss_onnx, peak_rss_torch
from edgegolf.devices.profiles import BUILTIN, DeviceProfile, get_profile, load_profiles_toml, pinned
from edgegolf.devices.size import SizeReport, external_data_files, measure_size

__all__ = [
    "BUILTIN", "DeviceProfile", "LatencyStats", "SizeReport", "bench_onnx", "external_data_files",
    "fixed_shape_feeds", "get_profile", "latency_stats", "load_profiles_toml", "measure_latency", "measure_size",
    "peak_rss_onnx", "peak_rss_torch", "pinned",
]
