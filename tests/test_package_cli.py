"""The package as a user lives with it: recipes found by name, one CLI vocabulary, plain logs off
a terminal, loggers and TensorBoard, training curves, sample folders other tools read, verdicts,
and the optional extras. (The wheel itself is installed and run from an empty folder by .ci/run.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gendiff.cli import app
from gendiff.errors import GendiffError, RecipeError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.steps=4", "train.batch_size=8", "train.checkpoint_every=2", "train.sample_every=2",
        "schedule.timesteps=20", "eval.samples=12", "backbone.channels=32", "train.log_every=1",
        "train.warmup_steps=2"]


class Result:
    def __init__(self, res):
        self.exit_code, self.raw = res.exit_code, res.output
        self.output = " ".join(res.output.split())


def invoke(*args):
    return Result(CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"}))


def sets(items):
    return [a for item in items for a in ("--set", item)]


# -- 1. recipes in the package, found by name ----------------------------------------------------
def test_builtin_recipes_are_the_repositorys_recipes_and_found_by_name(tmp_path, monkeypatch):
    from gendiff.recipe import builtin_recipes, find_recipe

    files = sorted(p.stem for p in (ROOT / "recipes").glob("*.toml"))
    assert list(builtin_recipes()) == files and "quickstart" in files
    monkeypatch.chdir(tmp_path)  # an empty folder: no recipes/ here
    assert find_recipe("quickstart").read_bytes() == (ROOT / "recipes" / "quickstart.toml").read_bytes()
    assert find_recipe("quickstart.toml") == find_recipe("quickstart")
    edited = tmp_path / "quickstart.toml"  # a path that exists wins over the built-in name
    edited.write_text("# mine\n")
    assert find_recipe("quickstart.toml") == Path("quickstart.toml")
    with pytest.raises(RecipeError, match="no built-in recipe has that name.*quickstart_conditional"):
        find_recipe("quickstrat")
    (tmp_path / "folder").mkdir()
    with pytest.raises(RecipeError, match="is a folder, not a recipe file"):
        find_recipe("folder")


def test_run_by_name_from_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("run", "quickstart", "--dry-run")
    assert res.exit_code == 0, res.raw
    assert "701,345 parameters" in res.output and "runs/quickstart" in res.output and not any(tmp_path.iterdir())
    bad = invoke("run", "quikstart", "--dry-run")
    assert bad.exit_code == 1 and "Built-in recipes: ar_masking_cifar10" in bad.output


def test_recipes_list_one_line_each_with_the_parameter_count():
    from gendiff import build
    from gendiff.recipe import builtin_recipes

    res = CliRunner().invoke(app, ["recipes", "list"], env={"COLUMNS": "60"})  # narrow: still one line each
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines() if line.strip()}
    assert set(builtin_recipes()) <= set(lines)
    count = sum(p.numel() for p in build(ROOT / "recipes" / "quickstart.toml").backbone.parameters())
    assert f"{count:,}" in lines["quickstart"] and "digits" in lines["quickstart"]
    assert "35,746,307" in lines["ddpm_cifar10"]  # built on the meta device: no CIFAR-10 files needed
    for name, path in builtin_recipes().items():  # every built-in recipe has a title line
        title = path.read_text().splitlines()[0]
        assert title.startswith("# ") and title[2:] in lines[name], name


def test_recipes_show_and_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "recipes" / "quickstart.toml").read_text()
    shown = CliRunner().invoke(app, ["recipes", "show", "quickstart"])
    assert shown.exit_code == 0 and shown.output.split("\n", 1)[1] == text
    assert invoke("recipes", "copy", "quickstart").exit_code == 0
    assert (tmp_path / "quickstart.toml").read_text() == text
    (tmp_path / "quickstart.toml").write_text("# my edits\n")
    again = invoke("recipes", "copy", "quickstart")
    assert again.exit_code == 1 and "already exists; nothing was copied" in again.output
    assert (tmp_path / "quickstart.toml").read_text() == "# my edits\n"  # nothing lost
    assert invoke("recipes", "copy", "quickstart", "--force").exit_code == 0
    assert (tmp_path / "quickstart.toml").read_text() == text
    (tmp_path / "mine").mkdir()
    assert invoke("recipes", "copy", "ddpm_cifar10", "mine").exit_code == 0
    assert (tmp_path / "mine" / "ddpm_cifar10.toml").is_file()
    missing = invoke("recipes", "copy", "quickstart", tmp_path / "nowhere" / "q.toml")
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert invoke("recipes", "validate", "quickstart").exit_code == 0
    assert invoke("recipe", "validate", "quickstart").exit_code == 0  # the old spelling still works


def test_the_package_list_ships_every_package_and_the_recipes():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gendiff").rglob("__init__.py")}
    assert set(project["packages"]) == on_disk | {"gendiff.recipes"}
    assert project["package-dir"] == {"gendiff.recipes": "recipes"}
    assert project["package-data"]["gendiff.recipes"] == ["*.toml"]


# -- 2. one CLI vocabulary -----------------------------------------------------------------------
def _commands():
    import typer

    group = typer.main.get_command(app)
    ctx = group.make_context("gendiff", ["--help"], resilient_parsing=True)
    out = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if hasattr(command, "list_commands"):
            for sub in command.list_commands(ctx):
                out[f"{name} {sub}"] = command.get_command(ctx, sub)
        else:
            out[name] = command
    return out


def test_every_command_that_runs_a_model_takes_device_and_precision_and_options_mean_one_thing():
    commands = _commands()
    runs_a_model = ["run", "sample", "interpolate", "eval fid", "eval nll", "eval rd", "eval classifier"]
    for name in runs_a_model:
        options = {o for p in commands[name].params for o in p.opts}
        assert {"--device", "--precision", "--progress"} <= options, name
    helps = {}
    for name, command in commands.items():
        for param in command.params:
            for opt in param.opts:
                helps.setdefault(opt, {})[name] = param.help or ""
    # --steps is a sampler's steps wherever it appears; interpolate counts lambdas with --lambdas
    assert set(helps["--steps"]) == {"sample"} and "--lambdas" in {o for p in commands["interpolate"].params for o in p.opts}
    assert all("sampler" in h.lower() for h in helps["--steps"].values())
    assert {"run", "sample", "interpolate", "eval fid", "eval nll"} <= set(helps["--seed"])
    assert {"run", "sample", "interpolate", "plot"} <= set(helps["--out"])
    assert len({h for h in helps["--device"].values() if "cuda:N" in h}) >= 1
    assert all("cuda:N" in h and "mps" in h for h in helps["--device"].values())


def test_version_completion_and_help_text_kept_verbatim():
    from gendiff import __version__

    res = invoke("--version")
    assert res.exit_code == 0 and res.output == f"gendiff {__version__}"
    root = invoke("--help")
    assert "--install-completion" in root.output and "--version" in root.output
    assert "report its [eval] evaluations" in invoke("run", "--help").output  # not eaten as markup


def test_device_spellings(monkeypatch):
    from gendiff.config import device_problem
    from gendiff.recipe import load_recipe, parse_recipe
    from gendiff.runtime import choose_device

    assert [device_problem(d) for d in ("auto", "cpu", "cuda", "cuda:1", "mps")] == [None] * 5
    assert "unknown device 'gpu'" in device_problem("gpu") and device_problem("cuda:x")
    assert choose_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GendiffError, match="no CUDA device is available"):
        choose_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert choose_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(GendiffError, match="has 2 CUDA device"):
        choose_device("cuda:2")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(GendiffError, match="MPS backend is not available"):
        choose_device("mps")
    raw, _ = load_recipe(ROOT / "recipes" / "quickstart.toml", ['train.device="mps"'])
    assert parse_recipe(raw).train.device == "mps"  # a valid spelling; the machine is asked at run time
    raw, _ = load_recipe(ROOT / "recipes" / "quickstart.toml", ['train.device="gpu"'])
    with pytest.raises(RecipeError, match=r"train.device: unknown device 'gpu'"):
        parse_recipe(raw)


def test_run_seed_device_and_precision_are_the_train_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("run", "quickstart", "--dry-run", "--seed", 5, "--device", "cpu", "--precision", "fp32")
    assert res.exit_code == 0, res.raw
    assert 'seed = 5' in res.raw and 'device = "cpu"' in res.raw and 'precision = "fp32"' in res.raw
    assert "on cpu (fp32)" in res.output
    bad = invoke("run", "quickstart", "--dry-run", "--precision", "fp16")
    assert bad.exit_code == 1 and "--precision must be one of auto, fp32, bf16" in bad.output
    gpu = invoke("run", "quickstart", "--dry-run", "--device", "gpu")
    assert gpu.exit_code == 1 and "unknown device 'gpu'" in gpu.output


def test_sample_builds_the_recipes_sampler_with_overrides(quick_run):
    from gendiff.runs import choose_sampler, load_run

    model, _ = load_run(quick_run)
    table = model.recipe["sampler"]
    assert choose_sampler(model) is None  # nothing asked: the model's own
    same = choose_sampler(model, overrides=["sampler.clip_x0=false"])
    assert same.name == table["name"] and same.steps == table["steps"] and same.clip_x0 is False
    other = choose_sampler(model, "ddim", overrides=["sampler.eta=0.5"])
    from gendiff.samplers import DDIM

    assert other.eta == 0.5 and other.steps == DDIM().steps  # the recipe's dpm-solver++ settings are not ddim's
    for overrides, message in ((["train.lr=1"], "sampler.KEY=VALUE only"), (["sampler.nope=1"], "unknown argument"),
                               (['sampler.steps="many"'], "steps")):
        with pytest.raises(GendiffError, match=message):
            choose_sampler(model, overrides=overrides)
    with pytest.raises(GendiffError, match="takes no steps"):
        choose_sampler(model, "ancestral", steps=5)


def test_precision_defaults_to_the_recipes(quick_run):
    from types import SimpleNamespace

    from gendiff.cli.common import run_precision

    cpu = torch.device("cpu")
    assert run_precision(None, SimpleNamespace(recipe={"train": {"precision": "bf16"}}), cpu) == "bf16"
    assert run_precision(None, SimpleNamespace(recipe={"train": {"precision": "fp32"}}), cpu) == "fp32"
    assert run_precision("bf16", SimpleNamespace(recipe={"train": {"precision": "fp32"}}), cpu) == "bf16"
    with pytest.raises(GendiffError, match="--precision"):
        run_precision("half", SimpleNamespace(recipe={}), cpu)


def test_eval_nll_takes_device_precision_and_checkpoint(quick_run, tmp_path):
    base = ["eval", "nll", quick_run, "--n", 4, "--no-progress"]
    assert invoke(*base).exit_code == 0
    first = json.loads((quick_run / "eval" / "nll-test.json").read_text())
    res = invoke(*base, "--device", "cpu", "--precision", "fp32", "--checkpoint", "step-400")
    assert res.exit_code == 0, res.raw
    second = json.loads((quick_run / "eval" / "nll-test.json").read_text())
    assert second["bits_per_dim"] == first["bits_per_dim"]  # the same defaults, spelled out
    bf16 = invoke(*base, "--precision", "bf16")
    assert bf16.exit_code == 0, bf16.raw
    third = json.loads((quick_run / "eval" / "nll-test.json").read_text())["bits_per_dim"]["total"]
    assert third != first["bits_per_dim"]["total"] and abs(third - first["bits_per_dim"]["total"]) < 0.05
    bad = invoke(*base, "--device", "tpu")
    assert bad.exit_code == 1 and "unknown device 'tpu'" in bad.output
    steps = invoke("interpolate", quick_run, "--steps", 5)
    assert steps.exit_code == 2  # --steps is a sampler's; interpolate counts --lambdas


# -- 3. logs off a terminal ----------------------------------------------------------------------
def test_plain_progress_lines():
    import io

    from rich.console import Console

    from gendiff.progress import Progress, duration

    console = Console(file=io.StringIO())  # not a terminal
    with Progress("training", 6, console, every=2, loss=float("nan"), ips=0.0) as bar:
        for step in range(1, 7):
            bar.update(step, loss=1.0 / step, ips=10.0)
        bar.update(6)  # said once only
    lines = console.file.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["2/6", "4/6", "6/6"]
    assert "loss 0.5000" in lines[0] and "10.0 img/s" in lines[0] and "ETA" in lines[0] and "ETA" not in lines[-1]
    quiet = Console(file=io.StringIO())
    with Progress("sampling", 10, quiet, enabled=False) as bar:
        bar.update(10)
    assert quiet.file.getvalue() == ""
    live = Console(file=io.StringIO(), force_terminal=True)
    with Progress("training", 4, live, every=2, loss=0.0, ips=0.0) as bar:
        for step in range(1, 5):
            bar.update(step, loss=0.1, ips=1.0)
    assert "training 2/4 (50%)" not in live.file.getvalue() and "\x1b[" in live.file.getvalue()
    assert [duration(s) for s in (12, 253, 11100)] == ["12s", "4m13s", "3h05m"]


def test_gendiff_run_off_a_terminal_prints_flushed_plain_lines(tmp_path):
    """A cluster job's log: stdout is a pipe; the first plain line arrives while the run goes on."""
    env = {**os.environ, "COLUMNS": "120", "GENDIFF_DISABLE_PLUGINS": "1"}
    env.pop("PYTHONUNBUFFERED", None)
    cmd = [sys.executable, "-m", "gendiff", "run", "quickstart", "--out", str(tmp_path / "run"),
           *sets([*TINY, "train.steps=40", "train.log_every=10", "train.sample_every=0"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    first = proc.stdout.readline()
    while first and not first.startswith("training"):
        first = proc.stdout.readline()
    still_running = proc.poll() is None
    rest = proc.stdout.read()
    assert proc.wait() == 0, first + rest
    assert first.startswith("training 10/40 (25%)") and "img/s" in first and "ETA" in first
    assert still_running  # the line was flushed at step 10, not at the end
    assert "training 40/40 (100%)" in rest and "gendiff run:" in rest
    assert "\x1b[" not in first + rest  # no terminal codes in a log file


# -- 4. loggers, TensorBoard, curves --------------------------------------------------------------
def test_tensorboard_logger_records_the_run_and_a_resume_rewrites_its_tail(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gendiff.runner import run

    out = tmp_path / "run"
    overrides = [*TINY, 'train.loggers=["tensorboard"]', "train.keep_checkpoints=0"]
    run(ROOT / "recipes" / "quickstart.toml", overrides, out=out, progress=False, stop_after=2)
    run(ROOT / "recipes" / "quickstart.toml", overrides, out=out, progress=False, resume=True)
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [row["step"] for row in logged] == [1, 2, 3, 4]
    assert np.allclose([e.value for e in losses], [row["loss"] for row in logged], rtol=1e-6)
    assert {"train/lr", "train/grad_norm", "train/img_per_s"} <= set(events.Tags()["scalars"])
    assert "eval/classifier/mean_top_class_probability" in events.Tags()["scalars"]
    assert [e.step for e in events.Images("samples")] == [2, 4, 4]  # step-2, step-4 and the final grid
    assert (out / "curves.png").is_file()


def test_a_broken_logger_is_switched_off_and_closed_and_the_run_finishes(tmp_path):
    import types

    import gendiff
    from gendiff.events import PluginRuntimeWarning
    from gendiff.loggers import Logger
    from gendiff.plugins import create_plugin_system
    from gendiff.runner import run

    calls = []

    class Broken(Logger):
        name = "broken"

        def log(self, step, figures):
            calls.append(("log", step))
            raise RuntimeError("disk full")

        def close(self):
            calls.append(("close",))

    plugin = types.ModuleType("broken_logger")
    plugin.gendiff_register_loggers = gendiff.hookimpl(lambda: [Broken])
    system = create_plugin_system(extra_plugins=[("broken", plugin)], autoload=False)
    with pytest.warns(PluginRuntimeWarning, match="logger 'broken' failed in log"):
        result = run(ROOT / "recipes" / "quickstart.toml", [*TINY, 'train.loggers=["broken"]'], out=tmp_path / "r",
                     progress=False, plugins=system)
    assert result["trained_steps"] == 4 and calls == [("log", 1), ("close",)]
    with pytest.raises(RecipeError, match=r"train.loggers\[0\]: unknown logger 'nope'; available: broken, tensorboard"):
        run(ROOT / "recipes" / "quickstart.toml", [*TINY, 'train.loggers=["nope"]'], out=tmp_path / "s",
            plugins=system, dry_run=True)


def test_loggers_take_their_settings_from_the_recipe_checked_like_a_component(tmp_path):
    """``[train] loggers`` entries are names or tables of a name and the logger's constructor
    arguments; a plugin logger gets its settings, a resume reads them back from the run's recipe,
    and every wrong setting is refused by path before anything is written."""
    import types

    import gendiff
    from gendiff.loggers import Logger
    from gendiff.plugins import create_plugin_system
    from gendiff.runner import run

    class LossCSV(Logger):
        name = "loss-csv"

        def __init__(self, file: str = "loss.csv", every: int = 1):
            if every < 1:
                raise ValueError(f"every must be at least 1, got {every}")
            self.file, self.every = file, every

        def start(self, run, step):
            self.out = open(run.run_dir / self.file, "a")

        def log(self, step, figures):
            if step % self.every == 0:
                self.out.write(f"{step},{figures['loss']}\n")

        def close(self):
            self.out.close()

    plugin = types.ModuleType("loss_csv")
    plugin.gendiff_register_loggers = gendiff.hookimpl(lambda: [LossCSV])
    system = create_plugin_system(extra_plugins=[("loss-csv", plugin)], autoload=False)
    recipe = ROOT / "recipes" / "quickstart.toml"
    setting = 'train.loggers=[{ name = "loss-csv", file = "every-2.csv", every = 2 }]'
    out = tmp_path / "r"
    run(recipe, [*TINY, setting, "train.log_every=1"], out=out, progress=False, plugins=system, stop_after=2)
    run(out / "recipe.toml", ["train.steps=6"], out=out, progress=False, plugins=system, resume=True)
    logged = {json.loads(line)["step"]: json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    rows = [line.split(",") for line in (out / "every-2.csv").read_text().splitlines()]
    assert [int(step) for step, _ in rows] == [2, 4, 6] and not (out / "loss.csv").exists()
    assert all(float(loss) == logged[int(step)] for step, loss in rows)
    assert 'file = "every-2.csv"' in (out / "recipe.toml").read_text()

    def refused(loggers):
        with pytest.raises(RecipeError) as info:
            run(recipe, [*TINY, f"train.loggers={loggers}"], out=tmp_path / "never", plugins=system, dry_run=True)
        assert not (tmp_path / "never").exists()
        return info.value.problems

    assert refused('[{ name = "tensorboard", foldr = "tb" }]') == [
        "train.loggers[0]: logger 'tensorboard': unknown argument(s) 'foldr'; it accepts folder."]
    assert refused('[{ name = "tensorboard", folder = 3 }]') == [
        "train.loggers[0]: logger 'tensorboard': argument 'folder' expects a string (default 'tensorboard'), got 3."]
    assert refused('[{ name = "loss-csv", every = 0 }]') == [
        "train.loggers[0]: logger 'loss-csv': every must be at least 1, got 0"]
    assert refused('["loss-csv", { folder = "tb" }, { name = 2 }]') == [
        "train.loggers[1].name: expected the registry name of a logger (a string), got nothing",
        "train.loggers[2].name: expected the registry name of a logger (a string), got 2"]
    assert refused('["loss-csv", { name = "loss-csv", every = 3 }]') == [
        "train.loggers: 'loss-csv' named twice (one logger of each name)"]
    assert refused("[3]") == ["train.loggers: expected an array of strings or tables, got [3]"]


def test_tensorboard_missing_names_the_extra(monkeypatch):
    from gendiff.loggers import TensorBoard

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with pytest.raises(ValueError, match=r"pip install 'gendiff\[tensorboard\]'"):
        TensorBoard().check()
    with pytest.raises(ValueError, match="relative folder"):
        TensorBoard(folder="../elsewhere")


def test_plot_command_and_curves(tmp_path):
    from PIL import Image

    from gendiff.curves import read_metrics, smooth

    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines = [json.dumps({"step": s, "loss": 1 / s, "lr": 1e-3, "grad_norm": 0.5, "img_per_s": 9.0, "time": s})
             for s in range(1, 31)]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 31, "lo')  # a line cut short by a crash
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(1, 31))
    res = invoke("plot", run_dir)
    assert res.exit_code == 0 and "30 steps" in res.output
    with Image.open(run_dir / "curves.png") as picture:
        assert picture.size[0] > 300 and picture.size[1] > 300
    res = invoke("plot", run_dir, "--out", tmp_path / "c.png")
    assert res.exit_code == 0 and (tmp_path / "c.png").is_file()
    empty = invoke("plot", tmp_path)
    assert empty.exit_code == 1 and "has no metrics.jsonl" in empty.output


# -- 5. outputs other tools accept ---------------------------------------------------------------
def test_sample_folder_holds_only_the_samples(quick_run, tmp_path):
    from PIL import Image
    from torch_fidelity.utils import glob_samples_paths

    out = tmp_path / "samples"
    res = invoke("sample", quick_run, "--n", 5, "--out", out, "--no-progress", "--progressive", "--snapshots", 3,
                 "--share-from", 20)
    assert res.exit_code == 0, res.raw
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"{i}.png" for i in range(5)] and sorted(p.name for p in out.iterdir()) == pngs + ["samples.npz"]
    assert sorted(p.name for p in (tmp_path / "samples-figures").iterdir()) == [
        "grid.png", "progressive.png", "shared-completions.png"]
    data = np.load(out / "samples.npz")["samples"]
    for i in range(5):  # the PNGs are the samples, exactly
        assert np.array_equal(np.asarray(Image.open(out / f"{i}.png"))[..., None], data[i])
    assert len(glob_samples_paths(str(out), False, "png,jpg,jpeg", verbose=False)) == 5  # torch-fidelity's reader
    custom = invoke("sample", quick_run, "--n", 2, "--out", tmp_path / "b", "--figures", tmp_path / "figs",
                    "--no-progress")
    assert custom.exit_code == 0 and (tmp_path / "figs" / "grid.png").is_file()
    assert not (tmp_path / "b-figures").exists()


def test_gendiff_run_writes_its_final_samples_as_pngs(tmp_path):
    from PIL import Image

    from gendiff.runner import run

    out = tmp_path / "run"
    result = run(ROOT / "recipes" / "quickstart.toml", TINY, out=out, progress=False)
    final = out / "samples" / "final"
    data = np.load(final / "samples.npz")["samples"]
    assert sorted(p.name for p in final.glob("*.png")) == [f"{i:02d}.png" for i in range(12)]
    assert np.array_equal(np.stack([np.asarray(Image.open(final / f"{i:02d}.png")) for i in range(12)])[..., None],
                          data)
    assert (out / "samples" / "final.png").is_file() and not (final / "grid.png").exists()
    assert result["verdicts"]["classifier"]["passed"] in (True, False)


def test_figures_carry_their_labels(tmp_path):
    from PIL import Image

    from gendiff.images import grid, save_labelled_rows

    rows = [np.full((3, 8, 8, 1), 255, dtype=np.uint8) for _ in range(2)]  # white pictures: any ink is text
    save_labelled_rows(rows, None, tmp_path / "a.png", scale=8, columns=["t=100", "t=50", "x0"])
    picture = np.asarray(Image.open(tmp_path / "a.png"))
    body = grid(np.concatenate(rows), nrow=3)
    body = body.repeat(8, 0).repeat(8, 1)[..., 0]
    header = picture.shape[0] - body.shape[0]
    assert header > 5 and np.array_equal(picture[header:], body)  # the pictures, below a header band
    width = (body.shape[1] - 8) / 3
    for j in range(3):  # some ink above every column, none below the header
        band = picture[:header, int(8 + j * width): int(8 + (j + 1) * width)]
        assert (band < 128).any(), j
    save_labelled_rows(rows, ["t=20", "t=10"], tmp_path / "b.png", scale=8)
    with Image.open(tmp_path / "b.png") as b:
        assert b.size[1] == body.shape[0] and b.size[0] > body.shape[1]  # a left margin, no header
    with pytest.raises(ValueError, match="column labels"):
        save_labelled_rows(rows, None, tmp_path / "c.png", columns=["only one"])


def test_interpolation_figure_has_a_label_per_column(quick_run, tmp_path):
    res = invoke("interpolate", quick_run, "--t", 10, "--lambdas", 3, "--pairs", 1, "--out", tmp_path,
                 "--no-progress")
    assert res.exit_code == 0, res.raw
    from PIL import Image

    with Image.open(tmp_path / "interpolation-t10.png") as picture:
        pixels = np.asarray(picture)
    assert pixels.shape[0] > 8 * 8 + 5  # a header band above the 64-pixel row


def test_verdicts_against_targets():
    from gendiff.evaluation import metric, verdicts

    fid, nll, classifier = metric("fid"), metric("nll"), metric("classifier")
    assert fid.verdict({"fid": 0.8}, 1.0) == (True, "0.8 <= 1")
    assert fid.verdict({"fid": 1.2}, 1.0) == (False, "1.2 > 1")
    assert fid.verdict({"fid": 1.2}, None)[0] is None
    assert nll.verdict({"bits_per_dim": {"total": 3.7}}, 3.75)[0] is True
    good = {"passes": True, "mean_top_class_probability": 0.9, "classes_present": 10, "copies": 0}
    assert classifier.verdict(good, None)[0] is True
    assert classifier.verdict(good, 0.95) == (False, "0.9 < 0.95, 10 classes, 0 copies")
    both = verdicts({"fid": {"fid": 2.0}, "nll": {"error": "no test split"}}, {"fid": 3.17})
    assert both["fid"] == (True, "2 <= 3.17") and both["nll"][0] is False


def test_targets_must_name_evaluated_metrics(tmp_path):
    from gendiff.training import prepare

    with pytest.raises(RecipeError, match=r"eval.targets.fdi: unknown metric 'fdi'; available: classifier, fid"):
        prepare(ROOT / "recipes" / "quickstart.toml", ["eval.targets.fdi=1.0"])
    setup = prepare(ROOT / "recipes" / "ddpm_cifar10.toml", ["eval.metrics=[]", "backbone.channels=32"])
    assert setup.spec.eval.targets == {"fid": 3.17, "nll": 3.75}  # kept, unused, while nothing is evaluated
    with pytest.raises(RecipeError, match=r"eval.targets: expected a table of floats"):
        prepare(ROOT / "recipes" / "quickstart.toml", ['eval.targets="fid"'])


# -- 6. the optional extras -----------------------------------------------------------------------
def test_fid_without_torch_fidelity_names_the_extra(monkeypatch, quick_run):
    from gendiff.evaluation import metric

    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    with pytest.raises(ValueError, match=r"pip install 'gendiff\[eval\]'"):
        metric("fid").check(None, None)
    before = sorted(quick_run.rglob("*"))
    res = invoke("eval", "fid", quick_run, "--n", 4)
    assert res.exit_code == 1 and "pip install 'gendiff[eval]'" in res.output
    assert sorted(quick_run.rglob("*")) == before  # refused before anything was sampled or written


def test_core_commands_do_not_import_the_evaluation_stack():
    code = ("import sys, gendiff.cli, gendiff.runner, gendiff.training\n"
            "from gendiff.builder import build\n"
            "build('quickstart')\n"
            "assert 'torch_fidelity' not in sys.modules and 'torchvision' not in sys.modules, sorted(sys.modules)\n"
            "assert 'einops' not in sys.modules and 'tensorboard' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_extras():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert "torch-fidelity" not in core and "einops" not in core and "tensorboard" not in core
    extras = project["optional-dependencies"]
    assert any(d.startswith("torch-fidelity") for d in extras["eval"])
    assert any(d.startswith("tensorboard") for d in extras["tensorboard"])
    assert "gendiff[eval,tensorboard]" in extras["dev"]  # pip install -e ".[dev]" stays complete
