"""The trainer: recipes run, resume is exact, checkpoints are atomic and verified, failures are clean."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gendiff

from gendiff.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint
from gendiff.datasets import CIFAR10, MNIST, FashionMNIST
from gendiff.errors import RecipeError
from gendiff.recipe import load_recipe
from gendiff.runner import run
from gendiff.training import Trainer, TrainingError, load_run, prepare

from fakes import digits_recipe, make_fake_cifar, make_fake_idx

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.toml"))

TINY = [
    "train.steps=2", "train.batch_size=4", "train.checkpoint_every=1", "train.sample_every=2",
    "train.sample_grid=4", "train.log_every=1", "train.precision=\"fp32\"", "train.device=\"cpu\"",
    "eval.samples=3", "eval.metrics=[]",
]


def tiny_overrides(recipe_path: Path, data_root: Path | None = None) -> list[str]:
    """Overrides that shrink any recipe to a seconds-long CPU run."""
    raw, _ = load_recipe(recipe_path)
    extra = []
    if "timesteps" in raw["schedule"]:
        extra.append("schedule.timesteps=10")
    if raw.get("backbone", {}).get("name") == "unet":
        extra += ["backbone.channels=32", "backbone.channel_mult=[1, 2]", "backbone.num_res_blocks=1",
                  "backbone.attn_resolutions=[]"]
    if raw["data"].get("name") in ("cifar10", "fashion-mnist", "mnist") and data_root is not None:
        extra.append(f'data.root="{data_root}"')
    return TINY + extra


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_validates_and_trains_a_tiny_step(recipe, tmp_path, monkeypatch):
    prepare(recipe)  # the recipe as shipped is valid (and builds its full-size model)
    _, md5, _ = make_fake_cifar(tmp_path / "data")
    monkeypatch.setattr(CIFAR10, "md5", md5)
    fake_idx = make_fake_idx(tmp_path / "data")  # stands in for MNIST / Fashion-MNIST, wherever installed
    for cls in (MNIST, FashionMNIST):
        monkeypatch.setattr(cls, "raw_md5", fake_idx["md5"])
        monkeypatch.setattr(cls, "system_dirs", ())
    result = run(recipe, tiny_overrides(recipe, tmp_path / "data"), out=tmp_path / "run", progress=False)
    assert result["trained_steps"] == 2
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [1, 2]
    assert (tmp_path / "run" / "samples" / "step-2.png").is_file()
    final = (tmp_path / "run" / "samples" / "final" / "samples.npz")
    import numpy as np

    assert np.load(final)["samples"].dtype == np.uint8


def test_the_cifar10_recipe_is_the_papers():
    setup = prepare(ROOT / "recipes" / "ddpm_cifar10.toml")
    r = setup.resolved
    assert r["schedule"] == {"name": "linear", "timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    assert (r["parameterization"]["name"], r["variance"]["name"], r["weighting"]["name"]) == ("eps", "fixed-large", "simple")
    assert {k: r["backbone"][k] for k in ("channels", "channel_mult", "num_res_blocks", "attn_resolutions", "dropout")} == {
        "channels": 128, "channel_mult": [1, 2, 2, 2], "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.1}
    t = r["train"]
    assert (t["lr"], t["warmup_steps"], t["grad_clip"], t["batch_size"], t["steps"], t["ema_decay"]) == (
        2e-4, 5000, 1.0, 128, 800_000, 0.9999)
    assert r["data"]["name"] == "cifar10" and r["data"]["flip"] is True
    assert r["eval"]["fid_samples"] == 50_000 and r["eval"]["fid_reference"] == "train" and "fid" in r["eval"]["metrics"]
    assert abs(sum(p.numel() for p in setup.model.backbone.parameters()) - 35.7e6) < 0.1e6
    assert r["gendiff"]["plugins"]["schedule"].startswith("gendiff")


def small_recipe(**train):
    cfg = {"steps": 6, "batch_size": 512, "warmup_steps": 2, "checkpoint_every": 3, "seed": 3, **train}
    return digits_recipe(timesteps=50, channels=32, dropout=0.1, samples=4, **cfg)


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_mid_epoch_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    # 1500 training digits, batch 512: 2 steps per epoch, so the stop at step 3 is mid-epoch
    full = Trainer(prepare(small_recipe()), tmp_path / "full", progress=False)
    full.train()
    first = Trainer(prepare(small_recipe()), tmp_path / "cut", progress=False)
    first.train(stop_after=4)  # checkpoint at 3, then one more step that is lost
    assert [s for s, _ in list_checkpoints(tmp_path / "cut")] == [3]
    assert len(losses(tmp_path / "cut")) == 4
    state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "step-3").state
    assert (state["data_epoch"], state["data_index"]) == (1, 1)
    second = Trainer(prepare(small_recipe()), tmp_path / "cut", progress=False)
    second.train(resume=True)
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")  # the lost step was redone identically
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "full" / "checkpoints" / "step-6" / name)
        b = load_file(tmp_path / "cut" / "checkpoints" / "step-6" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_contents_load_safely(tmp_path):
    Trainer(prepare(small_recipe(steps=3)), tmp_path / "r", progress=False).train()
    ckpt = tmp_path / "r" / "checkpoints" / "step-3"
    assert sorted(p.name for p in ckpt.iterdir()) == ["ema.safetensors", "manifest.json", "model.safetensors",
                                                       "recipe.toml", "state.pt"]
    state = torch.load(ckpt / "state.pt", weights_only=True)
    assert state["step"] == 3 and "optimizer" in state and state["rng_cpu"].dtype == torch.uint8
    # the checkpoint alone is enough to rebuild and sample
    model, _ = load_run(ckpt)
    assert model.sample(2).shape == (2, 1, 8, 8)


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_debris(tmp_path, monkeypatch):
    trainer = Trainer(prepare(small_recipe(steps=6)), tmp_path / "r", progress=False)
    import gendiff.checkpoint as ck

    real_save = torch.save
    calls = {"n": 0}

    def flaky(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint (step 6) hits a full disk
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ck.torch, "save", flaky)
    with pytest.raises(CheckpointError, match="No space left on device.*untouched"):
        trainer.train()
    root = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-3"]
    load_checkpoint(root / "step-3")  # still verifies


def test_a_corrupt_latest_checkpoint_is_skipped_for_the_previous_one(tmp_path):
    Trainer(prepare(small_recipe(steps=6)), tmp_path / "r", progress=False).train()
    latest = tmp_path / "r" / "checkpoints" / "step-6" / "model.safetensors"
    data = bytearray(latest.read_bytes())
    data[-10] ^= 0xFF
    latest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="step-6.*checksum"):
        assert latest_checkpoint(tmp_path / "r").name == "step-3"
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(latest.parent)
    # an unfinished (temporary) folder is never taken for a checkpoint
    (tmp_path / "r" / "checkpoints" / ".step-9.tmp-1").mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [3, 6]


def test_a_non_finite_loss_stops_cleanly_and_keeps_the_good_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(prepare(small_recipe(steps=6, checkpoint_every=2)), tmp_path / "r", progress=False)
    real = trainer.train_model.objective
    count = {"n": 0}

    def poisoned(terms):
        count["n"] += 1
        loss, losses = real(terms)
        return (loss * float("nan") if count["n"] == 4 else loss), losses

    monkeypatch.setattr(trainer.train_model, "objective", poisoned)
    weights = {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    trainer.model.backbone.register_forward_hook(lambda *a: weights.update(
        {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}))
    with pytest.raises(TrainingError, match="loss became nan at step 4.*step 2, is untouched"):
        trainer.train()
    assert count["n"] == 4 and trainer.step == 3
    after = trainer.model.backbone.state_dict()  # the poisoned step updated nothing
    assert all(torch.equal(weights[k], after[k]) for k in after)
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [2]
    load_checkpoint(tmp_path / "r" / "checkpoints" / "step-2")


def test_run_folder_problems_are_clear(tmp_path):
    Trainer(prepare(small_recipe(steps=3)), tmp_path / "r", progress=False).train()
    with pytest.raises(TrainingError, match="already holds a run.*--resume"):
        Trainer(prepare(small_recipe(steps=3)), tmp_path / "r", progress=False).train()
    # --resume where nothing was saved yet (a re-submitted job killed early) starts from step 0
    assert Trainer(prepare(small_recipe(steps=3)), tmp_path / "empty", progress=False).train(resume=True).steps == 3
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TrainingError, match="cannot write to the run folder"):
        Trainer(prepare(small_recipe(steps=3)), blocker / "run", progress=False).train()


def test_a_checkpoint_that_does_not_fit_the_recipe_is_refused(tmp_path):
    Trainer(prepare(small_recipe(steps=3)), tmp_path / "r", progress=False).train()
    bigger = small_recipe(steps=6)
    bigger["backbone"]["channels"] = 64
    with pytest.raises(TrainingError, match="backbone.channels: 32 -> 64"):  # the run's recipe.toml says so first
        Trainer(prepare(bigger), tmp_path / "r", progress=False).train(resume=True)
    (tmp_path / "r" / "recipe.toml").unlink()  # without it, the checkpoint's weights are what disagrees
    with pytest.raises(CheckpointError, match="do not fit") as err:
        Trainer(prepare(bigger), tmp_path / "r", progress=False).train(resume=True)
    # which tensors and which shapes disagree, not a cut-off load_state_dict message
    assert "tensor(s) of another shape" in str(err.value)
    assert "conv_in.weight (checkpoint (32, 1, 3, 3), model (64, 1, 3, 3))" in str(err.value)
    learned = small_recipe(steps=6)
    learned["variance"] = {"name": "learned-range"}
    learned["weighting"] = {"name": "hybrid"}
    with pytest.raises(CheckpointError) as err:
        Trainer(prepare(learned), tmp_path / "r", progress=False).train(resume=True)
    assert "2 tensor(s) of another shape" in str(err.value) and "conv_out.bias (checkpoint (1), model (2))" in str(err.value)
    assert "(checkpoint (1, 32, 3, 3), model (2, 32, 3, 3))" in str(err.value)


def test_overrides_and_train_table_errors_are_reported_by_path(tmp_path):
    with pytest.raises(RecipeError) as err:
        prepare(ROOT / "recipes" / "quickstart.toml", ["train.lr=fast", "train.bogus=1", "schedule.beta_end=[1]",
                                                       "nokey=3"])
    problems = err.value.problems
    assert any(p.startswith("train.lr: expected a float like the recipe's 0.002, got 'fast'") for p in problems)
    assert any(p.startswith("schedule.beta_end: expected a float") for p in problems)
    assert any("expected TABLE.KEY=VALUE" in p for p in problems)
    with pytest.raises(RecipeError) as err:
        prepare(ROOT / "recipes" / "quickstart.toml", ["train.bogus=1", "train.precision=\"fp16\"", "train.steps=0",
                                                       "eval.metrics=[\"fidd\"]", "backbone.dropout=\"x\""])
    problems = err.value.problems
    assert any(p.startswith("train.bogus: unknown key") for p in problems)
    assert any(p.startswith("train.precision: expected one of 'auto', 'fp32', 'bf16'") for p in problems)
    assert any(p.startswith("train.steps: must be > 0") for p in problems)
    with pytest.raises(RecipeError, match="unknown evaluation 'fidd'"):
        prepare(ROOT / "recipes" / "quickstart.toml", ["eval.metrics=[\"fidd\"]"])
    with pytest.raises(RecipeError, match="backbone.dropout: expected a float like the recipe's 0.0, got 'x'"):
        prepare(ROOT / "recipes" / "quickstart.toml", ["backbone.dropout=\"x\""])
    with pytest.raises(RecipeError, match="argument 'norm_groups' expects an integer \\(default 32\\), got 'x'"):
        prepare(ROOT / "recipes" / "quickstart.toml", ["backbone.norm_groups=\"x\""])


def test_resolved_recipe_is_complete_and_rebuilds_the_same_model(tmp_path):
    setup = prepare(ROOT / "recipes" / "quickstart.toml")
    r = setup.resolved
    assert r["schedule"]["beta_start"] == 1e-4 and r["sampler"]["clip_x0"] is True
    assert r["data"]["test_size"] == 297 and r["data"]["flip"] is False
    assert set(r["train"]) >= {"steps", "lr", "ema_decay", "precision"}
    assert r["gendiff"]["version"] and r["gendiff"]["plugins"]["backbone"].startswith("gendiff ")
    path = tmp_path / "resolved.toml"
    path.write_text(setup.recipe_text)
    again = prepare(path)
    assert again.resolved == r


def test_train_compile_trains_the_same_and_writes_the_same_checkpoint_names(tmp_path, monkeypatch):
    import gendiff.training.trainer as tr

    compiled = []
    monkeypatch.setattr(tr, "COMPILE_OPTIONS", {"backend": "eager"})  # torch.compile's path, without codegen
    original = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: (compiled.append(kw), original(self, **kw)))
    plain = Trainer(prepare(small_recipe(steps=3)), tmp_path / "plain", progress=False)
    plain.train()
    assert compiled == []
    fast = Trainer(prepare(small_recipe(steps=3, compile=True)), tmp_path / "compiled", progress=False)
    fast.train()
    assert compiled == [{"backend": "eager"}]
    assert fast.model.backbone._compiled_call_impl is not None
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "plain"), abs=1e-6)
    a = load_file(tmp_path / "plain" / "checkpoints" / "step-3" / "model.safetensors")
    b = load_file(tmp_path / "compiled" / "checkpoints" / "step-3" / "model.safetensors")
    assert a.keys() == b.keys()  # no "_orig_mod." prefixes: a compiled run's checkpoints load anywhere
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def _variant(kind: str, **train) -> dict:
    recipe = small_recipe(batch_size=64, checkpoint_every=4, **train)
    if kind == "conditional":
        recipe["conditioning"] = {"labels": True, "label_dropout": 0.2}
    elif kind == "importance":
        recipe["schedule"]["timesteps"] = 10
        recipe["time_sampler"] = {"name": "loss-second-moment", "history": 2}
    elif kind == "continuous":
        recipe["schedule"] = {"name": "vp-cosine", "timesteps": 20}
    elif kind == "streamed":  # two DataLoader workers read ahead; two micro-batches per step
        recipe["data"]["workers"] = 2
        recipe["train"]["accumulate"] = 2
    return recipe


@pytest.mark.parametrize("kind", ["conditional", "importance", "continuous", "streamed"])
def test_new_contracts_train_and_resume_bit_for_bit(tmp_path, kind):
    """Labels (with label dropout), a time sampler that learns, and continuous time all go through
    the trainer, and a run stopped mid-way resumes to exactly the uninterrupted weights."""
    full = Trainer(prepare(_variant(kind, steps=7)), tmp_path / "full", progress=False)
    full.train()
    cut = Trainer(prepare(_variant(kind, steps=7)), tmp_path / "cut", progress=False)
    cut.train(stop_after=5)  # checkpoint at 4, one step lost
    Trainer(prepare(_variant(kind, steps=7)), tmp_path / "cut", progress=False).train(resume=True)
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "full" / "checkpoints" / "step-7" / name)
        b = load_file(tmp_path / "cut" / "checkpoints" / "step-7" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model, _ = load_run(tmp_path / "full")
    if kind == "conditional":
        assert model.conditioning.num_classes == 10 and model.conditioning.label_dropout == 0.2
        x = model.sample(4, cond=torch.tensor([0, 3, 5, 9]), guidance=1.0)
        assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()
    if kind == "importance":
        state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "step-7").state["time_sampler"]
        assert torch.equal(state["counts"], torch.full((10,), 2))  # warmed up: every t seen twice
        other = load_checkpoint(tmp_path / "full" / "checkpoints" / "step-7").state["time_sampler"]
        assert state.keys() == other.keys() and all(torch.equal(state[k], other[k]) for k in state)
        sampler = full.model.time_sampler
        p = sampler.probabilities(10)
        assert not torch.allclose(p, torch.full((10,), 0.1, dtype=torch.float64))  # no longer uniform
        t, w = sampler.sample(4096, full.model.schedule, torch.Generator().manual_seed(0))
        assert torch.allclose(w.double(), 1 / (10 * p[t - 1]))
    if kind == "continuous":
        assert model.schedule.continuous and model.sample(2).shape == (2, 1, 8, 8)


def test_bound_weightings_need_discrete_time():
    recipe = _variant("continuous", steps=2)
    recipe["weighting"] = {"name": "vlb"}
    with pytest.raises(gendiff.errors.IncompatibleComponentsError,
                       match="weighting 'vlb' requires a schedule that provides discrete-time.*schedule 'vp-cosine'"):
        prepare(recipe)
    recipe = _variant("continuous", steps=2)
    recipe["time_sampler"] = {"name": "loss-second-moment"}
    with pytest.raises(gendiff.errors.IncompatibleComponentsError, match="time_sampler 'loss-second-moment'"):
        prepare(recipe)


def test_accumulation_and_workers_train_what_one_batch_in_one_process_trains(tmp_path):
    """Two micro-batches per step give the gradient of the whole batch (up to summation order):
    the same draws, the same weights; DataLoader workers read exactly the batches of the step."""
    one = small_recipe(steps=3, batch_size=64)
    one["backbone"]["dropout"] = 0.0  # dropout's masks are drawn per micro-batch
    plain = Trainer(prepare(one), tmp_path / "plain", progress=False)
    plain.train()
    recipe = small_recipe(steps=3, batch_size=64, accumulate=4)
    recipe["backbone"]["dropout"] = 0.0
    recipe["data"]["workers"] = 2
    split = Trainer(prepare(recipe), tmp_path / "split", progress=False)
    split.train()
    assert losses(tmp_path / "split") == pytest.approx(losses(tmp_path / "plain"), abs=1e-6)
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "plain" / "checkpoints" / "step-3" / name)
        b = load_file(tmp_path / "split" / "checkpoints" / "step-3" / name)
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_bad_accumulation_and_worker_settings_are_refused(tmp_path):
    from gendiff.distributed import DistributedError

    with pytest.raises(DistributedError, match=r"divisible by the number of processes times train.accumulate \(1 x 3 = 3\)"):
        Trainer(prepare(small_recipe(batch_size=64, accumulate=3)), tmp_path / "r", progress=False)
    for key, value, message in (("train.accumulate", 0, "train.accumulate: must be > 0"),
                                ("data.workers", -1, "data.workers: expected 0"), ("data.workers", "2", "expected an integer")):
        recipe = small_recipe()
        table, _, name = key.partition(".")
        recipe[table][name] = value
        with pytest.raises(RecipeError, match=message):
            prepare(recipe)
    assert not (tmp_path / "r").exists()


def test_a_streamed_image_folder_trains_and_a_broken_file_is_a_clear_error(tmp_path, monkeypatch):
    from fakes import make_image_folder

    folder = make_image_folder(tmp_path / "images", n=12, bad=1)
    recipe = small_recipe(steps=2, batch_size=4, checkpoint_every=2)
    recipe["data"] = {"name": "image-folder", "path": str(folder), "image_size": 8, "channels": 1, "workers": 2}
    recipe["backbone"]["attn_resolutions"] = [4]
    with pytest.warns(UserWarning, match="skipped 1 file.*1 unreadable"):
        Trainer(prepare(recipe), tmp_path / "run", progress=False).train()
    assert len(losses(tmp_path / "run")) == 2
    recipe["train"]["steps"] = 6
    for png in folder.rglob("img*.png"):  # files that break after the run has started (headers intact)
        data = png.read_bytes()
        png.write_bytes(data[:len(data) // 2])
    monkeypatch.setattr("gendiff.images.check_picture", lambda file: None)  # ... after the start-up scan
    with pytest.raises(gendiff.datasets.DatasetUnavailableError, match="cannot decode the image"):
        Trainer(prepare(recipe), tmp_path / "run", progress=False).train(resume=True)
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]  # the good checkpoint is kept
