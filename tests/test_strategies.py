"""Every merge strategy against an independent, plain computation, plus its properties.

The references below are written separately from the implementation: plain numpy in
float64, full sorts instead of selection, loops instead of masks where that reads clearer.
The merges run through the real engine (files in, files out), with and without chunking.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from merginguriel_core.errors import ConfigError
from merginguriel_core.merge import SourceModel, run_merge
from merginguriel_core.plan import plan_merge
from merginguriel_core.maths import tensors as tm
from merginguriel_core.maths.magnitude import kth_largest
from merginguriel_core.maths.spherical import spherical_coefficients
from conftest import installed_registry

RNG = np.random.default_rng(7)
WEIGHTS = [0.5, 0.3, 0.2]


def _arrays(seed: int, base: dict[str, np.ndarray] | None = None, scale: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"w": (6, 5), "b": (7,), "s": ()}
    if base is None:
        return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
    return {name: (base[name] + scale * rng.normal(size=shapes[name])).astype(np.float32) for name in shapes}


BASE = _arrays(0)
SOURCES = [_arrays(i, BASE) for i in (1, 2, 3)]


def _save(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.from_numpy(np.asarray(v)).contiguous() for k, v in arrays.items()}, str(folder / "model.safetensors"))
    return folder


def merge_arrays(tmp_path: Path, strategy: str, params: dict | None = None, *, sources=None, base=BASE,
                 weights=WEIGHTS, chunk_bytes: int | None = None, seed: int = 0, data=None, name="out"):
    sources = SOURCES if sources is None else sources
    folders = [_save(tmp_path / f"src{i}", arrays) for i, arrays in enumerate(sources)]
    base_folder = _save(tmp_path / "base", base) if base is not None else None
    locales = ["de-DE", "nl-NL", "af-ZA", "da-DK"][: len(sources)]
    run_merge(plan_merge(
        tmp_path / name,
        sources=[SourceModel(loc, f, w) for loc, f, w in zip(locales, folders, weights)],
        strategy=installed_registry().get("strategy", strategy),
        params=params or {},
        base_model=base_folder,
        chunk_size=chunk_bytes,
        seed=seed,
        progress=False,
        data=data,
        given=(),
    ))
    return {k: v.numpy().astype(np.float64) for k, v in load_file(tmp_path / name / "model.safetensors").items()}


def _deltas(name):
    return [s[name].astype(np.float64) - BASE[name].astype(np.float64) for s in SOURCES]


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- references
def ref_task_arithmetic(name, scaling=1.0):
    return BASE[name] + scaling * sum(w * d for w, d in zip(WEIGHTS, _deltas(name)))


def ref_ties(name, density, scaling=1.0):
    deltas = [d.reshape(-1) for d in _deltas(name)]
    n = deltas[0].size
    keep = max(1, int(density * n))
    trimmed = []
    for d in deltas:
        threshold = np.sort(np.abs(d))[::-1][keep - 1]
        trimmed.append(np.where(np.abs(d) >= threshold, d, 0.0))
    merged = np.zeros(n)
    for j in range(n):
        total = sum(w * t[j] for w, t in zip(WEIGHTS, trimmed))
        sign = 1.0 if total >= 0 else -1.0
        num = sum(w * t[j] for w, t in zip(WEIGHTS, trimmed) if t[j] != 0 and np.sign(t[j]) == sign)
        den = sum(w for w, t in zip(WEIGHTS, trimmed) if t[j] != 0 and np.sign(t[j]) == sign)
        merged[j] = num / den if den > 0 else 0.0
    return BASE[name] + scaling * merged.reshape(BASE[name].shape)


def ref_breadcrumbs(name, density, gamma):
    total = 0
    for w, d in zip(WEIGHTS, _deltas(name)):
        flat = np.abs(d.reshape(-1))
        n = flat.size
        keep = max(1, int(density * n))
        top = min(int(gamma * n), n - keep)
        ordered = np.sort(flat)[::-1]
        high = ordered[top - 1] if top > 0 else np.inf
        low = ordered[top + keep - 1]
        mask = (np.abs(d) >= low) & (np.abs(d) < high)
        total = total + w * d * mask
    return BASE[name] + total


def ref_karcher(a, b, t):
    a, b = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
    ua, ub = a / np.linalg.norm(a), b / np.linalg.norm(b)
    omega = np.arccos(np.clip(ua @ ub, -1, 1))
    direction = (np.sin((1 - t) * omega) * ua + np.sin(t * omega) * ub) / np.sin(omega)
    return direction * ((1 - t) * np.linalg.norm(a) + t * np.linalg.norm(b))


# ------------------------------------------------------------ data-free strategies
@pytest.mark.parametrize("chunk_bytes", [None, 24])
def test_task_arithmetic_matches_reference(tmp_path, chunk_bytes):
    out = merge_arrays(tmp_path, "task_arithmetic", {"scaling": "0.7"}, chunk_bytes=chunk_bytes)
    for name in BASE:
        _close(out[name], ref_task_arithmetic(name, 0.7))


@pytest.mark.parametrize("chunk_bytes", [None, 24])
def test_ties_matches_reference(tmp_path, chunk_bytes):
    out = merge_arrays(tmp_path, "ties", {"density": "0.4"}, chunk_bytes=chunk_bytes)
    for name in BASE:
        _close(out[name], ref_ties(name, 0.4))


def test_ties_density_one_same_sign_is_weighted_task_arithmetic(tmp_path):
    sources = [{k: (BASE[k] + np.abs(s[k] - BASE[k]) + 0.01).astype(np.float32) for k in BASE} for s in SOURCES]
    ties = merge_arrays(tmp_path, "ties", {"density": "1"}, sources=sources, name="ties")
    ta = merge_arrays(tmp_path, "task_arithmetic", sources=sources, name="ta")
    for name in BASE:
        _close(ties[name], ta[name])


@pytest.mark.parametrize("chunk_bytes", [None, 24])
def test_breadcrumbs_matches_reference(tmp_path, chunk_bytes):
    out = merge_arrays(tmp_path, "breadcrumbs", {"density": "0.6", "gamma": "0.1"}, chunk_bytes=chunk_bytes)
    for name in BASE:
        _close(out[name], ref_breadcrumbs(name, 0.6, 0.1))


@pytest.mark.parametrize("delta", [
    np.full(40, 0.5),                            # every magnitude tied: the band would be empty
    np.array([5.0, 4.0] + [0.0] * 198),          # the only non-zero entries are the "outliers"
    np.array([3.0] + [0.0] * 9),                 # int(gamma * n) == 0
])
def test_breadcrumbs_never_zeroes_a_nonzero_delta(tmp_path, delta):
    base = {"v": np.zeros(delta.size, dtype=np.float32)}
    sources = [{"v": delta.astype(np.float32)}]
    out = merge_arrays(tmp_path, "breadcrumbs", {"density": "0.5", "gamma": "0.01"}, sources=sources, base=base,
                       weights=[1.0])
    assert np.abs(out["v"]).sum() > 0


def test_dare_density_one_is_task_arithmetic(tmp_path):
    for strategy in ("dare_linear", "dare_ties"):
        out = merge_arrays(tmp_path / strategy, strategy, {"density": "1"})
        ref = merge_arrays(tmp_path / strategy, "ties" if strategy == "dare_ties" else "task_arithmetic",
                           {"density": "1"} if strategy == "dare_ties" else {}, name="ref")
        for name in BASE:
            _close(out[name], ref[name])


def test_dare_drops_and_rescales_reproducibly(tmp_path):
    base = {"m": np.zeros((100, 100), dtype=np.float32)}
    sources = [{"m": np.ones((100, 100), dtype=np.float32)}]
    run = lambda seed, name: merge_arrays(tmp_path, "dare_linear", {"density": "0.3"}, sources=sources, base=base,
                                          weights=[1.0], seed=seed, name=name)["m"]
    first, again, other = run(1, "a"), run(1, "b"), run(2, "c")
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    survivors = first[first != 0]
    np.testing.assert_allclose(survivors, 1 / 0.3, rtol=1e-6)  # rescaled by 1/density
    assert abs(survivors.size / first.size - 0.3) < 0.03
    no_rescale = merge_arrays(tmp_path, "dare_linear", {"density": "0.3", "rescale": "false"}, sources=sources,
                              base=base, weights=[1.0], seed=1, name="d")["m"]
    np.testing.assert_allclose(no_rescale[no_rescale != 0], 1.0)


def test_della_keeps_large_magnitudes_more_often(tmp_path):
    magnitudes = np.tile(np.linspace(0.01, 1.0, 100), (200, 1)).astype(np.float32)
    base = {"m": np.zeros_like(magnitudes)}
    out = merge_arrays(tmp_path, "della_linear", {"density": "0.5", "epsilon": "0.3"},
                       sources=[{"m": magnitudes}], base=base, weights=[1.0])["m"]
    kept = out != 0
    assert abs(kept.mean() - 0.5) < 0.03
    assert kept[:, -10:].mean() > 0.7 and kept[:, :10].mean() < 0.3   # keep prob 0.8 vs 0.2
    probabilities = tm.della_keep_probabilities(torch.from_numpy(magnitudes), 0.5, 0.3).numpy()
    np.testing.assert_allclose(out[kept], (magnitudes / probabilities)[kept], rtol=1e-5)


def test_karcher_two_models_matches_formula_and_endpoints(tmp_path):
    pair = SOURCES[:2]
    for t in (0.0, 0.35, 1.0):
        out = merge_arrays(tmp_path, "karcher", {"t": str(t)}, sources=pair, weights=[0.5, 0.5], name=f"t{t}")
        for name in ("w", "b"):
            _close(out[name].reshape(-1), ref_karcher(pair[0][name], pair[1][name], t))
    _close(merge_arrays(tmp_path, "karcher", {"t": "0"}, sources=pair, weights=[0.5, 0.5], name="z")["w"], pair[0]["w"])


def test_karcher_uses_weights_without_t(tmp_path):
    pair = SOURCES[:2]
    out = merge_arrays(tmp_path, "karcher", sources=pair, weights=[0.8, 0.2], chunk_bytes=24)
    _close(out["w"].reshape(-1), ref_karcher(pair[0]["w"], pair[1]["w"], 0.2))


def test_karcher_many_models_is_the_weighted_karcher_mean(tmp_path):
    out = merge_arrays(tmp_path, "karcher", chunk_bytes=24)
    for name in ("w", "b"):
        xs = [s[name].astype(np.float64).reshape(-1) for s in SOURCES]
        merged = out[name].reshape(-1)
        m = merged / np.linalg.norm(merged)
        gradient = 0
        for w, x in zip(WEIGHTS, xs):
            u = x / np.linalg.norm(x)
            theta = np.arccos(np.clip(u @ m, -1, 1))
            gradient = gradient + w * theta / np.sin(theta) * (u - np.cos(theta) * m)
        assert np.linalg.norm(gradient) < 1e-5   # first-order optimality on the sphere
        assert np.linalg.norm(merged) == pytest.approx(sum(w * np.linalg.norm(x) for w, x in zip(WEIGHTS, xs)), rel=1e-5)


def test_karcher_colinear_falls_back_to_linear(tmp_path):
    sources = [{"v": np.array([1, 2, 3], np.float32)}, {"v": np.array([2, 4, 6], np.float32)}]
    out = merge_arrays(tmp_path, "karcher", sources=sources, base=None, weights=[0.5, 0.5])
    _close(out["v"], [1.5, 3.0, 4.5])


@pytest.mark.parametrize("chunk_bytes", [None, 24])
def test_model_stock_matches_reference(tmp_path, chunk_bytes):
    out = merge_arrays(tmp_path, "model_stock", chunk_bytes=chunk_bytes)
    for name in ("w", "b"):
        deltas = [d.reshape(-1) for d in _deltas(name)]
        cosines, pair_weights = [], []
        for i in range(3):
            for j in range(i + 1, 3):
                cosines.append(deltas[i] @ deltas[j] / np.linalg.norm(deltas[i]) / np.linalg.norm(deltas[j]))
                pair_weights.append(WEIGHTS[i] * WEIGHTS[j])
        cos = min(max(np.average(cosines, weights=pair_weights), 0.0), 1.0)
        t = 3 * cos / (1 + 2 * cos)
        average = sum(w * s[name] for w, s in zip(WEIGHTS, SOURCES))
        _close(out[name], t * average + (1 - t) * BASE[name])


def test_fisher_simple_matches_reference(tmp_path):
    out = merge_arrays(tmp_path, "fisher_simple", {"power": "2", "epsilon": "1e-8"})
    for name in BASE:
        xs = [s[name].astype(np.float64) for s in SOURCES]
        importance = [w * (x ** 2 + 1e-8) for w, x in zip(WEIGHTS, xs)]
        _close(out[name], sum(i * x for i, x in zip(importance, xs)) / sum(importance))


def test_tensor_missing_from_base_is_weighted_average(tmp_path):
    base = {k: v for k, v in BASE.items() if k != "b"}
    for strategy in ("ties", "task_arithmetic", "dare_ties", "breadcrumbs", "della", "model_stock"):
        out = merge_arrays(tmp_path / strategy, strategy, base=base)
        _close(out["b"], sum(w * s["b"].astype(np.float64) for w, s in zip(WEIGHTS, SOURCES)))


# ------------------------------------------------------------------ pure functions
def test_importance_average_with_equal_importance_is_weighted_average():
    xs = torch.randn(3, 4, 5, dtype=torch.float64)
    w = torch.tensor(WEIGHTS, dtype=torch.float64)
    f = torch.rand(4, 5, dtype=torch.float64).expand(3, 4, 5)
    _close(tm.importance_weighted_average(xs, f, w, 1e-8).numpy(), (w[:, None, None] * xs).sum(0).numpy())


def test_regmean_with_identity_grams_is_weighted_average():
    rows = [torch.randn(4, 6, dtype=torch.float64) for _ in range(3)]
    grams = [torch.eye(6, dtype=torch.float64)] * 3
    w = torch.tensor(WEIGHTS, dtype=torch.float64)
    system = torch.linalg.lu_factor(sum(float(x) * g for x, g in zip(w, grams)))
    _close(tm.regmean_rows(rows, grams, w, system).numpy(), sum(x * r for x, r in zip(w, rows)).numpy())


def test_regmean_solves_the_regression():
    rows = [torch.randn(4, 6, dtype=torch.float64) for _ in range(3)]
    grams = []
    for _ in range(3):
        x = torch.randn(20, 6, dtype=torch.float64)
        grams.append(x.T @ x / 20)
    w = torch.tensor(WEIGHTS, dtype=torch.float64)
    system = torch.linalg.lu_factor(sum(float(x) * g for x, g in zip(w, grams)))
    merged = tm.regmean_rows(rows, grams, w, system).numpy()
    a = sum(float(x) * g.numpy() for x, g in zip(w, grams))
    b = sum(float(x) * (r.numpy() @ g.numpy()) for x, r, g in zip(w, rows, grams))
    _close(merged, np.linalg.solve(a.T, b.T).T)
    # The merged W minimises Σ wᵢ ||Xᵢ W − Xᵢ Wᵢ||²: its gradient is zero.
    gradient = sum(float(x) * (merged - r.numpy()) @ g.numpy() for x, r, g in zip(w, rows, grams))
    assert np.abs(gradient).max() < 1e-10


def test_kth_largest_streaming_matches_sort():
    values = [torch.from_numpy(np.abs(RNG.normal(size=1000)).astype(np.float32)) for _ in range(2)]
    values[1][::7] = 0.0
    chunks = [[v[i:i + 64] for v in values] for i in range(0, 1000, 64)]
    queries = [(0, 1), (0, 137), (0, 1000), (1, 1), (1, 500), (1, 999), (0, 0)]
    got = kth_largest(lambda: iter(chunks), queries, 1000)
    for (stream, k), value in zip(queries, got):
        expected = math.inf if k == 0 else float(np.sort(values[stream].numpy())[::-1][k - 1])
        assert value == expected
    assert kth_largest(lambda: iter([[values[0]]]), [(0, 137)], 1000) == [got[1]]


def _sorted_kth(values: torch.Tensor, k: int) -> float:
    return float(np.sort(values.numpy())[::-1][k - 1])


@pytest.mark.parametrize("chunk", [50_000, 300_000])  # streamed in 6 chunks / whole in memory
def test_kth_largest_sampled_window_is_exact(chunk, monkeypatch):
    # Above SAMPLE values the answer comes from a sampled window; it must still be exact,
    # including for ranks at both ends, a stream with many exact ties, and one of zeros.
    import merginguriel_core.maths.magnitude as ms

    n = 300_000
    gauss = torch.from_numpy(np.abs(RNG.normal(size=n)).astype(np.float32))
    tied = torch.from_numpy(RNG.integers(0, 5, size=n).astype(np.float32))  # 5 distinct values
    zeros = torch.zeros(n)
    streams = [gauss, tied, zeros]
    chunks = [[v[i:i + chunk] for v in streams] for i in range(0, n, chunk)]
    queries = [(0, 1), (0, 150_000), (0, 299_999), (0, n), (1, 60_001), (1, 200_000), (2, 10), (2, 150_000)]
    calls = []
    radix = ms._radix_select
    monkeypatch.setattr(ms, "_radix_select", lambda p, q: calls.append(list(q)) or radix(p, q))
    got = ms.kth_largest(lambda: iter(chunks), queries, n)
    assert got == [_sorted_kth(streams[s], k) for s, k in queries]
    fell_back = [query for call in calls for query in call]
    assert all(stream != 0 for stream, _ in fell_back)  # the Gaussian stream: from its sampled window
    assert (2, 150_000) not in fell_back  # a window of one tied value is resolved by counting
    # The exact fallback (a window that missed) finds the same values by counting float bits.
    assert ms._radix_select(lambda: iter(chunks), [(s, k) for s, k in queries]) == got
    monkeypatch.setattr(ms, "_SIGMAS", 0.0)  # a window too narrow to hold the answer: fall back
    assert ms.kth_largest(lambda: iter(chunks), queries[:2], n) == got[:2]
    # A window that surely misses: streamed, both queries go to the radix select (sample,
    # window and two radix passes); in memory (one chunk), the one read is selected in directly.
    monkeypatch.setattr(ms, "_window", lambda sample, k, numel: (math.inf, math.inf, 0.0))
    before, passes = len(calls), []
    assert ms.kth_largest(lambda: passes.append(1) or iter(chunks), queries[:2], n) == got[:2]
    assert calls[before:] == ([] if chunk == n else [queries[:2]])
    assert len(passes) == (1 if chunk == n else 4)
    with pytest.raises(ValueError, match="k=300001 exceeds the 300000 values"):
        ms.kth_largest(lambda: iter(chunks), [(0, n + 1)], n)


def test_kth_largest_keeps_float64_exact_and_takes_bfloat16():
    small = torch.rand(100, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert kth_largest(lambda: iter([[small]]), [(0, 1), (0, 37)], 100) == [float(small.max()), _sorted_kth(small, 37)]
    large = torch.rand(200_000, generator=torch.Generator().manual_seed(2)).bfloat16()
    for chunks in ([[large]], [[large[:70_000]], [large[70_000:]]]):
        assert kth_largest(lambda: iter(chunks), [(0, 1000)], large.numel()) == [_sorted_kth(large.float(), 1000)]


def test_disjoint_mean_ignores_a_zero_weight_model_holding_inf():
    from merginguriel_core.maths.tensors import disjoint_weighted_mean, elect_sign

    deltas = [torch.tensor([math.inf, 1.0]), torch.tensor([-1.0, -1.0]), torch.tensor([-1.0, -1.0])]
    weights = torch.tensor([0.0, 0.5, 0.5])
    merged = disjoint_weighted_mean(deltas, weights, elect_sign(deltas, weights))
    assert merged.tolist() == [-1.0, -1.0]


def test_spherical_mean_of_opposite_vectors_is_undefined():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert spherical_coefficients(x @ x.T, torch.tensor([0.5, 0.5])) is None


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize("strategy, params, message", [
    ("ties", {"density": "0"}, "parameter density=0.0 of strategy 'ties' is out of range; allowed: (0, 1]"),
    ("dare_ties", {"density": "1.5"}, "parameter density=1.5 of strategy 'dare_ties' is out of range; allowed: (0, 1]"),
    ("breadcrumbs", {"gamma": "1"}, "parameter gamma=1.0 of strategy 'breadcrumbs' is out of range"),
    ("della", {"density": "0.9", "epsilon": "0.2"}, "density ± epsilon must lie in (0, 1]"),
    ("ties", {"k": "3"}, "unknown parameter 'k' for strategy 'ties'; allowed: density, scaling"),
    ("karcher", {"t": "0.3"}, "karcher t=0.3 needs exactly 2 source models, got 3"),
    ("slerp", {}, "strategy 'slerp' interpolates exactly 2 models, got 3; use --strategy karcher"),
])
def test_bad_parameters_rejected_before_reading(tmp_path, strategy, params, message):
    with pytest.raises(ConfigError) as error:
        merge_arrays(tmp_path, strategy, params)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_missing_base_is_an_error(tmp_path):
    for strategy in ("task_arithmetic", "ties", "dare_linear", "breadcrumbs", "della", "model_stock"):
        with pytest.raises(ConfigError, match=f"strategy '{strategy}' needs a base model; pass --base-model"):
            merge_arrays(tmp_path, strategy, base=None)


def test_fisher_and_regmean_need_data(tmp_path):
    for strategy in ("fisher", "regmean"):
        with pytest.raises(ConfigError, match=f"strategy '{strategy}' needs labelled data; pass --data-dir"):
            merge_arrays(tmp_path, strategy)


def test_plugins_list_declared_parameters(runner):
    from conftest import run_cli

    rows = json.loads(run_cli(runner, "plugins", "--json").output)
    provided = {p["name"]: p for row in rows for p in row["provides"]}
    ties = provided["ties"]
    assert ties["reference"] == "https://arxiv.org/abs/2306.01708" and ties["needs_base"] is True
    assert {p["name"]: p["allowed"] for p in ties["params"]} == {"density": "(0, 1]", "scaling": "[0, inf)"}
    for name in ("task_arithmetic", "ties", "dare", "dare_linear", "dare_ties", "breadcrumbs", "slerp", "karcher",
                 "model_stock", "della", "fisher", "fisher_simple", "regmean"):
        assert provided[name]["reference"].startswith("https://")
