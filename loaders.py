"""Samples become fast batches in an exact order: train / valid / test DataLoaders for images
listed in CSVs, each image decoded once, in an order fixed by (seed, epoch).

    train_loader, valid_loader, test_loader = get_dataloaders(batch_size=64, data_dir="data")
    for images, labels in train_loader:   # (64, 1, 28, 28) float32 in [0, 1], (64,) int64
        ...

Layouts: data_dir/mnist_{split}.csv + data_dir/mnist_{split}/ for each split (get_dataloaders);
one CSV with a split column and one image folder (get_dataloaders(..., csv_path=, img_dir=), or
get_dataloaders_from_split_csv; split_csv() adds the column); any three datasets you built, or
Subsets / ConcatDatasets of them as random_split makes (loaders_from_datasets).

Each dataset is wrapped in a DecodedImages, the decoded-image store: its first pass decodes every
image once, in num_workers processes, into one uint8 tensor (within cache_mb MiB) that every epoch
and worker reads or, with cache_dir=, a file there that later runs map. Transforms run after it, on
one uint8 image (C, H, W), as torchvision's v2 transforms do. For your own DataLoader:

    store = DecodedImages(ds, cache_mb=1024, cache_dir="cache")  # ds: a CsvImageDataset
    store.preload(num_workers=2)    # decode all once, before any DataLoader worker starts
    DataLoader(store, batch_size=64, shuffle=True)               # store[i] is ds[i], from memory

The train loader reshuffles every epoch and drops the last partial batch; valid and test keep
their order and every sample; no file may be in two splits. Epoch e's order depends only on
(seed, e) (set_epoch(e) on loader.sampler picks e), each sample's random transform on (seed, e,
index): exact for any num_workers, after a resume, and under torchrun or Lightning. With
balance="sampler" the train order is a class-balanced draw with replacement, from (seed, e) too.

Also here, for every file of this project's that must be whole or absent: write_atomic, and a
folder's lock (open_lock, lock_or_holder). Needs dataset.py beside it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import warnings
import weakref
import zlib
from collections.abc import Callable, Sequence
from csv import QUOTE_ALL, QUOTE_MINIMAL
from pathlib import Path
from typing import NamedTuple, TypedDict, Unpack

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, get_worker_info
from torch.utils.data.distributed import DistributedSampler

from dataset import (FLAGS, SPLIT_SPELLINGS, CsvImageDataset, DatasetError, ImageSizeError,
                     RowNames, _refuse_measurements, column_positions, csv_columns, csv_encoding,
                     csv_separator, empty_classes_message, odd_class_warnings, read_csv,
                     split_names, split_spellings, table_name, target_columns, to_pixels)

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

Transform = Callable[[torch.Tensor], torch.Tensor]

SPLITS = ("train", "valid", "test")


def get_dataloaders(batch_size: int, data_dir: str | Path = "data", num_workers: int = 0,
                    seed: int = 123, *, train_transforms: Transform | None = None,
                    test_transforms: Transform | None = None,
                    **options: Unpack[LoaderOptions]) -> tuple[DataLoader, DataLoader,
                                                               DataLoader | None]:
    """The lecture's loaders: data_dir/mnist_{train,valid,test}.csv listing the images in
    data_dir/mnist_{train,valid,test}/, as make_subset.py writes them; or, given csv_path, that
    one CSV whose split_column says train / valid / test, or whose valid_column (True / False,
    1 / 0, yes / no) marks the valid rows, the rest train. `options`: see LoaderOptions.

    The test loader is None when the table has no labelled test rows (train + valid only, as
    fastai's and Keras's layouts are, or a Kaggle test set whose label cells are empty)."""
    unknown = sorted(set(options) - set(LoaderOptions.__annotations__))
    if unknown:
        raise TypeError(f"get_dataloaders() got unexpected keyword argument(s) {unknown}; its "
                        f"options are {sorted(LoaderOptions.__annotations__)}")
    csv_path, img_dir = options.get("csv_path"), options.get("img_dir")
    dataset_kwargs = {"image_size": options.get("image_size"),
                      **(options.get("dataset_kwargs") or {})}
    if csv_path is None:
        if options.get("valid_column") is not None:
            raise TypeError("valid_column= goes with csv_path= (one CSV of every image)")
        sources = folder_layout(data_dir)
    else:  # img_dir None: the CSV's folder (a DataFrame's: the working directory), where
        folder = None if img_dir is None else Path(img_dir)  # absolute names are read as written
        table = csv_path if isinstance(csv_path, pd.DataFrame) else Path(csv_path)
        valid_column = options.get("valid_column")
        if valid_column is not None:
            if options.get("split_column") is not None:
                raise TypeError("split_column= and valid_column=: pass one (a column naming each "
                                "row's split, or a True / False column marking the valid rows)")
            sources = valid_column_sources(table, folder, valid_column,
                                           dataset_kwargs.get("file_column", "File Name"),
                                           dataset_kwargs.get("encoding", "utf-8"),
                                           dataset_kwargs.get("header", True))
        else:
            column = options.get("split_column") or "split"
            sources = [(table, folder, (column, split)) for split in SPLITS]
    datasets = make_datasets(sources, dataset_kwargs, train_transforms, test_transforms)
    stores = decoded(datasets, options.get("cache_mb", 1024), options.get("cache_dir"))
    return loaders_from_datasets(
        *stores, batch_size=batch_size,
        eval_batch_size=batch_size * options.get("batch_size_factor_eval", 1), seed=seed,
        loader_kwargs={"num_workers": num_workers, **(options.get("loader_kwargs") or {})},
        balance=options.get("balance"))


class LoaderOptions(TypedDict, total=False):
    """get_dataloaders' other keywords, each optional."""
    csv_path: str | Path | pd.DataFrame  # one table with a split column, not data_dir's three
    img_dir: str | Path  # the folder csv_path's file names are relative to (default: its folder;
    # then absolute names are read as written)
    split_column: str  # csv_path's column saying train / valid / test (default "split")
    valid_column: str  # or its True / False column marking the valid rows (fastai's is_valid)
    batch_size_factor_eval: int  # valid and test batches hold batch_size * this (default 1)
    image_size: int | tuple[int, int]  # resize every image to this as it is decoded
    cache_mb: float  # each split's DecodedImages: memory budget (default 1024)
    cache_dir: str | Path  # and folder of the disk cache (default: none)
    dataset_kwargs: dict  # to every CsvImageDataset (mode, pixels, file_column, resize, ...)
    loader_kwargs: dict  # to every torch DataLoader (persistent_workers, pin_memory, ...)
    balance: str  # "sampler": the train order drawn class-balanced, with replacement


def get_dataloaders_from_split_csv(csv_path: str | Path | pd.DataFrame, img_dir: str | Path | None,
                                   batch_size: int,
                                   num_workers: int = 0, seed: int = 123, *,
                                   split_column: str = "split", valid_column: str | None = None,
                                   **options) -> tuple[DataLoader, DataLoader, DataLoader | None]:
    """get_dataloaders(batch_size, csv_path=..., img_dir=..., **options): one CSV whose
    `split_column` says train / valid / test (test loader None when it has no labelled test
    rows), or whose `valid_column` (True / False, 1 / 0, yes / no) marks the valid rows, the rest
    train (no test). split_csv() adds a split column to a CSV, drawing what it lacks."""
    if "data_dir" in options:
        raise TypeError("get_dataloaders_from_split_csv() takes csv_path and img_dir, not data_dir")
    column = {"split_column": split_column} if valid_column is None else {
        "valid_column": valid_column}
    return get_dataloaders(batch_size, num_workers=num_workers, seed=seed, csv_path=csv_path,
                           img_dir=img_dir, **column, **options)


def folder_layout(data_dir: str | Path) -> list[tuple[Path, Path, None]]:
    """(csv, image folder, no split column) of train, valid and test: data_dir/mnist_<split>.csv and
    data_dir/mnist_<split>/ (make_subset.py's copy of the names is pinned equal by a test)."""
    data_dir = Path(data_dir)
    return [(data_dir / f"mnist_{s}.csv", data_dir / f"mnist_{s}", None) for s in SPLITS]


def make_datasets(sources: Sequence[tuple | None], dataset_kwargs: dict | None = None,
                  train_transforms: Transform | None = None,
                  test_transforms: Transform | None = None) -> list[CsvImageDataset | None]:
    """Train, valid and test datasets from three (csv_path, img_dir, split) sources, split None or
    (column, value), with one mapping of classes (the union over the splits) and one mode. A file
    in two splits is an error: a test set that overlaps training fools you. The test dataset is
    None when its source is, or when its table has no labelled test rows: none (train + valid
    only), or each with an empty label cell (a Kaggle test set, to predict: unlabelled_test)."""
    kwargs = dict(dataset_kwargs or {})
    file_column, encoding = kwargs.get("file_column", "File Name"), kwargs.get("encoding", "utf-8")
    label_column, header = kwargs.get("label_column", "Class Label"), kwargs.get("header", True)
    if kwargs.get("task") == "regression":  # a test row is labelled by its first target
        label_column = target_columns(label_column)[0]
    sources = list(sources)
    _refuse_unknown_splits([s for s in sources if s is not None], file_column, encoding, header)
    _refuse_no_valid(sources[1] if len(sources) > 1 else None, file_column, encoding, header)
    # tags (label_delim): an empty cell is an image with no tags, labelled all the same
    tagged = kwargs.get("label_delim") is not None
    if len(sources) > 2 and sources[2] is not None and sources[2][2] is not None and (
            split_rows(sources[2], file_column, label_column, encoding, header)[int(
                not tagged)] == 0):
        sources[2] = None  # no test rows, or none with a label: no test split
    transforms = [train_transforms] + [test_transforms] * (len(sources) - 1)

    def read(kwargs: dict) -> list[CsvImageDataset | None]:
        return [None if source is None else CsvImageDataset(*source[:2], t, split=source[2],
                                                             **kwargs)
                for source, t in zip(sources, transforms)]

    datasets = read(kwargs)
    present = [ds for ds in datasets if ds is not None]
    classes = kwargs.get("classes") or union_of_classes([ds.classes for ds in present])
    colour = [ds for ds in present if ds.mode == "RGB"]  # mode="auto": RGB if any split is
    mixed = 0 < len(colour) < len(present)
    if mixed or any(ds.classes != classes for ds in present):  # one mapping of classes and one
        kwargs.update(classes=classes, **({"mode": "RGB"} if mixed else {}))  # mode: read again
        datasets = read(kwargs)
        present = [ds for ds in datasets if ds is not None]
        if mixed:
            for ds in present:
                ds.mode_decision = colour[0].mode_decision  # the split that made it RGB says why
    seen = [set(range(len(classes))) if ds.rows.values is not None else  # regression: all
            set(ds.targets) if ds.rows.multi_hot is None else  # the class indices of each split
            set(np.flatnonzero(ds.rows.multi_hot.any(0)).tolist()) for ds in present]
    empty = [name for i, name in enumerate(classes) if not any(i in s for s in seen)]
    messages = [empty_classes_message(empty, classes)] if empty else []
    messages += odd_class_warnings(present)
    unseen = sorted({classes[i] for s in seen[1:] for i in s} - {classes[i] for i in seen[0]})
    if unseen:
        messages.append(f"the training split has no example of class(es) {unseen} (they are in "
                        "valid or test): the model cannot learn them")
    for message in messages:
        warnings.warn(message, stacklevel=2)
    _refuse_overlap(present)  # train, valid (and test): SPLITS' order
    return datasets


def decoded(datasets: Sequence[CsvImageDataset | None], cache_mb: float = 1024,
            cache_dir: str | Path | None = None) -> list[DecodedImages | None]:
    """Each dataset in a DecodedImages of its own, with one budget and cache folder (None: None)."""
    return [None if ds is None else DecodedImages(ds, cache_mb=cache_mb, cache_dir=cache_dir)
            for ds in datasets]


def _refuse_unknown_splits(sources: Sequence[tuple], file_column: str | int, encoding: str,
                           header: bool = True) -> None:
    """Every row of a table with a split column must be in one of the splits asked for: a row
    whose value is none of their spellings (any case) would be left out without a word."""
    by_csv: dict[tuple, tuple] = {}  # (table's path or id, column) -> (table, spellings)
    for csv, _, split in sources:
        if split is not None:
            table = csv if isinstance(csv, pd.DataFrame) else Path(csv)
            key = (id(table) if isinstance(table, pd.DataFrame) else table, split[0])
            by_csv.setdefault(key, (table, set()))[1].update(split_spellings(split[1]))
    for (_, column), (csv, known) in by_csv.items():
        # With the file column: a row whose split cell alone is empty is not a blank line.
        values = read_csv(csv, [file_column, column], encoding, header=header)[column]
        unknown = values[~split_names(values).isin(known)].fillna("").astype(str).str.strip()
        if len(unknown):
            raise DatasetError(
                f"{table_name(csv)}: column {column!r} has values that are not a split: "
                f"{_value_counts(unknown, RowNames.of(csv))}. Each row "
                "must say train (or training), valid (val, validation, dev) or test (testing), in "
                "any case; change those cells in the CSV, or drop the rows you do not want")


def split_rows(source: tuple, file_column: str | int, label_column: str | int | None,
               encoding: str, header: bool = True) -> tuple[int, int, list[str]]:
    """(rows, rows with a label, the values the column holds) of the split a (csv, folder,
    (column, value)) source names. A label cell empty or blank is no label."""
    csv, _, (column, value) = source
    columns = [file_column, column] + ([label_column] if label_column not in (None, column) else [])
    df = read_csv(csv if isinstance(csv, pd.DataFrame) else Path(csv), columns, encoding,
                  header=header)
    found = sorted(df[column].dropna().astype(str).str.strip().unique())
    mine = df[split_names(df[column]).isin(split_spellings(value))]
    if label_column is None:
        return len(mine), len(mine), found
    labels = mine[label_column].dropna().astype(str).str.strip()
    return len(mine), int((labels != "").sum()), found


def unlabelled_test(source: tuple | None, file_column: str | int, label_column: str | int,
                    encoding: str, header: bool = True) -> int:
    """How many test rows a (csv, folder, (column, "test")) source's table holds when every one
    has an empty label cell (a Kaggle test set: not trained on, predicted); else 0."""
    if source is None or source[2] is None:
        return 0
    rows, labelled, _ = split_rows(source, file_column, label_column, encoding, header)
    return rows if labelled == 0 else 0


def _refuse_no_valid(source: tuple | None, file_column: str | int, encoding: str,
                     header: bool = True) -> None:
    """A table whose split column has no valid rows: a DatasetError saying how to draw them."""
    if source is None or source[2] is None or source[2][1] != "valid":
        return
    rows, _, found = split_rows(source, file_column, None, encoding, header)
    if rows == 0:
        csv, _, (column, _) = source
        raise DatasetError(
            f"{table_name(csv)}: no rows with {column} == 'valid' (values found: {found}); a run "
            "needs "
            "validation rows (they choose the best epoch). Draw them from the train rows with "
            f"--valid-fraction F (in Python: split_csv(..., split_column={column!r}, "
            "valid_fraction=F)), or mark some rows valid in the table (for --image-folder: a "
            "valid/ folder beside train/)")


def valid_flags(csv_path: Path | pd.DataFrame, column: str | int, other_column: str | int,
                encoding: str, header: bool = True) -> pd.Series:
    """A valid column's cells as bool (True: valid), indexed by CSV line: True / False, 1 / 0,
    yes / no, in any case. Any other value is a DatasetError naming the values, their counts and
    first lines. other_column: any column of the table, so that blank lines are told apart."""
    values = read_csv(csv_path, [column, other_column], encoding, header=header)[column]
    flags = split_names(values).map(FLAGS)
    bad = values[flags.isna()].fillna("").astype(str).str.strip()
    name = table_name(csv_path)
    if len(bad):
        raise DatasetError(f"{name}: column {column!r} has values that are not True / False: "
                           f"{_value_counts(bad, RowNames.of(csv_path))}. Each row must say "
                           "True, 1 or yes (valid) or "
                           "False, 0 or no (train), in any case")
    if not flags.any():
        raise DatasetError(f"{name}: column {column!r} marks no row valid (all {len(flags)} "
                           "are False); mark some True, or leave the column out to draw a split")
    if flags.all():
        raise DatasetError(f"{name}: column {column!r} marks every row valid (all "
                           f"{len(flags)} are True): no row is left to train on")
    return flags.astype(bool)


def valid_column_sources(csv_path: Path | pd.DataFrame, folder: Path | None, column: str | int,
                         file_column: str | int, encoding: str,
                         header: bool = True) -> list[tuple | None]:
    """Train, valid and (none) test sources of a table whose `column` marks the valid rows: the
    split values are the spellings its cells have, as make_dataset reads them (one each)."""
    flags = valid_flags(csv_path, column, file_column, encoding, header)
    seen = split_names(read_csv(csv_path, [file_column, column], encoding, header=header)[column])
    spellings = [sorted(set(seen[flags == value])) for value in (False, True)]
    if any(len(names) > 1 for names in spellings):
        mixed = next(names for names in spellings if len(names) > 1)
        raise DatasetError(f"{table_name(csv_path)}: column {column!r} writes one value in "
                           "several ways "
                           f"({', '.join(map(repr, mixed))}); write each alike (True / False, "
                           "1 / 0 or yes / no)")
    return [(csv_path, folder, (column, names[0])) for names in spellings] + [None]


def _value_counts(values: pd.Series, row_names: RowNames | None = None) -> str:
    """"'x' (3 rows, first on line 5), 'y' (1 row, first on line 9)": commonest first, values
    indexed as read_csv indexes them (row_names: a DataFrame's names its rows by index label)."""
    groups = sorted(values.groupby(values, sort=False), key=lambda vg: -len(vg[1]))
    name = row_names or RowNames()
    return ", ".join(f"{v!r} ({len(g)} row{'s' if len(g) > 1 else ''}, first on "
                     f"{name(int(g.index[0]))})" for v, g in groups)


def union_of_classes(per_split: Sequence[list[str]]) -> list[str]:
    """The classes of a run: 0 to the largest integer label of any split, or every name, sorted."""
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
            overlaps.append(f"  {b.rows[j].file!r}: in {SPLITS[first]} "
                            f"({a.place(a.rows[i].line)}) and in {SPLITS[other]} "
                            f"({b.place(b.rows[j].line)})")
    raise DatasetError(f"{len(overlaps)} file(s) in two splits; an image may be in one only:\n"
                       + "\n".join(overlaps[:20]) + ("\n  ..." if len(overlaps) > 20 else ""))


def split_csv(csv_path: str | Path | pd.DataFrame, out_path: str | Path, *,
              label_column: str | int = "Class Label", valid_fraction: float | None = None,
              test_fraction: float | None = None, seed: int = 0, encoding: str = "utf-8",
              file_column: str | int | None = None, split_column: str | int | None = None,
              valid_column: str | int | None = None, header: bool = True,
              task: str | None = None) -> Path:
    """Write csv_path's rows to out_path with a `split` column, valid and test rows drawn from the
    train rows: every row of a table without a split; those its split_column says train (the
    others keep theirs); or those its valid_column (True / False, 1 / 0, yes / no) marks False,
    its True rows being valid.

    A fraction None draws DEFAULT_FRACTION for a split the table lacks, none for one it has (a
    number for that is an error); 0 draws none. Of the N rows drawn from, round(N * fraction) go
    to each split, shared among the classes by largest remainder (draw_counts: each class keeps a
    training row); which rows is drawn from (seed, class), so the same arguments give the same
    bytes. A split asked for that would be empty is an error, before any image is read.
    file_column: checked to exist, and a file listed on several rows drawn once (its first row's
    class), all its rows in one split. csv_path: a CSV or a DataFrame (its index is not written).
    Columns by name or 0-based position; header=False: the CSV's first line is a row, and
    out_path's header names the columns by position (0, 1, ..., split), which read_csv reads as
    the same positions.

    task="regression": label_column names the target columns (checked to exist) and the rows are
    drawn as one pool, at random (draw_counts of a single class: round(N * fraction) each, one row
    kept for training, and one for valid when test takes too), from (seed, rows) alone."""
    if task not in (None, "classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    table = csv_path if isinstance(csv_path, pd.DataFrame) else Path(csv_path)
    csv_path, out_path = table_name(table), Path(out_path)
    if split_column is not None and valid_column is not None:
        raise ValueError("split_column and valid_column: pass one (a column naming each row's "
                         "split, or a True / False column marking the valid rows)")
    if valid_column is not None and valid_fraction is not None:
        raise ValueError(f"valid_column {valid_column!r} marks the valid rows: leave "
                         "valid_fraction out (--valid-fraction)")
    _check_fractions(valid_fraction, test_fraction)
    # named errors: no file, no column, encoding
    regression = task == "regression"
    labels = target_columns(label_column) if regression else [label_column]
    columns = [c for c in (file_column, *labels, split_column, valid_column) if c is not None]
    cells_read = read_csv(table, columns, encoding, header=header)
    if not regression:  # a column of measurements (an angle) is no classes to draw by: the
        # dataset's sentence, which names --task regression, rather than "no class has one to
        # spare" from the draw below
        _refuse_measurements(cells_read[label_column], csv_path, label_column, RowNames.of(table))
    if split_column is not None:  # values that are no split: named, with counts and lines
        _refuse_unknown_splits([(table, None, (split_column, s)) for s in SPLITS], columns[0],
                               encoding, header)
    flags = None if valid_column is None else valid_flags(table, valid_column, columns[0],
                                                          encoding, header)
    rows, found, encoding = _table_rows(table, encoding, header)
    if "split" in rows.columns and split_column != "split":
        raise DatasetError(f"{csv_path} already has a 'split' column: use it (split_column="
                           "'split', --split-column split) instead of drawing a new split")
    at = dict(zip(columns, column_positions(columns, found, csv_path, header=header)))

    def cells(column) -> pd.Series:
        return rows.iloc[:, at[column]].fillna("").astype(str)

    if split_column is not None:
        name_of = {s: name for name, spellings in SPLIT_SPELLINGS.items() for s in spellings}
        split = split_names(cells(split_column)).map(name_of).fillna("").to_numpy(dtype=object)
    elif flags is not None:  # a cell left empty (a blank row's) is train: the dataset drops it
        split = np.where(split_names(cells(valid_column)).map(FLAGS).fillna(False).astype(bool),
                         "valid", "train").astype(object)
    else:
        split = np.full(len(rows), "train", dtype=object)
    fractions = _fractions_to_draw(split, {"test": test_fraction, "valid": valid_fraction},
                                   f"{csv_path}: column {split_column or valid_column!r}")
    # a regression's rows: one pool (the same label each), drawn at random, not by class
    _draw(split, pd.Series("", index=rows.index) if regression else cells(label_column).str.strip(),
          cells(file_column).str.strip() if file_column is not None else None,
          fractions, seed, csv_path, pooled=regression)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # csv quotes a cell holding "\n" but not "\r" (not in the line end): quote all when one does
    carriage = any(rows[c].astype(str).str.contains("\r", regex=False).any() for c in rows.columns)
    text = rows.assign(split=split).to_csv(index=False, lineterminator="\n",
                                           quoting=QUOTE_ALL if carriage else QUOTE_MINIMAL)
    write_atomic(out_path, text.encode(encoding))
    return out_path


def _fractions_to_draw(split: np.ndarray, given: dict, column: str) -> dict:
    """Each split's fraction to draw: as given (a number for a split the column has already is
    an error), else none for a split the column has and DEFAULT_FRACTION for one it lacks."""
    fractions = {}
    for name, fraction in given.items():
        if fraction is not None and fraction > 0 and (split == name).any():
            flag = f"{name}_fraction (--{name}-fraction)"
            raise DatasetError(f"{column} has {name} rows already: leave {flag} out to keep "
                               "them, or drop the column to draw every split")
        fractions[name] = fraction if fraction is not None else \
            0.0 if (split == name).any() else DEFAULT_FRACTION
    _check_fractions(fractions["valid"], fractions["test"])
    return fractions


def _table_rows(table: Path | pd.DataFrame, encoding: str,
                header: bool) -> tuple[pd.DataFrame, list, str]:
    """(every row as text, the header's names or the first row's cells, the encoding read):
    split_csv's table, written back whole with its split."""
    if isinstance(table, pd.DataFrame):
        rows, found = table.reset_index(drop=True), list(table.columns)
    else:
        encoding = csv_encoding(table, encoding)  # a UTF-16 or UTF-32 byte order mark's
        found = csv_columns(table, encoding)  # header=False: the first row's cells
        try:
            rows = pd.read_csv(table, dtype=str, keep_default_na=False, encoding=encoding,
                               sep=csv_separator(table, encoding), header=0 if header else None)
        except UnicodeDecodeError as e:  # a byte below the header that read_csv did not see
            raise DatasetError(f"{table}: not {encoding} text ({e.reason} at byte {e.start}); "
                               "pass its encoding, e.g. encoding='latin-1' (--encoding latin-1) "
                               "for a spreadsheet export") from None
    return rows, found, encoding


def _draw(split: np.ndarray, labels: pd.Series, files: pd.Series | None, fractions: dict,
          seed: int, csv_path: str, pooled: bool = False) -> None:
    """Draw valid and test rows from split's train rows, in place (split_csv's rule). pooled: the
    labels are one (a regression's rows), so the words say rows, not classes."""
    pool = split == "train"  # the rows drawn from
    first = pool.copy()  # of a file listed on several train rows, its first
    if files is not None:
        first &= ~files.where(pool).duplicated().to_numpy()
    classes = sorted(labels[first].unique())
    members = [np.flatnonzero((labels == label).to_numpy() & first) for label in classes]
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    n_test, n_valid = draw_counts(sizes, fractions["test"], fractions["valid"])
    for name, counts in (("valid", n_valid), ("test", n_test)):
        if fractions[name] > 0 and counts.sum() == 0:
            n, f = int(sizes.sum()), fractions[name]
            why = (f"{f:g} x {n} rounds to 0; pass a larger --{name}-fraction ({name}_fraction), "
                   f"at least {0.5 / max(n, 1):.3g}, or list more images" if _rounded(n * f) == 0
                   else "one row stays for training, and none is left to spare; list more "
                   "images" if pooled else "every class keeps one image for training, and no "
                   "class has one to spare; list more images of each class")
            raise DatasetError(f"{csv_path}: the {name} split would be empty: {name}_fraction "
                               f"{f:g} of the {n} rows to draw from gives no {name} row ({why})")
    for k, label in enumerate(classes):
        order = members[k][np.random.default_rng([seed, k]).permutation(len(members[k]))]
        split[order[:n_test[k]]] = "test"
        split[order[n_test[k]:n_test[k] + n_valid[k]]] = "valid"
    if files is not None and not first[pool].all():  # a file listed twice goes where its first
        drawn = dict(zip(files[first], split[first]))  # row went: never in two splits
        split[pool] = files[pool].map(drawn).to_numpy()


DEFAULT_FRACTION = 0.1  # of the rows to draw from, for valid and for test (split_csv)


def _check_fractions(valid_fraction: float | None, test_fraction: float | None) -> None:
    given = [f for f in (valid_fraction, test_fraction) if f is not None]
    if not (all(0 <= f for f in given) and sum(given) < 1):
        raise ValueError(f"valid_fraction {valid_fraction} and test_fraction {test_fraction} must "
                         "be at least 0, with a sum below 1")


def draw_counts(sizes: np.ndarray, test_fraction: float,
                valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """How many of each class's rows (sizes, (K,) int64) go to test and to valid: of all N rows,
    round(N * fraction) each, shared in proportion to the class sizes by largest remainder (each
    class gets the floor or the ceiling of its share; ties: the larger class, then the first). A
    class keeps one row for training, and one of 3 or more rows one for valid when test takes
    from it too, so a class never goes whole to test; a share that would break this goes to the
    next classes in that order."""
    n = int(sizes.sum())
    keep = 1 + ((sizes >= 3) & (valid_fraction > 0))  # kept from test: training's, valid's
    n_test = _largest_remainder(_rounded(n * test_fraction), sizes, np.maximum(sizes - keep, 0))
    n_valid = _largest_remainder(_rounded(n * valid_fraction), sizes,
                                 np.maximum(sizes - 1 - n_test, 0))
    return n_test, n_valid


def _rounded(x: float) -> int:
    """Half up, as a person rounds (Python's round() takes 2.5 to 2); 1e-9: 0.3 * 30 is 8.99..."""
    return int(x + 0.5 + 1e-9)


def _largest_remainder(total: int, sizes: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """total shared among classes in proportion to sizes ((K,) int64), none above its cap: the
    floor of each share, then one more each by largest remainder (ties: the larger class, then
    the first), again while some are left and some class has room."""
    if total == 0 or sizes.sum() == 0:
        return np.zeros(len(sizes), dtype=np.int64)
    floor, remainder = np.divmod(total * sizes, sizes.sum())  # exact integers
    counts = np.minimum(floor, caps)
    order = np.lexsort((np.arange(len(sizes)), -sizes, -remainder))  # the last key sorts first
    while (left := total - int(counts.sum())) > 0:
        room = [k for k in order if counts[k] < caps[k]]
        if not room:
            break
        counts[room[:left]] += 1
    return counts


def loaders_from_datasets(
        train: Dataset, valid: Dataset, test: Dataset | None, *, batch_size: int,
        eval_batch_size: int | None = None, seed: int = 123,
        loader_kwargs: dict | None = None,
        balance: str | None = None) -> tuple[DataLoader, DataLoader, DataLoader | None]:
    """Train loader (reshuffled, drop_last) and valid / test loaders (fixed order, every sample) of
    DecodedImages or CsvImageDatasets (one store each, however often it comes), or Subsets /
    ConcatDatasets of them (what random_split gives). test None: the test loader is None.
    balance="sampler": the train loader draws each epoch's order with replacement, each class
    equally likely, from (seed, epoch) alone (make_loader)."""
    views = [as_batch_dataset(ds) for ds in (train, valid, test) if ds is not None]
    leaves = {id(leaf): leaf for view in views for leaf in _leaves_of(view)}
    for store in leaves.values():  # decode once, before the loaders' workers start
        store.preload(num_workers=(loader_kwargs or {}).get("num_workers", 0))
    shared = [leaf for leaf in _leaves_of(views[0]) if leaf.transform is not None
              and any(leaf is other for view in views[1:] for other in _leaves_of(view))]
    if shared:
        warnings.warn("train and valid / test are parts of one dataset, so they share its "
                      "transform: augmentation meant for training runs on valid / test too. Build "
                      "one dataset per transform and split each with the same indices "
                      "(Subset(ds, idx)).", stacklevel=2)
    eval_batch_size = eval_batch_size or batch_size
    options = {"seed": seed, "loader_kwargs": loader_kwargs}
    return (make_loader(views[0], batch_size, shuffle=True, drop_last=True, balance=balance,
                        **options),
            make_loader(views[1], eval_batch_size, shuffle=False, drop_last=False, **options),
            None if test is None else
            make_loader(views[2], eval_batch_size, shuffle=False, drop_last=False, **options))


# What the loaders set themselves; in loader_kwargs they would change what the promises rest on.
OWN_OPTIONS = ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last", "generator")


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int,
                loader_kwargs: dict | None = None, rank: int | None = None,
                world_size: int | None = None, balance: str | None = None) -> DataLoader:
    """A DataLoader that fetches whole batches with dataset[Batch of indices] (dataset: as
    loaders_from_datasets takes them). loader_kwargs, but OWN_OPTIONS, go to torch's DataLoader;
    a collate_fn gets [(image, label)] as in a plain one. rank / world_size: the group's if None.
    balance="sampler": each epoch len(dataset) samples drawn with replacement, each class equally
    likely (balanced_order), instead of a permutation."""
    if balance not in (None, "sampler"):
        raise ValueError(f"balance must be None or 'sampler', got {balance!r} (a loss weighted by "
                         "class is the loss's business: train.Classification(class_weights=...))")
    kwargs = dict(loader_kwargs or {})
    own = [key for key in OWN_OPTIONS if key in kwargs]
    if own:
        raise ValueError(
            f"loader_kwargs {own}: the loaders set these themselves (the train loader reshuffles "
            "every epoch in an order drawn from (seed, epoch) and drops the last partial batch; "
            "valid and test keep their order and every sample; batch sizes come from batch_size "
            "and eval_batch_size). Leave them out; for a sampler of your own (such as "
            "WeightedRandomSampler), wrap the dataset, store = DecodedImages(ds), call "
            "store.preload() and use DataLoader(store, batch_size=..., sampler=...)")
    if kwargs.get("collate_fn") is not None:
        kwargs["collate_fn"] = functools.partial(_collate_samples, kwargs["collate_fn"])
    dataset = as_batch_dataset(dataset)
    kwargs, decision = plan_workers(dataset, kwargs)
    labels = np.asarray(dataset.targets, dtype=np.int64) if balance == "sampler" else None
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=shuffle, drop_last=drop_last,
                                seed=seed, rank=rank, world_size=world_size,
                                balance_labels=labels)
    # batch_size=None: the sampler yields batches; its own generator leaves the global RNG be.
    loader = DataLoader(dataset, batch_size=None, sampler=sampler,
                        generator=PicklableGenerator().manual_seed(seed), **kwargs)
    loader.workers_decision = decision
    return loader


# DataLoader options that only processes have: dropped with them (torch refuses them without).
WORKER_OPTIONS = ("persistent_workers", "prefetch_factor", "multiprocessing_context", "timeout")


def plan_workers(dataset: Dataset, loader_kwargs: dict) -> tuple[dict, str]:
    """(loader_kwargs for the DataLoader, a sentence saying where batches are made). Workers help
    where a batch is work: decoding, a transform, your collate_fn or worker_init_fn. A batch of
    images in memory without these is one gather, which workers would only copy, so it is made
    here; with work, they persist: starting them every epoch costs more than they save."""
    kwargs = dict(loader_kwargs)
    workers = kwargs.get("num_workers", 0)
    if not workers:
        return kwargs, "no workers: batches are made in this process"
    leaves = _leaves_of(dataset)
    for leaf in leaves:  # decoded by the workers now (nothing when done or off), so that the
        leaf.preload(num_workers=workers)  # batches read the cache, as said below
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


def _collate_samples(collate_fn: Callable, batch: tuple[torch.Tensor, ...]):
    """Your collate_fn on a fetched batch as a plain DataLoader gives it: [(image, label int)]
    (or [(image, label, weight float)] with a weight column)."""
    images, *rest = batch
    return collate_fn(list(zip(images.unbind(0), *(t.tolist() for t in rest))))


class PicklableGenerator(torch.Generator):
    """A torch.Generator pickled as its state's bytes: a plain one's state tensor goes as a file
    descriptor, so its loader could not go to a spawned process (ddp_spawn; pytorch#146828)."""

    def __reduce__(self):
        return _generator_from_state, (self.get_state().numpy().tobytes(),)


def _generator_from_state(state: bytes) -> PicklableGenerator:
    return PicklableGenerator().set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))


# The store the loaders gave each CsvImageDataset passed to them bare; gone with the dataset.
_DEFAULT_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def as_batch_dataset(dataset: Dataset) -> Dataset:
    """dataset itself when it is a DecodedImages (or a DatasetView), a DecodedImages of it (with
    the default budget, no disk cache) when it is a CsvImageDataset, else a DatasetView of it."""
    if isinstance(dataset, CsvImageDataset):
        if dataset not in _DEFAULT_STORES:  # one per dataset, across calls too: decoded once
            _DEFAULT_STORES[dataset] = DecodedImages(dataset)
        return _DEFAULT_STORES[dataset]
    return dataset if isinstance(dataset, (DecodedImages, DatasetView)) else DatasetView(dataset)


class DatasetView(Dataset):
    """A Subset or ConcatDataset of DecodedImages or CsvImageDatasets, nested in any way (as
    random_split and `+` make them), batched as a DecodedImages is: view[Batch or indices] ->
    (B, C, H, W), (B,). Item i is row row_of[i] of parts[part_of[i]], a DecodedImages."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.parts: list[DecodedImages] = []
        self.part_of, self.row_of = self._resolve(dataset)  # (N,) int64 each
        self.classes = self.parts[0].classes if self.parts else []
        if any(part.classes != self.classes for part in self.parts):
            raise ValueError("the datasets joined in this ConcatDataset have different classes "
                             f"({[part.classes for part in self.parts]}); pass the same "
                             "classes= to each CsvImageDataset")
        shapes = {(part.channels, *part.image_size, part.pixels) for part in self.parts}
        if len(shapes) > 1:
            raise ValueError("the datasets joined in this ConcatDataset give images of different "
                             "shapes or types (channels, height, width, pixels: "
                             f"{sorted(shapes)}), which cannot share a batch; pass the same "
                             "mode=, image_size= and pixels= to each CsvImageDataset")

    def _resolve(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        """(part_of, row_of), each (len(dataset),) int64, of a dataset nested in any way."""
        if isinstance(dataset, (CsvImageDataset, DecodedImages)):
            dataset = as_batch_dataset(dataset)
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
            return tuple(np.concatenate(arrays).astype(np.int64) for arrays in zip(*pairs))
        raise TypeError(f"the loaders take a CsvImageDataset or DecodedImages, or a Subset or "
                        f"ConcatDataset of them (what random_split gives); got "
                        f"{type(dataset).__name__}. For another kind of dataset, use torch's "
                        "DataLoader")

    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def targets(self) -> list[int]:
        first = np.cumsum([0] + [len(part) for part in self.parts])  # of each part's rows
        labels = np.concatenate([part.rows.labels for part in self.parts])
        return labels[first[self.part_of] + self.row_of].tolist()

    def __getitem__(self, index):
        if not isinstance(index, Batch) and np.ndim(index) == 0:
            i = range(len(self))[index]  # negative indices, and an IndexError when out of range
            return self.parts[self.part_of[i]][int(self.row_of[i])]
        batch = index if isinstance(index, Batch) else None
        indices = np.asarray(batch.indices if batch else index, dtype=np.int64)  # (B,)
        parts, rows = self.part_of[indices], self.row_of[indices]
        out = None  # images, labels (and weights, with a weight column)
        for k in np.unique(parts):
            mine = np.flatnonzero(parts == k)
            # Parts number their rows from 0 each: a seed per part keeps their transforms apart.
            ask = (Batch(rows[mine], batch.seed + (int(k) << 32), batch.epoch) if batch
                   else rows[mine])
            got = self.parts[k][ask]
            if out is None:
                out = tuple(t.new_empty((len(indices), *t.shape[1:])) for t in got)
            if len(got) != len(out):
                raise ValueError("the datasets joined in this ConcatDataset differ in having a "
                                 "weight column; pass the same weight_column= to each")
            at = torch.from_numpy(mine)
            for whole, part in zip(out, got):
                whole[at] = part
        return out


def _leaves_of(dataset: Dataset) -> list[DecodedImages]:
    return dataset.parts if isinstance(dataset, DatasetView) else [dataset]


# ---- the decoded-image store: memory, disk, a parallel first pass -------------------------------

class DecodedImages(Dataset):
    """A CsvImageDataset's images, each decoded once and kept: in memory, one (N, C, H, W) uint8
    tensor, when they take at most cache_mb MiB (0 = never); over that, with cache_dir, in a
    memory-mapped file there when the disk can spare it; else decoded as batches are read.
    store[i] is ds[i]; store[indices or Batch] is a batch, (B, C, H, W) and (B,) int64, in one
    gather. cache_dir: one .npy file per split, written whole or not at all, named by the rows,
    files and settings (a changed file is decoded again), a crc32 per chunk of images checked when
    mapped (damaged: a warning, decoded and written anew); not writable: a warning, and memory only
    (or none, over cache_mb). Attributes: `dataset`, `cache_decision` (where the images are kept,
    and why), `cache_file` (once preload() used it), and the dataset's own, read through."""

    def __init__(self, dataset: CsvImageDataset, cache_mb: float = 1024,
                 cache_dir: str | Path | None = None) -> None:
        if not isinstance(dataset, CsvImageDataset):
            raise TypeError(f"DecodedImages keeps the images of a CsvImageDataset; got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.cache_file: Path | None = None  # the disk cache's file, once preload() has used it
        self._cache: torch.Tensor | None = None  # (N, C, H, W) uint8, filled by preload()
        self._looked_for_file = False  # in a DataLoader worker: for a disk cache file (_cached)
        self._use_cache, self.cache_decision = self._plan_cache(cache_mb)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        """store[i] -> (image (C, H, W), label int), as ds[i]; store[indices or Batch]: a batch."""
        if isinstance(index, Batch) or np.ndim(index) != 0:
            return self.get_batch(index)
        return self.dataset.make_sample(index, self.load_image(index))

    def load_image(self, i: int) -> torch.Tensor:
        """Pixels of sample i, (C, H, W) uint8, a copy: from the in-memory cache, or decoded now."""
        if self._cached() is not None:
            return self._cache[i].clone()
        return self.dataset.load_image(i)

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) and labels (B,) int64 at `indices` (ints, or a Batch): one gather
        from the cache instead of B __getitem__ calls and a collate: how the loaders fetch."""
        key = None
        if isinstance(indices, Batch):  # from the loaders: the transform's randomness is keyed
            indices, key = indices.indices, (indices.seed, indices.epoch)
        rows, labels = self.dataset.batch_rows(indices)  # (B,) and (B,) int64, checked
        if self.transform is not None:
            images = self._transformed_batch(rows.tolist(), key)
        elif self._cached() is not None:
            # NumPy's take runs on one thread: the gather does not wait for torch's thread pool.
            images = torch.from_numpy(np.take(self._cache.numpy(), rows.numpy(), axis=0))
        else:
            images = self.dataset.load_images(rows.tolist())
        return self.dataset.batch_of(to_pixels(images, self.pixels), rows, labels)  # (+ weights)

    def preload(self, num_workers: int = 0,
                progress: bool | Callable[[int, int], None] = True) -> torch.Tensor | None:
        """Decode every image into the cache now, once: (N, C, H, W) uint8, or None when it is off.
        num_workers processes share the decoding (bit for bit one process's pixels); a matching
        cache_dir file is mapped instead. progress: True, a line on stderr after 2 s; or a callable
        (done, total). Call it before DataLoader workers start, so that they share one copy."""
        if self._use_cache and self._cache is None:
            try:
                self._cache = self._load_or_decode(num_workers, progress)
            except ImageSizeError as e:
                if self.transform is None:  # name every image that is not of the commonest size
                    raise self.dataset.size_error() from e
                self._use_cache = False  # the transform makes the sizes equal: decode every time
                self.cache_decision = f"not keeping decoded images in memory: sizes differ ({e})"
        return self._cache

    @property
    def in_memory(self) -> bool:
        """Whether the images are kept in memory (within cache_mb): a batch is one gather."""
        return self._use_cache and self._cache_bytes <= self._budget_bytes

    @property
    def decodes_every_pass(self) -> bool:
        """Whether no cache holds the decoded images (cache_mb=0, or over it with no disk cache)."""
        return not self._use_cache

    def __getstate__(self) -> dict:
        """What pickles to a spawned process (a DataLoader worker, a ddp_spawn rank): a cache mapped
        from its file goes as the file's name, mapped again there (checked here: not again)."""
        state = self.__dict__.copy()
        if self.cache_file is not None and self._cache is not None:
            state["_cache"], state["_looked_for_file"] = None, False
        return state

    def _cached(self) -> torch.Tensor | None:
        """The cache, filled on first use (preload); None when off. A worker whose main process did
        not fill it maps a disk cache file if any, else decodes its own items, not the whole set."""
        if not self._use_cache:
            return None
        if self._cache is None and get_worker_info() is not None:
            if self.cache_dir is not None and not self._looked_for_file:
                self._looked_for_file = True  # once per worker, not once per item
                shape = (len(self), self.channels, *self.image_size)
                self._cache = _open_cached(self.cache_dir / self._cache_file_name(), shape,
                                           check=self.cache_file is None)  # else checked there
            return self._cache
        return self.preload()

    def _transformed_batch(self, indices: Sequence[int],
                           key: tuple[int, int] | None) -> torch.Tensor:
        """(B, C, H, W), the transform on each image: with key = (seed, epoch), drawing from
        sample_seed(seed, epoch, i) alone (the global RNG left be); without, from the global RNG."""
        images = []
        with torch.random.fork_rng(devices=[]) if key is not None else contextlib.nullcontext():
            for i in indices:
                if key is not None:
                    torch.random.default_generator.manual_seed(sample_seed(*key, i))  # CPU only
                images.append(self.dataset.apply_transform(i, self.load_image(i), self.load_image))
        return torch.stack(images)

    def _plan_cache(self, cache_mb: float) -> tuple[bool, str]:
        """In memory within cache_mb; over it, a memory-mapped cache_dir file (the system keeps in
        memory what fits) when the disk can spare it."""
        height, width = self.image_size
        self._cache_bytes = len(self) * self.channels * height * width
        self._budget_bytes = cache_mb * 2**20
        self._cache_what = what = (f"{len(self)} x {self.channels}x{height}x{width} uint8 = "
                                   f"{self._cache_bytes / 2**20:.1f} MiB, budget {cache_mb:g} MiB")
        if 0 < self._cache_bytes <= self._budget_bytes:
            return True, f"keeping decoded images in memory: {what}"
        if cache_mb > 0 and self.cache_dir is not None:
            usage = _disk_usage(self.cache_dir)  # keeps 1 GiB and 5% free: not a full disk
            if usage and usage.free - self._cache_bytes >= max(2**30, 0.05 * usage.total):
                return True, ("keeping decoded images in a memory-mapped file, over the memory "
                              f"budget: {what}")
            return False, (f"not keeping decoded images: {what}, and the disk of {self.cache_dir} "
                           f"cannot spare {self._cache_bytes / 2**20:.0f} MiB for them")
        return False, f"not keeping decoded images in memory: {what}"

    def _load_or_decode(self, num_workers: int, progress) -> torch.Tensor:
        """The (N, C, H, W) uint8 cache: a matching cache_dir file, or decoded (into a new one)."""
        shape = (len(self), self.channels, *self.image_size)
        if self.cache_dir is None:
            pixels = np.empty(shape, dtype=np.uint8)
            self._decode_into(pixels, num_workers, progress)
            return torch.from_numpy(pixels)
        self.cache_file = path = self.cache_dir / self._cache_file_name()
        odd = path.exists() and not path.is_file()  # a FIFO blocks np.load, a folder the rename
        if not odd and (cached := _open_cached(path, shape)) is not None:
            self.cache_decision += "; read from the disk cache"
            return cached
        pixels, decoding = None, False
        try:
            if odd:  # not ours to replace
                raise OSError(errno.EEXIST, f"{path.name} there is not a regular file but a FIFO, "
                                            "folder or device")
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            free = getattr(_disk_usage(self.cache_dir), "free", 0)
            if free < self._cache_bytes + DISK_RESERVE:  # checked before any file is written
                raise OSError(errno.ENOSPC, f"{self._cache_bytes / 2**20:.1f} MiB needed, "
                                            f"{free / 2**20:.1f} MiB free")
            _remove_leftovers(path.parent)
            with atomic_file(path, locked=True) as (fd, tmp):
                pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
                end = pixels.offset + pixels.nbytes  # then _cache_tail: 4 bytes a chunk, and 8
                if hasattr(os, "posix_fallocate"):  # the blocks now, or ENOSPC now: not a SIGBUS
                    os.posix_fallocate(fd, 0, end + 4 * -(-len(self) // DECODE_CHUNK) + 8)  # later
                decoding = True  # from here on an error is the decoder's (or the disk's): raised
                self._decode_into(pixels, num_workers, progress)
                os.lseek(fd, end, os.SEEK_SET)
                os.write(fd, _cache_tail(pixels, DECODE_CHUNK))
                pixels.flush()
                pixels = None  # unmapped before the file is renamed into place
        except OSError as e:  # a read-only data folder, a full disk: decode without the file
            if decoding:
                raise
            pixels = None
            fits = self._cache_bytes <= self._budget_bytes
            warnings.warn(f"no disk cache of decoded images: cannot write in {self.cache_dir} "
                          f"({e.strerror or e}); " + ("decoding in memory" if fits else
                          "over the memory budget, so images are decoded as batches are read"),
                          stacklevel=3)
            self.cache_dir = self.cache_file = None
            if fits:
                return self._load_or_decode(num_workers, progress)
            self._use_cache = False
            self.cache_decision = (f"not keeping decoded images: {self._cache_what}, and the "
                                   "disk cache cannot be written")
            return None
        settings = path.name.rsplit("-", 1)[0]
        for older in self.cache_dir.glob(settings + "-*.npy"):  # the same rows and settings, files
            if older != path and re.fullmatch(r"[0-9a-f]{20}\.npy", older.name[len(settings) + 1:]):
                older.unlink(missing_ok=True)  # since changed; names of that shape alone are ours
        self.cache_decision += "; decoded into the disk cache"
        return _open_cached(path, shape, check=False)  # summed as written (or by who renamed it)

    def _cache_file_name(self) -> str:
        """<csv name>[-<split>]-<hash of how decoded>-<hash of the rows' files, sizes, times>.npy:
        any change gives another name. Not the CSV's path: a copy of the rows finds the same one."""
        # resize="squish" adds nothing: the names of caches written before crop and pad stay valid
        how = () if self.resize == "squish" else (self.resize,)
        settings = hashlib.sha256(repr((
            CACHE_FORMAT, Image.__version__, np.__version__, self.split, self.rows.root,
            self.mode, self.image_size, self.dataset.background, *how)).encode())
        rows = hashlib.sha256(settings.digest())
        for array in (self.rows.offsets, self.rows.names, self.rows.stats):
            rows.update(memoryview(np.ascontiguousarray(array)).cast("B"))
        name = Path(self.source).stem + (f"-{self.split[1]}" if self.split else "")
        name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:60]
        return f"{name}-{settings.hexdigest()[:12]}-{rows.hexdigest()[:20]}.npy"

    def _decode_into(self, out: np.ndarray, num_workers: int, progress) -> None:
        """Decode every image into out, (N, C, H, W) uint8, by chunks: here or in workers."""
        chunks = [range(start, min(start + DECODE_CHUNK, len(self)))
                  for start in range(0, len(self), DECODE_CHUNK)]
        what = f"Decoding {self.source}" + (" ({} {})".format(*self.split) if self.split else "")
        report = progress if callable(progress) else DecodeProgress(what) if progress else None
        if num_workers > 0 and len(chunks) > 1:
            # in_order=False: a slowed worker leaves none waiting. Its own generator: the global
            # RNG stays put. Forked on Linux even where spawning is the default (ddp_spawn, Python
            # 3.14's forkserver): a spawned worker imports torch before its first image.
            fork = "fork" if sys.platform.startswith("linux") else None
            results = DataLoader(_DecodeChunks(self.dataset, chunks), batch_size=None,
                                 in_order=False, num_workers=min(num_workers, len(chunks)),
                                 multiprocessing_context=fork,
                                 generator=torch.Generator().manual_seed(0))
        else:
            results = map(_DecodeChunks(self.dataset, chunks).__getitem__, range(len(chunks)))
        waiting, error, done = set(range(len(chunks))), None, 0
        for k, pixels in results:
            waiting.discard(k)
            done += len(chunks[k])
            if isinstance(pixels, Exception):  # raised in a worker: the same error, here
                error = min(error or (k, pixels), (k, pixels), key=lambda e: e[0])
            else:
                out[chunks[k].start:chunks[k].stop] = pixels.numpy()
            if error is not None and min(waiting, default=len(chunks)) > error[0]:
                raise error[1]  # the first bad image by row, as without workers
            if report is not None:
                report(done, len(self))

    # The dataset's own facts, read through (read-only): what the loaders and train.py ask.
    classes = property(lambda self: self.dataset.classes)
    targets = property(lambda self: self.dataset.targets)
    mode = property(lambda self: self.dataset.mode)
    mode_decision = property(lambda self: self.dataset.mode_decision)
    image_size = property(lambda self: self.dataset.image_size)  # (H, W)
    resize = property(lambda self: self.dataset.resize)  # squish, crop or pad
    channels = property(lambda self: self.dataset.channels)
    csv_path = property(lambda self: self.dataset.csv_path)  # None for a DataFrame
    source = property(lambda self: self.dataset.source)  # the CSV's path or "DataFrame"
    place = property(lambda self: self.dataset.place)
    split = property(lambda self: self.dataset.split)
    rows = property(lambda self: self.dataset.rows)
    transform = property(lambda self: self.dataset.transform,
                         lambda self, value: setattr(self.dataset, "transform", value))
    class_to_idx = property(lambda self: self.dataset.class_to_idx)  # ImageFolder's attributes
    samples = property(lambda self: self.dataset.samples)
    imgs = property(lambda self: self.dataset.imgs)
    problems = property(lambda self: self.dataset.problems)
    pixels = property(lambda self: self.dataset.pixels)


class DecodeProgress:
    """Reports preload's (done, total) on stderr, e.g. "Decoding data/train.csv: 12,000 of 40,000
    images, 6,950/s, 4 s left": from `after` seconds on, once a second on one line of a terminal,
    or a line every 10 s into a log file. A short decode prints nothing."""

    def __init__(self, what: str, stream=None, after: float = 2.0) -> None:
        self.what, self.stream, self.after = what, stream or sys.stderr, after
        self.start, self.last = time.monotonic(), None

    def __call__(self, done: int, total: int) -> None:
        now, terminal = time.monotonic(), self.stream.isatty()
        elapsed, finished = now - self.start, done >= total
        recent = self.last is not None and now - self.last < (1 if terminal else 10)
        if elapsed < self.after or (recent and not finished):
            return
        rate = done / elapsed
        status = f"done in {elapsed:.1f} s" if finished else f"{(total - done) / rate:.0f} s left"
        text = f"{self.what}: {done:,} of {total:,} images, {rate:,.0f}/s, {status}"
        self.stream.write(f"\r{text}" + ("\n" if finished else "") if terminal else text + "\n")
        self.stream.flush()
        self.last = now


class _DecodeChunks(Dataset):
    """(k, chunk k of the rows decoded, (B, C, H, W) uint8), in preload's workers. An error is
    returned, not raised, to reach the main process as it was, not wrapped in a traceback."""

    def __init__(self, dataset: CsvImageDataset, chunks: list[range]) -> None:
        self.dataset, self.chunks = dataset, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor | DatasetError]:
        try:
            return k, self.dataset.load_images(self.chunks[k])
        except DatasetError as e:
            return k, e


def _open_cached(path: Path, shape: tuple[int, ...], check: bool = True) -> torch.Tensor | None:
    """A whole cache file's pixels, memory-mapped copy-on-write (the file is never written; forked
    workers share its pages); None when there is none, or, with a warning naming it, when it is
    damaged (_check_cache; check: each chunk's sum computed again): its images are decoded again."""
    try:
        pixels = np.load(path, mmap_mode="c")
        with open(path, "rb") as f:
            f.seek(pixels.offset + pixels.nbytes)
            _check_cache(pixels, shape, f.read(), check)
        return torch.from_numpy(pixels)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except Exception as e:  # unreadable, cut short, not a .npy file (a ValueError, a TokenError)
        warnings.warn(f"disk cache file {path} is damaged or unreadable ({e}): decoding its images "
                      "again", stacklevel=4)
        return None


def _check_cache(pixels: np.ndarray, shape: tuple[int, ...], tail: bytes, check: bool) -> None:
    """A ValueError unless a cache file of `pixels` (its .npy part) and then `tail` holds `shape`
    uint8, then _cache_tail, the same when computed again (check)."""
    chunk, tag = np.frombuffer(tail[-8:].rjust(8, b"\0"), "<u4").tolist()  # 0, 0: too short
    if (pixels.shape, pixels.dtype) != (shape, np.uint8):
        raise ValueError(f"it holds {pixels.dtype} {pixels.shape}, not uint8 {shape}")
    if tag != CACHE_TAG or not chunk or len(tail) != 4 * -(-len(pixels) // chunk) + 8:
        raise ValueError(f"{len(tail)} bytes after the pixels, not their checksums")
    sums = np.frombuffer(_cache_tail(pixels, chunk) if check else tail, "<u4")
    if len(bad := np.flatnonzero(sums != np.frombuffer(tail, "<u4"))):
        first = int(bad[0]) * chunk
        raise ValueError(f"images {first} to {min(first + chunk, len(pixels)) - 1} differ from "
                         "their checksum")


def _cache_tail(pixels: np.ndarray, chunk: int) -> bytes:
    """What follows a disk cache file's pixels (N, C, H, W): the crc32 of each `chunk` images, then
    chunk and CACHE_TAG, uint32 little-endian. crc32 catches corruption, not malice: 4 GB/s here."""
    flat = pixels.reshape(-1)  # (a Fortran-ordered header's pixels are copied: their sums differ)
    step = flat.size // len(pixels) * chunk
    sums = [zlib.crc32(flat[start:start + step]) for start in range(0, flat.size, step)]
    return np.array([*sums, chunk, CACHE_TAG], "<u4").tobytes()


def _remove_leftovers(folder: Path) -> None:
    """Remove the temporary cache files of killed runs (whose locks died with them); a live
    writer's never. One killed between mkstemp and locking it (atomic_file) is a minute old."""
    for left in folder.glob(f".*.{CACHE_TEMP_TAG}-*"):
        try:
            fd = os.open(left, os.O_RDONLY)
        except OSError:
            continue
        try:
            dead = try_lock(fd)  # no one holds its lock: its writer was killed
        except OSError:  # no locks here (Windows, some network disks): none is known to be dead
            dead = False
        finally:
            os.close(fd)
        if dead:
            left.unlink(missing_ok=True)
    for left in folder.glob(f".*.{CACHE_NEW_TAG}-*"):
        with contextlib.suppress(OSError):
            if time.time() - left.stat().st_mtime > 60:
                left.unlink()


def _disk_usage(folder: Path):
    """shutil.disk_usage of folder, or of its nearest existing parent; None when unreadable."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder)
    except OSError:
        return None


DECODE_CHUNK = 256  # images a worker decodes at a time in preload(); progress is reported per chunk
DISK_RESERVE = 16 * 2**20  # free space a cache file under the memory budget leaves on its disk
CACHE_FORMAT = 5  # in every disk cache file's name: raised when decode_image's pixels or the file
CACHE_TAG = 0x31435243  # change (4: float images' pixels, 5: checksums). b"CRC1": its last 4 bytes


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of range(num_samples) that depends on (seed, epoch) alone: NumPy's SeedSequence
    mixes both into PCG64's state (torch.manual_seed keeps 32 bits: nearby seeds could collide)."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def balanced_order(labels: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """len(labels) indices drawn with replacement, each class present equally likely and each
    sample equally likely within its class (balance="sampler"); from (labels, seed, epoch) alone,
    as epoch_order is. labels: (N,) int class indices."""
    rng = np.random.default_rng([seed, epoch])
    by_class = np.argsort(labels, kind="stable")  # (N,) sample indices grouped by class
    present, starts, counts = np.unique(labels[by_class], return_index=True, return_counts=True)
    drawn = rng.integers(len(present), size=len(labels))  # (N,) which class, uniform
    return by_class[starts[drawn] + rng.integers(counts[drawn])]  # (N,) a sample of that class


class EpochBatchSampler(DistributedSampler):
    """Yields one Batch per batch: int64 NumPy indices (a tensor without a copy, cheap to pickle),
    and the seed and epoch that key their random transforms. Each iter() plays the next epoch,
    unless set_epoch() chose one. Rank r takes every world_size-th index of each global batch, so
    the ranks together see what one process would; both default to the group's when iterated (a
    loader made before it, or sent to spawned processes, shards right). A DistributedSampler, so
    that Lightning does not split the data twice; its __init__ (needing a group) is not called."""

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool, drop_last: bool,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 balance_labels: np.ndarray | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if drop_last and num_samples < batch_size:
            raise ValueError(f"only {num_samples} samples: not one full batch of {batch_size} "
                             "(drop_last=True); use a smaller batch size")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        self.dataset_size, self.batch_size = num_samples, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self._rank, self._world_size, self.epoch = rank, world_size, 0
        # (N,) class indices: each epoch a class-balanced draw with replacement (balanced_order)
        self.balance_labels = None if balance_labels is None else np.asarray(balance_labels)
        if self.balance_labels is not None and len(self.balance_labels) != num_samples:
            raise ValueError(f"balance_labels has {len(self.balance_labels)} labels for "
                             f"{num_samples} samples")
        self._check_divisible()  # now, where the process group is known already

    @property
    def rank(self) -> int:
        grouped = self._rank is None and dist.is_available() and dist.is_initialized()
        return dist.get_rank() if grouped else self._rank or 0

    @property
    def world_size(self) -> int:
        grouped = self._world_size is None and dist.is_available() and dist.is_initialized()
        return dist.get_world_size() if grouped else self._world_size or 1

    num_replicas = world_size  # DistributedSampler's name

    def _check_divisible(self) -> None:
        if self.drop_last and self.batch_size % self.world_size:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by the "
                             f"{self.world_size} processes, so every process gets an equal share "
                             "of each batch")

    def __len__(self) -> int:
        full, rest = divmod(self.dataset_size, self.batch_size)
        return full + int(not self.drop_last and rest > self.rank)

    def __iter__(self):
        self._check_divisible()
        rank, world_size = self.rank, self.world_size
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = (balanced_order(self.balance_labels, self.seed, epoch)
                 if self.balance_labels is not None else
                 epoch_order(self.dataset_size, self.seed, epoch) if self.shuffle
                 else np.arange(self.dataset_size))  # rank r: every world_size-th of each batch
        for start in range(0, self.dataset_size, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                break
            mine = batch[rank::world_size]
            if len(mine):
                yield Batch(mine, self.seed, epoch)


class Batch(NamedTuple):
    """A batch request from the loaders' sampler: the samples, and the (seed, epoch) that key each
    sample's random transform, whichever worker runs it and whatever ran before (a resume)."""
    indices: np.ndarray  # (B,) int64
    seed: int
    epoch: int


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample `index`'s random transform in `epoch`: a function of the three alone."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


# ---- files written whole or not at all, and folder locks -----------------------------------------

# In the names of this project's temporary files, and only there: a clean-up removes no other.
TEMP_TAG = "csvimg-tmp"  # results, split.csv, make_subset.py's folders (its copy is pinned equal)
CACHE_NEW_TAG, CACHE_TEMP_TAG = "csvimg-cache-new", "csvimg-cache-tmp"  # the disk cache's


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: into a temporary file beside it, fsynced, then
    renamed over it, so that a reader (or a run killed meanwhile) finds the old file or the new."""
    with atomic_file(Path(path)) as (fd, _), open(fd, "wb", closefd=False) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_file(path: Path, *, locked: bool = False):
    """(fd, name) of a new temporary file beside `path`, in a new file's usual mode; when the block
    ends without an error, it is fsynced and renamed over `path`, else removed. locked: flock'd
    while it is written, and named so that _remove_leftovers takes it for a killed run's only once
    the lock is gone (the disk cache: other runs fill the same folder at the same time)."""
    tag = CACHE_NEW_TAG if locked else TEMP_TAG
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{tag}-")
    try:
        umask = os.umask(0)  # mkstemp's 0600 would hide the file from others sharing the folder:
        os.umask(umask)  # the mode open() gives a new file instead, 0666 less the umask
        os.chmod(tmp, 0o666 & ~umask)
        if locked:
            with contextlib.suppress(OSError):  # no locks here: the name alone then
                try_lock(fd)
            locked_name = tmp.replace(f".{CACHE_NEW_TAG}-", f".{CACHE_TEMP_TAG}-")
            os.replace(tmp, locked_name)  # once locked: _remove_leftovers looks at these only
            tmp = locked_name
        yield fd, tmp
        os.fsync(fd)  # the bytes are on disk before the name says the file is whole
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # left only when the block failed
        os.close(fd)  # and with it, the lock


def try_lock(fd: int) -> bool:
    """An exclusive flock on the open file fd, not waiting: True, or False when another process
    holds it (released when fd closes, even if killed); OSError where there is none (Windows)."""
    if fcntl is None:
        raise OSError(errno.ENOSYS, "files cannot be locked here (no fcntl.flock)")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class LockFileError(ValueError):
    """A lock file that is not ours to use: a link, not a regular file, or another user's."""


def open_lock(path: Path, fix: str) -> int:
    """Open (or create, mode 0644 less the umask) the lock file `path`, never following a symbolic
    link and never using a file with other names (hard links): a planted link would make the pid
    written into the lock overwrite its target. fix: what the user can do instead, for the error.
    make_subset.py has its own copy (it is copied alone); a test pins the two alike."""
    # O_NONBLOCK: nothing named like the lock may make open() wait (a device waiting for its line,
    # a FIFO where POSIX leaves O_RDWR undefined); a regular file's reads, writes, flock ignore it
    flags = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_NONBLOCK", 0))
    try:
        fd = os.open(path, flags, 0o644)
    except PermissionError:
        if not os.path.lexists(path):
            raise LockFileError(f"{path} cannot be created ({path.parent} is not writable for "
                                f"this user); {fix}") from None
        owner = path.stat().st_uid if path.exists() else "?"
        raise LockFileError(f"{path} cannot be opened for writing (it belongs to user id {owner}; "
                            f"another user's run uses this folder); {fix}") from None
    except OSError:
        if os.path.islink(path):
            raise LockFileError(f"{path} is a symbolic link, which is not followed (it may point "
                                f"at a file of someone else's); remove it, or {fix}") from None
        if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
            raise LockFileError(f"{path} is not a regular file, so it is not used as a lock; "
                                f"remove it, or {fix}") from None  # a socket or a folder
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else \
            f"a file with {st.st_nlink} names (hard links)"
        raise LockFileError(f"{path} is {what}, so it is not used as a lock; remove it, or {fix}")
    return fd


def lock_or_holder(fd: int) -> str | None:
    """Take the open lock file fd (try_lock) and write this process's id into it; None then. When
    another process holds it: that process's id, and nothing is taken. For a results folder."""
    if not try_lock(fd):
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return None
