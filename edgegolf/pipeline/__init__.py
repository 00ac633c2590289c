"""The compress pipeline: the declared stages (stages.py), the runner that walks them with
provenance, measurement and a cache (runner.py), the manifest (manifest.py), and the
commands built on them: `compress` (compress.py) and `prune` (prune_cmd.py).

    load -> prune -> distill -> export -> optimize -> quantize
         -> (evaluate + bench after load and after every new graph) -> references -> verdict -> bundle
"""

from edgegolf.measure.artifact import StageResult
from edgegolf.measure.evaluate import work_threads
from edgegolf.pipeline.compress import CompressResult, build_recipe, compress
from edgegolf.pipeline.prune_cmd import prune
from edgegolf.pipeline.runner import StageCache
from edgegolf.pipeline.stages import STAGES

StageMemo = StageCache  # its name before the runner took over its job

__all__ = ["STAGES", "CompressResult", "StageCache", "StageMemo", "StageResult", "build_recipe", "compress", "prune",
           "work_threads"]
