"""One entry point per method family: ``dare``, mergekit's ``slerp`` next to ``karcher``, and the
layout (pure maths in ``merginguriel_core.maths``, ``plugins/`` only entry-point modules).

The references are written from the definitions, independently of the implementation.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import installed_registry, run_cli
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import Chunk, TensorJob
from merginguriel_core.maths.spherical import DOT_THRESHOLD, gram_matrix, slerp_coefficients
from test_strategies import BASE, SOURCES, WEIGHTS, _close, merge_arrays

ROOT = Path(__file__).resolve().parents[1]


def _strategy(name):
    return installed_registry().get("strategy", name)


def _params(strategy, **given):
    from merginguriel_core.params import resolve_params

    return resolve_params(strategy.params, {k: str(v) for k, v in given.items()}, f"strategy {strategy.name!r}")


def _job(name: str, sources: list[torch.Tensor], params, weights, rows: int, base: torch.Tensor | None = None,
         seed: int | None = None) -> TensorJob:
    """A job over ``sources`` in chunks of ``rows`` rows, as the engine streams them."""
    shape = tuple(sources[0].shape)
    starts = list(range(0, shape[0], rows)) if shape else [0]

    def chunks():
        for start in starts:
            stop = min(shape[0], start + rows) if shape else 1
            piece = (lambda t: t[start:stop]) if shape else (lambda t: t)
            generator = None if seed is None else torch.Generator().manual_seed(seed + start)
            yield Chunk(name=name, start=start, stop=stop, sources=[piece(s) for s in sources],
                        base=None if base is None else piece(base), weights=weights, params=params,
                        generator=generator)

    return TensorJob(name=name, shape=shape, weights=weights, params=params, has_base=base is not None,
                     _chunks=chunks, num_chunks=len(starts))


def _run(strategy, job: TensorJob) -> torch.Tensor:
    """What the engine does with a job: one statistics pass, then merge every chunk."""
    statistics = strategy.tensor_statistics(job)
    pieces = [strategy.merge_chunk(chunk, statistics) for chunk in job.chunks()]
    return torch.cat(pieces) if job.shape else pieces[0]


# ------------------------------------------------------------------------------ dare
def test_dare_is_random_needs_a_base_and_reads_the_seed():
    dare = _strategy("dare")
    assert dare.random and dare.needs_base
    assert dare.options_read() == {"base_model", "seed"}
    assert [p.name for p in dare.params] == ["density", "rescale", "scaling"]


def test_dare_hand_computed_with_a_fixed_generator():
    # torch.Generator().manual_seed(0) draws 0.4963 0.7682 0.0885 0.1320 for model 0, then
    # 0.3074 0.6341 0.4901 0.8964 for model 1: with density 0.5, model 0 keeps entries 0, 2, 3
    # and model 1 entries 0 and 2; survivors are divided by 0.5.
    dare = _strategy("dare")
    base = torch.full((4,), 10.0)
    sources = [base + torch.tensor([1.0, 2.0, 3.0, 4.0]), base + torch.tensor([4.0, 3.0, 2.0, 1.0])]
    chunk = Chunk(name="v", start=0, stop=4, sources=sources, base=base, weights=torch.tensor([0.75, 0.25]),
                  params=_params(dare, density=0.5), generator=torch.Generator().manual_seed(0))
    merged = dare.merge_chunk(chunk, None)
    # δ̃₀ = (2, 0, 6, 8), δ̃₁ = (8, 0, 4, 0); θ = 10 + 0.75·δ̃₀ + 0.25·δ̃₁
    assert merged.tolist() == [13.5, 10.0, 15.5, 16.0]
    chunk.generator.manual_seed(0)
    chunk.params = _params(dare, density=0.5, scaling=2.0)
    assert dare.merge_chunk(chunk, None).tolist() == [17.0, 10.0, 21.0, 22.0]  # λ = 2 doubles the combined δ
    chunk.generator.manual_seed(0)
    chunk.params = _params(dare, density=0.5, rescale="false")
    assert dare.merge_chunk(chunk, None).tolist() == [11.75, 10.0, 12.75, 13.0]  # survivors as they are


@pytest.mark.parametrize("chunk_bytes", [None, 24])
def test_dare_drop_probability_zero_is_task_arithmetic(tmp_path, chunk_bytes):
    dare = merge_arrays(tmp_path, "dare", {"density": "1"}, chunk_bytes=chunk_bytes, seed=5, name="dare")
    ta = merge_arrays(tmp_path, "task_arithmetic", chunk_bytes=chunk_bytes, name="ta")
    for name in BASE:
        _close(dare[name], ta[name])


def test_dare_is_dare_linear_and_reproducible(tmp_path):
    first = merge_arrays(tmp_path, "dare", {"density": "0.4"}, seed=3, name="a")
    again = merge_arrays(tmp_path, "dare", {"density": "0.4"}, seed=3, name="b")
    linear = merge_arrays(tmp_path, "dare_linear", {"density": "0.4"}, seed=3, name="c")
    other = merge_arrays(tmp_path, "dare", {"density": "0.4"}, seed=4, name="d")
    for name in BASE:
        np.testing.assert_array_equal(first[name], again[name])
        np.testing.assert_array_equal(first[name], linear[name])
    assert not np.array_equal(first["w"], other["w"])
    # Every entry is θ_b + Σ wᵢ·mᵢ·δᵢ/density for some keep-masks mᵢ: check it by brute force.
    deltas = [s["w"].astype(np.float64) - BASE["w"] for s in SOURCES]
    for index in np.ndindex(BASE["w"].shape):
        options = [sum(w * keep[i] * d[index] / 0.4 for i, (w, d) in enumerate(zip(WEIGHTS, deltas)))
                   for keep in np.ndindex(2, 2, 2)]
        assert min(abs(first["w"][index] - BASE["w"][index] - option) for option in options) < 1e-5


def test_dare_needs_a_base(tmp_path):
    with pytest.raises(ConfigError, match="strategy 'dare' needs a base model; pass --base-model"):
        merge_arrays(tmp_path, "dare", base=None)


def test_cli_strategy_dare(runner, zoo_dir, tmp_path):
    out = tmp_path / "dare"
    result = run_cli(runner, "merge", "--strategy", "dare", "--weighting", "manual", "--weights", "de-DE=2,nl-NL=1",
                     "--models", zoo_dir, "--base-model", zoo_dir / "base", "--seed", "3", "--output", out,
                     "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "merge_details.json").read_text())["strategy"] == "dare"


# ----------------------------------------------------------------------------- slerp
def mergekit_slerp(t: float, v0: np.ndarray, v1: np.ndarray, dot_threshold: float = 0.9995, eps: float = 1e-8):
    """mergekit's SLERP, from its definition: the angle of the directions (a vector of norm
    <= eps left unnormalised), linear interpolation where |cos| > dot_threshold, else the raw
    vectors weighted by sin((1−t)θ)/sinθ and sin(tθ)/sinθ. Each tensor is one flat vector."""
    a, b = np.asarray(v0, np.float64), np.asarray(v1, np.float64)
    unit_a = a / np.linalg.norm(a) if np.linalg.norm(a) > eps else a
    unit_b = b / np.linalg.norm(b) if np.linalg.norm(b) > eps else b
    cos = float(np.sum(unit_a * unit_b))
    if abs(cos) > dot_threshold:
        return (1 - t) * a + t * b
    theta = math.acos(cos)
    return math.sin((1 - t) * theta) / math.sin(theta) * a + math.sin(t * theta) / math.sin(theta) * b


def _pair(seed: int, shapes=((6, 5), (7,), ())):
    rng = np.random.default_rng(seed)
    return [{f"x{i}": rng.normal(size=shape).astype(np.float32) for i, shape in enumerate(shapes)} for _ in range(2)]


def _slerp_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 0.85, 1.0])
def test_slerp_equals_mergekit_on_random_tensors(tmp_path, t):
    pair = _pair(11)
    out = merge_arrays(tmp_path, "slerp", {"t": str(t)}, sources=pair, base=None, weights=[0.5, 0.5])
    for name in pair[0]:
        _slerp_close(out[name], mergekit_slerp(t, pair[0][name], pair[1][name]))
    big = _pair(12, shapes=((300, 40),))  # an angle far from colinear: the raw vectors' norms differ
    big[1]["x0"] *= 3
    out = merge_arrays(tmp_path, "slerp", {"t": str(t)}, sources=big, base=None, weights=[0.5, 0.5], name="big")
    _slerp_close(out["x0"], mergekit_slerp(t, big[0]["x0"], big[1]["x0"]))


def test_slerp_t_defaults_to_the_second_sources_weight(tmp_path):
    pair = _pair(13)
    out = merge_arrays(tmp_path, "slerp", sources=pair, base=None, weights=[0.8, 0.2])
    for name in pair[0]:
        _slerp_close(out[name], mergekit_slerp(0.2, pair[0][name], pair[1][name]))
    # Swapping the sources with their weights gives the same merge: slerp(t, a, b) = slerp(1 − t, b, a).
    swapped = merge_arrays(tmp_path, "slerp", sources=pair[::-1], base=None, weights=[0.2, 0.8], name="swapped")
    for name in pair[0]:
        _slerp_close(swapped[name], out[name])


def test_slerp_differs_from_karcher_where_the_norms_differ(tmp_path):
    pair = _pair(14)
    pair[1] = {name: 4 * value for name, value in pair[1].items()}
    slerp = merge_arrays(tmp_path, "slerp", {"t": "0.5"}, sources=pair, base=None, weights=[0.5, 0.5], name="s")
    karcher = merge_arrays(tmp_path, "karcher", {"t": "0.5"}, sources=pair, base=None, weights=[0.5, 0.5], name="k")
    assert np.abs(slerp["x0"] - karcher["x0"]).max() > 0.1


def test_slerp_nearly_colinear_is_the_linear_interpolation(tmp_path):
    rng = np.random.default_rng(15)
    v0 = rng.normal(size=(6, 5))
    v1 = 2 * v0 + 0.04 * rng.normal(size=(6, 5))
    cos = float(np.sum(v0 * v1) / np.linalg.norm(v0) / np.linalg.norm(v1))
    assert DOT_THRESHOLD < cos < 1  # colinear by mergekit's rule, but not exactly
    theta = math.acos(cos)
    spherical = math.sin(0.7 * theta) / math.sin(theta) * v0 + math.sin(0.3 * theta) / math.sin(theta) * v1
    lerp = 0.7 * v0 + 0.3 * v1
    assert np.abs(spherical - lerp).max() > 1e-4  # the test tells the two apart
    opposite = -1.5 * v0  # |cos| = 1 the other way: linear too
    sources = [{"a": v0.astype(np.float32), "b": v0.astype(np.float32)},
               {"a": v1.astype(np.float32), "b": opposite.astype(np.float32)}]
    out = merge_arrays(tmp_path, "slerp", {"t": "0.3"}, sources=sources, base=None, weights=[0.5, 0.5])
    _slerp_close(out["a"], mergekit_slerp(0.3, sources[0]["a"], sources[1]["a"]))
    _slerp_close(out["a"], 0.7 * sources[0]["a"].astype(np.float64) + 0.3 * sources[1]["a"])
    _slerp_close(out["b"], 0.7 * sources[0]["b"].astype(np.float64) + 0.3 * sources[1]["b"])


def test_slerp_of_a_zero_tensor_follows_mergekit(tmp_path):
    # mergekit leaves a vector of norm <= 1e-8 unnormalised: cos = 0, θ = π/2, sin(tπ/2)·v₁.
    v1 = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    sources = [{"z": np.zeros((3, 4), np.float32)}, {"z": v1}]
    out = merge_arrays(tmp_path, "slerp", {"t": "0.25"}, sources=sources, base=None, weights=[0.5, 0.5])
    _slerp_close(out["z"], mergekit_slerp(0.25, sources[0]["z"], v1))
    _slerp_close(out["z"], math.sin(0.25 * math.pi / 2) * v1)


@pytest.mark.parametrize("t", [None, 0.4])
def test_slerp_over_several_chunks_equals_one_chunk(tmp_path, t):
    pair = _pair(16, shapes=((9, 4),))
    params = {} if t is None else {"t": str(t)}
    whole = merge_arrays(tmp_path, "slerp", params, sources=pair, base=None, weights=[0.6, 0.4], name="whole")
    rows = merge_arrays(tmp_path, "slerp", params, sources=pair, base=None, weights=[0.6, 0.4], chunk_bytes=16,
                        name="rows")  # one 16-byte row per chunk: 9 chunks
    np.testing.assert_allclose(rows["x0"], whole["x0"], rtol=1e-6, atol=1e-7)
    _slerp_close(rows["x0"], mergekit_slerp(0.4, pair[0]["x0"], pair[1]["x0"]))
    # The same through the strategy's own interface, counting the chunks.
    slerp = _strategy("slerp")
    tensors = [torch.from_numpy(p["x0"]) for p in pair]
    weights = torch.tensor([0.6, 0.4])
    chunked = _job("x0", tensors, _params(slerp, **params), weights, rows=2)
    single = _job("x0", tensors, _params(slerp, **params), weights, rows=9)
    assert (chunked.num_chunks, single.num_chunks) == (5, 1)
    torch.testing.assert_close(_run(slerp, chunked), _run(slerp, single), rtol=1e-6, atol=1e-7)


def test_slerp_of_one_model_is_that_model(tmp_path):
    single = [_pair(17)[0]]
    out = merge_arrays(tmp_path, "slerp", sources=single, base=None, weights=[1.0])
    for name in single[0]:
        np.testing.assert_array_equal(out[name], single[0][name])


def test_slerp_of_more_than_two_models_points_to_karcher(tmp_path):
    with pytest.raises(ConfigError) as error:
        merge_arrays(tmp_path, "slerp", base=None)
    assert str(error.value) == ("strategy 'slerp' interpolates exactly 2 models, got 3; "
                                "use --strategy karcher for the spherical mean of more")
    assert not (tmp_path / "out").exists()


def test_slerp_coefficients_from_the_gram_matrix():
    v0, v1 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64)
    gram = gram_matrix([[v0[:1], v1[:1]], [v0[1:], v1[1:]]], 2)  # two pieces of each vector
    torch.testing.assert_close(gram, torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64))
    s0, s1 = slerp_coefficients(gram, 0.5)  # θ = π/2: both sin(π/4)
    assert s0 == pytest.approx(math.sqrt(0.5)) and s1 == pytest.approx(math.sqrt(0.5))
    assert slerp_coefficients(gram, 0.0) == pytest.approx((1.0, 0.0))
    assert slerp_coefficients(gram, 1.0) == pytest.approx((0.0, 1.0))
    colinear = gram_matrix([[v0, 3 * v0]], 2)
    assert slerp_coefficients(colinear, 0.25) == (0.75, 0.25)


def test_karcher_keeps_the_n_model_spherical_mean(tmp_path):
    karcher = merge_arrays(tmp_path, "karcher", chunk_bytes=24, name="k")
    assert set(karcher) == set(BASE)
    norm = np.linalg.norm(karcher["w"])
    expected = sum(w * np.linalg.norm(s["w"].astype(np.float64)) for w, s in zip(WEIGHTS, SOURCES))
    assert norm == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------ layout
def _entry_point_modules() -> dict[str, str]:
    section = (ROOT / "pyproject.toml").read_text().split("[project.entry-points.merginguriel]")[1].split("[")[0]
    return dict(re.findall(r'^(\w+) = "merginguriel_plugins\.(\w+)"', section, flags=re.M))


def test_plugins_folder_holds_only_entry_point_modules():
    modules = _entry_point_modules()
    files = {path.stem for path in (ROOT / "plugins").glob("*.py")} - {"__init__"}
    assert files == set(modules.values())
    assert all(name == module for name, module in modules.items())  # each family under its own name
    for family in ("uriel_similarity", "average", "fisher", "ties", "dare", "slerp", "regmean", "uriel_logits"):
        assert family in modules


def test_pure_maths_imports_no_plugin():
    for path in (ROOT / "merginguriel_core" / "maths").glob("*.py"):
        imports = [line for line in path.read_text().splitlines() if line.startswith(("import ", "from "))]
        assert not [line for line in imports if "plugins" in line or "hookimpl" in line or "interfaces" in line], path


def test_mu_plugins_lists_every_family_and_name(runner):
    rows = json.loads(run_cli(runner, "plugins", "--json").output)
    by_name = {row["name"]: {p["name"] for p in row["provides"]} for row in rows}
    assert set(_entry_point_modules()) <= set(by_name)
    assert by_name["dare"] == {"dare", "dare_linear", "dare_ties"}
    assert by_name["slerp"] == {"slerp", "karcher"}
    assert by_name["ties"] == {"ties"}
    assert by_name["uriel_logits"] == {"uriel_logits"}
    provided = set().union(*by_name.values())
    assert {"uriel", "average", "manual", "proportional", "softmax", "local_sinkhorn", "learned", "linear",
            "task_arithmetic", "ties", "dare", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties", "della",
            "della_linear", "slerp", "karcher", "model_stock", "fisher", "fisher_simple", "regmean", "majority",
            "weighted_majority", "soft", "uriel_logits", "accuracy", "macro_f1", "sib200", "massive",
            "table"} <= provided
