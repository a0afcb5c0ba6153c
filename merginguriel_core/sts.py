"""STS-B-style evaluation of an encoder: Spearman correlation between the cosine similarity
of mean-pooled sentence embeddings and gold similarity scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from merginguriel_core.data import read_column
from merginguriel_core.errors import ConfigError


def mean_pooled(model, tokenizer, texts: list[str], device: torch.device, batch_size: int, max_length: int) -> np.ndarray:
    """Mean of the last hidden states over real (non-padding) tokens, per text."""
    outputs = []
    model.eval()
    max_length = min(max_length, getattr(model.config, "max_position_embeddings", max_length + 2) - 2)
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                              max_length=max_length).to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            outputs.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).float().cpu().numpy())
    return np.concatenate(outputs)


def evaluate_sts(model_dir: Path, data_file: Path, device: torch.device, batch_size: int = 32,
                 max_length: int = 128) -> dict[str, float]:
    from transformers import AutoModel, AutoTokenizer

    first, second, scores = (read_column(data_file, c) for c in ("sentence1", "sentence2", "score"))
    if not (first and second and scores):
        raise ConfigError(f"{data_file} needs the columns sentence1, sentence2 and score")
    try:
        gold = np.array([float(s) for s in scores])
    except ValueError:
        raise ConfigError(f"{data_file}: the score column must hold numbers") from None
    if len(gold) < 3:
        raise ConfigError(f"{data_file} has {len(gold)} pairs; at least 3 are needed for a correlation")
    if not model_dir.is_dir():
        raise ConfigError(f"--model {model_dir} is not a folder")
    from merginguriel_core.statistics import load_pretrained

    model = load_pretrained(AutoModel, model_dir, use_safetensors=True).to(device)
    tokenizer = load_pretrained(AutoTokenizer, model_dir)
    a = mean_pooled(model, tokenizer, first, device, batch_size, max_length)
    b = mean_pooled(model, tokenizer, second, device, batch_size, max_length)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(1e-12)
    return {"spearman": float(spearmanr(cosine, gold).statistic), "pearson": float(pearsonr(cosine, gold).statistic),
            "pairs": int(len(gold))}
