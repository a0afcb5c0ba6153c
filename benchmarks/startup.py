"""How long ``mu`` takes to start: wall clock of four light commands, each a fresh process.

    python benchmarks/startup.py --runs 7
    python benchmarks/startup.py --runs 7 --against /tmp/before   # a checkout of another commit

Runs ``mu --help``, ``mu plugins``, ``mu similarity --target-lang de-DE`` and ``mu merge
--target-lang sw-KE --models ZOO --output OUT --dry-run`` (ZOO: ``--zoo``, else a demo zoo
built first with ``mu demo``) ``--runs`` times each, and prints a Markdown table of the
median and fastest wall time, the median peak resident memory and whether the command
imports torch (one extra run under ``python -X importtime``). One untimed run of each
warms the page cache first.

``--against DIR`` measures the code of another checkout too (``git worktree add --detach
DIR COMMIT``), side by side: its ``merginguriel_core``, ``cli`` and ``plugins`` folders go
first on ``PYTHONPATH`` (through links in a temporary folder), in the same virtual
environment, so plugins load through the installed entry points (both trees must declare
the same ones). The two trees' runs alternate, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The package each folder of a checkout is installed as (pyproject.toml's package-dir).
PACKAGES = {"merginguriel_core": "merginguriel_core", "merginguriel_cli": "cli", "merginguriel_plugins": "plugins"}


@dataclass
class Tree:
    """The code being measured: this checkout (``path`` None) or another one."""

    label: str
    path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def prepare(self, links: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MERGINGURIEL_PLUGINS")}
        if self.path is None:
            return
        shim = links / self.label
        shim.mkdir(parents=True)
        for package, folder in PACKAGES.items():
            if not (self.path / folder).is_dir():
                sys.exit(f"{self.path} has no {folder}/ folder: not a checkout of this project")
            (shim / package).symlink_to(self.path / folder, target_is_directory=True)
        self.env["PYTHONPATH"] = str(shim)


def commands(zoo: Path, output: Path) -> dict[str, list[str]]:
    return {
        "mu --help": ["--help"],
        "mu plugins": ["plugins"],
        "mu similarity --target-lang de-DE": ["similarity", "--target-lang", "de-DE"],
        "mu merge ... --dry-run": ["merge", "--target-lang", "sw-KE", "--models", str(zoo), "--output", str(output),
                                   "--dry-run"],
    }


def mu() -> list[str]:
    """How ``mu`` is started: the console script next to this Python, else ``python -m``."""
    script = Path(sys.executable).with_name("mu")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "merginguriel_cli"]


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """``(wall seconds, peak resident MB)`` of one run; exits if the command fails."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    if process.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({process.returncode}):\n{stderr.decode(errors='replace')}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def imports_torch(args: list[str], env: dict[str, str]) -> bool:
    """Whether the command imports torch (its ``python -X importtime`` report names it)."""
    report = subprocess.run([sys.executable, "-X", "importtime", "-m", "merginguriel_cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True).stderr
    names = [line.rsplit("|", 1)[-1].strip() for line in report.splitlines() if line.startswith("import time:")]
    return any(name == "torch" or name.startswith("torch.") for name in names)


def build_zoo(folder: Path) -> Path:
    print(f"building a demo zoo in {folder} (mu demo) ...", file=sys.stderr)
    subprocess.run([*mu(), "demo", "--output", str(folder)], check=True, stdout=subprocess.DEVNULL)
    return folder / "zoo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command and tree")
    parser.add_argument("--zoo", type=Path, help="a folder of source models for merge --dry-run (default: mu demo's)")
    parser.add_argument("--against", type=Path, help="another checkout to measure side by side (a git worktree)")
    parser.add_argument("--against-label", default="before", help="its name in the table")
    parser.add_argument("--label", default="this tree", help="this checkout's name in the table")
    args = parser.parse_args()

    trees = [Tree(args.label)]
    if args.against is not None:
        trees.insert(0, Tree(args.against_label, args.against.resolve()))
    with tempfile.TemporaryDirectory(prefix="mu-startup-") as tmp:
        tmp = Path(tmp)
        for tree in trees:
            tree.prepare(tmp / "links")
        zoo = args.zoo or build_zoo(tmp / "demo")
        table = commands(zoo, tmp / "merged")
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        torch: dict[tuple[str, str], bool] = {}
        for name, cmd in table.items():
            for tree in trees:
                run_once([*mu(), *cmd], tree.env)  # warm the page cache
                torch[(name, tree.label)] = imports_torch(cmd, tree.env)
            for _ in range(args.runs):
                for tree in trees:
                    results.setdefault((name, tree.label), []).append(run_once([*mu(), *cmd], tree.env))
            print(f"  {name}: done", file=sys.stderr)

    header = ["command"]
    for tree in trees:
        header += [f"{tree.label} median s", f"{tree.label} min s", f"{tree.label} MB", f"{tree.label} torch"]
    print(f"{args.runs} runs each, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in table:
        row = [f"`{name}`"]
        for tree in trees:
            samples = results[(name, tree.label)]
            seconds = [s for s, _ in samples]
            row += [f"{statistics.median(seconds):.2f}", f"{min(seconds):.2f}",
                    f"{statistics.median(m for _, m in samples):.0f}", "yes" if torch[(name, tree.label)] else "no"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
