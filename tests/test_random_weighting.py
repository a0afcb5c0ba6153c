"""The ``random`` weighting: URIEL's control, K seeded random sources with equal weights."""

from __future__ import annotations

import pytest

from merginguriel_core.selection import select_sources

AVAILABLE = ["de-DE", "nl-NL", "fr-FR", "sw-KE", "ja-JP", "af-ZA", "ru-RU", "hi-IN"]


@pytest.fixture
def weighting(registry):
    return registry.get("weighting", "random")


def _pick(weighting, available=AVAILABLE, **options):
    params = options.pop("params", {})
    return select_sources(weighting, available=available, target="sw-KE", weighting_params=params, **options)


def test_equal_weights_over_k_sources_never_the_target(weighting):
    chosen = _pick(weighting, num_languages=3)
    assert len(chosen.weights) == 3 and "sw-KE" not in dict(chosen.weights)
    assert [w for _, w in chosen.weights] == pytest.approx([1 / 3] * 3)
    assert set(dict(chosen.weights)) <= set(AVAILABLE)


def test_a_draw_is_fixed_and_draws_differ(weighting):
    first = _pick(weighting, num_languages=3)
    assert _pick(weighting, num_languages=3).weights == first.weights
    assert _pick(weighting, available=list(reversed(AVAILABLE)), num_languages=3).weights == first.weights
    draws = {tuple(sorted(dict(_pick(weighting, num_languages=3, params={"draw": d}).weights))) for d in range(6)}
    assert len(draws) >= 4  # 35 possible sets: six draws rarely repeat
    other_seed = _pick(weighting, num_languages=3, params={"seed": 7})
    assert other_seed.result.details["seed"] == 7


def test_fewer_sources_than_asked_says_so(weighting):
    chosen = _pick(weighting, available=["de-DE", "nl-NL", "sw-KE"], num_languages=5)
    assert sorted(dict(chosen.weights)) == ["de-DE", "nl-NL"]
    assert chosen.result.notes == ["only 2 sources available for --num-languages 5"]


def test_options_it_does_not_read_are_refused(runner, zoo_dir, tmp_path):
    from conftest import run_cli

    result = run_cli(runner, "merge", "--weighting", "random", "--target-lang", "sw-KE", "--top-k", "3",
                     "--models", zoo_dir, "--output", tmp_path / "m")
    assert result.exit_code == 1 and "--top-k" in result.output and "random" in result.output
