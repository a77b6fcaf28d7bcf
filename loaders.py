"""Train / valid / test DataLoaders for images listed in CSVs, in an order fixed by (seed, epoch).

    train_loader, valid_loader, test_loader = get_dataloaders(batch_size=64, data_dir="data")
    for images, labels in train_loader:   # (64, 1, 28, 28) float32 in [0, 1], (64,) int64
        ...

Layouts:
    get_dataloaders(...)                 data/mnist_{split}.csv + data/mnist_{split}/ for each split
    get_dataloaders_from_split_csv(...)  one CSV with a split column + one image folder
    split_csv(...)                       one CSV with no split column -> a copy with one, drawn
                                         by class, for get_dataloaders_from_split_csv
    loaders_from_datasets(...)           any three CsvImageDatasets you built

train_transforms (train only, e.g. augmentation) and test_transforms (valid and test) take one
uint8 image (C, H, W), as torchvision's v2 transforms do, and run after the decoded-image cache.
Each sample's random numbers come from (seed, epoch, index), so augmented runs are exact too:
the same images whatever num_workers, and after a resume. image_size resizes at decode.

The first pass decodes every image once, in num_workers processes, into one uint8 tensor that
every epoch (and every worker) reads; with cache_dir=, into a file there that later runs read
instead of decoding (memory-mapped).

Options go where they act: `dataset_kwargs` to every CsvImageDataset (mode, pixels, file_column,
label_column, num_classes, cache_mb, ...) and `loader_kwargs` to every torch DataLoader
(persistent_workers, pin_memory, multiprocessing_context, ...).

The train loader reshuffles every epoch and drops the last partial batch; valid and test keep
their order and every sample; no file may be in two splits. The order of epoch e depends only on
(seed, e), not on num_workers,
on how often the loader was iterated before, or on any global random state: `set_epoch(e)` on
`loader.sampler` picks an epoch, as with DistributedSampler. Whole batches are fetched with one
`dataset[array_of_indices]` call, which is what makes the in-memory path fast. Under torchrun (a
process group is initialized), each process takes its share of every batch, as DistributedSampler.

Needs dataset.py beside it.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from dataset import Batch, CsvImageDataset, DatasetError, normal_file_mode, read_csv

Transform = Callable[[torch.Tensor], torch.Tensor]

SPLITS = ("train", "valid", "test")


def get_dataloaders(batch_size: int, data_dir: str | Path = "data", num_workers: int = 0,
                    seed: int = 123, *, batch_size_factor_eval: int = 1,
                    train_transforms: Transform | None = None,
                    test_transforms: Transform | None = None,
                    image_size: int | tuple[int, int] | None = None,
                    cache_dir: str | Path | None = None, dataset_kwargs: dict | None = None,
                    loader_kwargs: dict | None = None) -> tuple[DataLoader, DataLoader, DataLoader]:
    """The lecture's loaders: data_dir/mnist_{train,valid,test}.csv listing the images in
    data_dir/mnist_{train,valid,test}/, as make_subset.py writes them. Valid and test batches hold
    batch_size * batch_size_factor_eval images (they only measure accuracy). cache_dir: keep the
    decoded pixels there for later runs (see CsvImageDataset)."""
    datasets = make_datasets(folder_layout(data_dir),
                             {"image_size": image_size, "cache_dir": cache_dir,
                              **(dataset_kwargs or {})},
                             train_transforms, test_transforms)
    return loaders_from_datasets(*datasets, batch_size=batch_size,
                                 eval_batch_size=batch_size * batch_size_factor_eval, seed=seed,
                                 loader_kwargs={"num_workers": num_workers,
                                                **(loader_kwargs or {})})


def get_dataloaders_from_split_csv(
        csv_path: str | Path, img_dir: str | Path, batch_size: int, num_workers: int = 0,
        seed: int = 123, *, split_column: str = "split", batch_size_factor_eval: int = 1,
        train_transforms: Transform | None = None, test_transforms: Transform | None = None,
        image_size: int | tuple[int, int] | None = None, cache_dir: str | Path | None = None,
        dataset_kwargs: dict | None = None,
        loader_kwargs: dict | None = None) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Loaders for one CSV whose `split_column` says train / valid / test, and one image folder.
    For a CSV without one, split_csv() writes a copy with one."""
    sources = [(csv_path, img_dir, (split_column, split)) for split in SPLITS]
    datasets = make_datasets(sources, {"image_size": image_size, "cache_dir": cache_dir,
                                       **(dataset_kwargs or {})},
                             train_transforms, test_transforms)
    return loaders_from_datasets(*datasets, batch_size=batch_size,
                                 eval_batch_size=batch_size * batch_size_factor_eval, seed=seed,
                                 loader_kwargs={"num_workers": num_workers,
                                                **(loader_kwargs or {})})


def folder_layout(data_dir: str | Path) -> list[tuple[Path, Path, None]]:
    """(csv, image folder, no split column) of train, valid and test: data_dir/mnist_<split>.csv and
    data_dir/mnist_<split>/. The one definition of those names here (make_subset.py's copy is pinned
    equal by a test)."""
    data_dir = Path(data_dir)
    return [(data_dir / f"mnist_{s}.csv", data_dir / f"mnist_{s}", None) for s in SPLITS]


def make_datasets(sources: Sequence[tuple], dataset_kwargs: dict | None = None,
                  train_transforms: Transform | None = None,
                  test_transforms: Transform | None = None) -> list[CsvImageDataset]:
    """Train, valid and test datasets from three (csv_path, img_dir, split) sources, split being
    None or (column, value). They share one mapping of classes, the union over the splits (a
    warning names any class that training has no example of). A file in two splits is an error:
    a test set that overlaps training fools you."""
    kwargs = dict(dataset_kwargs or {})
    transforms = [train_transforms] + [test_transforms] * (len(sources) - 1)
    datasets = [CsvImageDataset(csv, folder, t, split=split, **kwargs)
                for (csv, folder, split), t in zip(sources, transforms)]
    classes = kwargs.get("classes") or union_of_classes([ds.classes for ds in datasets])
    if any(ds.classes != classes for ds in datasets):  # one mapping for all splits: read again
        kwargs["classes"] = classes
        datasets = [CsvImageDataset(csv, folder, t, split=split, **kwargs)
                    for (csv, folder, split), t in zip(sources, transforms)]
    unseen = sorted(set(classes) - {classes[i] for i in set(datasets[0].targets)})
    if unseen:
        warnings.warn(f"the training split has no example of class(es) {unseen} (they are in valid "
                      "or test): the model cannot learn them", stacklevel=2)
    _refuse_overlap(datasets)
    return datasets


def union_of_classes(per_split: Sequence[list[str]]) -> list[str]:
    """The classes of a run: for integer labels 0 to the largest label in any split, for class
    names every name of any split, sorted."""
    if all(names == [str(i) for i in range(len(names))] for names in per_split):
        return [str(i) for i in range(max(len(names) for names in per_split))]
    return sorted(set().union(*per_split))


def _refuse_overlap(datasets: Sequence[CsvImageDataset]) -> None:
    """A DatasetError naming every file (by its path) that is in two splits: one hash per row."""
    keys = pd.concat([pd.DataFrame({
        "key": [os.path.normpath(os.path.join(ds.samples.root, f)) for f in ds.samples.files()],
        "split": k, "row": np.arange(len(ds))}) for k, ds in enumerate(datasets)])
    per_split = keys.drop_duplicates(["key", "split"])
    shared = per_split[per_split.duplicated("key", keep=False)]
    if shared.empty:
        return
    overlaps = []
    for _, rows in shared.groupby("key", sort=False):
        (first, i), *others = zip(rows["split"], rows["row"])
        a = datasets[first]
        for other, j in others:
            b = datasets[other]
            overlaps.append(f"  {b.samples[j].file!r}: in {SPLITS[first]} ({a.csv_path}, line "
                            f"{a.samples[i].line}) and in {SPLITS[other]} ({b.csv_path}, "
                            f"line {b.samples[j].line})")
    raise DatasetError(f"{len(overlaps)} file(s) in two splits; an image may be in one only:\n"
                       + "\n".join(overlaps[:20]) + ("\n  ..." if len(overlaps) > 20 else ""))


def split_csv(csv_path: str | Path, out_path: str | Path, *, label_column: str = "Class Label",
              valid_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
              encoding: str = "utf-8") -> Path:
    """Write every row of csv_path to out_path with a `split` column added: of each class's rows,
    round(n * test_fraction) go to test and round(n * valid_fraction) to valid, drawn with NumPy
    from (seed, class); the rest to train. The same arguments give the same bytes; the file is
    written whole or not at all, in the input's encoding. Then:
    get_dataloaders_from_split_csv(out_path, ...)."""
    csv_path, out_path = Path(csv_path), Path(out_path)
    if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(f"valid_fraction {valid_fraction} and test_fraction {test_fraction} must "
                         "be at least 0, with a sum below 1")
    read_csv(csv_path, [label_column], encoding)  # named errors: no file, no column, encoding
    rows = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding=encoding)
    if "split" in rows.columns:
        raise DatasetError(f"{csv_path} already has a 'split' column: use it (split_column="
                           "'split', --split-column split) instead of drawing a new split")
    labels = rows[label_column].str.strip()
    split = np.full(len(rows), "train", dtype=object)
    for k, label in enumerate(sorted(labels.unique())):
        members = np.flatnonzero((labels == label).to_numpy())
        order = members[np.random.default_rng([seed, k]).permutation(len(members))]
        n_test, n_valid = (int(len(members) * f + 0.5) for f in (test_fraction, valid_fraction))
        split[order[:n_test]] = "test"
        split[order[n_test:n_test + n_valid]] = "valid"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    try:
        normal_file_mode(tmp)  # not mkstemp's 0600
        with os.fdopen(fd, "w", encoding=encoding, newline="") as f:
            rows.assign(split=split).to_csv(f, index=False, lineterminator="\n")
        os.replace(tmp, out_path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # left only when the write failed
    return out_path


def loaders_from_datasets(
        train: CsvImageDataset, valid: CsvImageDataset, test: CsvImageDataset, *, batch_size: int,
        eval_batch_size: int | None = None, seed: int = 123,
        loader_kwargs: dict | None = None) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train loader (reshuffled, drop_last) and valid / test loaders (fixed order, every sample)."""
    for ds in (train, valid, test):  # decode once, before the loaders' workers start
        ds.preload(num_workers=(loader_kwargs or {}).get("num_workers", 0))
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


class EpochBatchSampler(Sampler[Batch]):
    """Yields one Batch per batch: an int64 NumPy array of indices, with the seed and epoch that
    key the samples' random transforms; epoch e's order depends on (seed, e) only.

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
                yield Batch(mine, self.seed, epoch)
