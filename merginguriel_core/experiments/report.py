"""``mu report RESULTS``: an experiment's cells beside their baselines, paired statistics, plots.

:func:`write_report` reads a results folder (:mod:`.results`), finished or still running,
and writes into ``RESULTS/report`` (or ``output``):

- ``report.csv``: one row per target × method (``merge-linear@uriel``; the draws of a
  random selection as one row, their mean, spread and count), the metric, and per
  comparison its value and the row's gain over it. The comparisons: the baseline cells
  (``own``, ``english``, ``closest``, ``oracle``), ``best_source`` (the best N×N result on
  the target among the row's own sources), the same method under the ``average`` and
  the ``random`` selection, and, for a selection that reads the target text, under ``uriel``
  and ``softmax``;
- ``summary.csv``: per method and comparison, a paired test across targets: the mean gain
  with a paired bootstrap 95% interval (targets resampled with replacement), wins, ties and
  losses, and a two-sided Wilcoxon signed-rank test;
- ``report.json``: the rows, the summary, the headline questions, the missing, failed,
  skipped and damaged cells;
- ``report.md``: all of it in words, with the plots (PNG, beside it): the URIEL similarity
  of the languages involved, the N×N matrix, each target's methods against its baselines,
  and the gain over English against the sources' similarity to the target.

A target where a method (or its comparison) has no result is left out of that comparison,
and the count of those left out is given. Nothing is replaced without ``overwrite``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from merginguriel_core.errors import ConfigError, MergingUrielError, first_line
from merginguriel_core.experiments.grid import Cell
from merginguriel_core.experiments.results import EXPERIMENT_FILE, iter_cells, read_experiment
from merginguriel_core.experiments.spec import BASELINES
from merginguriel_core.outputs import OutputLock, check_results_folder, write_json_atomically, write_text_atomically

if TYPE_CHECKING:
    import numpy as np

    from merginguriel_core.similarity import SimilarityMatrix
else:
    from merginguriel_core.lazy import numpy as np

CSV_FILE, SUMMARY_FILE, JSON_FILE, MARKDOWN_FILE = "report.csv", "summary.csv", "report.json", "report.md"
#: The charts, by what they show.
PLOT_FILES = {"similarity": "similarity.png", "nxn": "nxn.png", "targets": "targets.png",
              "gain": "gain_vs_similarity.png"}
#: Every file a report writes: an existing one is replaced only with ``overwrite``.
REPORT_FILES = (CSV_FILE, SUMMARY_FILE, JSON_FILE, MARKDOWN_FILE, *PLOT_FILES.values())
#: What each method is compared with: the baseline cells, then the references the grid itself holds.
COMPARISONS = (*BASELINES, "best_source", "average", "random", "one_shot", "uriel", "softmax")
#: The comparisons with the same method under another selection of the spec (named by the weighting).
SELECTION_REFERENCES = ("average", "random", "uriel", "softmax")
#: The comparisons that are one model (the row names which).
MODEL_COMPARISONS = (*BASELINES, "best_source")
#: Weightings that weight sources by URIEL similarity (for the headline questions).
URIEL_WEIGHTINGS = ("uriel", "softmax", "proportional", "local_sinkhorn")
#: Two results closer than this are a tie.
TIE = 1e-9
#: The significance level the report's words use.
ALPHA = 0.05
#: The fewest bootstrap resamples that give a 95% interval worth reading.
MIN_BOOTSTRAP = 100
#: Cells listed by name in the Markdown per list (all of them are in the JSON).
LISTED = 200

_WORDS = {"own": "the target's own model", "english": "the English model", "closest": "the closest language's model",
          "oracle": "the oracle model", "best_source": "the best of its own sources",
          "one_shot": "a one-shot merge of the same sources"}


# ------------------------------------------------------------------------ the results
def parse_cell_key(key: str) -> Cell:
    """The :class:`~merginguriel_core.experiments.grid.Cell` of ``TARGET/CELL_ID``
    (``sw-KE/merge-linear@random#1``, ``sw-KE/nxn-de-DE``)."""
    target, _, cell_id = key.partition("/")
    kind, _, rest = cell_id.partition("-")
    if kind in ("nxn", "baseline") and target and rest:
        return Cell(target, kind, rest)
    label, _, chosen = rest.rpartition("@")
    selection, _, draw = chosen.partition("#")
    if kind not in ("merge", "vote", "iterative") or not (target and label and selection) or not (draw == "" or draw.isdigit()):
        raise ConfigError(f"{EXPERIMENT_FILE} lists the cell {key!r}, which is not TARGET/nxn-MODEL, "
                          "TARGET/baseline-NAME or TARGET/KIND-LABEL@SELECTION[#DRAW]")
    return Cell(target, kind, label, selection, int(draw) if draw else None)


def method_name(cell: Cell) -> str:
    """A merge's or vote's method as the report names it: ``merge-linear@uriel``."""
    return f"{cell.kind}-{cell.method}@{cell.selection}"


@dataclass
class _Results:
    """What a results folder holds: its ``experiment.json``, the records of the grid's cells
    by key, every key the grid expects (in grid order), its targets, the damaged files."""

    experiment: dict[str, Any]
    records: dict[str, dict[str, Any]]
    expected: list[str]
    targets: list[str]
    damaged: list[dict[str, str]]
    notes: list[str]

    @property
    def spec(self) -> dict[str, Any]:
        return self.experiment.get("spec") or {}


def _load(results: Path) -> _Results:
    if not results.is_dir():
        raise ConfigError(f"{results} is not a folder; give an experiment's results folder (mu experiment run --output)")
    experiment = read_experiment(results)
    if experiment is None and not (results / "cells").is_dir():
        raise ConfigError(f"{results} holds no {EXPERIMENT_FILE} and no cells/: not an experiment's results folder")
    notes = []
    if experiment is None:
        notes.append(f"{results} has no {EXPERIMENT_FILE}: the missing cells cannot be listed")
    elif not experiment:
        notes.append(f"{results / EXPERIMENT_FILE} is damaged (rerun the experiment to rewrite it): the missing cells "
                     "cannot be listed")
    experiment = experiment or {}
    records, damaged = {}, []
    for path, record, why in iter_cells(results):
        if why:
            damaged.append({"file": str(path), "why": why})
        elif record is not None:
            records[record["cell"]] = record
    expected = list(experiment.get("cells") or [])
    if expected:
        stray = sorted(set(records) - set(expected))
        if stray:
            notes.append(f"{len(stray)} cell files are not in the grid (left from an earlier spec) and are left out, "
                         f"e.g. {stray[0]}")
        records = {key: records[key] for key in expected if key in records}
    else:
        expected = sorted(records)
    targets = list(experiment.get("targets") or sorted({parse_cell_key(key).target for key in expected}))
    return _Results(experiment, records, expected, targets, damaged, notes)


def _metric_value(record: Mapping[str, Any] | None, metric: str) -> float | None:
    if record is None or record.get("status") != "done":
        return None
    value = (record.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _check_metric(found: _Results, metric: str) -> None:
    names = sorted({name for record in found.records.values() if record.get("status") == "done"
                    for name in record.get("metrics") or {}})
    if names and metric not in names:
        raise ConfigError(f"--metric {metric!r} is not in the results; the cells have: {', '.join(names)}")


def reference_selections(spec: Mapping[str, Any]) -> dict[str, str]:
    """The selection names of the ``average``, ``random``, ``uriel`` and ``softmax`` references:
    the spec's selections with those weightings (one named after its weighting first; ``sources:
    all`` is not one)."""
    selections = [s for s in spec.get("selections") or () if s.get("sources") != "all"]
    if not selections:  # no spec to read: the selections go by their default names
        return {"average": "average", "random": "random"}
    found = {}
    for weighting in SELECTION_REFERENCES:
        named = sorted((s for s in selections if s.get("weighting") == weighting), key=lambda s: s["name"] != weighting)
        if named:
            found[weighting] = named[0]["name"]
    return found


def target_text_selections(spec: Mapping[str, Any]) -> set[str]:
    """The selection names whose weighting reads the spec's unlabelled target text: each is
    compared with the same method under the ``uriel`` and ``softmax`` selections."""
    if not spec.get("target_text"):
        return set()
    from merginguriel_core.errors import MergingUrielError
    from merginguriel_core.plugins import get_registry

    names = set()
    for selection in spec.get("selections") or ():
        try:
            if get_registry().get("weighting", selection.get("weighting")).needs_target_text:
                names.add(selection["name"])
        except MergingUrielError:
            continue
    return names


def uriel_selections(spec: Mapping[str, Any]) -> set[str]:
    """The selection names whose weights come from URIEL similarity (:data:`URIEL_WEIGHTINGS`)."""
    selections = spec.get("selections")
    if not selections:
        return set(URIEL_WEIGHTINGS)
    return {s["name"] for s in selections if s.get("weighting") in URIEL_WEIGHTINGS and s.get("sources") != "all"}


# ------------------------------------------------------------------------- similarity
def _similarity(spec: Mapping[str, Any], locales: Iterable[str]) -> tuple[SimilarityMatrix | None, str, str | None]:
    """``(matrix, what it is, why there is none)``: URIEL similarity with the spec's features
    (default syntax_knn), or the spec's similarity matrix file."""
    from merginguriel_core.interfaces import WeightingRequest
    from merginguriel_core.selection import similarity_matrix_for

    options = spec.get("selection") or {}
    features = options.get("features") or "syntax_knn"
    matrix_file = options.get("similarity_matrix")
    what = f"similarity from {Path(matrix_file).name}" if matrix_file else f"URIEL similarity ({features})"
    try:
        matrix = similarity_matrix_for(WeightingRequest(target=None, available=tuple(sorted(set(locales))),
                                                        features=features,
                                                        similarity_matrix=Path(matrix_file) if matrix_file else None))
    except MergingUrielError as exc:
        return None, what, f"no {what} ({first_line(exc)}): the similarity heatmap and the gain plot are left out"
    return matrix, what, None


def _pair_similarity(matrix: SimilarityMatrix | None, first: str, second: str) -> float | None:
    if matrix is None or first not in matrix.locales or second not in matrix.locales:
        return None
    return float(matrix.values[matrix.locales.index(first), matrix.locales.index(second)])


def weighted_similarity(matrix: SimilarityMatrix | None, target: str, sources: Sequence[Sequence[Any]]) -> float | None:
    """Σ wᵢ · similarity(target, sourceᵢ) / Σ wᵢ; None where the matrix lacks one of them."""
    pairs = [(_pair_similarity(matrix, target, str(locale)), float(weight)) for locale, weight in sources]
    total = math.fsum(weight for _, weight in pairs)
    if not pairs or total <= 0 or any(value is None for value, _ in pairs):
        return None
    return math.fsum(value * weight for value, weight in pairs) / total


# ------------------------------------------------------------------------------- rows
def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _rows(found: _Results, metric: str, matrix: SimilarityMatrix | None
          ) -> tuple[list[dict[str, Any]], dict[str, set[str]]]:
    """One row per target × method, and per method the comparisons the grid plans for it."""
    nxn, baselines = _zero_shot(found, metric), _baselines(found, metric)
    groups: dict[tuple[str, str], list[tuple[Cell, dict[str, Any] | None]]] = {}
    for key in found.expected:
        cell = parse_cell_key(key)
        if cell.kind in ("merge", "vote", "iterative"):
            groups.setdefault((cell.target, method_name(cell)), []).append((cell, found.records.get(key)))
    planned_cells = set(found.expected)
    with_nxn = {parse_cell_key(key).target for key in found.expected if "/nxn-" in key}
    references = reference_selections(found.spec)
    reads_text = target_text_selections(found.spec)
    rows, planned = [], {}
    for (target, name), entries in groups.items():
        cell = entries[0][0]
        done = [(c, r) for c, r in entries if _metric_value(r, metric) is not None]
        statuses = {r.get("status") for _, r in entries if r is not None}
        values = [_metric_value(r, metric) for _, r in done]
        best = [_best_source(nxn.get(target, {}), r.get("sources") or ()) for _, r in done]
        similarity = [weighted_similarity(matrix, target, r.get("sources") or ()) for _, r in done]
        random_draws = cell.draw is not None
        row = {
            "target": target, "method": name, "kind": cell.kind, "label": cell.method, "selection": cell.selection,
            "status": "done" if done else "failed" if "failed" in statuses else "skipped" if "skipped" in statuses
            else "missing",
            metric: _mean(values),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "draws": len(done) if random_draws else None,
            "sources": " | ".join(" ".join(f"{locale}:{float(weight):.3f}" for locale, weight in r.get("sources") or ())
                                  for _, r in done) or None,
            "source_similarity": _mean(similarity) if done and None not in similarity else None,
        }
        for baseline in BASELINES:
            value, model = baselines.get(target, {}).get(baseline, (None, None))
            row |= {baseline: value, f"{baseline}_model": model}
        complete = done and None not in best
        row |= {"best_source": _mean([b[0] for b in best]) if complete else None,
                "best_source_model": " | ".join(b[1] for b in best) if complete else None}
        wanted = {b for b in BASELINES if f"{target}/baseline-{b}" in planned_cells}
        if target in with_nxn:
            wanted.add("best_source")
        for reference in SELECTION_REFERENCES:
            selection = references.get(reference)
            other = (target, f"{cell.kind}-{cell.method}@{selection}")
            value = None
            applies = reference in ("average", "random") or cell.selection in reads_text
            if applies and selection is not None and selection != cell.selection and other in groups:
                wanted.add(reference)
                value = _mean([v for v in (_metric_value(r, metric) for _, r in groups[other]) if v is not None])
            row[reference] = value
        row["one_shot"] = None
        if cell.kind == "iterative":  # the merge of separately fine-tuned models, same sources
            compared = next((r["compare_with"] for _, r in entries if r and r.get("compare_with")),
                            f"merge-{cell.method}@{cell.selection}")
            if (target, compared) in groups:
                wanted.add("one_shot")
                row["one_shot"] = _mean([v for v in (_metric_value(r, metric) for _, r in groups[(target, compared)])
                                         if v is not None])
        for comparison in COMPARISONS:
            row[f"gain_vs_{comparison}"] = (row[metric] - row[comparison]
                                            if row[metric] is not None and row[comparison] is not None else None)
        planned.setdefault(name, set()).update(wanted)
        rows.append({key: row[key] for key in columns(metric)})
    order = {target: i for i, target in enumerate(found.targets)}
    rows.sort(key=lambda row: order.get(row["target"], len(order)))  # stable: methods stay in grid order
    return rows, planned


def _zero_shot(found: _Results, metric: str) -> dict[str, dict[str, float]]:
    """The N×N results: target -> model -> value (the cells that have one)."""
    values: dict[str, dict[str, float]] = {}
    for key, record in found.records.items():
        cell, value = parse_cell_key(key), _metric_value(record, metric)
        if cell.kind == "nxn" and value is not None:
            values.setdefault(cell.target, {})[cell.method] = value
    return values


def _baselines(found: _Results, metric: str) -> dict[str, dict[str, tuple[float, str | None]]]:
    """The baseline cells' results: target -> baseline -> (value, the model it is)."""
    values: dict[str, dict[str, tuple[float, str | None]]] = {}
    for key, record in found.records.items():
        cell, value = parse_cell_key(key), _metric_value(record, metric)
        if cell.kind == "baseline" and value is not None:
            values.setdefault(cell.target, {})[cell.method] = (value, record.get("model"))
    return values


def _best_source(zero_shot: Mapping[str, float], sources: Sequence[Sequence[Any]]) -> tuple[float, str] | None:
    """The best N×N result among ``sources`` on the target; None unless every source has one."""
    locales = [str(locale) for locale, _ in sources]
    if not locales or any(locale not in zero_shot for locale in locales):
        return None
    value, model = max((zero_shot[locale], locale) for locale in locales)
    return value, model


# ------------------------------------------------------------------------- statistics
def paired_comparison(differences: Iterable[float], *, bootstrap: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Paired statistics of per-target differences (method − comparison).

    ``mean_gain``; ``ci_low``/``ci_high``: the 2.5th and 97.5th percentiles of the means of
    ``bootstrap`` resamples of the targets with replacement (``numpy.random.default_rng(seed)``;
    NaN below 2 targets); ``wins``/``ties``/``losses`` (a tie: |difference| < :data:`TIE`);
    ``statistic``/``p``: ``scipy.stats.wilcoxon``, two-sided, ties dropped (NaN, with a
    ``note``, below 2 targets or when every target ties); ``significant``: p < :data:`ALPHA`.
    """
    d = np.asarray(list(differences), dtype=np.float64)
    n = len(d)
    ties = np.abs(d) < TIE
    result = {"n": n, "mean_gain": float(d.mean()) if n else math.nan, "ci_low": math.nan, "ci_high": math.nan,
              "wins": int((~ties & (d > 0)).sum()), "ties": int(ties.sum()), "losses": int((~ties & (d < 0)).sum()),
              "statistic": math.nan, "p": math.nan, "significant": None, "direction": None, "note": None}
    if n < 2:
        result["note"] = "no target has both results" if n == 0 else "only 1 target has both results: no interval, no test"
        return result
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)  # resamples drawn at once: memory stays bounded for large --bootstrap
    means = np.concatenate([d[rng.integers(0, n, size=(min(chunk, bootstrap - start), n))].mean(axis=1)
                            for start in range(0, bootstrap, chunk)])
    low, high = np.percentile(means, [2.5, 97.5])
    result |= {"ci_low": float(low), "ci_high": float(high)}
    if ties.all():
        result["note"] = f"all {n} targets tie: no test"
        return result
    from scipy.stats import wilcoxon

    # equal differences must rank as ties: rounding removes the last bits of float noise
    cleaned = np.where(ties, 0.0, np.round(d, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        test = wilcoxon(cleaned, alternative="two-sided")
    result |= {"statistic": float(test.statistic), "p": float(test.pvalue), "significant": bool(test.pvalue < ALPHA),
               "direction": _direction(cleaned)}
    if ties.any():
        result["note"] = f"{int(ties.sum())} tied targets left out of the Wilcoxon test"
    return result


def _direction(differences: np.ndarray) -> str:
    """Which way the Wilcoxon test points: ``better`` when the positive differences carry the
    larger rank sum, ``worse`` when the negative ones do; ``unclear`` when the mean gain points
    the other way (a few large gains against many small losses)."""
    from scipy.stats import rankdata

    kept = differences[differences != 0]
    ranks = rankdata(np.abs(kept))
    plus, minus = ranks[kept > 0].sum(), ranks[kept < 0].sum()
    if plus == minus:
        return "unclear"
    by_ranks = "better" if plus > minus else "worse"
    by_mean = "better" if differences.mean() > 0 else "worse"
    return by_ranks if by_ranks == by_mean else "unclear"


def _summary(rows: list[dict[str, Any]], planned: Mapping[str, set[str]], references: Mapping[str, str],
             metric: str, bootstrap: int, seed: int) -> list[dict[str, Any]]:
    """Per method: its targets, mean and median, and a :func:`paired_comparison` per planned comparison."""
    summary = []
    for name in dict.fromkeys(row["method"] for row in rows):
        chosen = [row for row in rows if row["method"] == name]
        values = [row[metric] for row in chosen if row[metric] is not None]
        first = chosen[0]
        entry = {"method": name, "kind": first["kind"], "label": first["label"], "selection": first["selection"],
                 "targets": len(values), "planned": len(chosen), "mean": _mean(values),
                 "median": float(np.median(values)) if values else None, "comparisons": {}}
        for comparison in COMPARISONS:
            if comparison not in planned.get(name, ()):
                continue
            gains = [row[f"gain_vs_{comparison}"] for row in chosen if row[f"gain_vs_{comparison}"] is not None]
            result = paired_comparison(gains, bootstrap=bootstrap, seed=seed)
            against = _WORDS.get(comparison) or f"{first['kind']}-{first['label']}@{references[comparison]}"
            entry["comparisons"][comparison] = {"against": against, **result, "left_out": len(chosen) - result["n"]}
        summary.append(entry)
    return summary


def _p_value(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"{p:.3g}"


def _p(p: float) -> str:
    return f"p {_p_value(p)}" if p < 1e-4 else f"p = {_p_value(p)}"


def sentence(method: str, comparison: Mapping[str, Any]) -> str:
    """One comparison of ``method`` in words, e.g. ``merge-linear@softmax beats the English model
    on 31 of 40 targets (2 ties, 7 losses), mean gain +0.042 [+0.021, +0.063], Wilcoxon p = 0.003:
    significant at 0.05 (better)``."""
    c, against = comparison, comparison["against"]
    if c["n"] == 0:
        text = f"{method} vs {against}: no target has both results"
    else:
        text = (f"{method} beats {against} on {c['wins']} of {c['n']} targets ({_count(c['ties'], 'tie', 'ties')}, "
                f"{_count(c['losses'], 'loss', 'losses')}), mean gain {c['mean_gain']:+.3f}")
        if not math.isnan(c["ci_low"]):
            text += f" [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        if c["significant"] is None:
            text += f"; no Wilcoxon test ({c['note']})"
        elif c["significant"]:
            way = {"better": "better", "worse": "worse"}.get(c["direction"],
                                                            "direction unclear: the ranks and the mean gain disagree")
            text += f", Wilcoxon {_p(c['p'])}: significant at {ALPHA} ({way})"
        else:
            text += f", Wilcoxon {_p(c['p'])}: not significant at {ALPHA}"
    if c["left_out"]:
        text += f"; {_count(c['left_out'], 'target', 'targets')} left out: no result there for the method or {against}"
    return text


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def headlines(summary: list[dict[str, Any]], references: Mapping[str, str], uriel: set[str]) -> list[dict[str, Any]]:
    """The questions the grid can answer, each with its comparisons in words: does URIEL's choice
    beat a random one, do URIEL's weights beat equal ones, does merging (voting) beat English."""
    asked = [
        ("Does URIEL's choice of sources beat a random choice?", "random",
         lambda e: e["selection"] in uriel or e["selection"] == references.get("average")),
        ("Do URIEL's weights beat equal weights on the same sources?", "average", lambda e: e["selection"] in uriel),
        ("Does merging beat the English model?", "english", lambda e: e["kind"] == "merge"),
        ("Does voting beat the English model?", "english", lambda e: e["kind"] == "vote"),
        ("Does iterative training beat a one-shot merge of the same sources?", "one_shot",
         lambda e: e["kind"] == "iterative"),
        ("Does a method that reads target text beat the same method under uriel?", "uriel", lambda e: True),
        ("Does a method that reads target text beat the same method under softmax?", "softmax", lambda e: True),
    ]
    questions = []
    for question, comparison, wanted in asked:
        answers = [(e["method"], e["comparisons"][comparison]) for e in summary
                   if wanted(e) and comparison in e["comparisons"] and e["comparisons"][comparison]["n"] > 0]
        if not answers:
            continue
        better = sum(1 for _, c in answers if c["significant"] and c["direction"] == "better")
        worse = sum(1 for _, c in answers if c["significant"] and c["direction"] == "worse")
        unclear = sum(1 for _, c in answers if c["significant"] and c["direction"] == "unclear")
        verdict = (f"significantly better in {better} of {len(answers)} comparisons, significantly worse in {worse}"
                   + (f", significant with an unclear direction in {unclear}" if unclear else "")
                   + f", not significant (or not tested) in {len(answers) - better - worse - unclear}")
        questions.append({"question": question, "verdict": verdict,
                          "answers": [{"method": m, "against": c["against"], "sentence": sentence(m, c)}
                                      for m, c in answers]})
    return questions


# ----------------------------------------------------------------------------- report
@dataclass
class Report:
    """What :func:`write_report` found and wrote. ``rows``: one per target × method (the
    columns of ``report.csv``); ``summary``: per method, its statistics and comparisons
    (``summary[i]["comparisons"]["english"]`` is a :func:`paired_comparison` with ``against``
    and ``left_out``); ``cells``: counts of planned, done, failed, skipped, missing, damaged."""

    results: Path
    output: Path
    name: str
    digest: str | None
    metric: str
    bootstrap: int
    seed: int
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    headlines: list[dict[str, Any]]
    cells: dict[str, int]
    missing: list[str]
    failed: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    damaged: list[dict[str, str]]
    plots: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def comparison(self, method: str, against: str) -> dict[str, Any]:
        """The comparison of ``method`` with ``against`` (a key of :data:`COMPARISONS`)."""
        for entry in self.summary:
            if entry["method"] == method and against in entry["comparisons"]:
                return entry["comparisons"][against]
        raise KeyError(f"{method} vs {against}")

    def line(self) -> str:
        methods = len({row["method"] for row in self.rows})
        return (f"{methods} methods on {len({row['target'] for row in self.rows})} targets; cells: {self.cells['done']} "
                f"done, {self.cells['failed']} failed, {self.cells['skipped']} skipped, {self.cells['missing']} missing "
                f"-> {self.output / MARKDOWN_FILE}")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (NaN as null)."""
        return _plain({"format": 1, "results": str(self.results), "name": self.name, "digest": self.digest,
                       "metric": self.metric, "alpha": ALPHA, "bootstrap": self.bootstrap, "seed": self.seed,
                       "cells": self.cells, "headlines": self.headlines, "summary": self.summary, "rows": self.rows,
                       "missing": self.missing, "failed": self.failed, "skipped": self.skipped,
                       "damaged": self.damaged, "plots": self.plots, "notes": self.notes})


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def columns(metric: str) -> list[str]:
    """The columns of ``report.csv`` (and the keys of a report row), in order."""
    names = ["target", "method", "kind", "label", "selection", "status", metric, "std", "draws", "sources",
             "source_similarity"]
    for comparison in COMPARISONS:
        names += [comparison, *([f"{comparison}_model"] if comparison in MODEL_COMPARISONS else []),
                  f"gain_vs_{comparison}"]
    return names


def write_report(results: str | Path, output: str | Path | None = None, *, metric: str = "accuracy",
                 bootstrap: int = 10000, seed: int = 0, overwrite: bool = False) -> Report:
    """Report on the experiment in ``results`` into ``output`` (default ``RESULTS/report``); see
    the module docstring. Existing report files are refused unless ``overwrite`` (then a
    report file this run does not write, e.g. a plot it has no data for, is removed)."""
    results = Path(results)
    output = Path(output) if output is not None else results / "report"
    if not isinstance(bootstrap, int) or isinstance(bootstrap, bool) or bootstrap < MIN_BOOTSTRAP:
        raise ConfigError(f"--bootstrap must be a whole number of resamples >= {MIN_BOOTSTRAP}, got {bootstrap!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"--seed must be a whole number >= 0, got {seed!r}")
    check_results_folder(output, REPORT_FILES, overwrite)
    found = _load(results)
    _check_metric(found, metric)
    matrix, what, why = _similarity(found.spec, _involved(found))
    rows, planned = _rows(found, metric, matrix)
    references = reference_selections(found.spec)
    summary = _summary(rows, planned, references, metric, bootstrap, seed)
    missing = [key for key in found.expected if key not in found.records]
    failed = [{"cell": k, "error": r.get("error")} for k, r in found.records.items() if r.get("status") == "failed"]
    skipped = [{"cell": k, "reason": r.get("reason")} for k, r in found.records.items() if r.get("status") == "skipped"]
    done = sum(1 for r in found.records.values() if r.get("status") == "done")
    report = Report(results, output, found.experiment.get("name") or results.name, found.experiment.get("digest"),
                    metric, bootstrap, seed, rows, summary, headlines(summary, references, uriel_selections(found.spec)),
                    {"planned": len(found.expected), "done": done, "failed": len(failed), "skipped": len(skipped),
                     "missing": len(missing), "damaged": len(found.damaged)},
                    missing, failed, skipped, found.damaged, notes=found.notes + ([why] if why else []))
    with OutputLock(output):
        output.mkdir(exist_ok=True)
        _write_plots(report, found, matrix, what, replace=overwrite)
        _write_csv(rows, columns(metric), output / CSV_FILE, replace=overwrite)
        _write_csv(_summary_rows(summary), SUMMARY_COLUMNS, output / SUMMARY_FILE, replace=overwrite)
        write_json_atomically(output / JSON_FILE, report.to_json(), replace=overwrite)
        write_text_atomically(output / MARKDOWN_FILE, to_markdown(report), replace=overwrite)
        report.files = [output / name for name in (CSV_FILE, SUMMARY_FILE, JSON_FILE, MARKDOWN_FILE,
                                                   *report.plots.values())]
        for name in REPORT_FILES:  # only reached with overwrite: no stale chart beside a new report
            if output / name not in report.files and (output / name).exists():
                (output / name).unlink()
    return report


SUMMARY_COLUMNS = ["method", "kind", "label", "selection", "targets", "mean", "median", "comparison", "against", "n",
                   "left_out", "mean_gain", "ci_low", "ci_high", "wins", "ties", "losses", "statistic", "p",
                   "significant", "note"]


def _summary_rows(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``summary.csv``: one row per method and comparison (a method without any: one row)."""
    flat = []
    for entry in summary:
        head = {k: v for k, v in entry.items() if k != "comparisons"}
        flat += [{**head, "comparison": name, **result} for name, result in entry["comparisons"].items()] or [head]
    return flat


def _write_csv(rows: list[dict[str, Any]], names: list[str], path: Path, *, replace: bool) -> None:
    import pandas as pd

    frame = pd.DataFrame(_plain(rows), columns=names)
    write_text_atomically(path, frame.to_csv(index=False, float_format="%.6f"), replace=replace)


def _involved(found: _Results) -> list[str]:
    """The languages of the grid: its targets, its models and every source a cell used."""
    locales = set(found.targets) | set(found.experiment.get("models") or ())
    for key in found.expected:
        cell = parse_cell_key(key)
        if cell.kind == "nxn":
            locales.add(cell.method)
    for record in found.records.values():
        locales |= {str(locale) for locale, _ in record.get("sources") or ()}
    return sorted(locales)


def _zero_shot_frame(found: _Results, metric: str):
    """The N×N results: rows models, columns targets (NaN where a cell has no result)."""
    import pandas as pd

    values = _zero_shot(found, metric)
    frame = pd.DataFrame(values, dtype=float)
    frame = frame.reindex(index=sorted(frame.index), columns=[t for t in found.targets if t in values])
    frame.index.name, frame.columns.name = "model", "target"
    return frame


def _write_plots(report: Report, found: _Results, matrix: SimilarityMatrix | None, what: str, *, replace: bool) -> None:
    """The four charts (each where the results allow it; a note says why one is left out)."""
    import pandas as pd

    from merginguriel_core import plots

    output, metric, rows = report.output, report.metric, report.rows
    if matrix is not None:
        shown = [locale for locale in _involved(found) if locale in matrix.locales]
        index = [matrix.locales.index(locale) for locale in shown]
        frame = pd.DataFrame(matrix.values[np.ix_(index, index)], index=shown, columns=shown)
        plots.heatmap(frame, output / PLOT_FILES["similarity"], f"{what} of the {len(shown)} languages involved",
                      label="similarity", replace=replace)
        report.plots["similarity"] = PLOT_FILES["similarity"]
    zero_shot = _zero_shot_frame(found, metric)
    if zero_shot.size:
        plots.heatmap(zero_shot, output / PLOT_FILES["nxn"], f"N×N {metric}: each model (row) zero-shot on each target",
                      label=metric, replace=replace)
        report.plots["nxn"] = PLOT_FILES["nxn"]
    else:
        report.notes.append("no N×N cell has a result yet: the N×N heatmap is left out")
    series: dict[str, dict[str, float | None]] = {}
    for row in rows:
        series.setdefault(row["method"], {})[row["target"]] = row[metric]
    baselines = [b for b in BASELINES if any(row[b] is not None for row in rows)]
    for row in rows:
        for baseline in baselines:
            series.setdefault(baseline, {})[row["target"]] = row[baseline]
    targets = [t for t in found.targets if any(t in values for values in series.values())]
    frame = pd.DataFrame(series, index=targets, dtype=float).dropna(axis=1, how="all")
    if frame.notna().any().any():
        plots.dot_plot(frame, output / PLOT_FILES["targets"], f"{metric} per target: methods against the baselines",
                       xlabel=metric, reference=[b for b in baselines if b in frame], replace=replace)
        report.plots["targets"] = PLOT_FILES["targets"]
    else:
        report.notes.append("no merge or vote cell has a result yet: the per-target chart is left out")
    points = pd.DataFrame([{"x": row["source_similarity"], "y": row["gain_vs_english"], "method": row["method"]}
                           for row in rows if row["source_similarity"] is not None
                           and row["gain_vs_english"] is not None], columns=["x", "y", "method"])
    if len(points):
        plots.grouped_scatter(points, output / PLOT_FILES["gain"], f"Gain over the English model against the sources' "
                              f"{what}", x="x", y="y", group="method",
                              xlabel="similarity of the target to the cell's sources (weighted by the cell's weights)",
                              ylabel=f"{metric} minus the English model's", replace=replace)
        report.plots["gain"] = PLOT_FILES["gain"]
    elif matrix is not None:
        report.notes.append("no cell has both a result and an English baseline: the gain plot is left out")


# --------------------------------------------------------------------------- Markdown
def _number(value: float | None, digits: int = 4, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _listed(items: list[str]) -> list[str]:
    shown = [f"- {item}" for item in items[:LISTED]]
    if len(items) > LISTED:
        shown.append(f"- ... and {len(items) - LISTED} more (all of them are in {JSON_FILE})")
    return shown


_CAPTIONS = {
    "similarity": "Similarity of every language involved (targets, models and sources).",
    "nxn": "Each model (row) evaluated zero-shot on each target (column); grey: no result yet.",
    "targets": "Each target's result per method (dots) against its baselines (hollow markers).",
    "gain": "Gain over the English model against how similar the cell's sources are to the target "
            "(their similarities weighted by the cell's weights); one point per target, one colour per method.",
}


def to_markdown(report: Report) -> str:
    """``report.md``: headline questions, per-method statistics and their verdicts in words,
    the plots, every cell beside its baselines, and the missing and failed cells."""
    metric, cells = report.metric, report.cells
    lines = [f"# Report: {report.name}", "",
             f"Results `{report.results}` (spec digest `{report.digest}`), metric **{metric}**, "
             f"{len({r['target'] for r in report.rows})} targets, {len(report.summary)} methods. "
             f"Cells: {cells['planned']} planned, {cells['done']} done, {cells['failed']} failed, "
             f"{cells['skipped']} skipped, {cells['missing']} missing.", ""]
    if cells["missing"] or cells["failed"] or cells["damaged"]:
        lines += ["**The grid is incomplete**: the statistics use the finished cells only; see "
                  "[Missing and failed cells](#missing-and-failed-cells).", ""]
    lines += ["## Headline questions", ""]
    if not report.headlines:
        lines += ["The grid has no comparison that answers them yet (they need random or average selections, or an "
                  "English baseline, beside the methods).", ""]
    for question in report.headlines:
        lines += [f"### {question['question']}", "", question["verdict"].capitalize() + ".", ""]
        lines += [f"- {answer['sentence']}" for answer in question["answers"]] + [""]
    lines += ["## Methods", "", f"| method | targets | mean {metric} | median {metric} |", "|---|---|---|---|"]
    lines += [f"| {e['method']} | {e['targets']} of {e['planned']} | {_number(e['mean'])} | {_number(e['median'])} |"
              for e in report.summary]
    lines += ["", "## Comparisons", "",
              f"Each method against each comparison, paired by target over the targets where both have a result. A "
              f"gain is the method's {metric} minus the comparison's; the interval is a paired bootstrap 95% interval "
              f"of the mean gain ({report.bootstrap} resamples of the targets, seed {report.seed}); p is a two-sided "
              f"Wilcoxon signed-rank test across targets (ties left out). Significant means p < {ALPHA} for that one "
              f"comparison, with no correction for the many comparisons made here.", "",
              "| method | against | targets | mean gain | 95% interval | wins / ties / losses | Wilcoxon p | "
              f"at {ALPHA} | left out |", "|---|---|---|---|---|---|---|---|---|"]
    verdicts: dict[str, list[str]] = {"significant": [], "not significant": [], "not tested": []}
    for entry in report.summary:
        for c in entry["comparisons"].values():
            verdict = ("not tested" if c["significant"] is None else "significant" if c["significant"]
                       else "not significant")
            interval = f"[{_number(c['ci_low'], sign=True)}, {_number(c['ci_high'], sign=True)}]"
            p = "—" if math.isnan(c["p"]) else _p_value(c["p"])
            shown = f"not tested: {c['note']}" if c["significant"] is None else verdict
            lines.append(f"| {entry['method']} | {c['against']} | {c['n']} | {_number(c['mean_gain'], sign=True)} | "
                         f"{interval} | {c['wins']} / {c['ties']} / {c['losses']} | {p} | {shown} | {c['left_out']} |")
            verdicts[verdict].append(sentence(entry["method"], c))
    for title, key in ((f"Significant at {ALPHA}", "significant"), (f"Not significant at {ALPHA}", "not significant"),
                       ("Not tested", "not tested")):
        lines += ["", f"### {title}", ""] + ([f"- {s}" for s in verdicts[key]] or ["None."])
    lines += ["", "## Plots", ""]
    for kind, name in report.plots.items():
        lines += [f"![{kind}]({name})", "", _CAPTIONS[kind], ""]
    if not report.plots:
        lines += ["None (see the notes).", ""]
    lines += _cells_table(report) + _missing_section(report)
    if report.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in report.notes] + [""]
    return "\n".join(lines).rstrip() + "\n"


def _cells_table(report: Report) -> list[str]:
    metric = report.metric
    shown = [c for c in COMPARISONS if any(row[c] is not None for row in report.rows)]
    lines = ["## Cells per target", "",
             f"Each method's {metric} beside its target's baselines; in brackets the method's gain over each. "
             "best source: the best N×N result among the cell's own sources; average, random: the same method under "
             "those selections (random: the mean of its draws).", "",
             f"| target | method | {metric} | " + " | ".join(c.replace("_", " ") for c in shown) + " |",
             "|---" * (3 + len(shown)) + "|"]
    for row in report.rows:
        if row[metric] is None:
            value = row["status"]
        else:
            value = _number(row[metric])
            if row["draws"] is not None:
                value += f" ± {_number(row['std'])} ({row['draws']} draws)" if row["std"] is not None else " (1 draw)"
        cells = [f"{_number(row[c])} ({_number(row[f'gain_vs_{c}'], sign=True)})" if row[c] is not None else "—"
                 for c in shown]
        lines.append(f"| {row['target']} | {row['method']} | {value} | " + " | ".join(cells) + " |")
    return lines + [""]


def _missing_section(report: Report) -> list[str]:
    lines = ["## Missing and failed cells", ""]
    if not (report.missing or report.failed or report.skipped or report.damaged):
        return lines + ["None: every cell of the grid has a result.", ""]
    if report.missing:
        lines += [f"### Missing ({len(report.missing)})", "",
                  "Not computed yet (the grid is still running, or was stopped):", ""]
        lines += _listed([f"`{key}`" for key in report.missing]) + [""]
    if report.failed:
        lines += [f"### Failed ({len(report.failed)})", "",
                  "Left out of their methods' statistics; `mu experiment run --retry-failed` computes them again.", ""]
        lines += _listed([f"`{c['cell']}`: {c['error']}" for c in report.failed]) + [""]
    if report.skipped:
        lines += [f"### Skipped ({len(report.skipped)})", "", "No answer for this target (rerunning changes nothing):", ""]
        lines += _listed([f"`{c['cell']}`: {c['reason']}" for c in report.skipped]) + [""]
    if report.damaged:
        lines += [f"### Damaged files ({len(report.damaged)})", "", "Left out; a rerun of the experiment recomputes them:",
                  ""]
        lines += _listed([f"`{d['file']}`: {d['why']}" for d in report.damaged]) + [""]
    return lines
