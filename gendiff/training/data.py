"""The training data stream: batches in seeded epoch order, where batch s depends only on
(seed, s), so a resumed run sees exactly the data an uninterrupted one would.

The examples come from the dataset's :class:`~gendiff.datasets.Source` (in memory, or read from
disk on demand). With ``[data] workers = W > 0`` they are fetched by W
:class:`torch.utils.data.DataLoader` worker processes ahead of the trainer; the batches are the
same bits in the same order either way (the workers only read and decode; the batch of each step
is still chosen, and flipped, from the step alone).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ..datasets import Source, TensorSource
from ..distributions import levels_to_unit
from ..errors import TrainingError
from ..runtime import step_generator


class DataStream:
    """Batches of a uint8 dataset in seeded epoch order; batch s depends only on (seed, s).

    The order of each epoch is :class:`torch.utils.data.DistributedSampler`'s (seeded with
    ``seed``, ``set_epoch(epoch)``); with ``world`` processes, ``batch_size`` is the global batch
    and process ``rank`` gets its positions ``rank::world``, so the union over ranks of batch s
    is the single-process batch s, whatever ``world`` is. ``data`` is a :class:`Source` or a
    uint8 tensor (N, C, H, W) (then ``labels`` may give its labels)."""

    def __init__(self, data: Source | torch.Tensor, batch_size: int, seed: int, flip: bool, levels: int,
                 rank: int = 0, world: int = 1, labels: torch.Tensor | None = None, workers: int = 0):
        source = data if isinstance(data, Source) else TensorSource(data, labels)
        if len(source) < batch_size:
            raise TrainingError(
                f"the training split has {len(source)} examples, fewer than train.batch_size = {batch_size}."
            )
        self.source, self.batch_size, self.seed, self.flip, self.levels = source, batch_size, seed, flip, levels
        self.rank, self.world, self.workers = rank, world, workers
        self.local_batch = batch_size // world
        self.steps_per_epoch = len(source) // batch_size  # the last partial batch is dropped
        self.sampler = DistributedSampler(range(len(source)), num_replicas=world, rank=rank, shuffle=True,
                                          seed=seed, drop_last=False)
        self._epoch, self._order = -1, None

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of step ``step`` (0-based)."""
        return divmod(step, self.steps_per_epoch)

    def indices(self, step: int) -> torch.Tensor:
        """The dataset rows of this process's share of batch ``step``."""
        epoch, index = self.position(step)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, torch.tensor(list(self.sampler))
        return self._order[index * self.local_batch:(index + 1) * self.local_batch]

    def prepare(self, step: int, images: torch.Tensor, labels: torch.Tensor | None):
        """Batch ``step`` as the trainer takes it: float32 on the [-1, 1] scale (N, C, H, W),
        randomly flipped (Sec. 4) with draws made for the global batch, and its labels."""
        x = levels_to_unit(images.float(), self.levels)
        if self.flip:
            g = step_generator(self.seed, step, 1)
            mask = (torch.rand(self.batch_size, generator=g) < 0.5)[self.rank::self.world]
            x = torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)
        return x, None if labels is None else labels.long()

    def batch(self, step: int) -> torch.Tensor:
        """This process's share of batch ``step`` (see :meth:`prepare`)."""
        return self.prepare(step, *self.source[self.indices(step)])[0]

    def labels(self, step: int) -> torch.Tensor | None:
        """The class labels of :meth:`batch`'s examples (int64), or None without labels."""
        return self.source[self.indices(step)][1]

    def batches(self, start: int, end: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(images, labels) of steps start .. end - 1 in order, fetched by ``workers`` DataLoader
        processes ahead of use (in this process when 0)."""
        steps = range(start, end)
        if not self.workers:
            for step in steps:
                yield self.prepare(step, *self.source[self.indices(step)])
            return
        loader = DataLoader(self.source, sampler=_StepIndices(self, steps), batch_size=None,
                            num_workers=self.workers, prefetch_factor=2)
        for step, (images, labels) in zip(steps, loader):
            yield self.prepare(step, images, labels)


class _StepIndices(Sampler):
    """The example numbers of each step's batch, in step order, made when the loader asks."""

    def __init__(self, stream: DataStream, steps: range):
        self.stream, self.steps = stream, steps

    def __iter__(self):
        return (self.stream.indices(step) for step in self.steps)

    def __len__(self) -> int:
        return len(self.steps)
