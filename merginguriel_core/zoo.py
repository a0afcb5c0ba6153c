"""A deterministic zoo of tiny XLM-R-shaped classifiers, one per locale, from one base.

``mu demo`` and the tests use it: no hub, no downloads. Each "fine-tuned" model is the
shared base plus a small locale-seeded perturbation, saved like a real Hugging Face model
(safetensors, config with labels, a fast tokenizer), so everything downstream — discovery,
merging, loading with ``AutoModelForSequenceClassification`` — runs as on real models.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import torch
else:
    from merginguriel_core.lazy import torch

#: The SIB-200 topic labels, so demo models share a realistic label space.
LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
_WORDS = (
    "the a of to and in is for on with that by from at as it be this are was or an new has "
    "city team game health doctor film music river mountain vote law science computer travel "
    "hotel flight match player virus film star map border election court data energy"
).split()


def _tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {token: index for index, token in enumerate(specials + list(dict.fromkeys(_WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # Like XLM-R: <s> text </s>, so the classifier reads the <s> position.
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
    )
    tokenizer.save_pretrained(folder)


def tiny_config(vocab_size: int = 64, hidden_size: int = 16, layers: int = 1, num_labels: int = len(LABELS)):
    """An XLM-R config small enough for tests (a few thousand parameters at the defaults)."""
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=40,
        type_vocab_size=1,
        num_labels=num_labels,
        id2label=dict(enumerate(LABELS[:num_labels])) if num_labels <= len(LABELS) else None,
        label2id={label: i for i, label in enumerate(LABELS[:num_labels])} if num_labels <= len(LABELS) else None,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def _locale_seed(seed: int, locale: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{locale}".encode()).digest()[:4], "little")


def build_zoo(
    folder: str | Path,
    locales: Iterable[str],
    *,
    pattern: str = "xlm-roberta-base_massive_k_{locale}",
    seed: int = 0,
    hidden_size: int = 16,
    layers: int = 1,
    delta_scale: float = 0.02,
) -> dict[str, Path]:
    """Write ``base/`` and one model folder per locale into ``folder``; return locale -> folder.

    Deterministic: the same arguments give byte-identical weights.
    """
    from transformers import XLMRobertaForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    config = tiny_config(vocab_size=5 + len(dict.fromkeys(_WORDS)), hidden_size=hidden_size, layers=layers)
    torch.manual_seed(seed)
    base = XLMRobertaForSequenceClassification(config).eval()
    base_dir = root / "base"
    base.save_pretrained(base_dir)
    _tokenizer(base_dir)
    base_state = {name: tensor.detach().clone() for name, tensor in base.state_dict().items()}
    paths: dict[str, Path] = {}
    for locale in locales:
        generator = torch.Generator().manual_seed(_locale_seed(seed, locale))
        with torch.no_grad():
            for name, tensor in base.state_dict().items():
                if tensor.is_floating_point():
                    noise = torch.randn(tensor.shape, generator=generator) * delta_scale
                    tensor.copy_(base_state[name] + noise)
        out = root / pattern.format(locale=locale)
        base.save_pretrained(out)
        _tokenizer(out)
        paths[locale] = out
    with torch.no_grad():
        for name, tensor in base.state_dict().items():
            tensor.copy_(base_state[name])
    return paths
