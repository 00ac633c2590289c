"""Tiny real sentence-transformers folders: a tiny BERT saved by SentenceTransformer itself,
with the pooling, Dense, Normalize and prompts a test asks for."""

from __future__ import annotations

from pathlib import Path

from tests.builders.models import save_tiny_bert

WIDTH = 32  # save_tiny_bert's hidden size
TEXTS = ["Shares in the bank rose sharply after the results.", "The film won three awards",
         "Rain", "The minister said the election would be held in May, and the opposition agreed."]


def save_st_folder(folder: Path, *, pooling: str = "mean", dense: tuple[int, ...] = (), activation: str = "Tanh",
                   normalize: bool = True, prompts: dict[str, str] | None = None,
                   default_prompt_name: str | None = None, seed: int = 0) -> Path:
    """`folder` as `SentenceTransformer(modules=[Transformer, Pooling, Dense..., Normalize?]).save` writes it.

    `dense` lists the output width of each Dense layer (random weights, seeded)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    hf = save_tiny_bert(folder.parent / f"{folder.name}-hf", seed=seed)
    torch.manual_seed(seed + 1)
    modules: list[torch.nn.Module] = [Transformer(str(hf)), Pooling(WIDTH, pooling_mode=pooling)]
    width = WIDTH
    for out in dense:
        modules.append(Dense(width, out, activation_function=getattr(torch.nn, activation)()))
        width = out
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name=default_prompt_name,
                                device="cpu")
    model.save(str(folder))
    return folder


def save_st_folder_with_lstm(folder: Path) -> Path:
    """A sentence-transformers folder whose chain has an LSTM over the token states: edgegolf refuses it."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import LSTM, Pooling

    hf = save_tiny_bert(folder.parent / f"{folder.name}-hf")
    torch.manual_seed(1)
    modules = [Transformer(str(hf)), LSTM(WIDTH, 8), Pooling(16)]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def st_encode(folder: Path, texts: list[str], **kwargs):
    """What sentence-transformers itself computes for `texts` (float32 numpy)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True, **kwargs)
