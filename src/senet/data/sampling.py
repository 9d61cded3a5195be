"""The order of an epoch's training samples: uniform shuffling or the paper's balanced sampling.

Sec. 6.1 trains on "mini-batches sampled to compensate for uneven class frequencies". Here an epoch
of ``n`` draws gives every class present the same number of draws (``n // K``, the remainder to
classes picked at random); a class's draws go through its images in a random order without
repetition, so a frequent class shows a different random share of its images each epoch and a rare
one repeats its images as evenly as possible. Class counts are then equal in every epoch, not only
in expectation.

The order of an epoch follows from ``(seed, epoch)`` alone (:func:`epoch_generator`): the same on
every process, each taking its share of every global batch, and in a resumed run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

__all__ = ["SAMPLINGS", "BalancedSampler", "balanced_order", "epoch_generator"]

SAMPLINGS = ("uniform", "balanced")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch: the same for every process and every resumption."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def balanced_order(labels: torch.Tensor | Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """An epoch of ``len(labels)`` sample indices in which every present class is drawn equally often.

    Counts differ by at most one between classes; the order is shuffled.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).flatten()
    n = labels.numel()
    if n == 0:
        return labels
    order = torch.argsort(labels, stable=True)  # indices grouped by class
    present, sizes = torch.unique_consecutive(labels[order], return_counts=True)
    k = present.numel()
    draws = torch.full((k,), n // k, dtype=torch.int64)
    draws[torch.randperm(k, generator=generator)[: n % k]] += 1
    chosen = []
    for members, count in zip(order.split(sizes.tolist()), draws.tolist(), strict=True):
        size = len(members)
        cycles = -(-count // size)  # go through the class's images as often as needed
        picks = torch.cat([torch.randperm(size, generator=generator) for _ in range(cycles)])[:count]
        chosen.append(members[picks])
    return torch.cat(chosen)[torch.randperm(n, generator=generator)]


class BalancedSampler(Sampler[int]):
    """Balanced class sampling (Sec. 6.1) for a ``DataLoader``, on one process or many.

    ``batch_size`` is per process: of every global batch (``batch_size * world`` consecutive indices
    of the epoch's order) process ``rank`` takes the ``rank``-th contiguous part, as
    :class:`~senet.data.loaders.MemoryLoader` does; an incomplete last global batch is dropped.
    Call :meth:`set_epoch` before every epoch.
    """

    def __init__(
        self,
        labels: torch.Tensor | Sequence[int],
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_order(self) -> torch.Tensor:
        """The epoch's indices for all processes together."""
        return balanced_order(self.labels, epoch_generator(self.seed, self.epoch))

    def __len__(self) -> int:
        return len(self.labels) // (self.batch_size * self.world) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        per, total = self.batch_size, self.batch_size * self.world
        for lo in range(0, len(self) // per * total, total):
            yield from order[lo + self.rank * per : lo + (self.rank + 1) * per].tolist()
