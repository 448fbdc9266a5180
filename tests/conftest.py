import pytest
import torch

from gendiff.plugins import reset_plugin_system


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch):
    """Every test sees a plugin system built from its own environment."""
    reset_plugin_system()
    yield
    reset_plugin_system()


@pytest.fixture
def base_recipe():
    """A small but complete recipe (tiny U-Net on 1x8x8 data, K = 17)."""
    return {
        "schedule": {"name": "linear", "timesteps": 100},
        "parameterization": {"name": "eps"},
        "variance": {"name": "fixed-large"},
        "weighting": {"name": "simple"},
        "sampler": {"name": "ancestral"},
        "backbone": {"name": "unet", "channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                     "attn_resolutions": [4], "dropout": 0.0},
        "data": {"shape": [1, 8, 8], "levels": 17},
    }


def pytest_configure(config):
    import os

    # rich reads the width once, when gendiff.cli's consoles are made: the same wide width in every
    # test process, whichever test imports the CLI first (and under `-n 2`)
    os.environ["COLUMNS"] = "200"
    if os.environ.get("PYTEST_XDIST_WORKER"):  # `-n 2`: one thread per worker, for the subprocesses too
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def shared_folder(tmp_path_factory, name: str):
    """A folder of this test session that the ``-n 2`` workers share (their common temporary root),
    or the process's own when the tests run in one process."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / name
        folder.mkdir(exist_ok=True)
        return folder
    return tmp_path_factory.mktemp(name)


def built_once(tmp_path_factory, name: str, build):
    """``build(folder)`` run by the first worker that asks, under a lock; every worker gets its own
    copy of the result (tests may write into it), the same as if it had built it."""
    import shutil

    from filelock import FileLock

    shared = shared_folder(tmp_path_factory, name)
    with FileLock(str(shared / ".lock")):
        if not (shared / "done").exists():
            shutil.rmtree(shared / "run", ignore_errors=True)  # what a failed build of another worker left
            build(shared / "run")
            (shared / "done").touch()
    own = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(shared / "run", own, symlinks=True)
    return own


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """The digits classifier and torch-fidelity statistics are cached per test session, in a folder
    that both workers of ``-n 2`` use (gendiff's cache lock: the classifier is trained once)."""
    import os

    old = os.environ.get("GENDIFF_CACHE")
    os.environ["GENDIFF_CACHE"] = str(shared_folder(tmp_path_factory, "gendiff-cache"))
    yield
    if old is None:
        os.environ.pop("GENDIFF_CACHE", None)
    else:
        os.environ["GENDIFF_CACHE"] = old


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """A briefly trained quickstart model (T = 100, 400 steps): a real, small, trained run (trained
    once per test session; each worker gets its own copy)."""
    from pathlib import Path

    from gendiff.runner import run

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"

    def train(out):
        run(recipe, ["schedule.timesteps=100", "train.steps=400", "train.batch_size=64", "train.checkpoint_every=400",
                     "train.sample_every=0", "train.precision=\"fp32\"", "train.warmup_steps=50", "eval.samples=16",
                     "eval.metrics=[]", "eval.nll_examples=64", "eval.fid_samples=64"],
            out=out, progress=False)

    return built_once(tmp_path_factory, "quick", train)
