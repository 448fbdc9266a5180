"""Algorithm 1 with the paper's optimisation (Sec. 4, Appendix B): Adam with linear warmup,
gradient clipping, an EMA of the weights, bf16 autocast, checkpoints and sample grids.

Determinism: weights are initialised from ``train.seed``; the data order of epoch e is a
permutation seeded by (seed, e); the flips and the diffusion draws (t, eps) of step s come from
generators seeded by (seed, s). The position in the data is therefore a function of the step,
and a resumed run repeats an uninterrupted one bit for bit (CPU, fp32), mid-epoch included.
The global RNG (dropout) is seeded per (seed, step, rank).
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from ..checkpoint import component_state, latest_checkpoint
from ..diffusion import Diffusion
from ..distributed import Dist, check_batch, wrap
from ..errors import TrainingError
from ..events import Events, RunInfo
from ..conditioning import class_names
from ..images import grid, save_png, to_uint8
from ..loggers import build_loggers
from ..objective import Share
from ..progress import Progress
from ..runs import class_grid
from ..runtime import autocast, choose_device, choose_precision, step_generator
from .data import DataStream
from .folder import RunFolder
from .setup import RunSetup


def make_adam(params, lr: float) -> torch.optim.Adam:
    """Adam (the paper's optimizer) with PyTorch's fused kernel where it exists, else foreach."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def component_optimizer(trainable: dict, lrs: dict, lr: float) -> tuple[torch.optim.Adam, list[float]]:
    """Adam with one parameter group per trainable family, at the family's ``lr`` (``[schedule] lr``)
    or train.lr; returns it and the groups' base rates (the warmup scales each alike)."""
    rates = [lrs.get(family, lr) for family in trainable]
    return make_adam([{"params": list(m.parameters()), "lr": r} for m, r in zip(trainable.values(), rates)], lr), rates


class EMA:
    """Exponential moving average of weights: theta_ema <- d theta_ema + (1 - d) theta, of one
    network or of every trainable component (``{family: module}``, e.g. the backbone and a learned
    schedule; :meth:`Diffusion.trainable`). ``net`` is the copy (a ``ModuleDict`` for several)."""

    def __init__(self, net: torch.nn.Module | dict[str, torch.nn.Module], decay: float):
        self.decay = decay
        source = torch.nn.ModuleDict(net) if isinstance(net, dict) else net
        self.net = copy.deepcopy(source).eval().requires_grad_(False)

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        """The averaged copies by family (for a ``{family: module}`` EMA)."""
        return dict(self.net.items()) if isinstance(self.net, torch.nn.ModuleDict) else {"backbone": self.net}

    @torch.no_grad()
    def update(self, net: torch.nn.Module | dict[str, torch.nn.Module], decay: float | None = None) -> None:
        """One EMA step with the run's decay (or ``decay``: 0 copies the weights)."""
        source = torch.nn.ModuleDict(net) if isinstance(net, dict) else net
        ema = list(self.net.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in source.parameters()],
                             1.0 - (self.decay if decay is None else decay))
        for b_ema, b in zip(self.net.buffers(), source.buffers()):
            b_ema.copy_(b)


@dataclass
class TrainSummary:
    steps: int
    final_loss: float
    seconds: float
    images_per_second: float
    checkpoint: Path | None
    losses: list[float] = field(default_factory=list)


def check_finite(folder: RunFolder, step: int, **nets: torch.nn.Module) -> None:
    """Refuse to checkpoint weights that hold NaN or inf: a checkpoint never looks good and isn't."""
    for what, net in nets.items():
        bad = [name for name, p in net.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            label = "EMA weights" if what == "ema" else what
            raise folder.non_finite(f"{label} ({bad[0]}{' and others' if len(bad) > 1 else ''})", "non-finite", step,
                                    before_update=False)


class TrainingStopped(TrainingError):
    """Training was stopped by SIGTERM or SIGINT after saving a checkpoint of the step it finished."""


class StopSignals:
    """While training: SIGTERM and SIGINT (Ctrl-C) are noted, so that the step under way finishes
    and is saved before the process stops (a cluster scheduler sends SIGTERM some seconds before
    SIGKILL); a second signal stops at once (KeyboardInterrupt), still leaving no damaged
    checkpoint (writes are atomic). Installed only in the main thread, previous handlers restored."""

    def __init__(self):
        self.received: str | None = None
        self._old: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"a second {signal.Signals(signum).name}")
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


#: keyword arguments of ``torch.compile`` when ``[train] compile = true``
COMPILE_OPTIONS: dict = {}


class Trainer:
    """Trains one composed model as its recipe's ``[train]`` table says, into ``run_dir``."""

    def __init__(self, setup: RunSetup, run_dir: Path, console: Console | None = None, progress: bool = True,
                 dist: Dist | None = None):
        self.setup, self.cfg = setup, setup.spec.train
        self.dist = dist or Dist()
        check_batch(self.cfg.batch_size, self.dist, self.cfg.accumulate)
        self.folder = RunFolder(run_dir, self.dist, setup.recipe_text)
        self.run_dir = self.folder.path
        self.console = console or Console(stderr=True)
        if not self.dist.main:  # rank 0 speaks for the job
            self.console = Console(quiet=True)
        self.show_progress = progress and self.dist.main
        self.device = choose_device(self.cfg.device)
        if self.device.type == "cuda" and self.dist.active:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.precision = choose_precision(self.cfg.precision, self.device)
        self.model = setup.model.to(self.device)
        #: every component with parameters, backbone first: optimised, averaged and checkpointed together
        self.trainable = self.model.trainable()
        self.ema = EMA(self.trainable, self.cfg.ema_decay)
        self.optimizer, self.group_lr = component_optimizer(self.trainable, setup.spec.lrs, self.cfg.lr)
        if self.cfg.compile:  # in place: parameter names, checkpoints and the EMA copy are unchanged
            self.model.backbone.compile(**COMPILE_OPTIONS)
        # the model Algorithm 1 runs: the same components around the DDP-wrapped network
        self.train_model = self.model.with_backbone(wrap(self.model.backbone, self.dist, self.device))
        self.step = 0
        loggers = build_loggers(self.cfg.loggers, setup.plugins.registry("logger"))[0] if self.dist.main else []
        self.events = Events(setup.plugins, enabled=self.dist.main, loggers=loggers)  # rank 0 tells the plugins
        self.run_info = RunInfo(self.run_dir, setup.resolved, self.model, self.cfg.steps, self.dist.world)

    # -- checkpoints ---------------------------------------------------------------------------
    def _restore(self) -> None:
        from ..checkpoint import CheckpointError, load_components

        ckpt = self.folder.latest()
        load_components(self.trainable, ckpt.model, ckpt.path)
        load_components(self.ema.components, ckpt.ema, ckpt.path, "EMA weights")
        try:
            self.optimizer.load_state_dict(ckpt.state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"the optimizer state in {ckpt.path} does not fit this recipe's model: {str(exc).splitlines()[0]}"
            ) from None
        self.step = int(ckpt.state["step"])
        self.model.time_sampler.load_state_dict(ckpt.state.get("time_sampler", {}))
        torch.set_rng_state(ckpt.state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in ckpt.state:
            torch.cuda.set_rng_state_all(list(ckpt.state["rng_cuda"]))
        self.folder.truncate_metrics(self.step)
        self.console.print(f"resuming from {ckpt.path} (step {self.step})")

    def _save(self, data: DataStream) -> Path:
        check_finite(self.folder, self.step, weights=torch.nn.ModuleDict(self.trainable), ema=self.ema.net)
        epoch, index = data.position(self.step)
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "rng_cpu": torch.get_rng_state(),
                 "data_epoch": epoch, "data_index": index, "seed": self.cfg.seed}
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        state["time_sampler"] = self.model.time_sampler.state_dict()
        return self.folder.save(self.step, component_state(self.trainable), component_state(self.ema.components),
                                state, self.cfg.keep_checkpoints)

    def ema_model(self) -> Diffusion:
        """The composed model with the EMA copy of every trainable component."""
        return self.model.with_components(**self.ema.components)

    def _sample_grid(self) -> None:
        g = step_generator(self.cfg.seed, 0, 3, self.device)  # the same noise for every grid
        path = self.run_dir / "samples" / f"step-{self.step}.png"
        scale = max(1, 64 // self.model.data_shape[1])
        conditioning = self.model.conditioning
        labels, n = None, self.cfg.sample_grid
        if conditioning.active:  # one labelled row per class
            per_row = max(1, round(n / conditioning.num_classes))
            labels = torch.arange(conditioning.num_classes, device=self.device).repeat_interleave(per_row)
            n = len(labels)
        with autocast(self.device, self.precision):
            pictures = to_uint8(self.ema_model().sample(n, generator=g, cond=labels), self.model.levels)
        if labels is None:
            save_png(grid(pictures), path, scale=scale)
        else:
            class_grid(pictures, labels.cpu().numpy(), class_names(conditioning.num_classes, self.setup.dataset),
                       per_row, path, scale)
        self.events.emit("gendiff_samples_written", run=self.run_info, step=self.step, path=path)

    # -- Algorithm 1 ---------------------------------------------------------------------------
    def train(self, resume: bool = False, stop_after: int | None = None) -> TrainSummary:
        """Run (or continue) training. ``stop_after`` ends the process's work after that many
        steps in all, as an interruption would (tests use it)."""
        cfg = self.cfg
        options = self.setup.spec.data.options
        data = DataStream(self.setup.dataset.open("train"), cfg.batch_size, cfg.seed, options["flip"],
                          self.model.levels, self.dist.rank, self.dist.world,
                          workers=options["workers"])  # fail before writing
        resumable = self.folder.prepare(resume)  # takes the folder's lock; given back when training ends
        try:
            return self._train(data, resumable, resume, stop_after)
        finally:
            self.folder.release()

    def _train(self, data: DataStream, resumable: bool, resume: bool, stop_after: int | None) -> TrainSummary:
        cfg = self.cfg
        if resumable:
            self._restore()
        elif resume and self.dist.main:  # a re-submitted job killed before its first checkpoint
            self.console.print(f"no checkpoint in {self.run_dir} yet: starting from step 0")
        self.events.start(self.run_info, self.step)
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        self.model.train()
        losses, window, last_ckpt = [], [], None
        start_time, start_step = time.perf_counter(), self.step
        self.folder.open_metrics()
        progress = Progress("training", cfg.steps, self.console, self.show_progress, every=cfg.log_every,
                            completed=self.step, loss=float("nan"), ips=0.0)
        batches = data.batches(self.step, end)
        try:
            with progress, StopSignals() as signals:
                while self.step < end:
                    loss, grad_norm, lr = self._one_step(*next(batches))
                    losses.append(loss)
                    window.append(loss)
                    self.step += 1
                    elapsed = time.perf_counter() - start_time
                    ips = (self.step - start_step) * cfg.batch_size / max(elapsed, 1e-9)
                    shown = loss
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                        figures = {"step": self.step, "loss": sum(window) / len(window), "lr": lr,
                                   "grad_norm": grad_norm, "img_per_s": ips, "time": round(elapsed, 3)}
                        self.folder.log(figures)
                        self.events.emit("gendiff_train_step_end", run=self.run_info, step=self.step, figures=figures)
                        shown, window = figures["loss"], []  # off a terminal: the interval's mean
                    progress.update(self.step, loss=shown, ips=ips)
                    if cfg.sample_every and self.step % cfg.sample_every == 0 and self.dist.main:
                        self._sample_grid()
                    stop = self.dist.share(signals.received) if self.dist.active else signals.received
                    if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or stop:
                        last_ckpt = self._save(data)  # on SIGTERM / Ctrl-C too: this step, then stop
                        self.events.emit("gendiff_checkpoint_written", run=self.run_info, step=self.step,
                                         path=last_ckpt)
                    if stop:
                        raise TrainingStopped(f"stopped by {stop} after step {self.step}: the checkpoint {last_ckpt} "
                                              f"is written; continue with --resume.")
        finally:
            self.folder.close_metrics()
        seconds = time.perf_counter() - start_time
        done = self.step - start_step
        if last_ckpt is None and self.step >= cfg.steps:  # resumed a run that had already finished
            last_ckpt = latest_checkpoint(self.run_dir)
        return TrainSummary(self.step, losses[-1] if losses else float("nan"), seconds,
                            done * cfg.batch_size / max(seconds, 1e-9), last_ckpt, losses)

    def _one_step(self, x0: torch.Tensor, labels: torch.Tensor | None) -> tuple[float, float, float]:
        """One optimizer step on this process's share of the step's batch (x0 on [-1, 1])."""
        cfg = self.cfg
        lr = cfg.lr * min(1.0, (self.step + cfg.warmup_offset) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group, base in zip(self.optimizer.param_groups, self.group_lr):
            group["lr"] = lr * base / cfg.lr
        x0 = x0.to(self.device)
        labels = labels.to(self.device) if labels is not None and self.model.conditioning.active else None
        # dropout and any other draw from the global RNG: seeded per (seed, step, rank)
        torch.manual_seed((((cfg.seed * 1_000_003 + self.step) * 8 + 4) * 4096 + self.dist.rank) % 2**63)
        self.optimizer.zero_grad(set_to_none=True)
        k, n = cfg.accumulate, len(x0) // cfg.accumulate
        total, times, per_example = None, [], []
        for m in range(k):  # gradient accumulation: k micro-batches of this process's share
            rows = slice(m * n, (m + 1) * n)
            g = step_generator(cfg.seed, self.step, 2, self.device)  # every micro-batch: the global batch's draws
            share = Share(self.dist.rank, self.dist.world, m, k)
            with self.dist.no_sync(self.train_model.backbone, last=m == k - 1):
                with autocast(self.device, self.precision):
                    terms = self.train_model.loss_terms(x0[rows], generator=g, share=share,
                                                        cond=None if labels is None else labels[rows])
                    loss, losses = self.train_model.objective(terms)
                (loss if k == 1 else loss / k).backward()
                self.model.after_backward(losses.detach())  # a component that shapes its own gradient
            total = loss.detach() if total is None else total + loss.detach()
            times.append(terms.t)
            per_example.append(losses.detach())
        value = self.dist.mean(total if k == 1 else total / k)  # the global batch's loss, the same on every rank
        if not math.isfinite(value):  # before the update: the weights stay as they were
            raise self.folder.non_finite("loss", value, self.step + 1)
        # DDP averages the backbone's gradients; the other components' are averaged here
        self.dist.average_gradients([p for f, m in self.trainable.items() if f != "backbone" for p in m.parameters()])
        params = [p for m in self.trainable.values() for p in m.parameters()]
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not math.isfinite(grad_norm):
            raise self.folder.non_finite("gradient norm", grad_norm, self.step + 1)
        self.optimizer.step()
        if problems := self.model.parameter_problems():  # e.g. a learned schedule no longer monotone
            raise self.folder.invalid_parameters(problems, self.step + 1)
        first = cfg.ema_from_first_step and self.step == 0  # the official code: decay 1e-10 at step 0
        self.ema.update(self.trainable, 0.0 if first else None)
        sampler = self.model.time_sampler
        if sampler.learns:  # every process learns from the whole global batch, in its order
            sampler.update(self.dist.gather_rows(torch.cat(times)), self.dist.gather_rows(torch.cat(per_example).float()))
        return value, grad_norm, lr
