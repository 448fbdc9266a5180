"""The documentation's examples run, and the command line lists plugins."""

import re
import subprocess
import sys
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


def _documented_commands():
    """Every ``gendiff ...`` line of the README's and the docs' shell blocks, as arguments."""
    import shlex

    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            text = block.replace("\\\n", " ")
            for line in text.splitlines():
                line = line.split(" #")[0].strip()
                if line.startswith("gendiff "):
                    yield doc.name, shlex.split(line)[1:]


def test_every_documented_command_parses():
    """The commands the docs show exist with the options they show (parsed, not run)."""
    import typer

    try:  # typer >= 0.24 carries its own copy of click
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover
        from click import UsageError

    from gendiff.cli import app

    group = typer.main.get_command(app)
    seen = 0
    for doc, args in _documented_commands():
        command, rest, name = group, list(args), "gendiff"
        while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):
            ctx = command.make_context(name, [], resilient_parsing=True)
            sub = command.get_command(ctx, rest[0])
            assert sub is not None, f"{doc}: gendiff {' '.join(args)}: no command {rest[0]!r}"
            command, name, rest = sub, rest[0], rest[1:]
        if "--version" in rest or "--help" in rest:
            continue
        try:
            command.make_context(name, rest)
        except UsageError as exc:
            raise AssertionError(f"{doc}: gendiff {' '.join(args)}: {exc}") from None
        seen += 1
    assert seen >= 40
