"""Built-in executors: ``local`` (this machine: in-process, or ``--workers N`` processes) and
``ray`` (a Ray cluster: ``--executor ray --address auto``; ``pip install -e ".[ray]"``).

Both only decide where a task runs: the task writes its cells' ``results.json`` itself, so
every executor leaves the same results layout. On a cluster the results folder, the models,
the data and the logits cache must be on a file system every node sees at the same path.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping, Sequence

from merginguriel_core import hookimpl
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import Executor
from merginguriel_core.params import Param


def _threads_per_worker(workers: int) -> None:
    """Split the machine's cores between ``workers`` processes (torch would give each all of them)."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


class LocalExecutor(Executor):
    name = "local"
    description = "This machine: tasks in this process (--workers 1), or in N worker processes."

    def map(self, function: Callable[[Any], Any], tasks: Sequence[Any], *, workers: int | None,
            params: Mapping[str, Any], env: Mapping[str, str] = {}) -> Iterator[tuple[int, Any]]:
        workers = workers or 1  # worker processes inherit this environment
        if workers <= 1 or len(tasks) <= 1:
            for index, task in enumerate(tasks):
                try:
                    result = function(task)
                except Exception as exc:  # one task's failure never stops the others
                    result = exc
                yield index, result
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: a forked torch process can deadlock in its thread pools
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_threads_per_worker,
                                 initargs=(workers,)) as pool:
            futures = {pool.submit(function, task): index for index, task in enumerate(tasks)}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as exc:
                    result = exc
                yield futures[future], result


def _call(function: Callable[[Any], Any], task: Any) -> Any:
    return function(task)


class RayExecutor(Executor):
    name = "ray"
    description = "A Ray cluster (--address auto joins a running one; none starts Ray on this machine)."
    params = (
        Param("address", str, "", "the cluster to join: auto, ray://HOST:PORT, or empty for a local Ray"),
        Param("cpus_per_task", float, 1.0, "CPUs Ray reserves for each task", minimum=0.0, min_inclusive=False),
        Param("gpus_per_task", float, 0.0, "GPUs Ray gives each task (0: the tasks run on CPUs; Ray hides the GPUs)",
              minimum=0.0),
    )

    def map(self, function: Callable[[Any], Any], tasks: Sequence[Any], *, workers: int | None,
            params: Mapping[str, Any], env: Mapping[str, str] = {}) -> Iterator[tuple[int, Any]]:
        try:
            import ray
        except ImportError:
            raise ConfigError('--executor ray needs Ray: pip install -e ".[ray]" (or pip install "ray[default]")') from None
        if not ray.is_initialized():
            ray.init(address=params.get("address") or None, ignore_reinit_error=True, log_to_driver=False,
                     runtime_env={"env_vars": dict(env)} if env else None)
        remote = ray.remote(num_cpus=params.get("cpus_per_task", 1.0), num_gpus=params.get("gpus_per_task", 0.0),
                            runtime_env={"env_vars": dict(env)} if env else None)(_call)
        shared = ray.put(function)
        limit = workers or len(tasks)  # --workers caps the tasks in flight; none: as many as Ray takes
        pending: dict[Any, int] = {}
        queue = list(enumerate(tasks))
        while queue or pending:
            while queue and len(pending) < limit:
                index, task = queue.pop(0)
                pending[remote.remote(shared, task)] = index
            done, _ = ray.wait(list(pending), num_returns=1)
            for reference in done:
                index = pending.pop(reference)
                try:
                    result = ray.get(reference)
                except Exception as exc:  # the task's own exception, wrapped by Ray
                    cause = getattr(exc, "cause", None)
                    result = cause if isinstance(cause, Exception) else exc
                yield index, result


@hookimpl
def register_executors(register):
    register(LocalExecutor())
    register(RayExecutor())
