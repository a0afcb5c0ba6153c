"""docs/python-api.md runs: every ```python block, in order, in one namespace, in a fresh folder."""

import contextlib
import io
import re
from pathlib import Path

import merginguriel_core as mu

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_every_snippet_of_the_python_api_page_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    printed = io.StringIO()
    blocks = _blocks()
    assert len(blocks) >= 8
    with contextlib.redirect_stdout(printed):
        for number, block in enumerate(blocks, start=1):
            exec(compile(block, f"{DOC.name} block {number}", "exec"), namespace)
    output = printed.getvalue()
    # What the page says the snippets print.
    assert "uriel 20 20" in output
    assert "(('de-DE', 0.75), ('nl-NL', 0.25))" in output
    assert "ties {'density': 0.5, 'scaling': 1.0}" in output
    assert "3 problems:" in output and "unknown --strategy 'tie'" in output and "--top-k must be at least 1, got 0" in output
    for folder in ("merged-sw", "merged-sw-ties"):
        assert (tmp_path / folder / "model.safetensors").is_file(), folder
    assert not (tmp_path / "merged-mine").exists() and not (tmp_path / "merged-new").exists()  # plans write nothing
    assert namespace["result"].metrics["accuracy"] >= 0 and len(namespace["result"].predictions) == 4
    assert namespace["metrics"]["examples"] == 4
    assert len(namespace["table"].selected) == 3
    assert "['embeddings', 'layer.0', 'head']" in output
    assert (tmp_path / "merged-sw-ada" / "group_weights.png").is_file()
    assert "concatenation 4" in output and "['de-DE', 'nl-NL']" in output
    assert (tmp_path / "merged-af-lora" / "adapter_config.json").is_file()
    assert "[2, 4] 8" in output and (tmp_path / "iterative-sw" / "model" / "model.safetensors").is_file()


def test_the_printed_problems_match_the_page(tmp_path, monkeypatch):
    """The ```text block after "Every problem at once" is what the snippet prints (up to the plugin list)."""
    text = DOC.read_text(encoding="utf-8")
    shown = re.search(r"### Every problem at once.*?```text\n(.*?)```", text, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    from merginguriel_core.zoo import build_zoo

    build_zoo("models", ["de-DE", "sw-KE"])
    try:
        mu.plan_merge("merged-sw", strategy="tie", params={"density": 2}, device="tpu",
                      selection=mu.SelectionOptions(target="sw-KE", top_k=0), models="models")
    except mu.ConfigError as error:
        message = str(error)
    for expected, got in zip(shown.strip().splitlines(), message.splitlines(), strict=True):
        assert got.startswith(expected.removesuffix("..."))


def test_the_package_exports_exactly_the_documented_api():
    text = DOC.read_text(encoding="utf-8")
    used = set(re.findall(r"\bmu\.(\w+)", text))
    assert used <= set(mu.__all__), used - set(mu.__all__)
    for name in mu.__all__:
        assert getattr(mu, name) is not None
    undocumented = {name for name in mu.__all__ if not name.startswith("__") and f"`{name}" not in text}
    assert not undocumented, f"docs/python-api.md does not name {sorted(undocumented)}"
