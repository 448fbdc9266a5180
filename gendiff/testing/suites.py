"""Conformance suites of the other families: weightings, backbones, samplers, time samplers,
metrics and datasets."""

from __future__ import annotations

import math

import torch
from torch import nn

from .helpers import _batch, _close, example_instance
from .models import eval_context, tiny_model


def check_weighting(weighting) -> None:
    """A weighting returns one finite loss per example, and its gradient reaches the network."""
    needs = weighting.requires.get("variance", ())
    schedule = time_sampler = None
    if "finite-snr" in weighting.requires.get("schedule", ()):  # a weighting that trains a VDM schedule
        schedule = {"name": "vdm-learned-endpoints", "timesteps": 50}
    if "grid-times" in weighting.requires.get("time_sampler", ()):
        time_sampler = {"name": "low-discrepancy", "grid": True}
    if "categorical" in needs:
        model = tiny_model(weighting, "categorical", "x0-logits", process="masking")
    else:
        model = tiny_model(weighting, variance="learned-range" if "learned" in needs else "fixed-large",
                           schedule=schedule, time_sampler=time_sampler)
    x0, _, g = _batch(torch.float32, (8, 2, 4, 4))
    levels = model.levels  # put the data on the model's K levels
    x0 = torch.round((x0 + 1) * (levels - 1) / 2) * 2 / (levels - 1) - 1
    terms = model.loss_terms(x0, generator=g)
    loss = weighting.loss(terms)
    assert loss.shape == (8,), f"loss must have one value per example, got shape {tuple(loss.shape)}"
    assert bool(torch.isfinite(loss).all()), "loss must be finite"
    loss.mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(gr).all()) for gr in grads), "gradients must be finite"
    assert any(bool(gr.abs().sum() > 0) for gr in grads), "the loss must train the network"


# -- backbones -----------------------------------------------------------------------------------
def check_backbone(cls: type, image_size: int = 8) -> None:
    """A backbone returns (B, out_channels, H, W) for several channel configurations, keeps
    examples independent of each other, and depends on both x and t (after random weights)."""
    for cin, cout in ((1, 1), (3, 6), (2, 3)):
        net = example_instance(cls, in_channels=cin, out_channels=cout, image_size=image_size)
        assert isinstance(net, nn.Module), "a backbone must be an nn.Module"
        net.eval()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in net.parameters():  # zero-initialised output layers would hide everything
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            x = torch.randn(3, cin, image_size, image_size, generator=g)
            t = torch.tensor([1, 10, 1000])
            out = net(x, t)
            assert out.shape == (3, cout, image_size, image_size), f"output shape {tuple(out.shape)}"
            assert bool(torch.isfinite(out).all()), "output must be finite"
            alone = net(x[1:2], t[1:2])
            _close(alone, out[1:2], "an example's output must not depend on the rest of the batch", rtol=1e-4, atol=1e-5)
            assert not torch.allclose(net(x, torch.tensor([5, 500, 900])), out), "output must depend on t"
            assert not torch.allclose(net(x * 0.5, t), out), "output must depend on x"


# -- samplers ------------------------------------------------------------------------------------
def check_sampler(sampler) -> None:
    """A sampler returns finite samples of the asked-for shape, reproducible from a seeded
    generator and different for different seeds."""
    model = tiny_model(sampler=sampler, timesteps=20)
    shape = (3, 2, 4, 4)
    a = sampler.sample(model, shape, generator=torch.Generator().manual_seed(1))
    b = sampler.sample(model, shape, generator=torch.Generator().manual_seed(1))
    c = sampler.sample(model, shape, generator=torch.Generator().manual_seed(2))
    assert a.shape == shape, f"sample shape {tuple(a.shape)} != {shape}"
    assert bool(torch.isfinite(a).all()), "samples must be finite"
    assert torch.equal(a, b), "the same generator seed must give the same samples"
    assert not torch.equal(a, c), "different seeds must give different samples"


# -- time samplers -------------------------------------------------------------------------------
def check_time_sampler(sampler, timesteps: int = 20) -> None:
    """Times in the schedule's range, reproducible from a seeded generator; importance weights
    positive with mean 1 under the sampler's own draws (E_p[1 / (T p)] = 1: the objective stays
    unbiased), also after it has learned from losses that differ by t; its state restores."""
    import copy

    from ..schedules import LinearSchedule

    schedule = LinearSchedule(timesteps=timesteps)
    g = torch.Generator().manual_seed(0)
    for _ in range(3 * timesteps):  # learn from losses growing with t (every t seen many times)
        t, _ = sampler.sample(16, schedule, g)
        sampler.update(t, t.double() ** 2 + torch.rand(16, generator=g, dtype=torch.float64))
        sampler.update(torch.arange(1, timesteps + 1), torch.arange(1, timesteps + 1).double() ** 2)
    twin = copy.deepcopy(sampler)
    twin.load_state_dict(copy.deepcopy(sampler.state_dict()))
    a, wa = sampler.sample(20_000, schedule, torch.Generator().manual_seed(1))
    b, wb = twin.sample(20_000, schedule, torch.Generator().manual_seed(1))
    assert a.shape == (20_000,) and not a.is_floating_point(), "times must be integers (B,) for a discrete schedule"
    assert int(a.min()) >= 1 and int(a.max()) <= timesteps, "times must lie in 1..T"
    assert torch.equal(a, b), "the same generator seed and state must give the same times"
    if wa is not None:
        assert wa.shape == a.shape and bool((wa > 0).all() & torch.isfinite(wa).all()), "weights must be > 0"
        assert torch.equal(wa, wb), "the same state must give the same weights"
        mean = float(wa.double().mean())
        assert abs(mean - 1) < 0.05, f"importance weights must average 1 under the sampler's draws, got {mean:.3f}"


# -- metrics -------------------------------------------------------------------------------------


def check_metric(metric, context=None) -> None:
    """A metric either refuses the small digits run of :func:`eval_context` with a ``ValueError``
    from ``check`` or evaluates it: a JSON-serialisable dict, and report rows of two strings."""
    import json

    context = context or eval_context()
    try:
        metric.check(context.model, context.dataset)
    except ValueError as exc:
        assert str(exc), "check must say why the metric does not apply"
        return
    result = metric.evaluate(context)
    assert isinstance(result, dict) and result, "evaluate must return a non-empty dict"
    json.dumps(result)  # written to RUN/eval/<name>.json
    rows = metric.summary(result)
    assert all(isinstance(a, str) and isinstance(b, str) for a, b in rows), "summary rows are (label, value) strings"


# -- loggers -------------------------------------------------------------------------------------
def check_logger(logger, run_dir=None) -> None:
    """A logger either refuses with a ``ValueError`` from ``check`` (saying why) or takes a whole
    run's events in order (start, log, image, checkpoint, finish, close) in ``run_dir`` (default:
    a temporary folder) without raising, and closes twice without complaint."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from ..events import RunInfo
    from ..images import save_png

    try:
        logger.check()
    except ValueError as exc:
        assert str(exc), "check must say why the logger cannot work"
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(run_dir or tmp)
        grid = folder / "samples" / "step-2.png"
        save_png(np.zeros((6, 6, 1), dtype=np.uint8), grid)
        run = RunInfo(folder, {"train": {"steps": 2}}, tiny_model(), 2)
        logger.start(run, 0)
        for step in (1, 2):
            logger.log(step, {"step": step, "loss": 1.0 / step, "lr": 1e-3, "grad_norm": 0.5, "img_per_s": 10.0,
                              "time": float(step)})
        logger.image(2, grid)
        logger.checkpoint(2, folder / "checkpoints" / "step-2")
        logger.finish({"trained_steps": 2, "evaluations": {"fid": {"fid": 1.5}}, "verdicts": {}})
        logger.close()
        logger.close()


# -- datasets ------------------------------------------------------------------------------------
def check_dataset(dataset) -> None:
    """Both splits load as uint8 (N, C, H, W) in {0..K-1}, with the declared shape; a dataset
    with classes gives int64 labels (N,) in {0..num_classes-1} for each split."""
    for split in ("train", "test"):
        data = dataset.load(split)
        assert data.dtype == torch.uint8, f"{split}: dtype must be uint8, got {data.dtype}"
        assert data.ndim == 4 and tuple(data.shape[1:]) == tuple(dataset.shape), (
            f"{split}: shape {tuple(data.shape)} does not match the declared {tuple(dataset.shape)}"
        )
        assert len(data) > 0 and int(data.max()) < dataset.levels, f"{split}: values must lie in 0..K-1"
        if getattr(dataset, "num_classes", 0):
            labels = dataset.labels(split)
            assert labels.dtype == torch.int64 and labels.shape == (len(data),), (
                f"{split}: labels must be int64 of shape ({len(data)},), got {labels.dtype} {tuple(labels.shape)}"
            )
            assert 0 <= int(labels.min()) and int(labels.max()) < dataset.num_classes, f"{split}: labels in 0..K-1"
            names = getattr(dataset, "class_names", ())
            assert not names or len(names) == dataset.num_classes, "class_names must name every class"
    try:
        dataset.load("no-such-split")
    except ValueError:
        pass
    else:
        raise AssertionError("an unknown split must raise ValueError")
    assert math.prod(dataset.shape) > 0


# -- trainable components ------------------------------------------------------------------------
def check_trainable(component, family: str = "schedule", weighting: str = "vdm",
                    time_sampler: dict | None = None) -> None:
    """A trainable component (an ``nn.Module`` with parameters) in a small model: the model lists
    it among its trainable components; one loss, backward pass and ``after_backward`` give every
    parameter a finite gradient, and some of them a non-zero one; its own check accepts its starting
    parameters; its state round-trips through ``state_dict``, and a schedule's tables computed after
    loading equal those of the component it came from and follow a change of the parameters."""
    import copy

    assert isinstance(component, nn.Module), "a trainable component must be an nn.Module"
    params = list(component.parameters())
    assert params, "a trainable component must have parameters"
    model = tiny_model(weighting, variance="fixed-small", schedule={"name": "vdm-fixed", "timesteps": 50},
                       time_sampler=time_sampler or {"name": "low-discrepancy"})
    setattr(model, family, component)
    assert family in model.trainable(), f"the model must list the {family} among its trainable components"
    model.train()
    x0, _, g = _batch(torch.float32, (8, 2, 4, 4))
    x0 = torch.round((x0 + 1) * (model.levels - 1) / 2) * 2 / (model.levels - 1) - 1
    loss, losses = model.objective(model.loss_terms(x0, generator=g))
    assert bool(torch.isfinite(loss)), "the loss must be finite"
    loss.backward()
    model.after_backward(losses.detach())
    grads = [p.grad for p in params]
    assert all(gr is not None and bool(torch.isfinite(gr).all()) for gr in grads), "every parameter needs a finite gradient"
    assert any(bool(gr.abs().sum() > 0) for gr in grads), "the loss must train the component"
    check = getattr(component, "check_parameters", None)
    assert check is None or check() is None, f"its own check refuses its starting parameters: {check()}"
    twin = copy.deepcopy(component)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(1.01)
    twin.load_state_dict(component.state_dict())
    for key, value in component.state_dict().items():
        assert torch.equal(twin.state_dict()[key], value), f"state_dict round trip changed {key}"
    tables = getattr(component, "tables", None)
    if tables is not None:
        for key, value in tables.items():
            assert torch.equal(twin.tables[key], value), f"table {key} differs after load_state_dict"
        before = {k: v.clone() for k, v in twin.tables.items()}
        with torch.no_grad():
            for p in twin.parameters():
                p.add_(0.01 * torch.sign(p) + 0.01)
        assert any(not torch.equal(before[k], v) for k, v in twin.tables.items()), \
            "the tables must follow the parameters (rebuilt when they change), not stay stale"
        assert not any(v.requires_grad for v in twin.tables.values()), "tables must be built without gradients"
