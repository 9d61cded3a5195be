"""Batches for training and evaluation, on one process or many.

Both loaders yield ``(images, labels)`` with images already normalised (float32, on ``device``)
and are told the epoch with ``set_epoch`` so that every epoch's order and augmentation follow from
``(seed, epoch)`` alone: a resumed run replays exactly the epochs an uninterrupted run would.

* :class:`MemoryLoader` (data held in memory): each global batch is a contiguous slice of the
  epoch's permutation and rank ``r`` takes the ``r``-th contiguous part of it, with augmentation
  drawn for the whole epoch in the global order; N processes thus train on exactly the global
  batches a single process with the same global batch sees.
* :class:`FolderLoader` (files streamed): a torch ``DataLoader`` with worker processes and, on
  many processes, a :class:`~torch.utils.data.distributed.DistributedSampler` for training and a
  contiguous share of the files for evaluation (DistributedSampler would repeat images to even out
  the shares, and the accuracy would count them twice). An unreadable file
  refused in a worker (strict mode) reaches the caller as a one-line :class:`BadImageError`.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from .datasets import ArrayDataset, BadImageError
from .sampling import BalancedSampler, balanced_order, epoch_generator
from .transforms import BatchAugment, draw_augment

__all__ = ["FolderLoader", "MemoryLoader", "epoch_generator"]


@dataclass
class MemoryLoader:
    """Batches of an in-memory split; ``batch_size`` is per process.

    ``sampling="balanced"`` orders a training epoch by :func:`~senet.data.sampling.balanced_order`
    (every class drawn equally often, Sec. 6.1) instead of a uniform shuffle.
    """

    data: ArrayDataset
    batch_size: int
    augment: BatchAugment
    train: bool
    seed: int = 0
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    epoch: int = 0
    sampling: str = "uniform"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.train:
            return len(self.data) // (self.batch_size * self.world)
        return -(-self.num_samples // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Images this process sees in one pass."""
        return len(self) * self.batch_size if self.train else len(self._share())

    def _share(self) -> range:
        return _eval_share(len(self.data), self.rank, self.world)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.train:
            share = self._share()
            for i in share[:: self.batch_size]:
                j = min(i + self.batch_size, share.stop)
                x = self.data.images[i:j].to(self.device, non_blocking=True)
                yield self.augment(x, None), self.data.labels[i:j].to(self.device, non_blocking=True)
            return
        g = epoch_generator(self.seed, self.epoch)
        n = len(self.data)
        perm = (
            balanced_order(self.data.labels, g)
            if self.sampling == "balanced"
            else torch.randperm(n, generator=g)
        )
        draws = draw_augment(n, tuple(self.data.images.shape[-2:]), self.augment.padding, g)
        global_batch = self.batch_size * self.world
        for k in range(len(self)):
            lo = k * global_batch + self.rank * self.batch_size
            idx = perm[lo : lo + self.batch_size]
            x = self.data.images[idx].to(self.device, non_blocking=True)
            yield self.augment(x, draws[lo : lo + self.batch_size]), self.data.labels[idx].to(self.device)


class FolderLoader:
    """A ``DataLoader`` over a streamed data set, sharded with ``DistributedSampler`` on many ranks.

    ``sampling="balanced"`` (training only) draws every class equally often per epoch with a
    :class:`~senet.data.sampling.BalancedSampler` over the dataset's ``targets``, which also shards
    the epoch over the ranks.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        train: bool,
        workers: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        device: torch.device | str = "cpu",
        sampling: str = "uniform",
    ) -> None:
        self.seed, self.device, self.train = seed, torch.device(device), train
        self.generator = torch.Generator()
        self.sampler: BalancedSampler | DistributedSampler | RandomSampler | SequentialSampler | range
        if train and sampling == "balanced":
            targets = dataset.targets  # type: ignore[attr-defined]
            self.sampler = BalancedSampler(targets, batch_size, seed=seed, rank=rank, world=world)
        elif world > 1 and train:
            self.sampler = DistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
            )
        elif world > 1:
            self.sampler = _eval_share(len(dataset), rank, world)  # type: ignore[arg-type]
        elif train:
            self.sampler = RandomSampler(dataset, generator=self.generator)
        else:
            self.sampler = SequentialSampler(dataset)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=train,
            persistent_workers=False,
            generator=self.generator,
        )

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)
        if isinstance(self.sampler, (DistributedSampler, BalancedSampler)):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        return len(self.loader) * self.loader.batch_size if self.train else len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = iter(self.loader)
        try:
            for x, y in batches:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        except BadImageError as e:
            msg = _worker_message(str(e))
            # torch's re-raise leaves a reference cycle through this traceback holding the worker
            # iterator: freed by a later garbage collection, perhaps in a forked worker of another
            # loader ("can only test a child process"). Break it so the workers stop here.
            traceback.clear_frames(e.__traceback__)
        del batches
        raise BadImageError(msg)


def _eval_share(n: int, rank: int, world: int) -> range:
    """The indices of ``n`` evaluation samples process ``rank`` reads: a contiguous share, no padding
    (every image counted once)."""
    return range(n * rank // world, n * (rank + 1) // world)


def _worker_message(msg: str) -> str:
    """The original message of an error a ``DataLoader`` worker raised (torch adds its traceback)."""
    lines = msg.strip().splitlines()
    if len(lines) <= 1:
        return msg
    _, sep, tail = lines[-1].partition(f"{BadImageError.__name__}: ")
    return tail if sep else lines[-1]
