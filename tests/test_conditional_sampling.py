"""Class-conditional models as a user drives them: classes by number or name, the recipe's
default guidance weight ([sampler] guidance), grids with one labelled row per class, FID samples
with the classes in the data's proportions, and every bad input as one paragraph."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gendiff
from gendiff.conditioning import ConditioningError, parse_classes, proportional_labels
from gendiff.errors import RecipeError
from gendiff.recipe import load_recipe, parse_recipe
from gendiff.runs import dataset_labels, generate, load_run

from test_cli import TINY, invoke

ROOT = Path(__file__).resolve().parents[1]
CONDITIONAL = str(ROOT / "recipes" / "quickstart_conditional.toml")
FASHION = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")


# -- classes named on the command line -----------------------------------------------------------
@pytest.mark.parametrize("specs, expected", [
    (["3"], [3]), (["sneaker"], [7]), (["Ankle Boot"], [9]), (["ankle_boot", "0"], [9, 0]),
    (["TShirt"], [0]), (["all"], list(range(10))), (["bag", "all"], [8, *range(10)]),
])
def test_classes_by_number_name_or_all(specs, expected):
    assert parse_classes(specs, 10, FASHION) == expected


@pytest.mark.parametrize("specs, classes, message", [
    (["10"], 10, r"--class 10: out of range; this model has classes 0\.\.9"),
    (["-1"], 10, r"--class -1: out of range"),
    (["boot"], 10, r"--class 'boot': no class of that number or name; the classes are 0 \(t-shirt\)"),
    (["3"], 0, r"not class-conditional .* cannot sample a class"),
])
def test_bad_classes_are_refused_with_the_choices(specs, classes, message):
    with pytest.raises(ConditioningError, match=message):
        parse_classes(specs, classes, FASHION[:classes])


def test_proportional_labels_meet_the_proportions_by_largest_remainder():
    # shares of 7 for counts 1:1:2 are 1.75, 1.75, 3.5: floors 1, 1, 3, and the two largest
    # remainders (classes 0 and 1) take the 2 left over
    labels = proportional_labels([10, 10, 20], 7, seed=0)
    assert torch.bincount(labels, minlength=3).tolist() == [2, 2, 3]
    assert torch.bincount(proportional_labels([1, 1, 2], 8), minlength=3).tolist() == [2, 2, 4]
    assert torch.bincount(proportional_labels([0, 3, 1], 100), minlength=3).tolist() == [0, 75, 25]
    a, b = proportional_labels([1] * 10, 50, seed=1), proportional_labels([1] * 10, 50, seed=2)
    assert torch.equal(a, proportional_labels([1] * 10, 50, seed=1)) and not torch.equal(a, b)
    assert torch.equal(torch.sort(a).values, torch.sort(b).values)
    for bad in ([], [-1, 2], [0, 0]):
        with pytest.raises(ConditioningError, match="class counts"):
            proportional_labels(bad, 5)


# -- [sampler] guidance ---------------------------------------------------------------------------
def conditional_raw(**sampler):
    raw, _ = load_recipe(CONDITIONAL)
    raw["sampler"] = {"name": "ddim", "steps": 5, **sampler}
    return raw


def test_sampler_guidance_is_the_default_weight_and_never_reaches_the_sampler():
    raw = conditional_raw(guidance=2.5)
    raw["conditioning"].pop("guidance", None)
    spec = parse_recipe(raw)
    assert spec.conditioning.guidance == 2.5 and "guidance" not in spec.components["sampler"].args
    model = gendiff.build(raw)
    assert model.conditioning.guidance == 2.5 and model.sampler.name == "ddim"
    # the resolved recipe keeps it in one place, [conditioning], and builds the same model again
    from gendiff.training import prepare

    resolved = prepare(raw).resolved
    assert resolved["conditioning"]["guidance"] == 2.5 and "guidance" not in resolved["sampler"]
    assert gendiff.build(resolved).conditioning.guidance == 2.5


@pytest.mark.parametrize("change, problem", [
    ({"sampler": {"guidance": -1.0}}, "sampler.guidance: expected the guidance weight, a finite number >= 0, got -1.0"),
    ({"sampler": {"guidance": math.inf}}, "sampler.guidance: expected the guidance weight"),
    ({"sampler": {"guidance": "2"}}, "sampler.guidance: expected the guidance weight"),
    ({"sampler": {"guidance": 2.0}, "conditioning": {"guidance": 1.0}}, "the default guidance weight is set twice"),
    ({"sampler": {"guidance": 2.0}, "conditioning": {"labels": False, "label_dropout": 0.0}},
     "sampler.guidance: guidance needs a class-conditional model"),
    ({"sampler": {"guidance": 2.0}, "conditioning": {"label_dropout": 0.0}}, "sampler.guidance: guidance needs the null label"),
])
def test_bad_sampler_guidance_is_reported_by_path(change, problem):
    raw = conditional_raw()
    raw["conditioning"].pop("guidance", None)
    for table, values in change.items():
        raw[table].update(values)
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw)
    assert problem in str(info.value)


# -- the command line on a tiny trained conditional run ----------------------------------------
@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conditional") / "run"
    # 30 steps: enough for the labels to change the network's output (the U-Net's residual
    # branches start at zero), so that the bit-for-bit comparisons below could fail
    res = invoke("run", CONDITIONAL, *TINY, "--set", "eval.metrics=[]", "--set", "train.sample_every=30",
                 "--set", "train.sample_grid=20", "--set", "train.steps=30", "--set", "train.warmup_steps=5",
                 "--set", "train.checkpoint_every=30", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.raw
    return out


def rows_of(path: Path, image: int, rows: int, scale: int, pad: int = 1) -> bool:
    """Whether a PNG is as tall as ``rows`` rows of ``image``-pixel pictures in a grid."""
    return Image.open(path).size[1] == (rows * (image + pad) + pad) * scale


def test_run_grids_have_a_row_per_class_and_final_samples_keep_their_labels(conditional_run):
    assert rows_of(conditional_run / "samples" / "step-30.png", 8, 10, 8)
    final = np.load(conditional_run / "samples" / "final" / "samples.npz")
    assert final["labels"].tolist() == [i % 10 for i in range(12)]
    assert rows_of(conditional_run / "samples" / "final.png", 8, 10, 8)


def test_sample_a_class_several_classes_or_all(conditional_run, tmp_path):
    res = invoke("sample", conditional_run, "--class", "3", "--n", 4, "--out", tmp_path / "a", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "wrote 4 samples of 1 class (guidance w = 0.5" in res.output
    kept = np.load(tmp_path / "a" / "samples.npz")
    assert kept["labels"].tolist() == [3] * 4 and kept["samples"].shape == (4, 8, 8, 1)
    res = invoke("sample", conditional_run, "--class", "7", "--class", "2", "--n", 3, "--out", tmp_path / "b",
                 "--no-progress", "--guidance", "0")
    assert res.exit_code == 0 and np.load(tmp_path / "b" / "samples.npz")["labels"].tolist() == [7] * 3 + [2] * 3
    assert rows_of(tmp_path / "b-figures" / "grid.png", 8, 2, 8)
    res = invoke("sample", conditional_run, "--class", "all", "--n", 2, "--out", tmp_path / "c", "--no-progress")
    assert res.exit_code == 0 and len(np.load(tmp_path / "c" / "samples.npz")["labels"]) == 20
    assert rows_of(tmp_path / "c-figures" / "grid.png", 8, 10, 8)


def test_guidance_zero_is_the_plain_conditional_network_bit_for_bit(conditional_run, tmp_path):
    """``--guidance 0`` through the CLI against the same weights wrapped as an *unconditional*
    model whose network is handed the label: an independent path with no guidance code."""
    res = invoke("sample", conditional_run, "--class", "5", "--n", 6, "--guidance", "0", "--seed", 4,
                 "--out", tmp_path / "s", "--no-progress", "--precision", "fp32")
    assert res.exit_code == 0, res.output
    model, _ = load_run(conditional_run)
    net = model.backbone
    raw = {k: v for k, v in model.recipe.items() if k not in ("backbone", "conditioning", "gendiff")}
    raw["data"] = {"shape": list(model.data_shape), "levels": model.levels}
    plain = gendiff.build(raw, model=lambda x, t: net(x, t, torch.full((len(x),), 5)))
    plain.dataset = model.dataset
    from gendiff.images import to_uint8

    reference = generate(plain, 6, seed=4, progress=False)
    assert np.array_equal(np.load(tmp_path / "s" / "samples.npz")["samples"], to_uint8(reference, model.levels))
    # the same in floats, and the label and the weight matter (so the equality above could fail)
    assert torch.equal(generate(model, 6, seed=4, progress=False, cond=5, guidance=0.0), reference)
    assert not torch.equal(generate(model, 6, seed=4, progress=False, cond=2, guidance=0.0), reference)
    assert not torch.equal(generate(model, 6, seed=4, progress=False, cond=5, guidance=3.0), reference)


def test_fid_samples_follow_the_data_s_class_proportions_at_the_asked_guidance(conditional_run, monkeypatch):
    model, ckpt = load_run(conditional_run)
    counts = torch.bincount(model.dataset.labels("train"), minlength=10).double()
    labels = dataset_labels(model, 1000, seed=0)
    assert (torch.bincount(labels, minlength=10) - counts / counts.sum() * 1000).abs().max() < 1
    from gendiff.evaluation.inputs import run_samples

    images, _, _ = run_samples(conditional_run, 30, seed=1, progress=False, model=model, checkpoint=ckpt, guidance=2.0)
    kept = np.load(conditional_run / "eval" / "samples" / "seed-1-w2.npz")
    assert kept["labels"].tolist() == dataset_labels(model, 30, seed=1).tolist() and float(kept["guidance"]) == 2.0
    assert np.array_equal(kept["samples"], images)
    run_samples(conditional_run, 30, seed=1, progress=False, model=model, checkpoint=ckpt)
    assert float(np.load(conditional_run / "eval" / "samples" / "seed-1-w0.5.npz")["guidance"]) == 0.5  # the recipe's


@pytest.mark.parametrize("args, message", [
    (["--class", "10"], "--class 10: out of range; this model has classes 0..9"),
    (["--class", "sneaker"], "--class 'sneaker': no class of that number or name; the classes are 0, 1, 2"),
    (["--guidance", "-1"], "the guidance weight must be a finite number >= 0, got -1.0"),
    (["--guidance", "nan"], "the guidance weight must be a finite number >= 0, got nan"),
    (["--guidance", "inf"], "the guidance weight must be a finite number >= 0, got inf"),
])
def test_bad_classes_and_weights_are_one_paragraph(conditional_run, tmp_path, args, message):
    res = invoke("sample", conditional_run, *args, "--n", 2, "--out", tmp_path / "s", "--no-progress")
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "s").exists()


def test_class_and_guidance_on_an_unconditional_run_are_refused(quick_run, tmp_path):
    out = quick_run
    res = invoke("sample", out, "--class", "3", "--out", tmp_path / "s", "--no-progress")
    assert res.exit_code == 1 and "not class-conditional" in res.output and "Leave out --class" in res.output
    res = invoke("sample", out, "--guidance", "2", "--out", tmp_path / "s", "--no-progress")
    assert res.exit_code == 1 and "guidance needs a class-conditional model" in res.output
    res = invoke("eval", "fid", out, "--guidance", "2", "--no-progress")
    assert res.exit_code == 1 and "guidance needs a class-conditional model" in res.output
    assert not (tmp_path / "s").exists()


def test_guidance_on_a_model_without_label_dropout_is_a_warning_in_words(tmp_path):
    out = tmp_path / "nodrop"
    res = invoke("run", CONDITIONAL, *TINY, "--set", "eval.metrics=[]", "--set", "conditioning.label_dropout=0.0",
                 "--set", "sampler.guidance=0.0", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    res = invoke("sample", out, "--class", "1", "--n", 2, "--guidance", "2", "--out", tmp_path / "s", "--no-progress")
    assert res.exit_code == 0 and "warning: guidance weight 2.0 on a model trained with label_dropout = 0" in res.output
    assert "null label was never learned" in res.output and "GuidanceWarning" not in res.output


def test_eval_fid_of_a_conditional_run_at_a_guidance_weight(conditional_run):
    res = invoke("eval", "fid", conditional_run, "--n", 20, "--guidance", "0.5", "--no-progress")
    assert res.exit_code == 0, res.output
    import json

    report = json.loads((conditional_run / "eval" / "fid-train-w0.5.json").read_text())
    assert report["guidance"] == 0.5 and report["samples"] == 20
    res = invoke("eval", "fid", conditional_run, "--n", 20, "--guidance", "-2", "--no-progress")
    assert res.exit_code == 1 and "finite number >= 0" in res.output


def test_class_agreement_is_the_classifier_s_verdict_on_the_asked_class():
    from gendiff.evaluation.agreement import class_agreement
    from gendiff.evaluation.inputs import levels_to_pixels
    from gendiff.plugins import registry

    digits = registry("dataset").get("digits")()
    images, labels = levels_to_pixels(digits.load("test"), digits.levels), digits.labels("test").numpy()
    right = class_agreement(images, labels, digits)
    assert right["agreement"] > 0.95 and right["samples"] == len(labels) and set(right["per_class"]) == set(range(10))
    wrong = class_agreement(images, (labels + 1) % 10, digits)  # every label off by one
    assert wrong["agreement"] < 0.1 and wrong["worst_class_agreement"] <= wrong["agreement"]
    with pytest.raises(gendiff.errors.GendiffError, match="labels for"):
        class_agreement(images, labels[:5], digits)


def test_guidance_for_a_set_of_samples_is_refused(tmp_path):
    np.savez(tmp_path / "s.npz", samples=np.zeros((4, 8, 8, 1), dtype=np.uint8))
    res = invoke("eval", "fid", tmp_path / "s.npz", "--ref", "digits:train", "--guidance", "1")
    assert res.exit_code == 1 and "--guidance is for a run's own samples" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]
