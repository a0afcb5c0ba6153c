"""Sentence representations of a multilingual encoder, and NN-Rank over them.

NN-Rank (Ebrahimi et al., EMNLP 2025, https://arxiv.org/abs/2510.03202) ranks source
languages for a target by where the target's sentences land among the sources' sentences in
the encoder's representation space: each target sentence (mean-pooled hidden states of an
intermediate layer) takes its k nearest source sentences by cosine similarity, and a source
language's score is the share of all those neighbours that are its sentences. No label is read.

Embeddings are cached on disk by encoder, layer, token limit and the sentences' content
(``~/.cache/merginguriel/representations``), so the sources' training text is encoded once
for all targets.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from merginguriel_core.target_text import fingerprint

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    from merginguriel_core.lazy import numpy as np, torch


def default_cache_dir() -> Path:
    from merginguriel_core.outputs import cache_folder

    return cache_folder("representations")


class Encoder:
    """A base encoder (any folder ``AutoModel`` loads, safetensors only), loaded on first use."""

    def __init__(self, folder: Path, *, layer: int | None = None, batch_size: int = 32, max_length: int = 128,
                 device: torch.device | str = "cpu", cache_dir: Path | None = None):
        self.folder, self.requested_layer, self.batch_size, self.max_length = Path(folder), layer, batch_size, max_length
        self.device = torch.device(device)
        self.cache_dir = cache_dir

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        from merginguriel_core.statistics import load_pretrained

        return load_pretrained(AutoTokenizer, self.folder)

    @cached_property
    def model(self):
        """The encoder, loaded on the first sentences that are not in the cache."""
        from transformers import AutoModel

        from merginguriel_core.statistics import load_pretrained

        return load_pretrained(AutoModel, self.folder, use_safetensors=True).to(self.device).eval()

    @cached_property
    def layer(self) -> int:
        """The hidden-state index used: ``layer`` (0 the embeddings, L the last block; negative
        from the end), default the middle block."""
        from transformers import AutoConfig

        layers = int(getattr(AutoConfig.from_pretrained(self.folder), "num_hidden_layers", 1))
        if self.requested_layer is None:
            return max(1, layers // 2)
        index = self.requested_layer if self.requested_layer >= 0 else layers + 1 + self.requested_layer
        if not 0 <= index <= layers:
            from merginguriel_core.errors import ConfigError

            raise ConfigError(f"layer {self.requested_layer} is outside the encoder's hidden states 0..{layers} (or -{layers + 1}..-1)")
        return index

    def _key(self, sentences: Sequence[str]) -> str:
        from merginguriel_core.evaluation import model_fingerprint

        text = f"{model_fingerprint(self.folder)}:{self.layer}:{self.max_length}:{fingerprint(sentences)}:{len(sentences)}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def embed(self, sentences: Sequence[str]) -> np.ndarray:
        """L2-normalised mean-pooled hidden states, (N, hidden), float32."""
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{self._key(sentences)}.npy"
            if path.is_file():
                try:
                    return np.load(path, allow_pickle=False)
                except (OSError, ValueError):
                    pass  # a damaged entry is recomputed
        from merginguriel_core.training import token_limit

        model, tokenizer, layer = self.model, self.tokenizer, self.layer
        limit = token_limit(model, self.max_length)
        pieces = []
        with torch.no_grad():
            for at in range(0, len(sentences), self.batch_size):
                batch = tokenizer(list(sentences[at:at + self.batch_size]), padding=True, truncation=True,
                                  max_length=limit, return_tensors="pt").to(self.device)
                hidden = model(**batch, output_hidden_states=True).hidden_states[layer].float()
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                pieces.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
        embeddings = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros((0, 0), np.float32)
        if path is not None:
            from merginguriel_core.outputs import atomic_file

            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path, "wb") as handle:
                np.save(handle, embeddings, allow_pickle=False)
        return embeddings


def nn_rank(target: np.ndarray, sources: Mapping[str, np.ndarray], neighbours: int = 10) -> dict[str, float]:
    """Each source's share of the ``neighbours`` nearest source sentences of every target
    sentence (cosine over L2-normalised rows); the shares sum to 1."""
    locales = [locale for locale, rows in sources.items() if len(rows)]
    pool = np.concatenate([sources[locale] for locale in locales])
    owner = np.concatenate([np.full(len(sources[locale]), i) for i, locale in enumerate(locales)])
    k = min(neighbours, len(pool))
    similarity = target @ pool.T
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    counts = np.bincount(owner[nearest].reshape(-1), minlength=len(locales)).astype(np.float64)
    shares = counts / counts.sum()
    return {locale: float(share) for locale, share in zip(locales, shares)} | {
        locale: 0.0 for locale in sources if locale not in locales}
