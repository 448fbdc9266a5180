"""Evaluation and the paper's analyses: FID/KID/IS, bits/dim, rate-distortion, progressive
generation, shared completions and interpolation."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gendiff.cli import app
from gendiff.datasets import CIFAR10, Digits
from gendiff.errors import GendiffError
from gendiff.evaluation import analyses
from gendiff.evaluation.fidelity import DIGITS, INCEPTION, EvaluationError, fidelity, inception_weights
from gendiff.evaluation.inputs import levels_to_pixels
from gendiff.evaluation.likelihood import bound_pass
from gendiff.training import load_run

from fakes import make_fake_cifar

runner = CliRunner()


def invoke(*args):
    res = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    res.flat = " ".join(res.output.split())
    return res


def digits(split):
    d = Digits()
    return levels_to_pixels(d.load(split), d.levels)


def test_fid_of_a_set_against_itself_is_zero_and_noise_is_far():
    test, train = digits("test"), digits("train")
    same = fidelity(test, test, None, DIGITS)
    real = fidelity(test, train, "gendiff-digits-train", DIGITS)
    noise = np.random.default_rng(0).integers(0, 256, test.shape, dtype=np.uint8)
    fake = fidelity(noise, train, "gendiff-digits-train", DIGITS)
    assert abs(same["fid"]) < 1e-6
    # KID's unbiased estimator is slightly negative for a set against itself; compare its size with noise's
    assert abs(same["kid_mean"]) < 0.1 * fake["kid_mean"]
    assert real["fid"] < 0.1 * fake["fid"]
    assert abs(real["kid_mean"]) < 0.1 * fake["kid_mean"]
    assert real["inception_score_mean"] > 5 > fake["inception_score_mean"]  # ten confident classes vs mush


def test_digits_classifier_is_cached_and_accurate():
    from gendiff.evaluation.digits_features import cache_dir, load_digits_net

    net, path, accuracy = load_digits_net()
    assert accuracy >= 0.97 and path.is_file() and path.parent == cache_dir()
    again, _, acc2 = load_digits_net()  # from the cache, identical
    assert acc2 == accuracy and all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


CACHE_WORKER = """
import sys, time
from pathlib import Path
import torch
from gendiff.evaluation.digits_features import cached_classifier

log = Path(sys.argv[1])
def train():
    with open(log, "a") as fh:
        fh.write("trained\\n")
    time.sleep(1.0)  # long enough that the other process asks while this one trains
    torch.manual_seed(int(sys.argv[2]))  # a different result per process: which one won shows
    return torch.nn.Linear(3, 2), {"test_accuracy": 0.5}
net, weights, info = cached_classifier("toy", torch.nn.Linear(3, 2), train)
print(net.weight.sum().item(), info["test_accuracy"], weights)
"""


def test_processes_asking_for_a_cached_classifier_together_train_it_once(tmp_path):
    """Two evaluation jobs that start together: one trains, the other waits and reads its weights;
    a damaged cache is trained again; a record is never left without its weights."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "GENDIFF_CACHE": str(tmp_path / "cache")}
    log = tmp_path / "trained.log"
    procs = [subprocess.Popen([sys.executable, "-c", CACHE_WORKER, str(log), str(seed)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert log.read_text().splitlines() == ["trained"]  # once, not once per process
    first, second = (out.split() for out, _ in outs)
    assert first == second  # the same weights (sum), record and file in both
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".toy.lock", "toy.json", "toy.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    for name in ("toy.json", "toy.safetensors"):  # readable by whoever shares the cache, as the umask says
        assert (tmp_path / "cache" / name).stat().st_mode & 0o777 == 0o666 & ~umask
    (tmp_path / "cache" / "toy.safetensors").write_bytes(b"not safetensors")  # damaged: trained again
    again = subprocess.run([sys.executable, "-c", CACHE_WORKER, str(log), "3"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert log.read_text().splitlines() == ["trained"] * 2 and again.stdout.split()[0] != first[0]
    reread = subprocess.run([sys.executable, "-c", CACHE_WORKER, str(log), "4"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert reread.stdout == again.stdout and len(log.read_text().splitlines()) == 2  # now from the cache


def test_an_unusable_cache_folder_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("GENDIFF_CACHE", str(tmp_path / "a-file" / "cache"))
    np.savez(tmp_path / "s.npz", samples=np.zeros((20, 8, 8, 1), np.uint8))
    res = invoke("eval", "fid", tmp_path / "s.npz", "--ref", "digits:test")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"gendiff's cache folder {tmp_path / 'a-file' / 'cache'} cannot be used (Not a directory)" in res.flat
    assert "Set GENDIFF_CACHE to a writable folder" in res.flat and (tmp_path / "a-file").read_text() == "not a folder"


def test_inception_offline_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("gendiff.evaluation.fidelity.inception_url", lambda: "http://127.0.0.1:9/weights.pth")
    with pytest.raises(EvaluationError) as err:
        inception_weights(None)
    msg = str(err.value)
    assert "http://127.0.0.1:9/weights.pth" in msg and "--inception-weights" in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth") in msg
    with pytest.raises(EvaluationError, match="no such file"):
        inception_weights(tmp_path / "absent.pth")
    # the same through the command line, on CIFAR-shaped samples
    np.savez(tmp_path / "s.npz", samples=np.zeros((4, 32, 32, 3), np.uint8))
    res = invoke("eval", "fid", tmp_path / "s.npz", "--ref", tmp_path / "s.npz")
    assert res.exit_code == 1 and "--inception-weights" in res.flat and "Traceback" not in res.output


def test_cifar10_path_on_fakes_with_stand_in_inception_weights(tmp_path, monkeypatch):
    """The whole CIFAR-10 protocol (reference from the dataset, Inception features, FID/KID/IS),
    with random stand-in weights in torch-fidelity's format and a fake archive."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with monkeypatch.context() as m:
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "inception.pth"
    torch.save(net.state_dict(), weights)
    _, md5, train = make_fake_cifar(tmp_path / "data", per_batch=4)
    monkeypatch.setattr(CIFAR10, "md5", md5)
    monkeypatch.setenv("GENDIFF_DATA", str(tmp_path / "data"))
    samples = np.ascontiguousarray(train[:12].transpose(0, 2, 3, 1))
    np.savez(tmp_path / "s.npz", samples=samples)
    res = invoke("eval", "fid", tmp_path / "s.npz", "--ref", "cifar10:train", "--inception-weights", weights)
    assert res.exit_code == 0, res.output
    assert "FID" in res.flat and "Inception Score" in res.flat
    direct = fidelity(samples, samples, None, INCEPTION, weights)
    assert abs(direct["fid"]) < 1e-2


@pytest.mark.parametrize("make, args, message", [
    (lambda p: np.savez(p / "s.npz", samples=np.zeros((5, 8, 8, 1), np.uint8)), ["--ref", "digits:train", "--n", "6"],
     "--n 6 is more than the 5 samples"),
    (lambda p: np.savez(p / "s.npz", samples=np.zeros((5, 8, 8, 1), np.uint8)), ["--ref", "svhn:train"],
     "unknown reference 'svhn:train'"),
    (lambda p: np.savez(p / "s.npz", samples=np.zeros((5, 8, 8, 1), np.uint8)), ["--ref", "train"],
     "--ref train means the run's own dataset"),
    (lambda p: np.savez(p / "s.npz", samples=np.zeros((5, 16, 16, 1), np.uint8)), ["--ref", "digits:train"],
     "the samples are 16x16x1 but the reference images are 8x8x1"),
    (lambda p: np.savez(p / "s.npz", samples=np.zeros((5, 8, 8), np.uint8)), ["--ref", "digits:train"],
     "must be uint8 N x H x W x C"),
])
def test_fid_bad_input(tmp_path, make, args, message):
    make(tmp_path)
    res = invoke("eval", "fid", tmp_path / "s.npz", *args)
    assert res.exit_code == 1 and message in res.flat and "Traceback" not in res.output


def test_a_folder_of_images_with_mixed_sizes_is_refused(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "b.png")
    res = invoke("eval", "fid", tmp_path, "--ref", "digits:test")
    assert res.exit_code == 1 and "differ in size or channels" in res.flat


def test_fid_of_a_run_keeps_its_samples(quick_run, monkeypatch):
    first = invoke("eval", "fid", quick_run, "--n", "40", "--no-progress")
    assert first.exit_code == 0, first.output
    report = json.loads((quick_run / "eval" / "fid-train.json").read_text())
    assert report["samples"] == 40 and report["features"] == DIGITS and report["fid"] > 0
    kept = quick_run / "eval" / "samples" / "seed-0.npz"
    assert np.load(kept)["samples"].shape == (40, 8, 8, 1)

    def no_generation(*a, **k):
        raise AssertionError("samples were generated again")

    monkeypatch.setattr("gendiff.runs.generate", no_generation)
    again = invoke("eval", "fid", quick_run, "--n", "30", "--ref", "test", "--no-progress")
    assert again.exit_code == 0, again.output
    assert json.loads((quick_run / "eval" / "fid-test.json").read_text())["samples"] == 30


def test_nll_and_rate_distortion_agree_and_behave(quick_run):
    res = invoke("eval", "nll", quick_run, "--n", "32", "--no-progress")
    assert res.exit_code == 0, res.output
    report = json.loads((quick_run / "eval" / "nll-test.json").read_text())
    nll = report["bits_per_dim"]
    assert nll["total"] == pytest.approx(nll["prior_L_T"] + nll["sum_L_1_to_L_T_minus_1"] + nll["decoder_L_0"])
    assert 0.5 < nll["total"] < np.log2(17)  # better than uniform over the 17 levels
    terms = report["terms_bits_per_dim"]  # every L_{t-1}, t = 1..T
    assert len(terms) == 100 and report["clip_x0"] is False
    assert terms[0] == nll["decoder_L_0"] and sum(terms[1:]) == pytest.approx(nll["sum_L_1_to_L_T_minus_1"])
    assert all(v >= -1e-9 for v in terms[1:])  # KLs
    clipped = invoke("eval", "nll", quick_run, "--n", "32", "--no-progress", "--clip-x0")
    assert clipped.exit_code == 0 and "the official convention" in clipped.output
    official = json.loads((quick_run / "eval" / "nll-test-clipped.json").read_text())
    assert official["clip_x0"] is True and len(official["terms_bits_per_dim"]) == 100
    assert official["bits_per_dim"]["total"] == pytest.approx(sum(official["terms_bits_per_dim"]) +
                                                              official["bits_per_dim"]["prior_L_T"])
    assert official["bits_per_dim"]["total"] != nll["total"]  # the same draws, another convention
    rd = invoke("eval", "rd", quick_run, "--n", "32", "--no-progress")
    assert rd.exit_code == 0, rd.output
    folder = quick_run / "eval" / "rd-test"
    assert (folder / "rd.png").stat().st_size > 1000
    rows = {int(r["t"]): r for r in csv.DictReader(open(folder / "rd.csv"))}
    T = 100
    assert sorted(rows) == list(range(T + 1))
    rate = np.array([float(rows[t]["rate_bits_per_dim"]) for t in range(T + 1)])
    dist = np.array([float(rows[t]["distortion_rmse"]) for t in range(T + 1)])
    assert (np.diff(rate) <= 1e-12).all()  # rate decreases with t (more of the chain still unsent)
    coarse = dist[::10]
    assert (np.diff(coarse) > 0).all()  # distortion increases with t
    assert rate[0] == pytest.approx(nll["total"], rel=1e-6)  # the final rate is the bound of eval nll
    assert rate[T] == pytest.approx(nll["prior_L_T"], rel=1e-6) and dist[0] == 0


def test_the_clipped_bound_is_the_bound_of_the_clipped_means(quick_run):
    """nll_bpd(clip_x0=True) (the official calc_bpd_loop's convention) is eq. 5 with each reverse
    mean formed from clip(x0_hat), computed here term by term by hand."""
    from gendiff.distributions import Gaussian, levels_to_unit

    model, _ = load_run(quick_run)
    x0 = levels_to_unit(model.dataset.load("test")[:8].float(), model.levels)
    exact = model.nll_bpd(x0, torch.Generator().manual_seed(5))
    clipped = model.nll_bpd(x0, torch.Generator().manual_seed(5), clip_x0=True)
    g = torch.Generator().manual_seed(5)
    s = model.schedule
    for t in range(1, model.timesteps + 1):
        tt = torch.full((8,), t)
        x_t = s.q_sample(x0, tt, s.noise_like(x0, g))
        x0_hat = s.x0_from_eps(x_t, tt, model.network(x_t, tt)[0]).clamp(-1, 1)
        p = Gaussian(s.posterior_mean(x0_hat, x_t, tt), s.at("log_fixed_large", tt, x_t))
        nats = model.bound_term(x0, x_t, tt, p)
        assert torch.allclose(clipped.terms[:, t - 1], nats / (model.dims * np.log(2)), rtol=1e-5, atol=1e-6), t
    assert not torch.allclose(clipped.total, exact.total)


def test_rate_at_t0_is_exactly_the_bound(quick_run):
    model, _ = load_run(quick_run)
    data = model.dataset.load("test")[:16]
    bp = bound_pass(model, data, seed=3)
    from gendiff.distributions import levels_to_unit

    nll = model.nll_bpd(levels_to_unit(data.float(), model.levels), torch.Generator().manual_seed(3))
    assert bp.rate()[0] == pytest.approx(nll.total.mean().item(), rel=1e-6)  # float32 sums in another order


def test_progressive_generation_and_shared_completions(quick_run, tmp_path):
    model, _ = load_run(quick_run)
    frames, times = analyses.progressive(model, 3, snapshots=5, seed=1)
    assert times == [100, 75, 50, 26, 1] and frames.shape == (3, 6, 1, 8, 8)
    # the last x0_hat (at t = 1) is the noiseless last step's output, i.e. the sample
    assert torch.allclose(frames[:, -2], frames[:, -1], atol=1e-5)
    # early guesses are far from the sample, late ones close (large features first)
    err = ((frames[:, :-1] - frames[:, -1:]) ** 2).mean(dim=(0, 2, 3, 4))
    assert err[0] > err[2] > err[-1]
    rows = analyses.shared_completions(model, [1, 90], completions=4, seed=2)
    assert rows.shape == (2, 4, 1, 8, 8)
    assert all(torch.equal(rows[0, 0], rows[0, i]) for i in range(4))  # x_1 frozen: the last step is noiseless
    assert not torch.equal(rows[1, 0], rows[1, 1])  # from t = 90 the completions differ
    res = invoke("sample", quick_run, "--n", "4", "--out", tmp_path / "s", "--progressive", "--snapshots", "5",
                 "--share-from", "50", "--share-from", "90", "--completions", "3", "--no-progress")
    assert res.exit_code == 0, res.output
    figures = tmp_path / "s-figures"  # beside the samples, so that the samples' folder holds only samples
    assert (figures / "progressive.png").is_file() and (figures / "shared-completions.png").is_file()
    bad = invoke("sample", quick_run, "--n", "2", "--out", tmp_path / "t", "--share-from", "101")
    assert bad.exit_code == 1 and "outside 1..100" in bad.flat


def test_interpolation_ends_are_the_single_image_reconstructions(quick_run, tmp_path):
    model, _ = load_run(quick_run)
    from gendiff.distributions import levels_to_unit

    x0 = levels_to_unit(model.dataset.load("test")[:4].float(), model.levels)
    a, b = x0[:2], x0[2:]
    mixes = analyses.interpolate(model, a, b, t=50, steps=5, seed=7)
    assert mixes.shape == (2, 5, 1, 8, 8)
    assert torch.equal(mixes[:, 0], analyses.reconstruct(model, a, 50, seed=7))
    assert torch.equal(mixes[:, -1], analyses.reconstruct(model, b, 50, seed=7))
    assert not torch.equal(mixes[:, 2], mixes[:, 0])
    res = invoke("interpolate", quick_run, "--t", "50", "--lambdas", "5", "--pairs", "2", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "interpolation-t50.png").is_file()
    bad = invoke("interpolate", quick_run, "--t", "0", "--out", tmp_path)
    assert bad.exit_code == 1 and "--t = 0 is outside 1..100" in bad.flat


@pytest.mark.parametrize("command", [["eval", "nll"], ["eval", "rd"], ["interpolate"], ["eval", "fid"]])
def test_missing_run_is_a_clean_error(command, tmp_path):
    res = invoke(*command, tmp_path / "nope", *(["--ref", "digits:train"] if command[-1] == "fid" else []))
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "no run or checkpoint folder" in res.flat or "no samples at" in res.flat


def test_run_ends_with_every_requested_evaluation(tmp_path, monkeypatch):
    from gendiff.runner import EvaluationFailed, run

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    over = ["schedule.timesteps=20", "train.steps=4", "train.batch_size=16", "train.sample_every=0",
            "train.precision=\"fp32\"", "eval.samples=12", "eval.fid_samples=16", "eval.nll_examples=8",
            'eval.metrics=["classifier", "fid", "nll", "rd"]']
    result = run(recipe, over, out=tmp_path / "r", progress=False)
    assert set(result["evaluations"]) == {"classifier", "fid", "nll", "rd"}
    for name in ("classifier", "fid", "nll", "rd"):
        assert "error" not in json.loads((tmp_path / "r" / "eval" / f"{name}.json").read_text())
    assert (tmp_path / "r" / "eval" / "rd-test" / "rd.csv").is_file()
    assert json.loads((tmp_path / "r" / "eval" / "fid.json").read_text())["samples"] == 16

    from gendiff.evaluation.metrics import FID

    def broken(self, context):
        raise GendiffError("the reference is unavailable")

    monkeypatch.setattr(FID, "evaluate", broken)
    with pytest.raises(EvaluationFailed, match="training finished and was saved.*fid: the reference is unavailable"):
        run(recipe, over, out=tmp_path / "r2", progress=False)
    assert (tmp_path / "r2" / "checkpoints" / "step-4").is_dir()
    assert "error" in json.loads((tmp_path / "r2" / "eval" / "fid.json").read_text())
    assert "error" not in json.loads((tmp_path / "r2" / "eval" / "nll.json").read_text())


def test_any_registered_metric_runs_by_name(quick_run, monkeypatch):
    """`gendiff eval NAME RUN` for every registered metric, not only the commands with options."""
    listing = invoke("eval", "--help")
    assert listing.exit_code == 0 and all(name in listing.flat for name in ("classifier", "fid", "nll", "rd"))
    res = invoke("eval", "classifier", quick_run, "--no-progress")
    assert res.exit_code == 0, res.output
    report = json.loads((quick_run / "eval" / "classifier.json").read_text())
    assert report["samples"] == 16 and 0 <= report["mean_top_class_probability"] <= 1  # the recipe's eval.samples
    assert "classifier: mean top-class probability" in res.flat and report["checkpoint"].endswith("step-400")
    unknown = invoke("eval", "bogus", quick_run)
    assert unknown.exit_code == 2 and "No such command 'bogus'" in unknown.flat
    missing = invoke("eval", "classifier", quick_run / "nowhere")
    assert missing.exit_code == 1 and "no run or checkpoint folder" in missing.flat and "Traceback" not in missing.output
    from gendiff.evaluation.metrics import Classifier

    def refuse(self, model, dataset):
        raise ValueError("it needs colour images")

    monkeypatch.setattr(Classifier, "check", refuse)
    before = (quick_run / "eval" / "classifier.json").read_text()
    refused = invoke("eval", "classifier", quick_run)
    assert refused.exit_code == 1 and "gendiff eval classifier: it needs colour images" in refused.flat
    assert (quick_run / "eval" / "classifier.json").read_text() == before  # nothing written over
