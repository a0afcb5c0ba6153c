"""Evaluate a merged classifier straight from memory: merge, build, predict, score.

A grid of merges evaluated on many targets need not write a model per cell and read it back:
:func:`~merginguriel_core.merge.merge_state_dict` streams the merge into tensors in memory,
:func:`model_from_state_dict` builds the classifier around them (the weights are the
model's parameters, not copied), and :func:`merge_and_evaluate` runs the target's examples
through it, as ``mu evaluate`` would run the written model (same config, tokenizer, batching
and scoring, so the same predictions). ``keep`` writes the merged model too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple

from merginguriel_core.errors import ModelError, first_line

if TYPE_CHECKING:
    import numpy as np
    import torch

    from merginguriel_core.data import Examples
    from merginguriel_core.merge import MergePlan


class CellResult(NamedTuple):
    """What :func:`merge_and_evaluate` returns (a tuple: ``metrics, predictions, timings = ...``)."""

    #: Metric name -> value, from the evaluators.
    metrics: dict[str, float]
    #: The predicted label id of each example (an index into the label space).
    predictions: np.ndarray
    #: Seconds spent merging (``merge``, writing ``keep`` included), building the model and
    #: its tokenizer (``load``) and predicting (``forward``).
    timings: dict[str, float]


def model_from_state_dict(folder: str | Path, state: Mapping[str, torch.Tensor], *,
                          device: torch.device | str | None = None):
    """The sequence classifier of ``folder``'s ``config.json`` (a source model's folder)
    holding the weights ``state``, without reading weights from disk; in eval mode.

    transformers builds it as ``from_pretrained`` builds a saved model (on the meta device,
    non-persistent buffers such as ``position_ids`` made, tied weights tied, legacy names
    converted), with ``state`` in place of the checkpoint: tensors of the config's dtype
    become the model's parameters without a copy, so do not reuse ``state`` for anything
    else. Never runs remote code. A tensor ``state`` lacks, has extra or shapes otherwise
    than the config is a one-line :class:`~merginguriel_core.errors.ModelError`.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    from merginguriel_core.statistics import load_pretrained

    folder = Path(folder)
    config = load_pretrained(AutoConfig, folder, trust_remote_code=False)  # quiets transformers' logging too
    try:
        model_class = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    except KeyError:
        raise ModelError(f"model type {config.model_type!r} of {folder} has no sequence classifier in "
                         f"transformers") from None
    try:  # a mismatched shape is reported below, not raised with a pointer to a log
        model, info = model_class.from_pretrained(None, config=config, state_dict=dict(state),
                                                  output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot build the classifier of {folder} from the merged weights: {first_line(exc)}") from None
    problems = [f"lacks tensor {name}" for name in sorted(info.get("missing_keys") or ())]
    problems += [f"has tensor {name}, which the config has not" for name in sorted(info.get("unexpected_keys") or ())]
    problems += [f"has tensor {name} of shape {list(got)}, the config's is {list(wanted)}"
                 for name, got, wanted in sorted(info.get("mismatched_keys") or (), key=str)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ModelError(f"the merged weights do not fit the config of {folder}: the state {problems[0]}{more}")
    if device is not None:
        model = model.to(device)
    return model.eval()


def tokenizer_for(folder: str | Path):
    """``folder``'s tokenizer, loaded once per process while its files are unchanged (a fast
    XLM-R tokenizer takes seconds to parse; a grid's merges share a handful of them)."""
    import hashlib

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and ("token" in p.name or p.name.endswith(".model")
                                                                   or p.name == "special_tokens_map.json"))
    # by content: the sources of a grid fine-tuned from one base share one tokenizer
    stamp = tuple((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files)
    if stamp not in _TOKENIZERS:
        from transformers import AutoTokenizer

        from merginguriel_core.statistics import load_pretrained

        if len(_TOKENIZERS) >= 8:
            _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
        _TOKENIZERS[stamp] = load_pretrained(AutoTokenizer, folder)
    return _TOKENIZERS[stamp]


def side_files_folder(folder: str | Path):
    """``where(name)``: ``folder``, or for an adapter folder without the file ``name`` (its
    config, its tokenizer) the adapter's base model folder."""
    from merginguriel_core.adapters import adapter_base, is_adapter

    folder = Path(folder)

    def where(name: str) -> Path:
        return adapter_base(folder) if not (folder / name).is_file() and is_adapter(folder) else folder

    return where


#: Tokenizers by the content of their files (at most 8).
_TOKENIZERS: dict[tuple, Any] = {}


def merge_and_evaluate(
    plan: MergePlan,
    examples: Examples,
    label_space: list[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    device: torch.device | str | None = None,
    evaluators: Iterable[Any] | None = None,
    keep: str | Path | None = None,
    details: dict[str, Any] | None = None,
    progress: bool = False,
) -> CellResult:
    """Merge ``plan`` in memory and evaluate the merged classifier on ``examples``.

    ``label_space`` is the label names in id order (as
    :func:`~merginguriel_core.evaluation.label_space_for` gives them); the merged model's
    config is the highest-weighted source's, whose labels must be exactly these. Predictions
    come from :func:`~merginguriel_core.training.predict_logits` (tokenised once, batched
    longest first) on ``device`` (default: the plan's); ``evaluators`` are names or objects
    (default: every installed one). ``keep`` also writes the merged model to that folder
    (see :func:`~merginguriel_core.merge.merge_state_dict`, which fills ``details``).
    The plan's ``output`` is not used.
    """
    from merginguriel_core.evaluation import check_batching, check_label_space, gold_ids, score
    from merginguriel_core.merge import merge_state_dict, resolve_device
    from merginguriel_core.plan import evaluator_objects
    from merginguriel_core.training import predict_logits

    check_batching(batch_size, max_length)
    folder = plan.sources[0].path  # the merged model's config and tokenizer are this source's
    check_label_space(folder, label_space)
    files = side_files_folder(folder)
    gold = gold_ids(examples, label_space)
    chosen = evaluator_objects(evaluators)
    device = plan.device if device is None else resolve_device(device) if isinstance(device, str) else device

    started = time.perf_counter()
    state = merge_state_dict(plan, keep=keep, details=details)
    merged = time.perf_counter()
    model = model_from_state_dict(files("config.json"), state, device=device)
    del state  # the model holds the tensors now
    tokenizer = tokenizer_for(files("tokenizer_config.json"))
    loaded = time.perf_counter()
    logits = predict_logits(model, tokenizer, examples.texts, batch_size, max_length, device, progress,
                            desc=f"merged for {examples.source}")
    done = time.perf_counter()
    predictions = logits.argmax(-1)
    metrics = score(predictions, gold, len(label_space), chosen)
    return CellResult(metrics, predictions, {"merge": merged - started, "load": loaded - merged, "forward": done - loaded})
