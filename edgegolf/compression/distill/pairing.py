"""Which student layer learns from which teacher layer, and whether hidden states can be matched at all."""

from __future__ import annotations

import logging
from dataclasses import replace

from edgegolf.compression.distill.config import DistillConfig
from edgegolf.errors import RecipeError, SourceError

log = logging.getLogger("edgegolf.compression.distill.train")  # the run's one logger (see train.py)


def auto_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Evenly spaced teacher layers ending at the last one: 3 of 6 -> [1, 3, 5] (DistilBERT-style)."""
    return [max(0, round((i + 1) * teacher_layers / student_layers) - 1) for i in range(student_layers)]


def num_layers(model) -> int:
    count = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    if not isinstance(count, int):
        raise SourceError(f"{type(model).__name__} config names no layer count; hidden-state matching needs one "
                          "(set distill.hidden_weight = 0)")
    return count


def default_hidden_loss_where_it_applies(config: DistillConfig, teacher, student, tokenizer,
                                          teacher_tokenizer) -> DistillConfig:
    """The default hidden-state loss needs equal widths, one tokenizer and layer counts; where
    a pair lacks one, the default falls to 0 (logged). A weight other than the default that
    cannot apply is refused later, with the reason."""
    if config.hidden_weight != DistillConfig.hidden_weight:
        return config
    counts = [getattr(m.config, "num_hidden_layers", None) or getattr(m.config, "n_layer", None)
              for m in (teacher, student)]
    own_tokenizer = teacher_tokenizer is not None and teacher_tokenizer is not tokenizer
    reason = ("the student's width differs from the teacher's"
              if getattr(student.config, "hidden_size", None) != getattr(teacher.config, "hidden_size", None) else
              "teacher and student tokenize differently" if own_tokenizer else
              "a config names no layer count" if not all(isinstance(c, int) for c in counts) else None)
    if reason is None:
        return config
    log.info("distill: no hidden-state loss (%s); the outputs alone teach", reason)
    return replace(config, hidden_weight=0.0)


def resolve_layer_map(teacher, student, config: DistillConfig) -> tuple[list[int] | None, list[int] | None]:
    """(student layers, teacher layers) whose outputs are matched, or (None, None)."""
    if config.hidden_weight <= 0:
        return None, None
    s_layers, t_layers = num_layers(student), num_layers(teacher)
    s_width = getattr(student.config, "hidden_size", None)
    t_width = getattr(teacher.config, "hidden_size", None)
    if s_width != t_width:
        raise RecipeError(f"distill.hidden_weight = {config.hidden_weight} needs equal widths, but the student's "
                          f"hidden size is {s_width} and the teacher's {t_width}; set hidden_weight = 0")
    mapping = auto_layer_map(s_layers, t_layers) if isinstance(config.layer_map, str) else list(config.layer_map)
    if len(mapping) != s_layers or any(t >= t_layers for t in mapping):
        raise RecipeError(f"distill.layer_map = {mapping} is not accepted; give {s_layers} teacher layers "
                          f"(one per student layer), each 0 to {t_layers - 1}")
    return list(range(s_layers)), mapping
