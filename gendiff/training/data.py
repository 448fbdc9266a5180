"""The training data stream: batches in seeded epoch order, where batch s depends only on
(seed, s), so a resumed run sees exactly the data an uninterrupted one would."""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler

from ..distributions import levels_to_unit
from ..errors import TrainingError
from ..runtime import step_generator


class DataStream:
    """Batches of a uint8 dataset in seeded epoch order; batch s depends only on (seed, s).

    The order of each epoch is :class:`torch.utils.data.DistributedSampler`'s (seeded with
    ``seed``, ``set_epoch(epoch)``); with ``world`` processes, ``batch_size`` is the global batch
    and process ``rank`` gets its positions ``rank::world``, so the union over ranks of batch s
    is the single-process batch s, whatever ``world`` is."""

    def __init__(self, data: torch.Tensor, batch_size: int, seed: int, flip: bool, levels: int,
                 rank: int = 0, world: int = 1, labels: torch.Tensor | None = None):
        if len(data) < batch_size:
            raise TrainingError(
                f"the training split has {len(data)} examples, fewer than train.batch_size = {batch_size}."
            )
        if labels is not None and len(labels) != len(data):
            raise TrainingError(f"the training split has {len(data)} images but {len(labels)} labels.")
        self.data, self.batch_size, self.seed, self.flip, self.levels = data, batch_size, seed, flip, levels
        self.label_data = labels
        self.rank, self.world = rank, world
        self.local_batch = batch_size // world
        self.steps_per_epoch = len(data) // batch_size  # the last partial batch is dropped
        self.sampler = DistributedSampler(range(len(data)), num_replicas=world, rank=rank, shuffle=True,
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

    def labels(self, step: int) -> torch.Tensor | None:
        """The class labels of :meth:`batch`'s examples (int64), or None without labels."""
        return None if self.label_data is None else self.label_data[self.indices(step)].long()

    def batch(self, step: int) -> torch.Tensor:
        """This process's share of batch ``step`` on the [-1, 1] scale, float32 (N, C, H, W)."""
        x = levels_to_unit(self.data[self.indices(step)].float(), self.levels)
        if self.flip:  # random horizontal flips (Sec. 4), drawn for the global batch
            g = step_generator(self.seed, step, 1)
            mask = (torch.rand(self.batch_size, generator=g) < 0.5)[self.rank::self.world]
            x = torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)
        return x
