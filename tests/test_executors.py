"""Executors run a grid's tasks locally or on Ray; every one yields each task's result or its
exception, and the grid's results do not depend on where the tasks ran."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import math

import pytest

from merginguriel_core.experiments.results import iter_cells

try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason='Ray is not installed (pip install -e ".[ray]")')
#: Tasks for math.sqrt (importable everywhere, so any worker can run it): -1 raises.
TASKS = [0.0, 1.0, 4.0, -1.0, 16.0, 25.0]


def _collect(executor, **kwargs) -> dict[int, object]:
    return dict(executor.map(math.sqrt, TASKS, **kwargs))


def _check(results: dict[int, object]) -> None:
    assert {k: v for k, v in results.items() if k != 3} == {0: 0.0, 1: 1.0, 2: 2.0, 4: 4.0, 5: 5.0}
    assert isinstance(results[3], ValueError) and "math domain error" in str(results[3])


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance on this machine, started by this process, for this module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.mark.parametrize("workers", [1, 2])
def test_local_executor_yields_every_result_and_each_failure(registry, workers):
    _check(_collect(registry.get("executor", "local"), workers=workers, params={}))


@needs_ray
def test_ray_executor_yields_every_result_and_each_failure(registry, local_ray):
    executor = registry.get("executor", "ray")
    _check(_collect(executor, workers=1, params={"address": "", "cpus_per_task": 1.0}))
    _check(_collect(executor, workers=2, params={"address": "", "cpus_per_task": 1.0}))  # two in flight at most


@needs_ray
def _wait_for_head(head: subprocess.Popen, timeout: float = 180) -> None:
    """Until `ray start --head --block` says the head is up (or fails)."""
    import time

    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = head.stdout.readline()
        if not line and head.poll() is not None:
            raise AssertionError("ray start --head failed:\n" + "".join(seen[-30:]))
        seen.append(line)
        if "Ray runtime started" in line:
            return
    raise AssertionError("ray start --head did not start within 3 minutes:\n" + "".join(seen[-30:]))


def test_ray_cluster_smoke(tmp_path, trained, zoo_dir, sib_dir):
    """`ray start --head`, then `mu experiment run --executor ray --address auto` against it: the
    same cells as a local run."""
    from test_experiments import write_spec

    from merginguriel_core.experiments.runner import run_experiment

    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.is_file():
        pytest.skip("the ray command is not installed next to this Python")
    spec = write_spec(tmp_path, trained, zoo_dir, sib_dir, targets=["de-DE", "nl-NL"], selections=["softmax"],
                      strategies=["linear"], voting=["majority"], baselines=["own", "oracle"])
    if ray.is_initialized():
        ray.shutdown()  # one Ray per machine here: the head below is the cluster
    temp = Path("/tmp") / f"ray-{os.getpid()}"  # Ray's socket paths must stay short
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    # --block keeps `ray start` in the foreground: stopping its process group stops this head
    # only (`ray stop` would stop every Ray process of the machine, this test's driver's too)
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--num-cpus", "2", "--temp-dir", str(temp),
                             "--include-dashboard", "false", "--disable-usage-stats"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        _wait_for_head(head)
        command = [sys.executable, "-m", "merginguriel_cli", "experiment", "run", str(spec), "--output",
                   str(tmp_path / "on-ray"), "--executor", "ray", "--address", "auto", "--no-progress"]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "0 failed" in done.stdout
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)
    run_experiment(spec, tmp_path / "local", progress=False)
    on_ray = {r["cell"]: r for _, r, _ in iter_cells(tmp_path / "on-ray")}
    local = {r["cell"]: r for _, r, _ in iter_cells(tmp_path / "local")}
    assert sorted(on_ray) == sorted(local) and len(local) == 2 * (4 + 2 + 1 + 1)
    for key, record in local.items():
        assert on_ray[key]["metrics"] == record["metrics"], key
    experiment = json.loads((tmp_path / "on-ray" / "experiment.json").read_text())
    assert experiment["runs"][-1]["executor"] == "ray"
