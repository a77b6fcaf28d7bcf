"""Train / valid / test DataLoaders for images listed in CSVs, in an order fixed by (seed, epoch).

    train_loader, valid_loader, test_loader = get_dataloaders(batch_size=64, data_dir="data", seed=123)
    for images, labels in train_loader:   # (64, 1, 28, 28) float32 in [0, 1], (64,) int64
        ...

Layouts:
    get_dataloaders(...)               data/mnist_{train,valid,test}.csv + data/mnist_{train,valid,test}/
    get_dataloaders_from_split_csv(...)  one CSV with a split column + one image folder

The train loader reshuffles every epoch and drops the last partial batch; valid and test keep
their order and every sample. The order of epoch e depends only on (seed, e), not on num_workers,
on how often the loader was iterated before, or on any global random state: `set_epoch(e)` on
`loader.sampler` picks an epoch, as with DistributedSampler. Whole batches are fetched with one
`dataset[list_of_indices]` call, which is what makes the in-memory path fast.

Needs dataset.py beside it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torchvision.transforms.v2 import functional as TF

from dataset import CsvImageDataset

SPLITS = ("train", "valid", "test")


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of range(num_samples) that depends on (seed, epoch) and nothing else.

    NumPy's SeedSequence mixes both numbers into PCG64's 128-bit state. (torch.manual_seed would keep
    only the low 32 bits of a combined seed, so nearby seeds could share their orders.)
    """
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


class EpochBatchSampler(Sampler[np.ndarray]):
    """Yields one int64 NumPy array of indices per batch; epoch e's order is a function of (seed, e).

    Arrays rather than lists: the dataset turns one into a tensor without copying, and it pickles
    cheaply to worker processes.

    Each call to iter() plays the next epoch, unless set_epoch() chose one. With world_size > 1,
    every global batch of `batch_size` is split between the ranks (rank r takes every
    world_size-th index), so all ranks together see exactly what one process would.
    """

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool, drop_last: bool,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if drop_last and batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the {world_size} processes, "
                             "so every process gets an equal share of each batch")
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
        order = epoch_order(self.num_samples, self.seed, epoch) if self.shuffle else np.arange(self.num_samples)
        for start in range(0, self.num_samples, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                break
            mine = batch[self.rank::self.world_size]
            if len(mine):
                yield mine


def pixel_transform(pixels: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What turns a uint8 batch into model input: "float01" (float32 in [0, 1]), "float255"
    (float32, 0-255 unscaled) or "uint8" (left as is, to be scaled later, e.g. on the GPU)."""
    if pixels == "uint8":
        return None
    if pixels not in ("float01", "float255"):
        raise ValueError(f"pixels must be 'float01', 'float255' or 'uint8', got {pixels!r}")
    # The decoder already made a uint8 tensor (ToImage's job), so v2's to_dtype, the kernel of
    # v2.ToDtype, is the whole step. Called directly it costs about 25 us a batch here, against 42 us
    # through v2.ToDtype and 99 us through Compose([ToImage, ToDtype, ToPureTensor]): at 28x28 that
    # is a sizeable share of a warm batch. A partial of a module function pickles for workers.
    return functools.partial(TF.to_dtype, dtype=torch.float32, scale=pixels == "float01")


def make_loader(dataset: CsvImageDataset, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int,
                num_workers: int = 0, persistent_workers: bool = False, pin_memory: bool = False,
                rank: int = 0, world_size: int = 1, multiprocessing_context=None) -> DataLoader:
    """A DataLoader that fetches whole batches with dataset[list_of_indices]."""
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                                rank=rank, world_size=world_size)
    return DataLoader(
        dataset, batch_size=None, sampler=sampler,  # batch_size=None: the sampler yields batches
        num_workers=num_workers, persistent_workers=persistent_workers and num_workers > 0,
        pin_memory=pin_memory, multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
        # Its own generator, so that starting an iterator never draws from the global RNG.
        generator=torch.Generator().manual_seed(seed),
    )


def loaders_from_datasets(train: CsvImageDataset, valid: CsvImageDataset, test: CsvImageDataset, *,
                          batch_size: int, eval_batch_size: int | None = None, seed: int = 123,
                          **loader_kwargs) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train loader (reshuffled, drop_last) and valid / test loaders (fixed order, every sample)."""
    for ds in (train, valid, test):
        ds.preload()  # decode once, in this process, before any worker starts
    eval_batch_size = eval_batch_size or batch_size
    return (
        make_loader(train, batch_size, shuffle=True, drop_last=True, seed=seed, **loader_kwargs),
        make_loader(valid, eval_batch_size, shuffle=False, drop_last=False, seed=seed, **loader_kwargs),
        make_loader(test, eval_batch_size, shuffle=False, drop_last=False, seed=seed, **loader_kwargs),
    )


def get_dataloaders(batch_size: int, data_dir: str | Path = "data", num_workers: int = 0, seed: int = 123, *,
                    eval_batch_size: int | None = None, pixels: str = "float01",
                    csv_names: tuple[str, str, str] = ("mnist_train.csv", "mnist_valid.csv", "mnist_test.csv"),
                    img_dirs: tuple[str, str, str] = ("mnist_train", "mnist_valid", "mnist_test"),
                    file_column: str = "File Name", label_column: str = "Class Label", mode: str = "L",
                    num_classes: int | None = None, cache_mb: float = 1024,
                    **loader_kwargs) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Loaders for one CSV and one image folder per split, as make_subset.py writes them.

    pixels: "float01" (default, float32 in [0, 1]), "float255" (float32, unscaled 0-255) or "uint8".
    loader_kwargs: persistent_workers, pin_memory, rank, world_size, multiprocessing_context.
    """
    data_dir = Path(data_dir)
    common = dict(batch_transform=pixel_transform(pixels), file_column=file_column, label_column=label_column,
                  mode=mode, num_classes=num_classes, cache_mb=cache_mb)
    train = CsvImageDataset(data_dir / csv_names[0], data_dir / img_dirs[0], **common)
    valid, test = (CsvImageDataset(data_dir / c, data_dir / d, classes=train.classes, **common)
                   for c, d in zip(csv_names[1:], img_dirs[1:]))
    return loaders_from_datasets(train, valid, test, batch_size=batch_size, eval_batch_size=eval_batch_size,
                                 seed=seed, num_workers=num_workers, **loader_kwargs)


def get_dataloaders_from_split_csv(csv_path: str | Path, img_dir: str | Path, batch_size: int,
                                   num_workers: int = 0, seed: int = 123, *, split_column: str = "split",
                                   split_names: tuple[str, str, str] = SPLITS,
                                   eval_batch_size: int | None = None, pixels: str = "float01",
                                   file_column: str = "File Name", label_column: str = "Class Label",
                                   mode: str = "L", num_classes: int | None = None, cache_mb: float = 1024,
                                   **loader_kwargs) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Loaders for one CSV whose `split_column` says train / valid / test, and one image folder."""
    common = dict(batch_transform=pixel_transform(pixels), file_column=file_column, label_column=label_column,
                  mode=mode, num_classes=num_classes, cache_mb=cache_mb, split_column=split_column)
    train = CsvImageDataset(csv_path, img_dir, split=split_names[0], **common)
    valid, test = (CsvImageDataset(csv_path, img_dir, split=s, classes=train.classes, **common)
                   for s in split_names[1:])
    return loaders_from_datasets(train, valid, test, batch_size=batch_size, eval_batch_size=eval_batch_size,
                                 seed=seed, num_workers=num_workers, **loader_kwargs)
