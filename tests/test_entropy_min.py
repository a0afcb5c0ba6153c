"""The entropy_min voting method (EMEA-style test-time ensembling) on synthetic logits."""

import numpy as np
import pytest

from conftest import installed_registry
from merginguriel_core.maths.voting import entropy, entropy_minimised_weights, softmax


def _logits(seed=0, k=3, n=40, c=5):
    return np.random.default_rng(seed).normal(scale=2.0, size=(k, n, c))


def test_the_entropy_goes_down_for_every_example_and_weights_stay_normalised():
    logits, start = _logits(), np.array([0.5, 0.3, 0.2])
    weights, mixed = entropy_minimised_weights(logits, start, steps=10, learning_rate=1.0)
    before = entropy(softmax(np.tensordot(start, logits, axes=1)))
    after = entropy(softmax(mixed))
    assert weights.shape == (40, 3) and np.allclose(weights.sum(-1), 1) and (weights >= 0).all()
    assert (after <= before + 1e-12).all() and after.mean() < before.mean() - 0.05
    np.testing.assert_allclose(mixed, np.einsum("nk,knc->nc", weights, logits))


def test_identical_sources_keep_their_weights():
    one = _logits(k=1)[0]
    logits, start = np.stack([one, one, one]), np.array([0.6, 0.3, 0.1])
    weights, mixed = entropy_minimised_weights(logits, start, steps=10, learning_rate=1.0)
    np.testing.assert_allclose(weights, np.tile(start, (40, 1)), atol=1e-12)
    np.testing.assert_allclose(mixed, one, atol=1e-12)


def test_the_plugin_with_zero_steps_is_uriel_logits():
    registry = installed_registry()
    method, reference = registry.get("voting_method", "entropy_min"), registry.get("voting_method", "uriel_logits")
    logits, weights = _logits(seed=1), np.array([0.2, 0.5, 0.3])
    np.testing.assert_allclose(method.combine(logits, weights, {"steps": 0, "learning_rate": 1.0}),
                               reference.combine(logits, weights, {}))
    tuned = method.combine(logits, weights, {"steps": 5, "learning_rate": 1.0})
    assert tuned.shape == (40, 5) and not np.allclose(tuned, reference.combine(logits, weights, {}))
    assert [p.name for p in method.params] == ["steps", "learning_rate"]


@pytest.mark.parametrize("bad", [{"steps": -1}, {"learning_rate": 0}])
def test_spec_params_are_checked(bad):
    from merginguriel_core.params import resolve_params

    from merginguriel_core.errors import ConfigError

    method = installed_registry().get("voting_method", "entropy_min")
    with pytest.raises(ConfigError):
        resolve_params(method.params, bad, "voting method 'entropy_min'")


def test_mu_ensemble_runs_entropy_min_from_the_cached_logits(runner, trained, sib_dir, tmp_path):
    import json

    from conftest import run_cli

    args = ["ensemble", "--target-lang", "nl-NL", "--models", trained, "--data-dir", sib_dir, "--weighting", "softmax",
            "--cache-dir", tmp_path / "cache", "--no-progress", "--no-baselines", "--voting-method"]
    first = run_cli(runner, *args, "uriel_logits")
    tuned = run_cli(runner, *args, "entropy_min")
    assert first.exit_code == 0 and tuned.exit_code == 0, tuned.output
    report = json.loads(tuned.output[tuned.output.index("{"):])
    assert report["voting_method"] == "entropy_min" and 0 <= report["accuracy"] <= 1
