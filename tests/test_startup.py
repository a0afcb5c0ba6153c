"""Start-up stays light: ``mu`` imports torch and transformers only where tensors are touched.

Each check runs in a fresh interpreter, since this test process has long imported torch.
``benchmarks/startup.py`` measures the times these imports would cost.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from merginguriel_core import __version__
from merginguriel_core.lazy import LazyMapping, LazyModule

HEAVY = ("torch", "transformers", "safetensors.torch", "pandas", "datasets")

#: Runs ``mu`` with the arguments in argv[1] (JSON) in-process, then writes its exit code,
#: standard output and the heavy modules it imported to the file argv[2].
PROBE = """
import contextlib, io, json, sys
args, report = json.loads(sys.argv[1]), sys.argv[2]
out = io.StringIO()
code = 0
with contextlib.redirect_stdout(out):
    if args is None:
        import merginguriel_cli.main
    else:
        from merginguriel_cli.main import main
        sys.argv = ["mu", *args]
        try:
            main()
        except SystemExit as exc:
            code = exc.code
with open(report, "w") as file:
    json.dump({"code": code, "output": out.getvalue(),
               "heavy": sorted(name for name in %r if name in sys.modules)}, file)
""" % (HEAVY,)


def probe(tmp_path, args: list[str] | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERGINGURIEL_")}
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), str(report)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text())


def test_importing_the_cli_imports_no_torch_or_transformers(tmp_path):
    # importing the app loads every installed plugin too
    assert probe(tmp_path, None)["heavy"] == []


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["--version"], ["similarity", "--target-lang", "de-DE"]],
                         ids=" ".join)
def test_light_commands_import_no_torch_or_transformers(tmp_path, args):
    result = probe(tmp_path, args)
    assert result["code"] == 0, result["output"]
    assert result["output"]
    assert result["heavy"] == [], f"`mu {' '.join(args)}` imported {result['heavy']}"


def test_version_prints_the_installed_version(runner):
    from merginguriel_cli.main import app

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"merginguriel {__version__}\n"
    assert __version__ == importlib.metadata.version("merginguriel")


def test_help_lists_version():
    from typer.main import get_command

    from merginguriel_cli.main import app

    assert "--version" in [opt for param in get_command(app).params for opt in param.opts]


def test_lazy_module_imports_on_first_use_and_forwards():
    name = "colorsys"  # a standard module nothing here imports
    was_imported = sys.modules.pop(name, None)
    try:
        lazy = LazyModule(name)
        assert name not in sys.modules and "not imported yet" in repr(lazy)
        assert lazy.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)
        real = sys.modules[name]
        lazy.ONE_THIRD_FOR_TEST = 1 / 3
        assert real.ONE_THIRD_FOR_TEST == 1 / 3
        del lazy.ONE_THIRD_FOR_TEST
        assert not hasattr(real, "ONE_THIRD_FOR_TEST")
        assert "rgb_to_hsv" in dir(lazy)
        with pytest.raises(AttributeError):
            lazy.no_such_function
    finally:
        if was_imported is not None:
            sys.modules[name] = was_imported


def test_lazy_mapping_builds_once_on_first_use():
    calls = []
    mapping = LazyMapping(lambda: calls.append(1) or {"a": 1, "b": 2})
    assert calls == []
    assert mapping["a"] == 1 and "b" in mapping and "c" not in mapping
    assert list(mapping) == ["a", "b"] and len(mapping) == 2 and dict(mapping) == {"a": 1, "b": 2}
    assert mapping.get("c") is None and ", ".join(mapping) == "a, b"
    assert calls == [1]


def test_dtype_tables_hold_torch_dtypes():
    import torch

    from merginguriel_core.io import DTYPES
    from merginguriel_core.io.reader import DTYPE_NAMES
    from merginguriel_core.merge import DTYPES as MERGE_DTYPES, MergePlan

    assert DTYPES["F32"] is torch.float32 and DTYPE_NAMES[torch.bfloat16] == "BF16"
    assert dict(MERGE_DTYPES) == {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    assert MergePlan((), None, None, {}).device == torch.device("cpu")
