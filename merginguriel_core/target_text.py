"""Unlabelled text in the target language, for the weightings that read it (``adamerging``,
``representation``): ``--target-text FILE`` (one sentence per line) or ``--target-text-split
SPLIT`` (a split of the dataset, its labels never read).

A :class:`TargetText` says where the text is; :meth:`TargetText.sentences` reads it for one
target. :func:`take` applies a weighting's text budget, :func:`unknown_share` measures how
much of it a tokenizer cannot read; both leave a note for the user rather than failing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from merginguriel_core.errors import ConfigError

#: The splits ``--target-text-split`` may name.
SPLITS = ("train", "dev", "test")
#: Above this share of unknown tokens the text is flagged: the tokenizer hardly reads its script.
UNKNOWN_WARNING = 0.5


@dataclass(frozen=True)
class TargetText:
    """Where a target's unlabelled text is: ``file`` (one sentence per line; ``{locale}`` in
    the path is replaced by the target's locale) or ``split`` of ``dataset`` at ``location``
    (texts only). ``dataset`` and ``location`` also give the sources' own training text to
    the weightings that compare against it (``representation``)."""

    file: Path | None = None
    split: str | None = None
    dataset: Any = "sib200"
    location: str | None = None

    def __post_init__(self) -> None:
        if self.file is not None:
            object.__setattr__(self, "file", Path(self.file))

    @property
    def option(self) -> str:
        """The option the user gave: ``--target-text`` or ``--target-text-split``."""
        return "--target-text" if self.file is not None else "--target-text-split"

    def check(self) -> None:
        """Exactly one of file and split; the file exists (unless it names ``{locale}``) and holds text."""
        if (self.file is None) == (self.split is None):
            raise ConfigError("give the target text as --target-text FILE or --target-text-split SPLIT, not both")
        if self.split is not None and self.split not in SPLITS:
            raise ConfigError(f"unknown --target-text-split {self.split!r}; allowed: {', '.join(SPLITS)}")
        if self.file is not None and "{locale}" not in str(self.file):
            _read_lines(self.file)

    def path_for(self, locale: str) -> Path:
        assert self.file is not None
        return Path(str(self.file).replace("{locale}", locale))

    def sentences(self, locale: str, registry: Any = None) -> list[str]:
        """The target's sentences, in file (or dataset) order; never its labels."""
        if self.file is not None:
            return _read_lines(self.path_for(locale))
        texts = [text.strip() for text in self._dataset(registry).load(self.location, locale, self.split).texts]
        texts = [text for text in texts if text]
        if not texts:
            raise ConfigError(f"--target-text-split {self.split} of {locale} holds no text")
        return texts

    def source_sentences(self, locale: str, split: str = "train", registry: Any = None) -> list[str]:
        """A source language's own ``split`` texts from the dataset (labels unread)."""
        if self.location is None and getattr(self._dataset(registry), "hub_id", None) is None:
            raise ConfigError("the sources' training text comes from the dataset: pass --data-dir DIR")
        return [text for text in self._dataset(registry).load(self.location, locale, split).texts if text.strip()]

    def _dataset(self, registry: Any):
        from merginguriel_core.plan import resolve_plugin

        return resolve_plugin("dataset", self.dataset, registry)

    def describe(self) -> dict[str, Any]:
        """For ``merge_details.json`` and experiment definitions."""
        return {"file": None if self.file is None else str(self.file), "split": self.split,
                "dataset": getattr(self.dataset, "name", self.dataset), "location": self.location}


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"--target-text {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read --target-text {path}: {error}") from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ConfigError(f"--target-text {path} holds no text; give one sentence per line")
    return lines


def take(sentences: Sequence[str], budget: int, what: str = "the target text") -> tuple[list[str], str | None]:
    """The first ``budget`` sentences, and a note when there are fewer (all of them are used)."""
    if len(sentences) < budget:
        return list(sentences), (f"asked for {budget} sentences of {what}, it has {len(sentences)}; "
                                 f"using all {len(sentences)}")
    return list(sentences[:budget]), None


def unknown_share(tokenizer: Any, sentences: Sequence[str]) -> float:
    """The share of the tokenizer's pieces of ``sentences`` that are its unknown token (0 without one)."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is None or not sentences:
        return 0.0
    pieces = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    total = sum(len(ids) for ids in pieces)
    return 0.0 if total == 0 else sum(ids.count(unknown) for ids in pieces) / total


def unknown_note(share: float, locale: str | None) -> str | None:
    """A warning when more than half of the text's pieces (``share``, from :func:`unknown_share`)
    are unknown to the tokenizer."""
    if share <= UNKNOWN_WARNING:
        return None
    return (f"{share:.0%} of the target text's tokens{' (' + locale + ')' if locale else ''} are unknown to the "
            f"tokenizer (a script or vocabulary it hardly covers), so the text says little")


def fingerprint(sentences: Sequence[str]) -> str:
    """A short hash of the sentences (what a cached result or an experiment cell depends on)."""
    digest = hashlib.sha256()
    for sentence in sentences:
        digest.update(sentence.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]
