"""The documentation's examples run, and the command line lists plugins."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_doc_examples_run():
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/api.md block {i}", "exec"), {})


def test_readme_names_the_test_command_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in readme and "python -m pytest -q" in ci
    assert 'pip install -e ".[dev]"' in readme and '-e ".[dev]"' in ci


def run_cli(*args, env_extra=None, cwd=ROOT):
    import os

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "gendiff", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_plugins_command_lists_components_and_failures(tmp_path):
    (tmp_path / "gendiff_broken.py").write_text("raise ImportError('needs libfoo')\n")
    info = tmp_path / "gendiff_broken-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gendiff-broken\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[gendiff]\ngendiff-broken = gendiff_broken\n")
    res = run_cli("plugins", env_extra={"PYTHONPATH": str(tmp_path), "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "schedule: linear, cosine, quadratic, vp-cosine, vp-linear, masking" in out
    assert "gendiff-broken" in out and "0.3" in out and "needs libfoo" in out


def test_unknown_command_exits_non_zero_without_traceback():
    res = run_cli("frobnicate")
    assert res.returncode != 0 and "Traceback" not in res.stderr
