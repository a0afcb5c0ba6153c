"""A merge run in its own process, for the race and kill tests of tests/test_outputs.py.

``python tests/merge_driver.py MODE ZOO OUTPUT READY`` merges de-DE and nl-NL of ZOO into
OUTPUT with a linear strategy that, at its first chunk:

- ``appear``: creates OUTPUT (with a file ``theirs.txt``), as another program would;
- ``hold``: writes its process id to READY and waits until ``READY.go`` exists;
- ``kill``: writes READY and waits forever (the test kills it with SIGKILL);
- ``kill-swap``: merges normally with ``--overwrite``, on the rename fallback (no atomic
  exchange), and kills itself with SIGKILL right after moving the old OUTPUT aside.

Errors are printed as ``mu`` prints them (``Error: ...``, exit 1).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from merginguriel_core import outputs
from merginguriel_core.errors import MergingUrielError
from merginguriel_core.merge import SourceModel, run_merge
from merginguriel_core.plan import plan_merge
from merginguriel_plugins.linear import LinearStrategy

PATTERN = "xlm-roberta-base_massive_k_{locale}"


def main() -> None:
    mode, zoo, output, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])

    class Paused(LinearStrategy):
        calls = 0

        def merge_chunk(self, chunk, statistics):
            Paused.calls += 1
            if Paused.calls == 1 and mode == "appear":
                output.mkdir()
                (output / "theirs.txt").write_text("keep me")
            if Paused.calls == 1 and mode in ("hold", "kill"):
                ready.write_text(str(os.getpid()))
                deadline = time.monotonic() + 120
                while not ready.with_suffix(".go").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            return super().merge_chunk(chunk, statistics)

    if mode == "kill-swap":
        outputs.exchange = lambda first, second: False
        real_rename = os.rename

        def rename(source, destination):
            real_rename(source, destination)
            if Path(destination).name.startswith(f".{output.name}.old-"):
                os.kill(os.getpid(), signal.SIGKILL)

        os.rename = rename
    sources = [SourceModel(locale, zoo / PATTERN.format(locale=locale), weight)
               for locale, weight in (("de-DE", 0.6), ("nl-NL", 0.4))]
    try:
        run_merge(plan_merge(output, strategy=Paused(), sources=sources, overwrite=mode == "kill-swap", progress=False))
    except MergingUrielError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
    print("merged")


if __name__ == "__main__":
    main()
