"""The example third-party plugin in docs/examples installs with pip and works through `mu`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "merginguriel-median"
PATTERN = "xlm-roberta-base_massive_k_{locale}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """pip-install the example into a private folder; return the environment that sees it."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("example") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))  # keep docs/ clean
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env


def _mu(env, *args):
    return subprocess.run([sys.executable, "-m", "merginguriel_cli", *map(str, args)], env=env,
                          capture_output=True, text=True)


def test_mu_plugins_lists_installed_example(installed):
    result = _mu(installed, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    median = rows["median"]
    assert median["distribution"] == "merginguriel-median" and median["version"] == "0.1.0"
    assert [(p["kind"], p["name"]) for p in median["provides"]] == [("strategy", "median"), ("voting_method", "median_logits")]
    assert not median["broken"]
    text = _mu(installed, "plugins").stdout
    assert any(line.startswith("median") and "strategy: median, voting_method: median_logits" in line
               for line in text.splitlines())


def test_mu_merge_uses_example_strategy(installed, zoo_dir, tmp_path):
    out = tmp_path / "merged"
    result = _mu(installed, "merge", "--strategy", "median", "--weighting", "manual",
                 "--weights", "de-DE=0.5,nl-NL=0.3,af-ZA=0.2", "--models", zoo_dir, "--output", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    merged = load_file(out / "model.safetensors")
    sources = [load_file(zoo_dir / PATTERN.format(locale=loc) / "model.safetensors") for loc in ("de-DE", "nl-NL", "af-ZA")]
    name = "classifier.dense.weight"
    # Weighted median, computed element by element: the value whose cumulative weight
    # (sorted ascending) first reaches half the total.
    weights = [0.5, 0.3, 0.2]
    flat = [s[name].flatten().tolist() for s in sources]
    expected = []
    for values in zip(*flat):
        cumulative = 0.0
        for value, weight in sorted(zip(values, weights)):
            cumulative += weight
            if cumulative >= 0.5 - 1e-9:
                expected.append(value)
                break
    assert merged[name].flatten().tolist() == pytest.approx(expected)
    assert json.loads((out / "merge_details.json").read_text())["strategy"] == "median"


def test_not_installed_by_default(registry):
    assert "median" not in registry.names("strategy")


def test_mu_ensemble_uses_example_voting_method(installed, trained, sib_dir, tmp_path, registry):
    result = _mu(installed, "ensemble", "--voting-method", "median_logits", "--target-lang", "nl-NL", "--models", trained,
                 "--data-dir", sib_dir, "--source-langs", "de-DE,af-ZA,sw-KE", "--weighting", "average",
                 "--cache-dir", tmp_path / "cache", "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["voting_method"] == "median_logits" and 0 <= report["accuracy"] <= 1
    # With three equally weighted models the weighted median is the ordinary median.
    import numpy as np
    import torch

    from merginguriel_core.evaluation import LogitsCache, Predictor

    data = registry.get("dataset", "sib200")
    examples, labels = data.load(str(sib_dir), "nl-NL", "test"), data.labels(str(sib_dir))
    predictor = Predictor(LogitsCache(tmp_path / "cache"), torch.device("cpu"))
    stacked = np.stack([predictor.logits(trained / f"xlm-roberta-base_massive_k_{loc}", examples, labels)
                        for loc in ("de-DE", "af-ZA", "sw-KE")])
    predicted = np.median(stacked, axis=0).argmax(-1)
    gold = np.array([labels.index(l) for l in examples.labels])
    assert report["accuracy"] == pytest.approx(float(np.mean(predicted == gold)))
