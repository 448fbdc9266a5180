"""The trainer shared by every recipe: Algorithm 1 with Adam, warmup, clipping, EMA, bf16
autocast, atomic checkpoints, sample grids and metrics (Sec. 4 and Appendix B of the paper).

Determinism: weights are initialised from ``train.seed``; the data order of epoch e is a
permutation seeded by (seed, e); the flips and the diffusion draws (t, eps) of step s come from
generators seeded by (seed, s). The position in the data is therefore a function of the step,
and a resumed run repeats an uninterrupted one bit for bit (CPU, fp32), mid-epoch included.
The global RNG (dropout) is saved in every checkpoint and restored on resume.

Run folder: ``recipe.toml`` (resolved), ``metrics.jsonl``, ``checkpoints/step-N/``,
``samples/step-N.png`` and, at the end, ``samples/final.png``, ``samples/final.npz`` and
``eval/*.json``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DistributedSampler

from .checkpoint import (
    CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint, load_latest, prune_checkpoints,
    remove_debris, save_checkpoint,
)
from .config import TrainConfig
from .diffusion import Diffusion
from .distributed import Dist, check_batch, wrap
from .distributions import levels_to_unit
from .errors import GendiffError
from .images import grid, save_png, to_uint8
from .recipe import Recipe, apply_overrides, dumps, load_recipe, parse_recipe, resolve, tomllib


class TrainingError(GendiffError):
    """Training cannot go on (a non-finite loss, an unusable run folder, nothing to resume)."""


@dataclass
class RunSetup:
    """Everything a run needs, decided before any work starts."""

    model: Diffusion
    spec: Recipe
    resolved: dict[str, Any]
    dataset: Any

    @property
    def recipe_text(self) -> str:
        return dumps(self.resolved)


def prepare(source, overrides: Sequence[str] = (), plugins=None) -> RunSetup:
    """Load, override, validate and build a recipe; weights are initialised from train.seed."""
    from .builder import build
    from .plugins import plugin_system

    system = plugins or plugin_system()
    raw, name = load_recipe(source)
    spec = parse_recipe(raw, name, problems=apply_overrides(raw, overrides))
    if spec.data.name is None:
        raise TrainingError(
            f"the recipe{' ' + name if name else ''} has no dataset: set [data] name (e.g. \"digits\") to train."
        )
    torch.manual_seed(spec.train.seed)
    model = build(raw, plugins=system)
    from .evaluation import check_metrics

    check_metrics(spec, model.dataset)
    _check_sample_memory(spec, model)
    objects = {table: getattr(model, table) for table in spec.components}
    return RunSetup(model, spec, resolve(spec, objects, model.dataset, system), model.dataset)


def _check_sample_memory(spec: Recipe, model: Diffusion) -> None:
    """Refuse an [eval] whose samples could not be held in memory (they are kept as float32)."""
    from .builder import memory_bytes

    ev = spec.eval
    wanted = [("eval.samples", ev.samples)] + ([("eval.fid_samples", ev.fid_samples)] if "fid" in ev.metrics else [])
    if spec.train.sample_every:
        wanted.append(("train.sample_grid", spec.train.sample_grid))
    key, n = max(wanted, key=lambda kv: kv[1])
    need, have = n * math.prod(model.data_shape) * 5, memory_bytes()  # float32 + the uint8 copy written out
    if have and need > have // 2:
        raise TrainingError(
            f"{key} = {n:,} samples of shape {tuple(model.data_shape)} need about {need / 2**30:,.1f} GiB, more "
            f"than half of this machine's {have / 2**30:,.1f} GiB; ask for fewer."
        )


def choose_device(name: str) -> torch.device:
    from .config import DEVICES

    if name not in DEVICES:
        raise TrainingError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device = \"cuda\" but no CUDA device is available; use \"cpu\" or \"auto\".")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast is worth it: a CUDA device with bf16, or a CPU with native bf16 (AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return name


def make_adam(params, lr: float) -> torch.optim.Adam:
    """Adam (the paper's optimizer) with PyTorch's fused kernel where it exists, else foreach."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision: bf16 autocast, or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def step_generator(seed: int, step: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one (step, stream) pair, independent of everything before it."""
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + step) * 8 + stream) % 2**63)
    return g


class DataStream:
    """Batches of a uint8 dataset in seeded epoch order; batch s depends only on (seed, s).

    The order of each epoch is :class:`torch.utils.data.DistributedSampler`'s (seeded with
    ``seed``, ``set_epoch(epoch)``); with ``world`` processes, ``batch_size`` is the global batch
    and process ``rank`` gets its positions ``rank::world``, so the union over ranks of batch s
    is the single-process batch s, whatever ``world`` is."""

    def __init__(self, data: torch.Tensor, batch_size: int, seed: int, flip: bool, levels: int,
                 rank: int = 0, world: int = 1):
        if len(data) < batch_size:
            raise TrainingError(
                f"the training split has {len(data)} examples, fewer than train.batch_size = {batch_size}."
            )
        self.data, self.batch_size, self.seed, self.flip, self.levels = data, batch_size, seed, flip, levels
        self.rank, self.world = rank, world
        self.local_batch = batch_size // world
        self.steps_per_epoch = len(data) // batch_size  # the last partial batch is dropped
        self.sampler = DistributedSampler(range(len(data)), num_replicas=world, rank=rank, shuffle=True,
                                          seed=seed, drop_last=False)
        self._epoch, self._order = -1, None

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of step ``step`` (0-based)."""
        return divmod(step, self.steps_per_epoch)

    def batch(self, step: int) -> torch.Tensor:
        """This process's share of batch ``step`` on the [-1, 1] scale, float32 (N, C, H, W)."""
        epoch, index = self.position(step)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, torch.tensor(list(self.sampler))
        idx = self._order[index * self.local_batch:(index + 1) * self.local_batch]
        x = levels_to_unit(self.data[idx].float(), self.levels)
        if self.flip:  # random horizontal flips (Sec. 4), drawn for the global batch
            g = step_generator(self.seed, step, 1)
            mask = (torch.rand(self.batch_size, generator=g) < 0.5)[self.rank::self.world]
            x = torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)
        return x


class EMA:
    """Exponential moving average of a network's weights: theta_ema <- d theta_ema + (1 - d) theta."""

    def __init__(self, net: torch.nn.Module, decay: float):
        self.decay = decay
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        ema = list(self.net.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 1.0 - self.decay)
        for b_ema, b in zip(self.net.buffers(), net.buffers()):
            b_ema.copy_(b)


@dataclass
class TrainSummary:
    steps: int
    final_loss: float
    seconds: float
    images_per_second: float
    checkpoint: Path | None
    losses: list[float] = field(default_factory=list)


#: keyword arguments of ``torch.compile`` when ``[train] compile = true``
COMPILE_OPTIONS: dict = {}


class Trainer:
    """Trains one composed model as its recipe's ``[train]`` table says, into ``run_dir``."""

    def __init__(self, setup: RunSetup, run_dir: Path, console: Console | None = None, progress: bool = True,
                 dist: Dist | None = None):
        self.setup, self.cfg = setup, setup.spec.train
        self.dist = dist or Dist()
        check_batch(self.cfg.batch_size, self.dist)
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        if not self.dist.main:  # rank 0 speaks for the job
            self.console = Console(quiet=True)
        self.show_progress = progress and self.dist.main
        self.device = choose_device(self.cfg.device)
        if self.device.type == "cuda" and self.dist.active:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.precision = choose_precision(self.cfg.precision, self.device)
        self.model = setup.model.to(self.device)
        self.ema = EMA(self.model.backbone, self.cfg.ema_decay)
        self.optimizer = make_adam(self.model.backbone.parameters(), self.cfg.lr)
        if self.cfg.compile:  # in place: parameter names, checkpoints and the EMA copy are unchanged
            self.model.backbone.compile(**COMPILE_OPTIONS)
        # the model Algorithm 1 runs: the same components around the DDP-wrapped network
        self.train_model = self.model.with_backbone(wrap(self.model.backbone, self.dist, self.device))
        self.step = 0

    # -- the run folder ----------------------------------------------------------------------
    def _prepare_folder(self, resume: bool) -> None:
        """Check and prepare the run folder (rank 0; every rank raises the same error)."""
        self.dist.on_main(lambda: self._prepare_folder_here(resume), TrainingError)

    def _prepare_folder_here(self, resume: bool) -> None:
        existing = list_checkpoints(self.run_dir)
        if existing and not resume:
            raise TrainingError(
                f"{self.run_dir} already holds a run (checkpoints up to step {existing[-1][0]}). Continue it with "
                f"--resume, or choose another folder with --out; nothing was changed."
            )
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise TrainingError(f"cannot write to the run folder {self.run_dir}: {exc.strerror or exc}.") from None
        remove_debris(self.run_dir)  # what a killed process left half-written
        if not resume:  # a folder without checkpoints: whatever an aborted start left is replaced
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
            (self.run_dir / "recipe.toml").write_text(self.setup.recipe_text)

    def _restore(self) -> None:
        ckpt = load_latest(self.run_dir, warn=self.dist.main)
        if ckpt is None:
            raise TrainingError(f"nothing to resume in {self.run_dir}: it has no usable checkpoint.")
        path = ckpt.path
        try:
            self.model.backbone.load_state_dict(ckpt.model)
            self.ema.net.load_state_dict(ckpt.ema)
            self.optimizer.load_state_dict(ckpt.state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {path} does not fit this recipe's model: {str(exc).splitlines()[0]}"
            ) from None
        self.step = int(ckpt.state["step"])
        torch.set_rng_state(ckpt.state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in ckpt.state:
            torch.cuda.set_rng_state_all(list(ckpt.state["rng_cuda"]))
        self._truncate_metrics(self.step)
        self.console.print(f"resuming from {path} (step {self.step})")

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after the checkpoint we resume from (they will be redone),
        and a last line cut short by a crash."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file() or not self.dist.main:
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)

    def _save(self, data: DataStream) -> Path:
        epoch, index = data.position(self.step)
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "data_epoch": epoch,
            "data_index": index,
            "seed": self.cfg.seed,
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        def write() -> Path:
            path = save_checkpoint(self.run_dir, self.step, self.model.backbone.state_dict(),
                                   self.ema.net.state_dict(), state, self.setup.recipe_text)
            prune_checkpoints(self.run_dir, self.cfg.keep_checkpoints)
            return path

        return self.dist.on_main(write, CheckpointError) or self.run_dir / "checkpoints" / f"step-{self.step}"

    def ema_model(self) -> Diffusion:
        return self.model.with_backbone(self.ema.net)

    def _sample_grid(self, name: str) -> None:
        g = step_generator(self.cfg.seed, 0, 3, self.device)  # the same noise for every grid
        with autocast(self.device, self.precision):
            x = self.ema_model().sample(self.cfg.sample_grid, generator=g)
        save_png(grid(to_uint8(x, self.model.levels)), self.run_dir / "samples" / f"{name}.png",
                 scale=max(1, 64 // self.model.data_shape[1]))

    # -- Algorithm 1 ---------------------------------------------------------------------------
    def train(self, resume: bool = False, stop_after: int | None = None) -> TrainSummary:
        """Run (or continue) training. ``stop_after`` ends the process's work after that many
        steps in all, as an interruption would (tests use it)."""
        cfg = self.cfg
        data = DataStream(self.setup.dataset.load("train"), cfg.batch_size, cfg.seed,
                          self.setup.spec.data.options["flip"], self.model.levels,
                          self.dist.rank, self.dist.world)  # fail before writing
        self._prepare_folder(resume)
        if resume:
            self._restore()
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        self.model.train()
        losses, window, last_ckpt = [], [], None
        start_time, start_step = time.perf_counter(), self.step
        metrics = open(self.run_dir / "metrics.jsonl", "a") if self.dist.main else open(os.devnull, "w")
        progress = _progress(self.console, self.show_progress)
        task = progress.add_task("training", total=cfg.steps, completed=self.step, loss=float("nan"), ips=0.0)
        try:
            with progress:
                while self.step < end:
                    loss, grad_norm, lr = self._one_step(data)
                    losses.append(loss)
                    window.append(loss)
                    self.step += 1
                    elapsed = time.perf_counter() - start_time
                    ips = (self.step - start_step) * cfg.batch_size / max(elapsed, 1e-9)
                    progress.update(task, completed=self.step, loss=loss, ips=ips)
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                        metrics.write(json.dumps({"step": self.step, "loss": sum(window) / len(window), "lr": lr,
                                                  "grad_norm": grad_norm, "img_per_s": ips,
                                                  "time": round(elapsed, 3)}) + "\n")
                        metrics.flush()
                        window = []
                    if cfg.sample_every and self.step % cfg.sample_every == 0 and self.dist.main:
                        self._sample_grid(f"step-{self.step}")
                    if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                        last_ckpt = self._save(data)
        finally:
            metrics.close()
        seconds = time.perf_counter() - start_time
        done = self.step - start_step
        if last_ckpt is None and self.step >= cfg.steps:  # resumed a run that had already finished
            last_ckpt = latest_checkpoint(self.run_dir)
        return TrainSummary(self.step, losses[-1] if losses else float("nan"), seconds,
                            done * cfg.batch_size / max(seconds, 1e-9), last_ckpt, losses)

    def _one_step(self, data: DataStream) -> tuple[float, float, float]:
        cfg = self.cfg
        lr = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x0 = data.batch(self.step).to(self.device)
        g = step_generator(cfg.seed, self.step, 2, self.device)
        # dropout and any other draw from the global RNG: seeded per (seed, step, rank)
        torch.manual_seed((((cfg.seed * 1_000_003 + self.step) * 8 + 4) * 4096 + self.dist.rank) % 2**63)
        with autocast(self.device, self.precision):
            loss = self.train_model.training_loss(x0, generator=g, share=(self.dist.rank, self.dist.world))
        value = self.dist.mean(loss)  # the global batch's loss; non-finite on one rank is non-finite on all
        if not math.isfinite(value):
            self._non_finite("loss", value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = list(self.model.backbone.parameters())
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not math.isfinite(grad_norm):
            self._non_finite("gradient norm", grad_norm)
        self.optimizer.step()
        self.ema.update(self.model.backbone)
        return value, grad_norm, lr

    def _non_finite(self, what: str, value: float) -> None:
        good = list_checkpoints(self.run_dir)
        kept = f"the last good checkpoint, step {good[-1][0]}, is untouched" if good else "no checkpoint was written"
        raise TrainingError(
            f"the {what} became {value} at step {self.step + 1}; training stopped before updating the weights "
            f"and {kept}. Lower train.lr, enable train.grad_clip, or check the data."
        )


def _progress(console: Console, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.1f} img/s"),
        TimeRemainingColumn(), console=console, disable=not enabled, transient=False,
    )


# -- using a finished run ----------------------------------------------------------------------
def load_run(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None, ema: bool = True,
             device: str | torch.device = "cpu", plugins=None) -> tuple[Diffusion, Path]:
    """A model from a run folder (its latest good checkpoint) or from a checkpoint folder.
    The checkpoint's own recipe builds the model; ``ema`` selects the EMA weights."""
    from .builder import build

    path = Path(path)
    ckpt = None
    if checkpoint is not None:
        ckpt_path = Path(checkpoint)
        if not ckpt_path.is_absolute() and not ckpt_path.exists() and (path / "checkpoints" / ckpt_path).exists():
            ckpt_path = path / "checkpoints" / ckpt_path
    elif (path / "manifest.json").is_file():
        ckpt_path = path
    elif path.is_dir():
        ckpt = load_latest(path)
        if ckpt is None:
            raise CheckpointError(f"{path} has no usable checkpoint (expected {path}/checkpoints/step-N/).")
        ckpt_path = ckpt.path
    else:
        raise CheckpointError(f"no run or checkpoint folder at {path}")
    if not Path(ckpt_path).is_dir():
        raise CheckpointError(f"no checkpoint folder at {ckpt_path}")
    ckpt = ckpt or load_checkpoint(ckpt_path)
    model = build(tomllib.loads(ckpt.recipe_text), plugins=plugins)
    try:
        model.backbone.load_state_dict(ckpt.ema if ema else ckpt.model)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {ckpt_path} does not fit its recipe's model: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), Path(ckpt_path)


def generate(model: Diffusion, n: int, seed: int = 0, batch_size: int = 256, sampler=None, console=None,
             progress: bool = True, precision: str = "fp32") -> torch.Tensor:
    """``n`` samples in batches, with a progress bar; reproducible from ``seed``. With
    ``precision = "bf16"`` the network runs under bf16 autocast (the sampler's arithmetic
    stays in float32)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    out = []
    device = model.device
    with Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console or Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("sampling", total=n)
        for i, start in enumerate(range(0, n, batch_size)):
            g = step_generator(seed, i, 4, device)
            with autocast(device, precision):
                out.append(model.sample(min(batch_size, n - start), generator=g, sampler=sampler).float().cpu())
            bar.update(task, advance=min(batch_size, n - start))
    return torch.cat(out)


def write_samples(x: torch.Tensor, levels: int, out: Path, pngs: bool = True) -> np.ndarray:
    """samples.npz (uint8 N x H x W x C, key "samples"), a grid, and one PNG per sample."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pictures = to_uint8(x, levels)
    np.savez_compressed(out / "samples.npz", samples=pictures, levels=levels)
    save_png(grid(pictures[:256]), out / "grid.png", scale=max(1, 64 // pictures.shape[1]))
    if pngs:
        width = len(str(len(pictures) - 1))
        for i, picture in enumerate(pictures):
            save_png(picture, out / f"{i:0{width}d}.png")
    return pictures
