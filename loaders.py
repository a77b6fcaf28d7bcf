"""Train / valid / test DataLoaders for images listed in CSVs, in an order fixed by (seed, epoch).

    train_loader, valid_loader, test_loader = get_dataloaders(batch_size=64, data_dir="data")
    for images, labels in train_loader:   # (64, 1, 28, 28) float32 in [0, 1], (64,) int64
        ...

Layouts:
    get_dataloaders(...)                 data/mnist_{split}.csv + data/mnist_{split}/ for each split
    get_dataloaders_from_split_csv(...)  one CSV with a split column + one image folder
    split_csv(...)                       one CSV with no split column -> a copy with one, drawn
                                         by class, for get_dataloaders_from_split_csv
    loaders_from_datasets(...)           any three CsvImageDatasets you built, or Subsets /
                                         ConcatDatasets of them (random_split)

train_transforms (train only, e.g. augmentation) and test_transforms (valid and test) take one
uint8 image (C, H, W), as torchvision's v2 transforms do, and run after the decoded-image cache.
Each sample's random numbers come from (seed, epoch, index), so augmented runs are exact too:
the same images whatever num_workers, and after a resume. image_size resizes at decode.

The first pass decodes every image once, in num_workers processes, into one uint8 tensor that
every epoch (and every worker) reads; with cache_dir=, into a file there that later runs read
instead of decoding (memory-mapped). Batches of images held in memory are then gathered in this
process, where workers would only copy them, unless a transform gives workers work (they are
then kept alive between epochs); `loader.workers_decision` says which.

Options go where they act: `dataset_kwargs` to every CsvImageDataset (mode, pixels, file_column,
label_column, num_classes, cache_mb, ...) and `loader_kwargs` to every torch DataLoader
(persistent_workers, pin_memory, multiprocessing_context, ...).

The train loader reshuffles every epoch and drops the last partial batch; valid and test keep
their order and every sample; no file may be in two splits. The order of epoch e depends only on
(seed, e), not on num_workers,
on how often the loader was iterated before, or on any global random state: `set_epoch(e)` on
`loader.sampler` picks an epoch, as with DistributedSampler. Whole batches are fetched with one
`dataset[array_of_indices]` call, which is what makes the in-memory path fast. Under torchrun or
Lightning (a process group is initialized when an epoch starts), each process takes its share of
every batch; the sampler is a DistributedSampler, so Lightning adds none of its own.

Needs dataset.py beside it.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from dataset import (TEMP_TAG, Batch, CsvImageDataset, DatasetError, csv_separator, empty_classes_message,
                     normal_file_mode, odd_class_warnings, read_csv,
                     split_names, split_spellings)

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
    _refuse_unknown_splits(sources, kwargs.get("file_column", "File Name"),
                           kwargs.get("encoding", "utf-8"))
    transforms = [train_transforms] + [test_transforms] * (len(sources) - 1)
    datasets = [CsvImageDataset(csv, folder, t, split=split, **kwargs)
                for (csv, folder, split), t in zip(sources, transforms)]
    classes = kwargs.get("classes") or union_of_classes([ds.classes for ds in datasets])
    colour = [ds for ds in datasets if ds.mode == "RGB"]  # mode="auto": RGB if any split is
    mixed = 0 < len(colour) < len(datasets)
    if mixed or any(ds.classes != classes for ds in datasets):  # one mapping of classes and one
        kwargs.update(classes=classes, **({"mode": "RGB"} if mixed else {}))  # mode: read again
        datasets = [CsvImageDataset(csv, folder, t, split=split, **kwargs)
                    for (csv, folder, split), t in zip(sources, transforms)]
        if mixed:
            for ds in datasets:
                ds.mode_decision = colour[0].mode_decision  # the split that made it RGB says why
    used = {i for ds in datasets for i in set(ds.targets)}
    empty = [name for i, name in enumerate(classes) if i not in used]
    if empty:
        warnings.warn(empty_classes_message(empty, classes), stacklevel=2)
    for message in odd_class_warnings(datasets):
        warnings.warn(message, stacklevel=2)
    in_eval = {classes[i] for ds in datasets[1:] for i in set(ds.targets)}
    unseen = sorted(in_eval - {classes[i] for i in set(datasets[0].targets)})
    if unseen:
        warnings.warn(f"the training split has no example of class(es) {unseen} (they are in valid "
                      "or test): the model cannot learn them", stacklevel=2)
    _refuse_overlap(datasets)
    return datasets


def _refuse_unknown_splits(sources: Sequence[tuple], file_column: str, encoding: str) -> None:
    """Every row of a CSV with a split column must be in one of the splits asked for: a row whose
    value is none of their spellings (any case) would be left out without a word."""
    by_csv: dict[tuple[Path, str], set[str]] = {}
    for csv, _, split in sources:
        if split is not None:
            by_csv.setdefault((Path(csv), split[0]), set()).update(split_spellings(split[1]))
    for (csv, column), known in by_csv.items():
        # With the file column: a row whose split cell alone is empty is not a blank line.
        values = read_csv(csv, [file_column, column], encoding)[column]
        names = split_names(values)
        unknown = values[~names.isin(known)].fillna("").astype(str).str.strip()
        if len(unknown):
            counts = ", ".join(f"{v!r} ({n} row{'s' if n > 1 else ''}, first on line {line})"
                               for v, n, line in _counts_with_first_line(unknown))
            raise DatasetError(
                f"{csv}: column {column!r} has values that are not a split: {counts}. Each row "
                "must "
                "say train (or training), valid (val, validation, dev) or test (testing), in any "
                "case; change those cells in the CSV, or drop the rows you do not want")


def _counts_with_first_line(values: pd.Series) -> list[tuple[str, int, int]]:
    """(value, how many rows, the first row's line) of each distinct value, commonest first."""
    groups = values.groupby(values, sort=False)
    return sorted(((v, len(g), int(g.index[0])) for v, g in groups), key=lambda t: -t[1])


def union_of_classes(per_split: Sequence[list[str]]) -> list[str]:
    """The classes of a run: for integer labels 0 to the largest label in any split, for class
    names every name of any split, sorted."""
    if all(names == [str(i) for i in range(len(names))] for names in per_split):
        return [str(i) for i in range(max(len(names) for names in per_split))]
    return sorted(set().union(*per_split))


def _refuse_overlap(datasets: Sequence[CsvImageDataset]) -> None:
    """A DatasetError naming every file that is in two splits: one file, whatever its names (a
    symbolic or hard link to it, a copy of the folder through a link), by device and inode."""
    keys = pd.concat([pd.DataFrame({
        "key": [f"{dev}:{ino}" for dev, ino in ds.rows.stats[:, 3:5].tolist()],
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
            overlaps.append(f"  {b.rows[j].file!r}: in {SPLITS[first]} ({a.csv_path}, line "
                            f"{a.rows[i].line}) and in {SPLITS[other]} ({b.csv_path}, "
                            f"line {b.rows[j].line})")
    raise DatasetError(f"{len(overlaps)} file(s) in two splits; an image may be in one only:\n"
                       + "\n".join(overlaps[:20]) + ("\n  ..." if len(overlaps) > 20 else ""))


def split_csv(csv_path: str | Path, out_path: str | Path, *, label_column: str = "Class Label",
              valid_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
              encoding: str = "utf-8", file_column: str | None = None) -> Path:
    """Write every row of csv_path to out_path with a `split` column added: of each class's rows,
    round(n * test_fraction) go to test and round(n * valid_fraction) to valid, drawn with NumPy
    from (seed, class); the rest to train. The same arguments give the same bytes; the file is
    written whole or not at all, in the input's encoding. Then:
    get_dataloaders_from_split_csv(out_path, ...). file_column: checked to exist too, so that
    one error names every missing column."""
    csv_path, out_path = Path(csv_path), Path(out_path)
    if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(f"valid_fraction {valid_fraction} and test_fraction {test_fraction} must "
                         "be at least 0, with a sum below 1")
    # named errors: no file, no column, encoding
    read_csv(csv_path, [c for c in (file_column, label_column) if c is not None], encoding)
    try:
        rows = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding=encoding,
                           sep=csv_separator(csv_path, encoding))
    except UnicodeDecodeError as e:  # a byte below the header that read_csv's check did not see
        raise DatasetError(f"{csv_path}: not {encoding} text ({e.reason} at byte {e.start}); pass "
                           "its encoding, e.g. encoding='latin-1' (--encoding latin-1) for a "
                           "spreadsheet export") from None
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
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.{TEMP_TAG}-")
    try:
        normal_file_mode(tmp)  # not mkstemp's 0600
        with os.fdopen(fd, "w", encoding=encoding, newline="") as f:
            rows.assign(split=split).to_csv(f, index=False, lineterminator="\n")
        os.replace(tmp, out_path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # left only when the write failed
    return out_path


def loaders_from_datasets(
        train: Dataset, valid: Dataset, test: Dataset, *, batch_size: int,
        eval_batch_size: int | None = None, seed: int = 123,
        loader_kwargs: dict | None = None) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train loader (reshuffled, drop_last) and valid / test loaders (fixed order, every sample).
    Each is a CsvImageDataset, or a Subset / ConcatDataset of them (what random_split gives)."""
    views = [as_batch_dataset(ds) for ds in (train, valid, test)]
    leaves = {id(leaf): leaf for view in views for leaf in _leaves_of(view)}
    for ds in leaves.values():  # decode once, before the loaders' workers start
        ds.preload(num_workers=(loader_kwargs or {}).get("num_workers", 0))
    shared = [leaf for leaf in _leaves_of(views[0]) if leaf.transform is not None
              and any(leaf is other for view in views[1:] for other in _leaves_of(view))]
    if shared:
        warnings.warn("train and valid / test are parts of one dataset, so they share its "
                      "transform: augmentation meant for training runs on valid / test too. Build "
                      "one dataset per transform and split each with the same indices "
                      "(Subset(ds, idx)).", stacklevel=2)
    eval_batch_size = eval_batch_size or batch_size
    options = {"seed": seed, "loader_kwargs": loader_kwargs}
    return (
        make_loader(views[0], batch_size, shuffle=True, drop_last=True, **options),
        make_loader(views[1], eval_batch_size, shuffle=False, drop_last=False, **options),
        make_loader(views[2], eval_batch_size, shuffle=False, drop_last=False, **options),
    )


# What the loaders set themselves; in loader_kwargs they would change what the promises rest on.
OWN_OPTIONS = ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last", "generator")


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int,
                loader_kwargs: dict | None = None, rank: int | None = None,
                world_size: int | None = None) -> DataLoader:
    """A DataLoader that fetches whole batches with dataset[Batch of indices]; loader_kwargs go to
    torch's DataLoader as they are (num_workers, persistent_workers, pin_memory, ...), but for
    the options the loaders set (OWN_OPTIONS), and collate_fn, which gets a list of (image,
    label) samples as in a plain DataLoader. rank / world_size: the sampler's (default: the
    process group's)."""
    kwargs = dict(loader_kwargs or {})
    own = [key for key in OWN_OPTIONS if key in kwargs]
    if own:
        raise ValueError(
            f"loader_kwargs {own}: the loaders set these themselves (the train loader reshuffles "
            "every epoch in an order drawn from (seed, epoch) and drops the last partial batch; "
            "valid and test keep their order and every sample; batch sizes come from batch_size "
            "and eval_batch_size). Leave them out; for a sampler of your own (such as "
            "WeightedRandomSampler), call ds.preload() and use DataLoader(ds, batch_size=..., "
            "sampler=...) on the dataset")
    if kwargs.get("collate_fn") is not None:
        kwargs["collate_fn"] = functools.partial(_collate_samples, kwargs["collate_fn"])
    dataset = as_batch_dataset(dataset)
    kwargs, decision = plan_workers(dataset, kwargs)
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=shuffle, drop_last=drop_last,
                                seed=seed, rank=rank, world_size=world_size)
    loader = DataLoader(
        dataset, batch_size=None, sampler=sampler,  # batch_size=None: the sampler yields batches
        # Its own generator, so that starting an iterator never draws from the global RNG.
        generator=PicklableGenerator().manual_seed(seed), **kwargs,
    )
    loader.workers_decision = decision
    return loader


# DataLoader options that only processes have: dropped with them (torch refuses them without).
WORKER_OPTIONS = ("persistent_workers", "prefetch_factor", "multiprocessing_context", "timeout")


def plan_workers(dataset: Dataset, loader_kwargs: dict) -> tuple[dict, str]:
    """(loader_kwargs as the DataLoader gets them, a sentence saying where batches are made).

    Workers help where a batch is work: decoding, a transform, or a collate_fn of yours (and a
    worker_init_fn of yours asks for them). A batch of images held in memory with none of these is
    one gather, which workers would only copy between processes (a whole 20-epoch run took 5x as
    long with 2 workers: bench.py --sections cached_workers), so it is made in this process;
    num_workers then serves the first pass's decoding. Workers with work on images in memory are
    kept alive between epochs (persistent_workers, unless loader_kwargs says otherwise): starting
    them every epoch costs more than they save."""
    kwargs = dict(loader_kwargs)
    workers = kwargs.get("num_workers", 0)
    if not workers:
        return kwargs, "no workers: batches are made in this process"
    leaves = _leaves_of(dataset)
    for leaf in leaves:
        if not leaf.decodes_every_pass:  # decoded by the workers now (nothing when done), so
            leaf.preload(num_workers=workers)  # that the batches read the cache, as said below
    if not all(leaf.in_memory for leaf in leaves):
        how = ("decode each batch" if all(leaf.decodes_every_pass for leaf in leaves) else
               "read each batch from the memory-mapped disk cache, over the memory budget"
               if not any(leaf.decodes_every_pass for leaf in leaves) else "make each batch")
        return kwargs, f"{workers} workers {how}"
    work = [what for what, there in (("the transform", any(leaf.transform for leaf in leaves)),
                                     ("your collate_fn", kwargs.get("collate_fn") is not None),
                                     ("your worker_init_fn", kwargs.get("worker_init_fn")))
            if there]
    if not work:
        for key in WORKER_OPTIONS:
            kwargs.pop(key, None)
        kwargs["num_workers"] = 0
        return kwargs, (f"batches are gathered in this process from the images in memory "
                        f"({workers} workers would only copy them; they serve decoding only)")
    kwargs.setdefault("persistent_workers", True)
    kept = "kept alive between epochs" if kwargs["persistent_workers"] else "started every epoch"
    return kwargs, f"{workers} workers run {' and '.join(work)} on the images in memory, {kept}"


def _collate_samples(collate_fn: Callable, batch: tuple[torch.Tensor, torch.Tensor]):
    """A user's collate_fn on a fetched batch, given as a plain DataLoader gives it: a list of
    (image (C, H, W), label int) samples."""
    images, labels = batch
    return collate_fn(list(zip(images.unbind(0), labels.tolist())))


class PicklableGenerator(torch.Generator):
    """A torch.Generator that pickles as its state's bytes. A plain one pickles its state as a
    tensor, which torch.multiprocessing sends as a file descriptor; a loader holding one then
    cannot go to a spawned process ("bad value(s) in fds_to_keep", pytorch#146828), as Lightning's
    ddp_spawn sends it."""

    def __reduce__(self):
        return _generator_from_state, (self.get_state().numpy().tobytes(),)


def _generator_from_state(state: bytes) -> PicklableGenerator:
    generator = PicklableGenerator()
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return generator


def as_batch_dataset(dataset: Dataset) -> Dataset:
    """dataset itself when it is a CsvImageDataset, else a DatasetView of it."""
    return dataset if isinstance(dataset, (CsvImageDataset, DatasetView)) else DatasetView(dataset)


class DatasetView(Dataset):
    """A Subset or ConcatDataset of CsvImageDatasets (nested in any way, as random_split and `+`
    make them), fetched a batch at a time as the datasets are: view[Batch or indices] ->
    (images (B, C, H, W), labels (B,)); view[i] -> (image, label). Item i is row row_of[i] of
    parts[part_of[i]]."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.parts: list[CsvImageDataset] = []
        part_of, self.row_of = self._resolve(dataset)
        self.part_of = part_of  # (N,) int64
        self.classes = self.parts[0].classes if self.parts else []
        if any(part.classes != self.classes for part in self.parts):
            raise ValueError("the datasets joined in this ConcatDataset have different classes "
                             f"({[part.classes for part in self.parts]}); pass the same "
                             "classes= to each CsvImageDataset")
        shapes = {(part.channels, *part.image_size, part.pixels) for part in self.parts}
        if len(shapes) > 1:
            raise ValueError("the datasets joined in this ConcatDataset give images of different "
                             "shapes or types (channels, height, width, pixels: "
                             f"{sorted(shapes)}), "
                             "which cannot share a batch; pass the same mode=, image_size= and "
                             "pixels= to each CsvImageDataset")

    def _resolve(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(dataset, CsvImageDataset):
            part = next((k for k, p in enumerate(self.parts) if p is dataset), len(self.parts))
            if part == len(self.parts):  # a dataset met twice (tr + tr) is one part
                self.parts.append(dataset)
            return np.full(len(dataset), part, dtype=np.int64), np.arange(len(dataset))
        if isinstance(dataset, Subset):
            part_of, row_of = self._resolve(dataset.dataset)
            indices = np.asarray(dataset.indices, dtype=np.int64)
            return part_of[indices], row_of[indices]
        if isinstance(dataset, ConcatDataset):
            pairs = [self._resolve(d) for d in dataset.datasets]
            return (np.concatenate([p for p, _ in pairs]).astype(np.int64),
                    np.concatenate([r for _, r in pairs]).astype(np.int64))
        raise TypeError(f"the loaders take a CsvImageDataset, or a Subset or ConcatDataset of them "
                        f"(what random_split gives); got {type(dataset).__name__}. For another "
                        "kind of dataset, use torch's DataLoader")

    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def targets(self) -> list[int]:
        labels = np.zeros(len(self), dtype=np.int64)
        for k, part in enumerate(self.parts):
            mine = self.part_of == k
            labels[mine] = part.rows.labels[self.row_of[mine]]
        return labels.tolist()

    def __getitem__(self, index):
        if not isinstance(index, Batch) and np.ndim(index) == 0:
            i = range(len(self))[index]  # negative indices, and an IndexError when out of range
            return self.parts[self.part_of[i]][int(self.row_of[i])]
        batch = index if isinstance(index, Batch) else None
        indices = np.asarray(batch.indices if batch else index, dtype=np.int64)  # (B,)
        parts, rows = self.part_of[indices], self.row_of[indices]
        images = labels = None
        for k in np.unique(parts):
            mine = np.flatnonzero(parts == k)
            # The parts' rows are numbered from 0 each: another seed per part keeps their random
            # transforms apart.
            ask = (Batch(rows[mine], batch.seed + (int(k) << 32), batch.epoch) if batch
                   else rows[mine])
            part_images, part_labels = self.parts[k][ask]
            if images is None:
                images = part_images.new_empty((len(indices), *part_images.shape[1:]))
                labels = part_labels.new_empty(len(indices))
            at = torch.from_numpy(mine)
            images[at], labels[at] = part_images, part_labels
        return images, labels


def _leaves_of(dataset: Dataset) -> list[CsvImageDataset]:
    return dataset.parts if isinstance(dataset, DatasetView) else [dataset]


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of range(num_samples) that depends on (seed, epoch) and nothing else.

    NumPy's SeedSequence mixes both numbers into PCG64's 128-bit state. (torch.manual_seed would
    keep only the low 32 bits of a combined seed, so nearby seeds could share their orders.)
    """
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


class EpochBatchSampler(DistributedSampler):
    """Yields one Batch per batch: an int64 NumPy array of indices, with the seed and epoch that
    key the samples' random transforms; epoch e's order depends on (seed, e) only.

    Arrays rather than lists: the dataset turns one into a tensor without copying, and it pickles
    cheaply to worker processes.

    Each call to iter() plays the next epoch, unless set_epoch() chose one. With world_size > 1,
    every global batch of `batch_size` is split between the ranks (rank r takes every
    world_size-th index), so all ranks together see exactly what one process would. rank and
    world_size default to the process group's when the sampler is iterated (so a loader made
    before the group, or sent to spawned processes, shards right).

    A DistributedSampler (it shards by itself), so that tools which give a loader one unless it
    has one, such as Lightning's Trainer, leave it as it is rather than split the data twice.
    DistributedSampler.__init__ is not called: it needs a process group when the sampler is made.
    """

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool, drop_last: bool,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if drop_last and num_samples < batch_size:
            raise ValueError(f"only {num_samples} samples: not one full batch of {batch_size} "
                             "(drop_last=True); use a smaller batch size")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        self.dataset_size, self.batch_size = num_samples, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self._rank, self._world_size = rank, world_size
        self.epoch = 0
        self._check_divisible()  # now, where the process group is known already

    @property
    def rank(self) -> int:
        if self._rank is None and dist.is_available() and dist.is_initialized():
            return dist.get_rank()
        return self._rank or 0

    @property
    def world_size(self) -> int:
        if self._world_size is None and dist.is_available() and dist.is_initialized():
            return dist.get_world_size()
        return self._world_size or 1

    num_replicas = world_size  # DistributedSampler's name

    def _check_divisible(self) -> None:
        if self.drop_last and self.batch_size % self.world_size:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by the "
                             f"{self.world_size} processes, so every process gets an equal share "
                             "of each batch")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.dataset_size, self.batch_size)
        return full + int(not self.drop_last and rest > self.rank)

    def __iter__(self):
        self._check_divisible()
        rank, world_size = self.rank, self.world_size
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.shuffle:
            order = epoch_order(self.dataset_size, self.seed, epoch)
        else:
            order = np.arange(self.dataset_size)
        for start in range(0, self.dataset_size, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                break
            mine = batch[rank::world_size]
            if len(mine):
                yield Batch(mine, self.seed, epoch)
