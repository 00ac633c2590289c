"""The scheme a size limit chooses, when nobody chose one.

`edgegolf compress` with a budget that limits size (`size<=90MB`) and no scheme asked for (no
--quantize, no [quantize] table, no quantize override) quantizes with `SchemeChoice`: our
schemes tried in a fixed order of quality, the first whose graph, with the files the runtime
needs beside it (the tokenizer), fits the limit is kept. An explicit scheme is never replaced.

The order, by bits/byte over the fp32 export measured on SmolLM2-135M with noised weights
(benchmarks/smollm2.py, 2026-11-30; docs/quantization.md has the table):

  decoder LMs (a graph with a key/value cache input)
    1. the default int8 (blockwise down-projections)        167.7 MB  +0.030
    2. int4 mixed 4/8-bit, sized to the limit itself          89.5 MB  +0.112 (limit 90 MB)
       (asymmetric blocks of 64, the tied table once as 4-bit blocks; mixed.py)
    3. int4, every MatMul 4-bit, symmetric blocks of 64       smaller than 2's all-4-bit floor
       (no zero points: the smallest int4 graph we make)      (blocks of 32: 88.5 MB, +0.167)
  encoders
    1. the default int8
    2. the default int8 with the word table as 4-bit blocks (GatherBlockQuantized)

A candidate's size is predicted before it is built where that is cheap and safe: an int8
scheme stores at least one byte per weight, so a graph whose 2-D float tensors hold more
weights than the limit has bytes is rejected unbuilt. The mixed plan sizes itself to the limit
(and stops before measuring when even its all-4-bit graph is over). The rest are built and
their files read. No candidate fits: the smallest one built is kept, and the verdict names the
limit and by how much it misses (exit 3, a whole bundle, as for any missed budget).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgegolf.compression.quantize.configs import BLOCK_EMBEDDING_MODES, Int4WeightOnly, default_int8
from edgegolf.compression.quantize.mixed import BelowAllFourBitError
from edgegolf.compression.quantize.registry import QuantConfig, config_to_dict, scheme_name
from edgegolf.errors import DoesNotFitError, EdgegolfError

log = logging.getLogger(__name__)

MB = 1e6


@dataclass(frozen=True)
class SchemeChoice:
    """Stands in for the quantize config: "the first of our schemes whose bundle fits `size_mb`"."""

    size_mb: float  # the budget's size limit: the graph and the files beside it, MB = 1e6 bytes
    # filled once chosen: {"settings": the chosen config as plain data}
    outcome: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # candidates differ (dynamic int8 is not batch-independent): evaluate one text at a time
    batch_independent: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        """What provenance records as the stage's settings: once chosen, the settings that ran
        (a reader sees a plain scheme; `measured.scheme_choice` says how it was chosen)."""
        if "settings" in self.outcome:
            return dict(self.outcome["settings"])
        return {"choose": "the first scheme that fits the size limit", "size_mb": self.size_mb}


@dataclass(frozen=True)
class Candidate:
    name: str  # how the report names it
    config: QuantConfig


def candidates(decoder: bool, graph_limit_mb: float) -> list[Candidate]:
    """The fixed order (the module docstring says why); the mixed plan gets the graph's share of the limit."""
    if not decoder:
        return [Candidate("int8 default", default_int8()),
                Candidate("int8 default, 4-bit word table", replace(default_int8(), embeddings="int4-block"))]
    return [Candidate("int8 default", default_int8()),
            Candidate("int4 mixed 4/8-bit", Int4WeightOnly(embeddings="int4-block", symmetric=False, block_size=64,
                                                           mixed_size_mb=graph_limit_mb, mixed_unit="block")),
            Candidate("int4 all 4-bit", Int4WeightOnly(embeddings="int4-block", symmetric=True, block_size=64))]


def least_bytes(config: QuantConfig, weights: int) -> int | None:
    """A lower bound of the graph's bytes under `config`, or None where none is cheap and safe:
    int8 keeps every 2-D float tensor at one byte per value or more (float ones at four); a
    blockwise table may be shared with a tied head, so those configs are not predicted."""
    if scheme_name(config) == "int8-dynamic" and config.embeddings not in BLOCK_EMBEDDING_MODES:
        return weights
    return None


def graph_facts(path: Path) -> tuple[bool, int]:
    """(whether the graph is a decoder with a key/value cache, how many values its 2-D+ float
    initializers hold, each counted once)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    decoder = any(i.name.startswith("past.") for i in model.graph.input)
    seen: dict[str, int] = {}
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT and len(tensor.dims) >= 2:
            seen[tensor.name] = int(np.prod(tensor.dims))
    return decoder, sum(seen.values())


def choose_and_quantize(in_path: Path, out_path: Path, choice: SchemeChoice, *,
                        calibration_feeds: list[dict[str, np.ndarray]] | None,
                        beside: Sequence[Path] = ()):
    """Quantize `in_path` into `out_path` with the first candidate that fits, or, when none does,
    the smallest one built (the verdict then says by how much it misses). Its QuantReport carries
    the choice in details["scheme_choice"]; `choice.to_dict()` gives the chosen settings after."""
    from edgegolf.compression.quantize.api import quantize

    limit = int(choice.size_mb * MB)
    beside_bytes = sum(Path(p).stat().st_size for p in beside)
    decoder, weights = graph_facts(in_path)
    record: dict[str, Any] = {"size_limit_mb": choice.size_mb, "beside_mb": round(beside_bytes / MB, 3), "tried": []}
    graph_limit_mb = max((limit - beside_bytes) / MB, 0.001)  # Int4WeightOnly.mixed_size_mb's least
    smallest: tuple[int, Candidate, Any] | None = None  # (bytes, candidate, its report): built, missing the limit
    chosen = None
    for index, candidate in enumerate(candidates(decoder, graph_limit_mb)):
        tried: dict[str, Any] = {"candidate": candidate.name, "settings": config_to_dict(candidate.config)}
        record["tried"].append(tried)
        floor = least_bytes(candidate.config, weights)
        if floor is not None and floor + beside_bytes > limit:
            tried.update(fits=False, predicted_min_mb=round((floor + beside_bytes) / MB, 3),
                         why=f"at least {_mb(floor + beside_bytes)} MB (one byte per weight), not built")
            continue
        try:  # each beside the output: the smallest is kept if none fits
            report = quantize(in_path, out_path.with_name(f"{out_path.stem}.candidate{index}{out_path.suffix}"),
                              candidate.config, calibration_feeds=calibration_feeds)
        except BelowAllFourBitError as exc:
            tried.update(fits=False, why=f"4 bits everywhere take {exc.floor_mb:.1f} MB, over the "
                         f"{_mb(limit - beside_bytes)} MB left for the graph, not measured")
            continue
        except EdgegolfError as exc:
            tried.update(fits=False, why=str(exc))
            continue
        size = report.path.stat().st_size + beside_bytes
        tried.update(size_mb=round(size / MB, 3), fits=size <= limit)
        if size <= limit:
            chosen = (size, candidate, report)
            break
        tried["why"] = f"{_mb(size)} MB built"
        if smallest is None or size < smallest[0]:
            smallest, dropped = (size, candidate, report), smallest
        else:
            dropped = (size, candidate, report)
        if dropped is not None:
            dropped[2].path.unlink(missing_ok=True)
    if chosen is None and smallest is None:
        tried_text = "; ".join(f"{t['candidate']}: {t['why']}" for t in record["tried"])
        raise DoesNotFitError(f"DOES NOT FIT: no quantization scheme could be made for size<={choice.size_mb:g}MB; "
                              f"tried {tried_text}")
    if chosen is not None and smallest is not None:
        smallest[2].path.unlink(missing_ok=True)
    picked = chosen if chosen is not None else smallest
    assert picked is not None
    size, candidate, report = picked
    os.replace(report.path, out_path)
    report.path = out_path
    rejected = "; ".join(f"{t['candidate']}: {t['why']}" for t in record["tried"] if not t["fits"])
    if chosen is not None:
        summary = f"size<={choice.size_mb:g}MB chose {candidate.name} ({_mb(size)} MB)" + (
            f"; rejected {rejected}" if rejected else ": the first candidate fits")
    else:
        summary = (f"size<={choice.size_mb:g}MB: no scheme fits, kept the smallest, {candidate.name} "
                   f"({_mb(size)} MB); tried {rejected}")
    record.update(chosen=candidate.name, fits=chosen is not None, scheme=report.scheme, settings=report.settings,
                  summary=summary)
    log.info("quantization: %s", summary)
    choice.outcome.update(settings=report.settings)  # provenance records what ran (SchemeChoice.to_dict)
    report.details = {**report.details, "scheme_choice": record}
    return report


def _mb(size_bytes: int) -> str:
    return f"{size_bytes / MB:.2f}" if size_bytes >= MB else f"{size_bytes / MB:.3f}"
