"""Language similarity: the maths (cosine, top-k, Sinkhorn), the matrix file, the weights.

The weighting is the seed project's method, step by step (``docs/similarity.md``):

1. raw similarity ``(cosine + 1) / 2`` of URIEL vectors, for every pair of languages in
   the matrix (:func:`uriel_similarity_matrix`);
2. :func:`top_k_per_row` on the whole matrix, diagonal zeroed first;
3. :func:`sinkhorn` on the whole (top-k'd) matrix, rows then columns, each iteration;
4. the target's row, restricted to the available sources, its ``num_languages`` largest
   entries renormalised to sum to 1 (:func:`uriel_weights`).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from merginguriel_core.errors import ConfigError, LanguageError
from merginguriel_core.languages import resolve_language
from merginguriel_core.uriel import DEFAULT_FEATURES, uriel_vectors

if TYPE_CHECKING:
    import numpy as np
else:
    from merginguriel_core.lazy import numpy as np


def cosine_similarity_matrix(vectors: np.ndarray) -> np.ndarray:
    """Return the ``(N, N)`` cosine similarities of the rows of ``vectors``, in [-1, 1].

    A zero vector has similarity 0 to every vector, itself included. Computed as
    ``dot / (norm_i * norm_j)`` so that equal dot products over equal norms give bitwise
    equal similarities (ties matter to :func:`top_k_per_row`).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ConfigError(
            f"cosine similarity needs a 2-D array of vectors, got shape {vectors.shape}"
        )
    norms = np.linalg.norm(vectors, axis=1)
    denominator = np.outer(norms, norms)
    dots = vectors @ vectors.T
    cosine = np.divide(dots, denominator, out=np.zeros_like(dots), where=denominator > 0)
    return np.clip(cosine, -1.0, 1.0)


def top_k_per_row(matrix: np.ndarray, k: int, keep_diagonal: bool = False) -> np.ndarray:
    """Keep the ``k`` largest entries of each row and zero the rest (returns a new array).

    The diagonal is zeroed first unless ``keep_diagonal``, so a language is not its own
    neighbour. Ties: every entry equal to a row's k-th largest value is kept, so a row can
    keep more than ``k`` entries. This is the seed's rule; it is deterministic and does
    not depend on the order of the languages (zh-CN and zh-TW, which tie everywhere, are
    kept or dropped together). Rows with at most ``k`` entries are kept whole.

    Raises:
        ConfigError: ``k`` < 1.
    """
    if k < 1:
        raise ConfigError(f"top-k must be at least 1, got {k}")
    result = np.array(matrix, dtype=np.float64)
    if not keep_diagonal:
        np.fill_diagonal(result, 0.0)
    if result.shape[1] <= k:
        return result
    kth_largest = np.partition(result, -k, axis=1)[:, -k]
    result[result < kth_largest[:, None]] = 0.0
    return result


def sinkhorn(matrix: np.ndarray, iterations: int) -> np.ndarray:
    """Alternately normalise rows then columns to sum 1, ``iterations`` times each.

    Each iteration divides every row by its sum and then every column by its sum, so after
    the last step columns sum to 1 and rows approximately so. A row or column that is all
    zero stays zero. ``iterations == 0`` returns a copy.

    Raises:
        ConfigError: ``iterations`` < 0, or a negative or non-finite entry.
    """
    if iterations < 0:
        raise ConfigError(f"Sinkhorn iterations must be 0 or more, got {iterations}")
    result = np.array(matrix, dtype=np.float64)
    if not np.all(np.isfinite(result)) or np.any(result < 0):
        bad = result[~np.isfinite(result) | (result < 0)][0]
        raise ConfigError(f"Sinkhorn needs a finite non-negative matrix, found entry {bad}")
    for _ in range(iterations):
        for axis in (1, 0):
            sums = result.sum(axis=axis, keepdims=True)
            result = np.divide(result, sums, out=np.zeros_like(result), where=sums > 0)
    return result


@dataclass
class SimilarityMatrix:
    """A square language similarity matrix keyed by canonical locales.

    Attributes:
        locales: canonical ``Language.locale`` keys, one per row and column.
        values: ``(N, N)`` similarities in [0, 1].
    """

    locales: list[str]
    values: np.ndarray

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        size = len(self.locales)
        if self.values.shape != (size, size):
            raise ConfigError(
                f"similarity values have shape {self.values.shape}, expected ({size}, {size}) "
                "for the locales given"
            )
        if len(set(self.locales)) != size:
            twice = sorted({code for code in self.locales if self.locales.count(code) > 1})
            raise ConfigError(f"similarity matrix lists {', '.join(twice)} more than once")

    def index(self, locale: str) -> int:
        """Return the row of the language ``locale`` names (any accepted spelling).

        Raises:
            LanguageError: an unknown code, or a language the matrix does not have.
        """
        canonical = resolve_language(locale).locale
        try:
            return self.locales.index(canonical)
        except ValueError:
            raise LanguageError(
                f"language {locale!r} is not in the similarity matrix; it has: "
                f"{', '.join(self.locales)}"
            ) from None

    def row(self, locale: str) -> np.ndarray:
        """Return a copy of the row of ``locale``."""
        return self.values[self.index(locale)].copy()

    def to_csv(self, path: str | os.PathLike[str], *, replace: bool = True) -> None:
        """Write the matrix atomically (:func:`merginguriel_core.outputs.atomic_file`); with
        ``replace=False`` a file that exists at that moment is kept.

        Layout: a header row (an empty corner cell, then the locales) and one row per
        locale (the locale, then its values written with ``repr`` so they read back exactly).
        """
        from merginguriel_core.outputs import atomic_file

        with atomic_file(Path(path), "w", replace=replace) as handle:
            writer = csv.writer(handle)
            writer.writerow(["", *self.locales])
            for locale, values in zip(self.locales, self.values, strict=True):
                writer.writerow([locale, *(repr(float(value)) for value in values)])

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> SimilarityMatrix:
        """Read a matrix written by :meth:`to_csv` (or by pandas ``DataFrame.to_csv``).

        Codes may be any accepted spelling and are normalised to canonical locales.

        Raises:
            ConfigError: a missing or malformed file: not square, rows and columns naming
                different codes, a code listed twice, a value that is not a number in [0, 1].
            LanguageError: an unknown language code.
        """
        rows = _read_rows(Path(path))
        header = rows[0][1:]
        body = rows[1:]
        columns = [_canonical(code, path) for code in header]
        if len(body) != len(columns):
            raise ConfigError(
                f"similarity matrix {str(path)!r} has {len(columns)} columns but "
                f"{len(body)} rows; it must be square"
            )
        values = np.empty((len(columns), len(columns)))
        for i, cells in enumerate(body):
            if len(cells) != len(columns) + 1:
                raise ConfigError(
                    f"similarity matrix {str(path)!r}: line {i + 2} has {len(cells)} cells, "
                    f"expected {len(columns) + 1}"
                )
            if _canonical(cells[0], path) != columns[i]:
                raise ConfigError(
                    f"similarity matrix {str(path)!r}: row {i + 1} is {cells[0]!r} but column "
                    f"{i + 1} is {header[i]!r}; rows and columns must list the same codes in "
                    "the same order"
                )
            for j, cell in enumerate(cells[1:]):
                values[i, j] = _parse_value(cell, path, cells[0], header[j])
        if len(set(columns)) != len(columns):
            twice = sorted({code for code in columns if columns.count(code) > 1})
            raise ConfigError(
                f"similarity matrix {str(path)!r} lists {', '.join(twice)} more than once"
            )
        return cls(locales=columns, values=values)


def _read_rows(path: Path) -> list[list[str]]:
    """Return the CSV rows of ``path``, or raise ConfigError naming the file."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except OSError as error:
        raise ConfigError(
            f"cannot read similarity matrix {str(path)!r}: {error.strerror}"
        ) from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(
            f"similarity matrix {str(path)!r} is not a CSV text file: {error}"
        ) from None
    if not rows or len(rows[0]) < 2:
        raise ConfigError(f"similarity matrix {str(path)!r} has no header row of language codes")
    return rows


def _canonical(code: str, path: str | os.PathLike[str]) -> str:
    """Return the canonical locale of ``code``, or raise LanguageError naming the file."""
    try:
        return resolve_language(code).locale
    except LanguageError as error:
        raise LanguageError(f"similarity matrix {str(path)!r}: {error}") from None


def _parse_value(cell: str, path: str | os.PathLike[str], row: str, column: str) -> float:
    """Return ``cell`` as a float in [0, 1], or raise ConfigError naming file and cell."""
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(
            f"similarity matrix {str(path)!r}: value {cell!r} at row {row!r}, column "
            f"{column!r} is not a number in [0, 1]"
        )
    return value


def uriel_similarity_matrix(
    locales: Sequence[str], features: str = DEFAULT_FEATURES
) -> SimilarityMatrix:
    """Return the raw similarity ``(cosine + 1) / 2`` of the URIEL vectors of ``locales``.

    Codes may be any accepted spelling; the matrix is keyed by canonical locales in the
    order given. Two locales with the same URIEL vector (zh-CN, zh-TW) have similarity 1.

    Raises:
        LanguageError: an unknown code. ConfigError: a language given twice, a bad feature spec.
    """
    languages = [resolve_language(code) for code in locales]
    vectors = uriel_vectors(languages, features)
    similarity = np.clip((cosine_similarity_matrix(vectors) + 1.0) / 2.0, 0.0, 1.0)
    return SimilarityMatrix(locales=[language.locale for language in languages], values=similarity)


@dataclass
class WeightTrace:
    """How :func:`uriel_weights` got the weights for one target, for ``--explain``.

    Attributes:
        locales: the matrix's locales; the arrays below are the target's row, in this order.
        raw: the raw similarities.
        after_top_k: after top-k per row.
        after_sinkhorn: after Sinkhorn over the whole matrix.
        selected: the final (locale, weight) pairs, by weight descending, summing to 1.
        target: the target's canonical locale.
        notes: remarks, e.g. fewer sources than asked for, sources not in the matrix.
    """

    locales: list[str]
    raw: np.ndarray
    after_top_k: np.ndarray
    after_sinkhorn: np.ndarray
    selected: list[tuple[str, float]]
    target: str = ""
    notes: list[str] = field(default_factory=list)


def uriel_weights(
    matrix: SimilarityMatrix,
    target: str,
    available: Iterable[str],
    *,
    top_k: int = 20,
    sinkhorn_iters: int = 20,
    num_languages: int = 5,
    include_target: bool = False,
) -> WeightTrace:
    """Return the seed's URIEL weights of the ``available`` sources for ``target``.

    Top-k per row on the whole matrix (diagonal excluded unless ``include_target``),
    Sinkhorn over the whole matrix, then the target's row, restricted to ``available``
    (and without the target itself unless ``include_target``), its ``num_languages``
    largest nonzero entries renormalised to sum 1. Ties in weight go to the earlier row.
    The target is excluded by locale only: a different locale with the same URIEL vector
    (zh-CN for zh-TW) stays a candidate. Available codes that the matrix lacks are skipped
    with a note; fewer candidates than ``num_languages`` are all used, with a note.

    Raises:
        ConfigError: ``num_languages`` < 1, bad ``top_k`` / ``sinkhorn_iters``, or no
            available source with a nonzero weight.
        LanguageError: an unknown code, or a target that is not in the matrix.
    """
    if num_languages < 1:
        raise ConfigError(f"the number of source languages must be at least 1, got {num_languages}")
    row = matrix.index(target)
    target_locale = matrix.locales[row]
    after_top_k = top_k_per_row(matrix.values, top_k, keep_diagonal=include_target)
    after_sinkhorn = sinkhorn(after_top_k, sinkhorn_iters)
    weights = after_sinkhorn[row]

    notes: list[str] = []
    given = sorted({resolve_language(code).locale for code in available})
    for locale in given:
        if locale not in matrix.locales:
            notes.append(f"source {locale} is not in the similarity matrix; skipped")
    wanted = {locale for locale in given if include_target or locale != target_locale}
    candidates = [
        j for j, locale in enumerate(matrix.locales) if locale in wanted and weights[j] > 0
    ]
    if not candidates:
        listed = ", ".join(given) or "none"
        raise ConfigError(
            f"no available source language has a nonzero URIEL weight for {target_locale} "
            f"(top-k {top_k}); available: {listed}"
        )
    chosen = sorted(candidates, key=lambda j: (-weights[j], j))[:num_languages]
    if len(chosen) < num_languages:
        notes.append(
            f"only {len(chosen)} of the {num_languages} requested source languages have a "
            "nonzero weight; using those"
        )
    total = float(sum(weights[j] for j in chosen))
    selected = [(matrix.locales[j], float(weights[j]) / total) for j in chosen]
    return WeightTrace(
        locales=list(matrix.locales),
        raw=matrix.values[row].copy(),
        after_top_k=after_top_k[row].copy(),
        after_sinkhorn=weights.copy(),
        selected=selected,
        target=target_locale,
        notes=notes,
    )
