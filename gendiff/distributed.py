"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` and
``DistributedDataParallel``, processes started by ``torchrun``.

    torchrun --nproc_per_node 4 -m gendiff run recipes/ddpm_cifar10.toml
    gendiff run recipes/ddpm_cifar10.toml --nproc-per-node 4        # starts torchrun for you
    torchrun --nnodes 2 --node_rank 0 --rdzv_endpoint host:29500 --nproc_per_node 8 -m gendiff run R

What each process does (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` come from torchrun):

- ``[train] batch_size`` is the *global* batch B; each of the N processes trains on B / N
  examples of it (B must be divisible by N). Rank r's examples are the global batch's positions
  r, r + N, r + 2N, ... as chosen by :class:`torch.utils.data.DistributedSampler` (seeded with
  ``train.seed``, ``set_epoch`` every epoch); the diffusion draws (t, noise) and the flips are
  drawn for the whole global batch from the step's seed and each rank keeps its rows, so N
  processes compute exactly the gradient one process computes with batch B (up to summation
  order), and a run's data and noise do not depend on N.
- Dropout draws from the global RNG, seeded per (seed, step, rank): ranks use different masks,
  and a resumed run repeats its masks.
- Gradients are averaged by DDP; the logged loss is the all-reduced mean, so a non-finite loss
  on any rank is non-finite on every rank and all stop before the update.
- Rank 0 alone writes the run folder (recipe, metrics, sample grids, checkpoints, final samples
  and evaluations); preparing the folder and each checkpoint write end in a broadcast of the
  outcome (:meth:`Dist.on_main`), so no rank runs ahead of a write and a failed write stops
  every rank. Every rank resumes from the same checkpoint. The run folder must be on a file
  system every node can read (for multi-node runs: a shared one).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

from .errors import GendiffError


class DistributedError(GendiffError):
    """The distributed setup cannot work (bad process count, torchrun missing, batch not divisible)."""


@dataclass
class Dist:
    """This process's place in the job; ``Dist()`` is the single-process case."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def mean(self, value: torch.Tensor) -> float:
        """The mean of a scalar over all ranks (NaN or inf on any rank gives NaN or inf on all)."""
        value = value.detach()
        if self.active:
            value = value.float().clone()
            dist.all_reduce(value)
            value /= self.world
        return float(value)

    def average_gradients(self, params) -> None:
        """Average the gradients of ``params`` over all ranks (the trainable components outside
        the DDP-wrapped network, e.g. a learned schedule); nothing for one process. A parameter
        without a gradient on this rank takes part with zeros, so every rank calls alike."""
        if not self.active:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= self.world

    def on_main(self, fn: Callable[[], Any], error: type[GendiffError]) -> Any:
        """Run ``fn`` on rank 0 alone (a write to the run folder); if it raises ``error``, raise
        the same message on every rank. Also a barrier: no rank goes on before rank 0 is done.
        Returns ``fn``'s result on rank 0, None elsewhere."""
        result, problem = None, None
        if self.main:
            try:
                result = fn()
            except error as exc:
                problem = str(exc)
        problem = self.share(problem)
        if problem:
            raise error(problem)
        return result

    def no_sync(self, net: torch.nn.Module, last: bool):
        """During gradient accumulation, DDP's gradient all-reduce is needed only after the last
        micro-batch: a context that skips it for the others (nothing for one process)."""
        return net.no_sync() if self.active and not last else contextlib.nullcontext()

    def gather_rows(self, part: torch.Tensor) -> torch.Tensor:
        """The global batch from every rank's rows ``rank::world`` (a 1-D tensor per rank, all of
        one length), in the global batch's order; the tensor itself for one process."""
        if not self.active:
            return part
        parts = [torch.empty_like(part) for _ in range(self.world)]
        dist.all_gather(parts, part.contiguous())
        return torch.stack(parts, dim=1).reshape(-1)

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj``, on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_kind: str) -> Dist:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA); ``Dist()`` if
    this process was not started by torchrun with more than one process."""
    if not launched_by_torchrun():
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return Dist(rank, world, local)


def teardown(together: bool = True) -> None:
    """Leave the process group. ``together`` (after a normal finish) waits for every rank first:
    a rank that left while another was still receiving its last message would break that rank's
    connection. After an error no rank waits, since the others may never arrive."""
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


def wrap(net: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """The network DDP trains (the network itself for one process)."""
    if not d.active:
        return net
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)


def check_batch(batch_size: int, d: Dist, accumulate: int = 1) -> int:
    """The per-process micro-batch; the global batch must split evenly over the processes and the
    ``train.accumulate`` micro-batches of each."""
    parts = d.world * accumulate
    if batch_size % parts:
        what = f"the number of processes ({d.world})" if accumulate == 1 else (
            f"the number of processes times train.accumulate ({d.world} x {accumulate} = {parts})")
        raise DistributedError(
            f"train.batch_size = {batch_size} is the global batch and must be divisible by {what}; choose a batch "
            f"size that is a multiple of {parts}."
        )
    return batch_size // parts


def check_launch(nproc: int) -> None:
    """Can ``gendiff run --nproc-per-node nproc`` start torchrun from here?"""
    if nproc < 1:
        raise DistributedError(f"--nproc-per-node must be at least 1, got {nproc}")
    if launched_by_torchrun():
        raise DistributedError(
            "--nproc-per-node was given inside a torchrun job; use either torchrun or --nproc-per-node, not both."
        )


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run ``gendiff ARGS`` under torchrun with ``nproc`` processes on this node (after
    :func:`check_launch`); its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "gendiff", *args]
    return subprocess.call(cmd)
