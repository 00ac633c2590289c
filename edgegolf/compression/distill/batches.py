"""What the student trains on: the tokenized texts in a resumable seeded order, the later
windows of long texts, the held-out slice, and the teacher's targets kept between epochs."""

from __future__ import annotations

import logging

import torch

from edgegolf.compression.distill.config import DistillConfig
from edgegolf.errors import DataError, RecipeError, SourceError

log = logging.getLogger("edgegolf.compression.distill.train")  # the run's one logger (see train.py)

CACHE_LIMIT_BYTES = 4 << 30  # teacher targets kept between epochs; beyond this the teacher reruns


class Batches:
    """Tokenized texts and the deterministic order they are visited in."""

    def __init__(self, tokenizer, texts: list[str], names: tuple[str, ...], max_length: int, seed: int):
        if tokenizer.pad_token is None:
            raise SourceError("the tokenizer has no padding token; distillation batches texts and needs one")
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        self.items = [{n: encoded[n][i] for n in names if n in encoded} for i in range(len(texts))]
        self.tokenizer = tokenizer
        self.seed = seed
        self.teacher: Batches | None = None  # the teacher's own tokenization, when its tokenizer differs
        self._orders: dict[int, list[int]] = {}

    def order(self, epoch: int, n: int) -> list[int]:
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(n, generator=generator).tolist()}  # one epoch kept
        return self._orders[epoch]

    def stream(self, pool: list[int], position: int, size: int) -> list[int]:
        """Items of `pool` at stream positions [position, position + size): each epoch a fresh
        seeded permutation, so a position alone fixes the batch (what makes resuming exact)."""
        n = len(pool)
        return [pool[self.order(p // n, n)[p % n]] for p in range(position, position + size)]

    def collate(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad([self.items[i] for i in indices], padding=True, return_tensors="pt")
        return {k: v.to(device) for k, v in batch.items()}


class TargetCache:
    """Teacher targets per text, kept so that later epochs skip the teacher's forward pass.

    Sequence-shaped targets (the task's distill_sequence_dims) are stored cut to the text's real length
    and padded back with zeros for a longer batch; the loss masks padding out. With left
    padding (`sequences` False) only per-text vectors are kept.
    """

    def __init__(self, limit_bytes: int, sequences: bool, sequence_dims: dict[str, int]):
        self.items: dict[int, dict[str, torch.Tensor]] = {}
        self.limit, self.sequences, self.bytes, self.full = limit_bytes, sequences, 0, False
        self.sequence_dims = sequence_dims

    def get(self, indices: list[int], length: int) -> dict[str, torch.Tensor] | None:
        if not all(i in self.items for i in indices):
            return None
        out = {}
        for key in self.items[indices[0]]:
            rows = [self.items[i][key] for i in indices]
            dim = self.sequence_dims.get(key)
            if dim is not None:
                rows = [fit_length(row, dim - 1, length) for row in rows]
            out[key] = torch.stack(rows)
        return out

    def put(self, indices: list[int], view: dict[str, torch.Tensor], lengths: list[int]) -> None:
        if self.full or (not self.sequences and any(k in self.sequence_dims for k in view)):
            return
        for row, (index, length) in enumerate(zip(indices, lengths, strict=True)):
            if self.bytes >= self.limit:
                log.info("teacher cache full at %d MB: the teacher reruns for the other texts", self.bytes >> 20)
                self.full = True
                return
            item = {}
            for key, value in view.items():
                dim = self.sequence_dims.get(key)
                item[key] = (value[row].narrow(dim - 1, 0, length) if dim is not None else value[row]).clone()
                self.bytes += item[key].numel() * item[key].element_size()
            self.items[index] = item


def fit_length(row: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """`row` cut or zero-padded to `length` along `dim`."""
    if row.shape[dim] >= length:
        return row.narrow(dim, 0, length)
    shape = list(row.shape)
    shape[dim] = length
    out = row.new_zeros(shape)
    out.narrow(dim, 0, row.shape[dim]).copy_(row)
    return out


def later_windows(tokenizer, texts: list[str], max_length: int, windows: int,
                  stride: int = 0) -> tuple[list[str], list[int]]:
    """Pieces 2..`windows` of each text, each about one `max_length`-token window, cut at token
    boundaries; and the index (into `texts`) each piece came from. The first window is the text
    itself, truncated as at deployment. A `stride` shorter than the window starts a piece every
    `stride` tokens over the same span (overlapping windows: more distinct training inputs from
    the same texts). Needs a fast tokenizer (character offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        raise RecipeError(f"distill.windows = {windows} needs a fast tokenizer (character offsets); "
                          f"{type(tokenizer).__name__} is not one: set windows = 1")
    body = max(1, max_length - tokenizer.num_special_tokens_to_add())
    step = stride if 0 < stride else body
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    pieces, owners = [], []
    for index, (text, offsets) in enumerate(zip(texts, encoded["offset_mapping"], strict=True)):
        for start in range(step, min(len(offsets), windows * body), step):
            end = min(start + body, len(offsets))
            piece = text[offsets[start][0]:offsets[end - 1][1]].strip()
            if piece:
                pieces.append(piece)
                owners.append(index)
    return pieces, owners


def split_eval(n: int, config: DistillConfig) -> tuple[list[int], list[int]]:
    if config.evaluations_every == 0 and config.patience is None:
        return list(range(n)), []
    generator = torch.Generator().manual_seed(config.seed + 17)
    shuffled = torch.randperm(n, generator=generator).tolist()
    held = max(1, round(n * config.eval_fraction))
    if n - held < 1:
        raise DataError(f"distill data has {n} text(s): too few to hold out {config.eval_fraction:.0%} for evaluation "
                        "and train on the rest; give more texts, or set eval_every = 0")
    return sorted(shuffled[held:]), sorted(shuffled[:held])
