"""Train / valid / test DataLoaders for images listed in CSVs, in an order fixed by (seed, epoch).

    train_loader, valid_loader, test_loader = get_dataloaders(batch_size=64, data_dir="data")
    for images, labels in train_loader:   # (64, 1, 28, 28) float32 in [0, 1], (64,) int64
        ...

Layouts:
    get_dataloaders(...)                 data/mnist_{split}.csv + data/mnist_{split}/ for each split
    get_dataloaders_from_split_csv(...)  one CSV with a split column + one image folder
    loaders_from_datasets(...)           any three CsvImageDatasets you built

Options go where they act: `dataset_kwargs` to every CsvImageDataset (mode, pixels, file_column,
label_column, num_classes, cache_mb, ...) and `loader_kwargs` to every torch DataLoader
(persistent_workers, pin_memory, multiprocessing_context, ...).

The train loader reshuffles every epoch and drops the last partial batch; valid and test keep
their order and every sample. The order of epoch e depends only on (seed, e), not on num_workers,
on how often the loader was iterated before, or on any global random state: `set_epoch(e)` on
`loader.sampler` picks an epoch, as with DistributedSampler. Whole batches are fetched with one
`dataset[array_of_indices]` call, which is what makes the in-memory path fast. Under torchrun (a
process group is initialized), each process takes its share of every batch, as DistributedSampler.

Needs dataset.py beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from dataset import CsvImageDataset

SPLITS = ("train", "valid", "test")


def get_dataloaders(batch_size: int, data_dir: str | Path = "data", num_workers: int = 0,
                    seed: int = 123, *, batch_size_factor_eval: int = 1,
                    dataset_kwargs: dict | None = None,
                    loader_kwargs: dict | None = None) -> tuple[DataLoader, DataLoader, DataLoader]:
    """The lecture's loaders: data_dir/mnist_{train,valid,test}.csv listing the images in
    data_dir/mnist_{train,valid,test}/, as make_subset.py writes them. Valid and test batches hold
    batch_size * batch_size_factor_eval images (they only measure accuracy)."""
    return _three_loaders(folder_layout(data_dir), batch_size, batch_size * batch_size_factor_eval,
                          seed, dataset_kwargs,
                          {"num_workers": num_workers, **(loader_kwargs or {})})


def get_dataloaders_from_split_csv(
        csv_path: str | Path, img_dir: str | Path, batch_size: int, num_workers: int = 0,
        seed: int = 123, *, split_column: str = "split", batch_size_factor_eval: int = 1,
        dataset_kwargs: dict | None = None,
        loader_kwargs: dict | None = None) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Loaders for one CSV whose `split_column` says train / valid / test, and one image folder."""
    sources = [(csv_path, img_dir, (split_column, split)) for split in SPLITS]
    return _three_loaders(sources, batch_size, batch_size * batch_size_factor_eval, seed,
                          dataset_kwargs, {"num_workers": num_workers, **(loader_kwargs or {})})


def _three_loaders(sources: Sequence[tuple], batch_size: int, eval_batch_size: int, seed: int,
                   dataset_kwargs: dict | None, loader_kwargs: dict) -> tuple[DataLoader, ...]:
    train, valid, test = make_datasets(sources, dataset_kwargs)
    return loaders_from_datasets(train, valid, test, batch_size=batch_size,
                                 eval_batch_size=eval_batch_size, seed=seed,
                                 loader_kwargs=loader_kwargs)


def folder_layout(data_dir: str | Path) -> list[tuple[Path, Path, None]]:
    """(csv, image folder, no split column) of train, valid and test: data_dir/mnist_<split>.csv and
    data_dir/mnist_<split>/. The one definition of those names here (make_subset.py's copy is pinned
    equal by a test)."""
    data_dir = Path(data_dir)
    return [(data_dir / f"mnist_{s}.csv", data_dir / f"mnist_{s}", None) for s in SPLITS]


def make_datasets(sources: Sequence[tuple],
                  dataset_kwargs: dict | None = None) -> list[CsvImageDataset]:
    """Train, valid and test datasets from three (csv_path, img_dir, split) sources, split being
    None or (column, value); valid and test share train's classes."""
    kwargs = dataset_kwargs or {}
    (train_csv, train_dir, train_split), *others = sources
    train = CsvImageDataset(train_csv, train_dir, split=train_split, **kwargs)
    return [train] + [CsvImageDataset(csv, folder, split=split, classes=train.classes, **kwargs)
                      for csv, folder, split in others]


def loaders_from_datasets(
        train: CsvImageDataset, valid: CsvImageDataset, test: CsvImageDataset, *, batch_size: int,
        eval_batch_size: int | None = None, seed: int = 123,
        loader_kwargs: dict | None = None) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train loader (reshuffled, drop_last) and valid / test loaders (fixed order, every sample)."""
    for ds in (train, valid, test):
        ds.preload()  # decode once, in this process, before any worker starts
    eval_batch_size = eval_batch_size or batch_size
    options = {"seed": seed, "loader_kwargs": loader_kwargs}
    return (
        make_loader(train, batch_size, shuffle=True, drop_last=True, **options),
        make_loader(valid, eval_batch_size, shuffle=False, drop_last=False, **options),
        make_loader(test, eval_batch_size, shuffle=False, drop_last=False, **options),
    )


def make_loader(dataset: CsvImageDataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                seed: int, loader_kwargs: dict | None = None) -> DataLoader:
    """A DataLoader that fetches whole batches with dataset[array_of_indices]; loader_kwargs go to
    torch's DataLoader as they are (num_workers, persistent_workers, pin_memory, ...)."""
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=shuffle, drop_last=drop_last,
                                seed=seed)
    return DataLoader(
        dataset, batch_size=None, sampler=sampler,  # batch_size=None: the sampler yields batches
        # Its own generator, so that starting an iterator never draws from the global RNG.
        generator=torch.Generator().manual_seed(seed), **(loader_kwargs or {}),
    )


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of range(num_samples) that depends on (seed, epoch) and nothing else.

    NumPy's SeedSequence mixes both numbers into PCG64's 128-bit state. (torch.manual_seed would
    keep only the low 32 bits of a combined seed, so nearby seeds could share their orders.)
    """
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


class EpochBatchSampler(Sampler[np.ndarray]):
    """Yields one int64 NumPy array of indices per batch; epoch e's order depends on (seed, e) only.

    Arrays rather than lists: the dataset turns one into a tensor without copying, and it pickles
    cheaply to worker processes.

    Each call to iter() plays the next epoch, unless set_epoch() chose one. With world_size > 1,
    every global batch of `batch_size` is split between the ranks (rank r takes every
    world_size-th index), so all ranks together see exactly what one process would. rank and
    world_size default to the process group's, when one is initialized (as DistributedSampler).
    """

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool, drop_last: bool,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None) -> None:
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        rank, world_size = rank or 0, world_size or 1
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if drop_last and batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the {world_size} "
                             "processes, so every process gets an equal share of each batch")
        if drop_last and num_samples < batch_size:
            raise ValueError(f"only {num_samples} samples: not one full batch of {batch_size} "
                             "(drop_last=True); use a smaller batch size")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + int(not self.drop_last and rest > self.rank)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.shuffle:
            order = epoch_order(self.num_samples, self.seed, epoch)
        else:
            order = np.arange(self.num_samples)
        for start in range(0, self.num_samples, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                break
            mine = batch[self.rank::self.world_size]
            if len(mine):
                yield mine
