"""One CSV row becomes one sample: a PyTorch Dataset of the images a CSV names, with their labels.

    ds = CsvImageDataset("data/mnist_train.csv", "data/mnist_train")
    image, label = ds[0]            # float32 tensor (C, H, W) in [0, 1], int: what MLP() takes
    images, labels = ds[[0, 1, 2]]  # a batch: (B, C, H, W), (B,) int64

ds[i] decodes image i as a viewer shows it. Every row is checked when the dataset is built, and a
bad row is named with its CSV line; `python dataset.py CSV IMG_DIR` checks one without training.
A folder of class folders (DIR/cat/1.png) becomes the same table: list_image_folder, and
`python dataset.py DIR` checks it. weight_column="w" (Keras's weight_col): items are
(image, label, weight), batches (images, labels, weights), each weight a number >= 0.
task="regression": one or more number columns are the targets, (T,) float32 an item.
Works alone (copy this file); each image decoded once, and fast batches: loaders.DecodedImages.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import re
import shlex
import stat
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset


class CsvImageDataset(Dataset):
    """Images named in a CSV, with their class labels; ds[i] decodes image i.

        labels.csv     File Name,Class Label      (column names are arguments)
                       00000.png,7
                       cats/00001.png,cat         (subfolders; class names or indices)
        images/        00000.png  cats/00001.png

    Args:
        csv_path: the CSV (a header line, then a row per image), or a pandas DataFrame of the
            same rows (messages then name its rows by their index label: "row index 'b'").
        img_dir: the folder the file names are relative to; None (the default): the CSV's folder
            (the working directory for a DataFrame), and absolute names are read as written.
        transform: optional callable on one uint8 image (C, H, W), such as a torchvision v2
            transform; it may make images of different sizes equal.
        file_column, label_column: column names, or 0-based positions (ints; a string of digits
            that no column is named is a position too); label_column=None: unlabelled rows
            (label -1). Integer labels are class indices; a text column with any value that is not
            a whole number holds class names, all of them ("2019" among "cat", "dog" too).
        header: False: the first line is a row too; columns by position only.
        file_prefix, file_suffix: the file read is img_dir / (file_prefix + name + file_suffix),
            e.g. file_suffix=".jpg" for ids without an extension; `rows[i].file` stays the name.
        absolute_paths: read absolute names as written (default: when img_dir is None).
        mode: "L" (gray, 1 channel), "RGB" (3), "RGBA" (4: transparency kept as the 4th
            channel, not laid over `background`), or "auto": L when every file's header is gray,
            else RGB (never RGBA).
        pixels: "float01" (float32 in [0, 1], as v2.ToDtype(torch.float32, scale=True) gives),
            "float255" (float32, 0-255) or "uint8" (to scale later, e.g. on the GPU).
        classes: class names in index order, for a text label column, so that train, valid and
            test share one mapping; by default the sorted names found.
        num_classes: labels must be below this, when given.
        split: (column, value): keep only the rows whose column holds value (one CSV, all splits).
        label_delim: several labels per image (fastai's label_delim): each label cell is split
            on it (" ", "|", ";"; spaces round each tag stripped), the classes are the sorted
            union of tags, and the target is a multi-hot float32 vector (num_classes,): items
            (image, target (C,)), batches (images, targets (B, C)). An empty cell: no tags.
        task: "classification" (the default: a class per image, or tags with label_delim) or
            "regression": label_column names one or more columns of numbers (a list, or
            "angle,scale"), the target is (T,) float32 (batches (B, T)), `classes` the target
            names; an empty, NaN, infinite or text cell is a bad row naming its column.
        weight_column: a column of numbers >= 0, each weighting its row's loss (Keras's
            weight_col): items become (image, label, weight), batches (images, labels, weights
            (B,) float32). A weight that is empty, not a number, NaN, infinite or negative is a
            bad row.
        skip_bad_rows: drop bad rows with a warning that counts them, instead of raising.
        image_size: resize every image to (H, W), or N x N for an int, as it is decoded
            (antialiased); without it, images must share one size.
        encoding: the CSV's text encoding ("utf-8" also reads a byte order mark, and one of
            UTF-16 or UTF-32 as that; spreadsheet exports are often "latin-1" or "cp1252").
        background: the colour transparent images are laid over (white, as a page shows them).
        resize: how image_size is reached when an image's shape differs: "squish" (stretched to
            it), "crop" (the short side scaled to fit, the long side centre-cropped) or "pad"
            (scaled to fit inside, centred, the rest black: PAD_COLOUR; transparent under RGBA).

    Attributes as ImageFolder's: `samples` and `imgs` (item i is (path, class_index)), `classes`,
    `class_to_idx`, `targets` (list of int); also `rows` (rows[i] is Sample(path, label, line,
    file)), `image_size` (H, W), `channels`, `mode_decision` (why this mode), `problems` (the bad
    rows: (line, file, what)), `source` (the CSV's path or "DataFrame", for messages), `names_rule`
    (where the names are looked up). Every listed file's header is read when the dataset is built:
    a file that is not an image is a bad row; a truncated one is found when it is decoded.
    """

    def __init__(self, csv_path: str | Path | pd.DataFrame, img_dir: str | Path | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                 file_column: Column = "File Name", label_column: Column | None = "Class Label",
                 mode: str = "L", pixels: str = "float01", classes: Sequence[str] | None = None,
                 num_classes: int | None = None, split: tuple[str, str] | None = None,
                 skip_bad_rows: bool = False, image_size: int | tuple[int, int] | None = None,
                 encoding: str = "utf-8", background: tuple[int, int, int] = (255, 255, 255),
                 header: bool = True, file_prefix: str = "", file_suffix: str = "",
                 absolute_paths: bool | None = None, resize: str = "squish",
                 weight_column: Column | None = None, label_delim: str | None = None,
                 task: str = "classification", **removed) -> None:
        for name, value in removed.items():  # the cache's get a sentence, the rest Python's
            if name not in ("cache_mb", "cache_dir"):
                raise TypeError(f"CsvImageDataset() got an unexpected keyword argument {name!r}")
            raise TypeError(f"{CACHE_MOVED}; {name}= goes there (or to get_dataloaders)"
                            + ("; for no cache (cache_mb=0), leave it out: the dataset alone "
                               "decodes each item as it is asked for" if value == 0 else ""))
        if mode not in MODES:
            raise ValueError(f"mode must be 'L', 'RGB', 'RGBA' or 'auto', got {mode!r}")
        if pixels not in PIXELS:
            raise ValueError(f"pixels must be one of {PIXELS}, got {pixels!r}")
        if resize not in RESIZE_METHODS:
            raise ValueError(f"resize must be one of {RESIZE_METHODS}, got {resize!r}")
        if resize != "squish" and image_size is None:
            raise ValueError(f"resize={resize!r} goes with image_size= (the size to {resize} to)")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if task == "regression" and label_delim is not None:
            raise ValueError("label_delim= is for tags; task='regression' reads numbers")
        table = csv_path if isinstance(csv_path, pd.DataFrame) else Path(csv_path)
        self.csv_path = None if isinstance(table, pd.DataFrame) else table  # None: a DataFrame
        self.source, self.row_names = table_name(table), RowNames.of(table)
        self.img_dir = None if img_dir is None else Path(img_dir)
        self.split, self.transform, self.mode, self.pixels = split, transform, mode, pixels
        self.background, self.resize = background, resize
        self.resize_to = (image_size, image_size) if isinstance(image_size, int) else image_size
        names = FileNames(file_prefix, file_suffix,
                          img_dir is None if absolute_paths is None else absolute_paths)
        self.rows, self.classes, self.problems = make_dataset(
            table, self.img_dir, file_column=file_column, label_column=label_column,
            split=split, classes=classes, num_classes=num_classes, encoding=encoding,
            header=header, names=names, weight_column=weight_column, label_delim=label_delim,
            task=task)
        self.label_delim, self.task = label_delim, task
        folder = self.img_dir if self.img_dir is not None else (  # as the user wrote it
            Path(".") if isinstance(table, pd.DataFrame) else table.parent)
        self.names_rule = names_rule(self.rows, names, str(folder))
        self._check_command = check_command(table, self.img_dir, file_column, label_column,
                                            encoding, header=header, names=names,
                                            weight_column=weight_column,
                                            label_delim=label_delim, task=task)
        if self.problems:
            rows = len(self.rows) + len({line for line, _, _ in self.problems})
            message = problems_message(self.source, self.problems, rows, self._check_command,
                                       row_names=self.row_names)
            if not skip_bad_rows:
                raise DatasetError(message)
            warnings.warn(f"skipping bad rows: {message}", stacklevel=2)
        if not self.rows:
            raise DatasetError(f"{self.source}: every row is bad; nothing left to load")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.mode_decision = f"mode={mode}"
        if mode == "auto":  # from the files' headers: no decoding
            self.mode, self.mode_decision = auto_mode(self.rows)
        self.channels = CHANNELS[self.mode]
        self.image_size = self.resize_to or self._first_size()  # (H, W) every image must have
        # (N,) int64 class indices; with label_delim (N, C) float32 multi-hot; with
        # task="regression" (N, T) float32 targets: a batch's targets
        self._labels = torch.from_numpy(
            self.rows.values.astype(np.float32) if self.rows.values is not None else
            self.rows.labels if self.rows.multi_hot is None else
            self.rows.multi_hot.astype(np.float32))
        if self.rows.values is not None and (message := float32_precision_warning(
                self.rows.values, self.classes, self.source)):
            warnings.warn(message, stacklevel=2)
        self._weights = None if self.rows.weights is None else torch.from_numpy(self.rows.weights)
        self._transformed_shape: torch.Size | None = None  # of image 0, to name an odd one

    def __getitem__(self, index):
        """ds[i] -> (image (C, H, W), label int) (and weight float, with weight_column);
        ds[list or array of i] -> a batch (get_batch)."""
        if np.ndim(index) != 0:
            return self.get_batch(index)
        image = self.load_image(index)  # (C, H, W) uint8, decoded now
        return self.make_sample(index, image)

    def __len__(self) -> int:
        return len(self.rows)

    def load_image(self, i: int) -> torch.Tensor:
        """Sample i decoded now, (C, H, W) uint8, a copy the caller may write to. Without a
        transform to make sizes equal, a size other than image_size is an ImageSizeError."""
        return torch.from_numpy(self._read(i, same_size=self.transform is None).copy())

    def make_sample(self, i: int, image: torch.Tensor) -> tuple[torch.Tensor, int]:
        """What ds[i] returns, from sample i's pixels (C, H, W) uint8: the transform, then the
        dtype `pixels` asks for. A store of decoded pixels passes its own."""
        if self.transform is not None:
            image = self.apply_transform(i, image)
        # a multi-hot or target row is copied: a view would carry the whole table through pickling
        label = self.rows[i].label if self._labels.ndim == 1 else self._labels[i].clone()
        if self._weights is not None:
            return to_pixels(image, self.pixels), label, float(self._weights[i])
        return to_pixels(image, self.pixels), label

    @property
    def targets(self) -> list[int]:
        """The label of every sample, as torchvision's datasets have them."""
        return self.rows.labels.tolist()

    @property
    def samples(self) -> PathsAndLabels:
        """samples[i] is (path, class_index), as in ImageFolder: `path, label = ds.samples[i]`."""
        return PathsAndLabels(self.rows)

    imgs = samples  # ImageFolder's other name for the same list

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) and labels (B,) int64 at `indices` (ints in a list, array or
        tensor), as collate stacks B items; the transform draws from the global RNG as ds[i]."""
        rows, labels = self.batch_rows(indices)
        if self.transform is None:
            return self.batch_of(to_pixels(self.load_images(rows.tolist()), self.pixels), rows,
                                 labels)
        images = [self.apply_transform(i, self.load_image(i)) for i in rows.tolist()]
        return self.batch_of(to_pixels(torch.stack(images), self.pixels), rows, labels)

    def batch_of(self, images: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor) -> tuple:
        """(images, labels), or (images, labels, weights (B,) float32) with a weight column."""
        if self._weights is None:
            return images, labels
        return images, labels, self._weights.index_select(0, rows)

    def batch_rows(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, their labels), both (B,) int64; an IndexError naming the range for anything
        but a flat list of ints in [0, N)."""
        rows = torch.as_tensor(indices, dtype=torch.int64)  # (B,); no copy for an int64 NumPy array
        try:
            if rows.ndim != 1:
                raise IndexError(f"{rows.ndim} dimensions")
            return rows, self._labels.index_select(0, rows)  # also checks each index is in range
        except (IndexError, RuntimeError, TypeError) as e:
            raise IndexError("a batch index must be a flat list of ints in "
                             f"[0, {len(self)}), got {indices!r}") from e

    def load_images(self, indices: Sequence[int]) -> torch.Tensor:
        """(B, C, H, W) uint8 pixels of same-sized images, decoded now straight into one array."""
        batch = np.empty((len(indices), self.channels, *self.image_size), dtype=np.uint8)
        for j, i in enumerate(indices):  # NumPy's assignment costs a fraction of torch's
            batch[j] = self._read(i, same_size=True)
        return torch.from_numpy(batch)

    def apply_transform(self, i: int, image: torch.Tensor,
                        load_image: Callable[[int], torch.Tensor] | None = None) -> torch.Tensor:
        """The transform on sample i's image (C, H, W); an output shaped unlike image 0's, which a
        batch cannot stack, is an ImageLoadError. load_image: a store's source of image 0."""
        with one_intra_op_thread():
            out = self.transform(image)
            if self._transformed_shape is None:
                with torch.random.fork_rng(devices=[]):  # the caller's random numbers stay put
                    first = (load_image or self.load_image)(0)
                    self._transformed_shape = self.transform(first).shape
        if out.shape != self._transformed_shape:
            raise ImageLoadError(f"{self.where(i)}: after the transform the image has shape "
                                 f"{tuple(out.shape)}, but {tuple(self._transformed_shape)} for "
                                 f"{self.rows[0].file!r}; a batch needs one size: pass "
                                 "image_size=, or make the transform give one size")
        return out

    def size_problems(self) -> list[Problem]:
        """The images not of the commonest size (upright), as (line, file, what); none when
        image_size resizes them all. From the sizes in the headers read at the row check."""
        if self.resize_to is not None:
            return []
        sizes = [tuple(size) for size in self.rows.sizes.tolist()]  # (W, H) read at the row check
        (common, n), = Counter(sizes).most_common(1)
        return [(sample.line, sample.file, f"size {size[1]}x{size[0]} (HxW) differs from the "
                 f"commonest, {common[1]}x{common[0]} ({n} of {len(sizes)} images); cannot be "
                 "batched: pass image_size= (--image-size) to resize them as they are read")
                for sample, size in zip(self.rows, sizes) if size != common]

    def size_error(self) -> ImageSizeError:
        """An ImageSizeError naming every image not of the commonest size, a line each."""
        return ImageSizeError(problems_message(self.source, self.size_problems(), len(self),
                                               self._check_command, by_reason=False,
                                               row_names=self.row_names))

    def where(self, i: int) -> str:
        """Sample i's place, for messages: "<csv>, line <n>: '<file>'" (a DataFrame's: "DataFrame,
        row index <label>: '<file>'")."""
        return f"{self.place(self.rows[i].line)}: {self.rows[i].file!r}"

    def place(self, line: int) -> str:
        """A row's place, for messages: "<csv>, line <n>" or "DataFrame, row index <label>"."""
        return f"{self.source}, {self.row_names(line)}"

    def _first_size(self) -> tuple[int, int]:
        """(H, W) of the first image, upright (EXIF orientation), from its header read at the
        row check: every kept row's header was readable."""
        self._size_from = self.rows.file(0)
        width, height = self.rows.sizes[0].tolist()
        return height, width

    def _read(self, i: int, same_size: bool) -> np.ndarray:
        """Sample i decoded, (C, H, W) uint8. A file unlike when its row was checked was replaced
        meanwhile (make_subset.py --force under a running job): an error, not other images."""
        path = self.rows[i].path
        try:
            pixels = decode_image(path, self.mode, self.resize_to, self.background, self.resize)
            st = os.stat(path)
        except DECODE_ERRORS as e:
            raise ImageLoadError(f"{self.where(i)}: cannot decode the image: {e}") from e
        if file_identity(st) != tuple(self.rows.stats[i].tolist()):
            raise ImageLoadError(f"{self.where(i)}: the file changed after the rows were checked "
                                 "(replaced while this run reads it?); stopping rather than mix "
                                 "other images in. Start the run again to use the new files")
        if same_size and pixels.shape[1:] != tuple(self.image_size):
            (height, width), first = self.image_size, self._size_from
            raise ImageSizeError(f"{self.where(i)}: image is {pixels.shape[1]}x{pixels.shape[2]} "
                                 f"(HxW) but the first image ({first!r}) is {height}x{width}; "
                                 "images of different sizes cannot be batched: pass image_size= "
                                 "(--image-size) to resize them as they are read")
        return pixels

    def __getattr__(self, name: str):
        """Only for a name the dataset does not have: the cache's name where it went."""
        raise AttributeError(f"{CACHE_MOVED}, then store.{name}"
                             + ("(num_workers=...)" if name == "preload" else "")
                             if name in CACHE_ATTRIBUTES else
                             f"{type(self).__name__!r} object has no attribute {name!r}")


class Sample(NamedTuple):
    path: str  # img_dir joined with file_prefix + the file name + file_suffix
    label: int  # class index
    line: int  # 1-based line of the row in the CSV (a DataFrame's: its position), for messages
    file: str  # the file name (id) as the CSV gives it


class FileNames(NamedTuple):
    """How a table's names become paths: img_dir / (prefix + name + suffix); absolute: names
    starting at the root are read as written (else refused: they would leave img_dir)."""
    prefix: str = ""
    suffix: str = ""
    absolute: bool = False


Column = str | int  # a column's name, or its 0-based position


class DatasetError(ValueError):
    """A CSV or image folder that cannot be used as it is; the message names the rows."""


class ImageLoadError(DatasetError):
    """An image that cannot be decoded or batched; the message names the file and its CSV line."""


class ImageSizeError(ImageLoadError):
    """An image whose size differs from the others', so that it cannot be batched."""


Problem = tuple[int, str, str]  # a bad row: (CSV line or DataFrame position, file name, what)
MODES, PIXELS = ("L", "RGB", "RGBA", "auto"), ("float01", "float255", "uint8")
CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}  # of each mode a dataset decodes to
RESIZE_METHODS = ("squish", "crop", "pad")  # how image_size is reached (CsvImageDataset's resize)
PAD_COLOUR = 0  # resize="pad": black (L 0, RGB (0, 0, 0)); under RGBA transparent black
WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits: _to_8_bits
GRAY_MODES = ("1", "L", "LA", "La", *WIDE_GRAY_MODES)
EXPECTED_INDEX = "(expected a class index >= 0)"
MAX_LABEL = 2**31  # a class index must fit an int32, as a label tensor on any device
MAX_LISTED_PROBLEMS = 20
MAX_NAME_HINTS = 20  # not-found rows looked around for a file of the same stem: the first ones
SEPARATORS = (",", ";", "\t")  # a spreadsheet's export in much of Europe uses ';'
FLAGS = {"true": True, "yes": True, "1": True, "1.0": True,  # "1.0": pandas' reading of a
         "false": False, "no": False, "0": False, "0.0": False}  # 1 / 0 column with a blank line
SPLIT_SPELLINGS = {"train": ("train", "training"), "valid": ("valid", "val", "validation", "dev"),
                   "test": ("test", "testing")}
# What Pillow raises for a file it cannot decode: truncated, corrupt, unknown format, too large.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# The decoded-image cache's names, which the dataset no longer has: an old call says where they are.
CACHE_ATTRIBUTES = ("preload", "cache_decision", "in_memory", "decodes_every_pass", "cache_file",
                    "cache_dir")
CACHE_MOVED = ("CsvImageDataset no longer caches: wrap it, store = DecodedImages(ds, cache_mb=..., "
               "cache_dir=...) in loaders.py")


# ---- pixels: one image as a viewer shows it, and the dtype asked for ---------------------------

def decode_image(path: str, mode: str, size: tuple[int, int] | None = None,
                 background: tuple[int, int, int] = (255, 255, 255),
                 resize: str = "squish") -> np.ndarray:
    """One image file as a viewer shows it, (C, H, W) uint8, a read-only view of Pillow's bytes:
    upright by its EXIF orientation, 16 bits scaled (not clipped) to 8, float or 32-bit integer
    gray by its range (_to_8_bits), transparency laid over `background` (dropping alpha would
    turn a black drawing on a transparent sheet all black) unless `mode` is RGBA, converted to
    `mode`, resized to `size` (H, W) if given, by `resize` (squish, crop or pad: _resize). A
    change to these pixels must raise CACHE_FORMAT in loaders.py, so that no disk cache serves
    the old ones."""
    with Image.open(path) as im:  # closes the file even when decoding fails
        orientation, sixteen = exif_orientation(im), is_16_bit(im)  # im.format: before turning
        if size is not None and im.format == "JPEG":
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale, not below the target (W, H) as stored (a
            # turned photo's sides swap): fewer pixels to decode and to resize
            target = (size[1], size[0]) if resize == "squish" else \
                scaled_size(upright_size(im), size, resize)  # the whole image, scaled: (W, H)
            im.draft(im.mode, upright_size(im, target))
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
        if im.mode in WIDE_GRAY_MODES:
            im = _to_8_bits(im, sixteen)
        if im.mode == "LAB":  # Pillow's convert("RGB") gives other colours (50, 0, 0: blue)
            raise ValueError("CIELab colours (Pillow mode LAB) are not read: save it as RGB")
        if has_transparency(im) and mode != "RGBA":  # RGBA keeps it: convert() carries alpha
            im = Image.alpha_composite(Image.new("RGBA", im.size, (*background, 255)),
                                       im.convert("RGBA"))  # (a palette's or a gray's tRNS too)
        if im.mode != mode:
            im = im.convert(mode)
        if size is not None and resize != "squish":
            im = _resize(im, size, resize)
        elif size is not None and im.size != (size[1], size[0]):
            # reducing_gap=3: a shrink of 6x or more first averages blocks of pixels, leaving 3x
            # or more to resample: faster, within a grey level of the exact resize
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
        pixels = np.frombuffer(im.tobytes(), dtype=np.uint8)
        return pixels.reshape(im.height, im.width, len(im.getbands())).transpose(2, 0, 1)


def scaled_size(image: tuple[int, int], size: tuple[int, int], resize: str) -> tuple[int, int]:
    """(W, H) of a whole `image` (W, H) scaled, keeping its shape, to reach `size` (H, W): for
    "crop" the smallest that covers size, for "pad" the largest that fits inside it (at least a
    pixel a side); for "squish", size itself."""
    (width, height), (out_h, out_w) = image, size
    if resize == "squish":
        return out_w, out_h
    scale = (max if resize == "crop" else min)(out_w / width, out_h / height)
    scaled_w, scaled_h = round(width * scale), round(height * scale)
    if resize == "crop":
        return max(out_w, scaled_w), max(out_h, scaled_h)
    return max(1, min(out_w, scaled_w)), max(1, min(out_h, scaled_h))


def _resize(im: Image.Image, size: tuple[int, int], resize: str) -> Image.Image:
    """im at `size` (H, W), its shape kept. crop: one resample of the centred box of the target's
    shape (fractional: no half-pixel shift), the short side fitting; pad: scaled to fit inside
    (scaled_size), pasted centred on PAD_COLOUR (an odd leftover pixel to the right / bottom)."""
    out_w, out_h = size[1], size[0]
    if resize == "crop":
        if im.size == (out_w, out_h):
            return im
        # The source's part kept, of the target's shape: the whole width when the target is the
        # wider of the two (compared in integers), else the whole height
        if out_w * im.height >= out_h * im.width:
            box_w, box_h = float(im.width), im.width * out_h / out_w
        else:
            box_w, box_h = im.height * out_w / out_h, float(im.height)
        left, top = (im.width - box_w) / 2, (im.height - box_h) / 2  # never below 0
        return im.resize((out_w, out_h), Image.Resampling.BILINEAR,
                         box=(left, top, left + box_w, top + box_h), reducing_gap=3.0)
    fit = scaled_size(im.size, size, "pad")  # (W, H)
    if fit != im.size:
        im = im.resize(fit, Image.Resampling.BILINEAR, reducing_gap=3.0)
    if fit == (out_w, out_h):
        return im
    canvas = Image.new(im.mode, (out_w, out_h), (PAD_COLOUR,) * len(im.getbands()))
    canvas.paste(im, ((out_w - fit[0]) // 2, (out_h - fit[1]) // 2))  # alpha copied, not blended
    return canvas


def _to_8_bits(im: Image.Image, sixteen: bool) -> Image.Image:
    """A gray image of over 8 bits as "L", or "LA" when a gray is transparent (a 16-bit PNG's
    tRNS). 16 bits: v * 255 / 65535 rounded (convert("L") clips at 255). Float topping below 2:
    0..1 (as scikit-image and tifffile write it) times 255; else, and 32-bit integer: 0..255 as
    Pillow reads it. Rounded levels outside 0..255 (a resize's overshoot to 1.2, say), NaN and
    infinity are a ValueError, not clipped or stretched: a stretch of each image's own min..max
    would change each one's brightness alone. A 0..255 float image all below 1 reads as 0..1."""
    wide = np.asarray(im)  # (H, W) uint16, int32 or float32
    if sixteen:
        levels = (np.clip(wide.astype(np.int64), 0, 65535) * 255 + 32767) // 65535
    elif im.mode == "F" and not np.isfinite(wide).all():
        raise ValueError(f"float pixels include NaN or infinity ({np.sum(~np.isfinite(wide))} of "
                         f"{wide.size}); expected finite values: replace them before saving")
    else:
        low, high, kind = wide.min(), wide.max(), "float" if im.mode == "F" else "integer"
        levels = np.rint(wide.astype(np.float64) * (255 if kind == "float" and high < 2 else 1))
        if levels.min() < 0 or levels.max() > 255:  # within half a level: -1e-7 is 0
            raise ValueError(f"{kind} pixels from {low:g} to {high:g}; expected 0..255" + (
                " or, topping below 2, 0..1" if kind == "float" else "") + ": clip or scale "
                "them into that range, or save the image as 8 or 16 bits (PNG, TIFF)")
    levels = levels.astype(np.uint8)
    if isinstance(im.info.get("transparency"), int):  # the transparent gray, as stored
        return Image.fromarray(np.dstack([levels, (wide != im.info["transparency"]) * 255]
                                         ).astype(np.uint8))  # (H, W, 2): "LA"
    return Image.fromarray(levels)


def is_16_bit(im: Image.Image) -> bool:
    """A 16-bit gray image: Pillow opens 16-bit PNG and TIFF as "I;16" (or "I;16B"), 16-bit PGM
    (and PNG in older Pillow) as "I"; other "I" images, such as a TIFF's, are 32-bit."""
    return im.mode.startswith("I;16") or (im.mode == "I" and im.format in ("PNG", "PPM"))


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag, 1 (upright) when there is none; cheap for files without EXIF."""
    return im.getexif().get(0x0112, 1) if "exif" in im.info else 1


def upright_size(im: Image.Image, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """im's (W, H) as a viewer shows it, or `size` (W, H) turned alike (its own inverse): the
    sides swap for a quarter-turn EXIF orientation (5 to 8), as a phone photo's."""
    width, height = im.size if size is None else size
    return (height, width) if exif_orientation(im) in (5, 6, 7, 8) else (width, height)


def has_transparency(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def is_gray(im: Image.Image) -> bool:
    """One channel, or a palette of grays only (what a viewer shows as gray)."""
    if im.mode in ("P", "PA"):
        palette = im.getpalette() or []
        return all(palette[i] == palette[i + 1] == palette[i + 2]
                   for i in range(0, len(palette) - 2, 3))
    return im.mode in GRAY_MODES


def auto_mode(rows: Samples) -> tuple[str, str]:
    """("L" or "RGB", why) for mode="auto", from the files' headers read at the row check (no file
    is opened again): RGB at the first colour one."""
    colour = np.flatnonzero(rows.colours != "")
    if len(colour):
        j = int(colour[0])
        return "RGB", f"mode=auto: RGB, {rows.file(j)!r} is in colour ({rows.colours[j]})"
    return "L", "mode=auto: L, every image is gray"


@contextlib.contextmanager
def one_intra_op_thread():
    """torch's intra-op threads down to one for the block: a transform's ops on one small image,
    split across threads, wait for each other, far longer when another process holds a core.
    DataLoader workers run on one thread already, so each image is transformed alike anywhere."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def to_float01(images: torch.Tensor) -> torch.Tensor:
    """uint8 images, (C, H, W) or (B, C, H, W), -> float32 in [0, 1], bit for bit as
    v2.ToDtype(torch.float32, scale=True) (a test pins it). On the CPU in NumPy, on one thread:
    torch's intra-op threads wait for each other whenever another process holds a core."""
    if images.device.type == "cpu":
        out = images.numpy().astype(np.float32)
        out *= np.float32(1.0 / 255)
        return torch.from_numpy(out)
    return images.to(torch.float32).mul_(1.0 / 255)


def to_pixels(images: torch.Tensor, pixels: str) -> torch.Tensor:
    """uint8 images as `pixels` asks (see CsvImageDataset); anything else, e.g. a transform's
    float output, as it is."""
    if images.dtype != torch.uint8 or pixels == "uint8":
        return images
    return to_float01(images) if pixels == "float01" else images.to(torch.float32)


# ---- checking every row: the CSV -> samples ------------------------------------------------------

def make_dataset(csv_path: Path | pd.DataFrame, img_dir: Path | None, *, file_column: Column,
                 label_column: Column | None, split: tuple[Column, str] | None = None,
                 classes: Sequence[str] | None = None, num_classes: int | None = None,
                 encoding: str = "utf-8", header: bool = True, names: FileNames = FileNames(),
                 weight_column: Column | None = None, label_delim: str | None = None,
                 task: str = "classification") -> tuple[Samples, list[str], list[Problem]]:
    """Check every row of the table (a CSV or a DataFrame) and read every listed file's header:
    (the good rows, the class names, the bad rows as (line, file, what is wrong) by line). A
    DatasetError only when the table or folder cannot be read at all. img_dir None: the CSV's
    folder (a DataFrame's: the working directory)."""
    source = table_name(csv_path)
    if img_dir is None:
        img_dir = Path(".") if isinstance(csv_path, pd.DataFrame) else Path(csv_path).parent
    elif not img_dir.is_dir():
        raise DatasetError(f"image folder not found: {img_dir} "
                           f"(it should hold the files named in {source})")
    weight_column = None if label_column is None else weight_column  # rows to predict: unread
    targets = target_columns(label_column) if task == "regression" and label_column is not None \
        else [label_column]  # regression: one or more columns of numbers
    twice = sorted({str(c) for c in targets if [str(t) for t in targets].count(str(c)) > 1})
    if task == "regression" and twice:  # predictions.csv would have two columns of one name
        raise DatasetError(f"{source}: target column(s) {twice} named twice in the label column "
                           f"{targets}; name each target once")
    columns = [file_column] + [c for c in (*targets, split and split[0], weight_column)
                               if c is not None]
    df = read_csv(csv_path, columns, encoding, header=header)
    if header and not isinstance(csv_path, pd.DataFrame):
        _warn_of_a_row_as_header(Path(csv_path), encoding)
    # Names or indices, decided on the whole column: a split of a column of names holds names
    # ... and where the run's classes are names (not 0 to K-1), every table's labels are names:
    # "2019" or "10" are then that class, not an index into the names (a valid table of whole
    # numbers beside a train table with one text label; class folders named 101, 205, 310)
    named = classes is not None and [str(c) for c in classes] != [str(i) for i in
                                                                    range(len(classes))]
    if label_column is not None and label_delim is None and task == "classification" and not named:
        _refuse_measurements(df[label_column], source, label_column, RowNames.of(csv_path))
    as_names = label_column is not None and label_delim is None and task == "classification" and (
        named or _holds_names(df[label_column], source, label_column))
    if split is not None:
        column, value = split
        found = sorted(df[column].dropna().astype(str).str.strip().unique())
        df = df[split_names(df[column]).isin(split_spellings(value))]
        if len(df) == 0:
            raise DatasetError(f"{source}: no rows with {column} == {value!r}; "
                               f"values found: {found}")
    lines = df.index.to_numpy(dtype=np.int64)
    files = df[file_column].fillna("").astype(str).tolist()
    multi_hot = values = None
    if label_column is None:  # images to predict: no labels, the classes given
        labels, class_names = np.full(len(df), -1, dtype=np.int64), [str(c) for c in classes or []]
        what = np.full(len(df), None, dtype=object)
    elif label_delim is not None:  # several tags per row: a multi-hot row each
        multi_hot, class_names, what = _parse_tags(df[label_column], label_delim, classes)
        labels = np.zeros(len(df), dtype=np.int64)  # one file, one tag set: no class index
    elif task == "regression":  # numbers: (N, T) float64, as the table writes them
        values, class_names, what = _parse_targets(df, targets)
        labels = np.zeros(len(df), dtype=np.int64)
    else:
        labels, class_names, what = _parse_labels(df[label_column], classes, num_classes,
                                                  as_names=as_names)
    weights = None
    if weight_column is not None:
        weights, weight_what = _parse_weights(df[weight_column])
        what = np.where(what != None, what, weight_what)  # noqa: E711  the label named first
    root = img_dir.resolve()
    paths = [names.prefix + f + names.suffix for f in files]  # relative to root, or absolute
    file_what, stats = _check_files(paths, root, absolute=names.absolute)
    file_what[[not f.strip() for f in files]] = "empty file name"  # whatever prefix and suffix
    what = np.where(file_what != None, file_what, what)  # noqa: E711  a bad file is named first
    keys = pd.Series([os.path.normpath(f) for f in paths])  # "./a.png" is "a.png"
    repeated = _check_repeats(keys, labels, lines, what == None, what,  # noqa: E711
                              RowNames.of(csv_path))
    if repeated.any():
        warnings.warn(f"{source}: {int(repeated.sum())} row(s) list a file already listed above "
                      "with the same label; each file is used once", stacklevel=3)
    # Every file still good: its header (not its pixels), once: mode="auto" and the size use it
    good = (what == None) & ~repeated  # noqa: E711
    header_what, sizes, colours = _check_headers(paths, root, good)
    what = np.where(header_what != None, header_what, what)  # noqa: E711
    bad = what != None  # noqa: E711  (element-wise: the rows with a problem named)
    keep = ~bad & ~repeated
    problems = [(int(lines[j]), files[j], what[j]) for j in np.flatnonzero(bad)]
    samples = Samples(str(root), [f for f, k in zip(files, keep) if k], labels[keep], lines[keep],
                      stats[keep], sizes=sizes[keep], colours=colours[keep],
                      prefix=names.prefix, suffix=names.suffix,
                      weights=None if weights is None else weights[keep],
                      multi_hot=None if multi_hot is None else multi_hot[keep],
                      values=None if values is None else values[keep])
    return samples, class_names, problems


TASKS = ("classification", "regression")


def target_columns(label_column: Column | Sequence[Column]) -> list[Column]:
    """A regression's target columns: a list as given, "angle,scale" split on commas, or one."""
    if isinstance(label_column, (list, tuple)):
        return list(label_column)
    if isinstance(label_column, str):
        return [c.strip() for c in label_column.split(",")]
    return [label_column]


def _parse_targets(df: pd.DataFrame,
                   columns: list[Column]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(targets (N, T) float64, NaN where bad; the target names; what is wrong with each row or
    None): each cell a finite number that float32 holds; empty, text, NaN, infinite or beyond
    float32 is a bad row naming its column."""
    what = np.full(len(df), None, dtype=object)
    values = np.full((len(df), len(columns)), np.nan, dtype=np.float64)
    for t, column in enumerate(columns):
        cells = df[column]
        original = cells.to_numpy(dtype=object)
        if not pd.api.types.is_numeric_dtype(cells) or pd.api.types.is_bool_dtype(cells):
            cells = cells.where(cells.isna(), cells.astype(str).str.strip())
            cells = cells.where(cells != "", None)
        number = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64)
        empty = cells.isna().to_numpy() & pd.isna(original) | np.array(
            [str(o).strip() == "" for o in original])
        for j in np.flatnonzero(~np.isfinite(number)):
            text = str(original[j]).strip()
            what[j] = what[j] or (
                f"empty target in column {column!r}" if empty[j] else
                f"target {text!r} in column {column!r} is not a number" if np.isnan(number[j])
                and text.lower() != "nan" else
                f"target {text} in column {column!r} is "
                f"{'NaN' if np.isnan(number[j]) else 'not finite'} (expected a number)")
        # items and batches hold float32: a larger number would be inf there (the loss too)
        for j in np.flatnonzero(np.isfinite(number) &
                                (np.abs(number) > np.finfo(np.float32).max)):
            what[j] = what[j] or (f"target {str(original[j]).strip()} in column {column!r} is "
                                  "too large for float32 (at most 3.4e38 either way)")
        values[:, t] = number
    return values, [str(c) for c in columns], what


def float32_precision_warning(values: np.ndarray, names: list[str], source: str) -> str | None:
    """A sentence when float32 (items, batches) moves a target column's numbers by more than a
    thousandth of their spread (values (N, T) float64): 1e9 + an angle keeps no angle. None
    when it holds them well enough."""
    out = []
    for name, column in zip(names, np.asarray(values, dtype=np.float64).T):
        error = float(np.abs(column.astype(np.float32).astype(np.float64) - column).max(initial=0))
        spread = float(column.std()) if len(column) else 0.0
        if spread > 0 and error > 1e-3 * spread:
            out.append(f"column {name!r}: float32 moves its numbers (up to "
                       f"{np.abs(column).max():g}) by up to {error:g}, against a spread (std) of "
                       f"{spread:g}; subtract an offset from the column first (such as "
                       f"{float(np.median(column).astype(np.float32)):.10g}) and add it back to the "
                       "predictions")
    return (f"{source}: the targets are float32 in the items and batches, which loses them: "
            + "; ".join(out)) if out else None


def _refuse_measurements(values: pd.Series, source: str, column: Column,
                         row_names: RowNames) -> None:
    """A label column of measurements (an angle, an age) is not classes: every value a finite
    number, two or more of the distinct ones not whole and at least as many as the whole ones,
    is a DatasetError naming --task regression. Fewer (1, 2, 2.5; 1, 2.5) stay class names, as
    issue 30 pinned them."""
    if pd.api.types.is_bool_dtype(values):
        return
    if pd.api.types.is_integer_dtype(values):
        return  # whole numbers alone: class indices (the lecture's column), nothing to parse
    if pd.api.types.is_numeric_dtype(values):  # a DataFrame's floats
        text = values.dropna()
        number = text.to_numpy(dtype=np.float64)
    else:
        text = values.dropna().astype(str).str.strip()
        text = text[text != ""]
        distinct = text.unique()  # parsed once each: a column of a few classes is quick
        parsed = dict(zip(distinct, pd.to_numeric(pd.Series(distinct), errors="coerce")))
        number = text.map(parsed).to_numpy(dtype=np.float64)
    if len(text) == 0 or not np.isfinite(number).all():
        return  # a text value: class names (or a bad row), as before
    distinct = np.unique(number)
    whole = distinct == np.floor(distinct)
    if (~whole).sum() < max(2, whole.sum()):  # one odd value among classes: a name, or a typo
        return
    first = int(np.flatnonzero(number != np.floor(number))[0])
    raise DatasetError(f"{source}: column {column!r} holds numbers that are not whole "
                       f"({row_names(int(text.index[first]))}: {text.iloc[first]}): pass --task "
                       "regression (task=\"regression\") to predict them")


def _parse_tags(values: pd.Series, delim: str,
                classes: Sequence[str] | None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(multi-hot (N, C) uint8; the class names, given or the sorted union of tags; what is wrong
    with each row or None). Each cell split on delim, spaces round each tag stripped; an empty
    cell is an image with no tags. With classes given, a tag not among them is a bad row."""
    what = np.full(len(values), None, dtype=object)
    tags = [[t.strip() for t in str(v).split(delim) if t.strip()] if not pd.isna(v) else []
            for v in values.to_numpy(dtype=object)]
    names = ([str(c) for c in classes] if classes is not None else
             sorted({t for row in tags for t in row}))
    index = {name: k for k, name in enumerate(names)}
    multi_hot = np.zeros((len(tags), len(names)), dtype=np.uint8)
    for j, row in enumerate(tags):
        unknown = [t for t in row if t not in index]
        if unknown:
            what[j] = f"tag(s) {unknown} not among the classes {names}"
            continue
        multi_hot[j, [index[t] for t in row]] = 1
    return multi_hot, names, what


def _parse_weights(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(weights (N,) float32, 0 where bad; what is wrong with each row or None): a number >= 0
    that float32 holds; empty, text, NaN, infinite or negative is wrong."""
    what = np.full(len(values), None, dtype=object)
    original = values.to_numpy(dtype=object)
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        values = values.where(values.isna(), values.astype(str).str.strip())
        values = values.where(values != "", None)
    empty = values.isna().to_numpy() & pd.isna(original)  # a cell "nan" is text, not empty
    number = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    expected = "(expected a number >= 0)"
    for j in np.flatnonzero(~np.isfinite(number)):
        what[j] = ("empty weight" if empty[j] or str(original[j]).strip() == "" else
                   f"weight {str(original[j]).strip()!r} is not a number {expected}"
                   if np.isnan(number[j]) else f"weight {original[j]} is not finite {expected}")
    with np.errstate(invalid="ignore"):
        for j in np.flatnonzero(number < 0):
            what[j] = f"weight {original[j]} is negative {expected}"
        for j in np.flatnonzero(np.isfinite(number) & (number > np.finfo(np.float32).max)):
            what[j] = f"weight {original[j]} is too large for float32 {expected}"
    good = what == None  # noqa: E711
    return np.where(good, number, 0.0).astype(np.float32), what



def _check_headers(paths: list[str], root: Path,
                   todo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each file's header where todo (no pixels decoded): (what is wrong or None; (N, 2) int64
    size (W, H) upright; (N,) its mode when in colour, "" when gray). A file Pillow cannot open
    (not an image) is a bad row; a truncated one opens, and is named when it is decoded."""
    what = np.full(len(paths), None, dtype=object)
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    colours = np.full(len(paths), "", dtype="<U8")  # Pillow's mode names are short
    for j in np.flatnonzero(todo):
        try:
            with Image.open(os.path.join(root, paths[j])) as im:
                sizes[j] = upright_size(im)
                colours[j] = "" if is_gray(im) else im.mode
        except DECODE_ERRORS as e:
            what[j] = f"cannot read the image's header: {e}"
    return what, sizes, colours


def table_name(table: str | Path | pd.DataFrame) -> str:
    """The table as messages name it: the CSV's path, or "DataFrame"."""
    return "DataFrame" if isinstance(table, pd.DataFrame) else str(table)


class RowNames:
    """How messages name a row: "line 7" of a CSV (its 1-based line in the file), or "row index
    'b'" of a DataFrame, whose rows are kept by position (0-based) and named by index label."""

    def __init__(self, index: pd.Index | None = None) -> None:
        self.index = index

    @classmethod
    def of(cls, table: str | Path | pd.DataFrame) -> RowNames:
        return cls(table.index if isinstance(table, pd.DataFrame) else None)

    def label(self, line: int) -> str:
        """The row's line number, or the DataFrame's index label as Python writes it."""
        if self.index is None:
            return str(line)
        label = self.index[line]
        return repr(label.item() if isinstance(label, np.generic) else label)

    def __call__(self, line: int) -> str:
        return f"{'line' if self.index is None else 'row index'} {self.label(line)}"

    def several(self, lines: Sequence[int]) -> str:
        """"line 3, 5" or "row index 'a', 'c'"."""
        return (f"{'line' if self.index is None else 'row index'} "
                + ", ".join(self.label(line) for line in lines))


def names_rule(rows: Samples, names: FileNames, folder: str | None = None) -> str:
    """Where a table's names were looked up, in one line for the check command; folder: the
    image folder as the user gave it (default: the resolved one)."""
    starts = rows.offsets[:-1][rows.offsets[:-1] < rows.offsets[1:]]  # of the names not empty
    absolute = len(rows) if os.path.isabs(names.prefix) else int(  # without a Python loop
        np.isin(rows.names[starts], [ord("/"), ord(os.sep)]).sum())
    name = f"{names.prefix}<name>{names.suffix}"
    read_as = f", read as {name}" if name != "<name>" else ""
    parts = [f"file names: relative to {folder or rows.root}{read_as}"] if absolute < len(rows) \
        else []
    parts += ["absolute paths read as written"] if absolute else []
    return "; ".join(parts)


def split_names(column: pd.Series) -> pd.Series:
    """A split column's cells as they are matched: stripped, lower case; "" for an empty cell."""
    return column.fillna("").astype(str).str.strip().str.lower()


def split_spellings(value: str) -> tuple[str, ...]:
    """What a split value matches, in lower case: the usual spellings of train / valid / test
    ("Val": valid, val, validation, dev), else itself."""
    value = value.strip().lower()
    return next((names for names in SPLIT_SPELLINGS.values() if value in names), (value,))


class Samples(Sequence):
    """The good rows of a CSV: samples[i] is Sample(path, label, line, file). NumPy arrays, not
    Python objects: reading an object writes its reference count, so that each forked DataLoader
    worker would slowly copy a list of names page by page (pytorch#13246). Path i is root /
    (prefix + file i + suffix); an absolute name is its own path."""

    def __init__(self, root: str, files: Sequence[str], labels: np.ndarray, lines: np.ndarray,
                 stats: np.ndarray, *, sizes: np.ndarray, colours: np.ndarray, prefix: str = "",
                 suffix: str = "", weights: np.ndarray | None = None,
                 multi_hot: np.ndarray | None = None, values: np.ndarray | None = None) -> None:
        encoded = [f.encode("utf-8", "surrogateescape") for f in files]
        self.root, self.prefix, self.suffix = root, prefix, suffix
        self.names = np.frombuffer(b"".join(encoded), dtype=np.uint8)  # every name, end to end
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)  # name i: offsets[i]:offsets[i+1]
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])
        self.labels = np.asarray(labels, dtype=np.int64)  # (N,) class indices, -1 when unlabelled
        self.lines = np.asarray(lines, dtype=np.int64)  # (N,) 1-based CSV lines, for messages
        self.stats = np.asarray(stats, dtype=np.int64)  # (N, 5): file_identity() of each file
        self.sizes = np.asarray(sizes, dtype=np.int64)  # (N, 2): (W, H) upright, from the header
        self.colours = np.asarray(colours, dtype="<U8")  # (N,): the mode if in colour, else ""
        # (N,) float32 weights of a weight column, else None
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
        # (N, C) uint8 multi-hot tags with label_delim (labels then 0), else None
        self.multi_hot = None if multi_hot is None else np.asarray(multi_hot, dtype=np.uint8)
        # (N, T) float64 targets with task="regression" (labels then 0), else None
        self.values = None if values is None else np.asarray(values, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.labels)

    def files(self) -> list[str]:
        """Every file name, in order."""
        return [self.file(i) for i in range(len(self))]

    def file(self, i: int) -> str:
        """Row i's file name as the CSV gives it (without file_prefix and file_suffix)."""
        raw = self.names[self.offsets[i]:self.offsets[i + 1]].tobytes()
        return raw.decode("utf-8", "surrogateescape")

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        file = self.file(range(len(self))[i])  # negative indices, and an IndexError when out
        return Sample(os.path.join(self.root, self.prefix + file + self.suffix),
                      int(self.labels[i]), int(self.lines[i]), file)


class PathsAndLabels(Sequence):
    """ImageFolder's `samples` over a dataset's rows: item i is (path, class_index)."""

    def __init__(self, rows: Samples) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [row[:2] for row in self.rows[i]]
        return self.rows[i][:2]


def check_command(csv_path: Path | pd.DataFrame, img_dir: Path | None, file_column: Column,
                  label_column: Column | None, encoding: str, *, header: bool = True,
                  names: FileNames = FileNames(), weight_column: Column | None = None,
                  label_delim: str | None = None, task: str = "classification") -> str:
    """The check command for every row of the CSV (every split of it), to paste into a shell:
    `python dataset.py CSV DIR`, with the flags that differ from its defaults, then --all. For a
    DataFrame, what lists every bad row in Python."""
    if isinstance(csv_path, pd.DataFrame):
        return "CsvImageDataset(df, ..., skip_bad_rows=True).problems"
    words = ["python", "dataset.py", str(csv_path)] + ([str(img_dir)] if img_dir else [])
    if isinstance(label_column, (list, tuple)):
        label_column = ",".join(map(str, label_column))
    for flag, value, default in (("--file-column", file_column, "File Name"),
                                 ("--label-column", label_column, "Class Label"),
                                 ("--encoding", encoding, "utf-8"),
                                 ("--file-prefix", names.prefix, ""),
                                 ("--file-suffix", names.suffix, ""),
                                 ("--weight-column", weight_column, None),
                                 ("--label-delim", label_delim, None),
                                 ("--task", task, "classification")):
        if value is not None and value != default:
            words += [flag, str(value)]
    words += [] if header else ["--no-header"]
    return shlex.join([*words, "--all"])


def csv_separator(csv_path: str | Path, encoding: str = "utf-8") -> str:
    """Of ',', ';' and tab, the one the CSV's header holds most of (',' on a tie or for none)."""
    return _csv_start(csv_path, encoding)[2]


def csv_columns(csv_path: str | Path, encoding: str = "utf-8") -> list[str]:
    """The names in the CSV's header line, read as read_csv reads it (errors named there)."""
    encoding, above, sep = _csv_start(csv_path, encoding)
    return list(pd.read_csv(csv_path, nrows=0, encoding=encoding, sep=sep, header=above,
                            skip_blank_lines=False).columns)


def csv_encoding(csv_path: str | Path, encoding: str = "utf-8") -> str:
    """`encoding`, or for the default utf-8 the UTF-16 or UTF-32 that the file's byte order mark
    names (Excel's "Unicode Text" export is UTF-16 LE with one); Python's codec drops the mark."""
    if codecs.lookup(encoding).name != "utf-8":
        return encoding
    with open(csv_path, "rb") as f:
        start = f.read(4)
    if start in (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE):  # before UTF-16 LE's, its beginning
        return "utf-32"
    return "utf-16" if start[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else encoding


def _csv_start(csv_path: str | Path, encoding: str) -> tuple[str, int, str]:
    """(csv_encoding, how many blank lines lie above the header: pandas' header=, the separator).
    Blank as pandas' own default skips it, so that every reader finds this header: spaces only
    (a tab is a cell in a tab-separated file; a line of separators, a row of empty cells)."""
    encoding, above = csv_encoding(csv_path, encoding), 0
    with open(csv_path, encoding=encoding, errors="replace", newline="") as f:
        # newline="": "\r", "\n" and "\r\n" end a line, as for pandas (whose skiprows= miscounts
        # "\r\r", a blank line in an old Mac export: header= does not)
        for header in f:
            if header.strip(" \r\n\ufeff"):
                break
            above += 1
        else:
            raise pd.errors.EmptyDataError("no header line")
    counts = [header.count(s) for s in SEPARATORS]
    return encoding, above, SEPARATORS[counts.index(max(counts))]


def read_csv(csv_path: Path | pd.DataFrame, columns: Sequence[Column], encoding: str = "utf-8",
             *, header: bool = True) -> pd.DataFrame:
    """The table's given columns (column_position: names or 0-based positions), keyed as asked.
    A CSV (separated by ',', ';' or tabs: csv_separator; UTF-16 or UTF-32 by a byte order mark:
    csv_encoding): every cell as text, empty ones missing; the index is each row's 1-based line
    number in the file (header=False: the first line is a row). A DataFrame: its cells as they
    are; the index is each row's position (its own index names it: RowNames)."""
    if isinstance(csv_path, pd.DataFrame):
        positions = column_positions(columns, list(csv_path.columns), "DataFrame", header=True)
        # A categorical column as its values (pandas' categories refuse a cell set to another)
        df = pd.DataFrame({c: _plain(csv_path.iloc[:, p]).reset_index(drop=True)
                           for c, p in zip(columns, positions)})
        if len(df) == 0:
            raise DatasetError("DataFrame: no rows")
        return df
    if not csv_path.is_file():
        raise DatasetError(f"CSV file not found: {csv_path}")
    try:
        found = csv_columns(csv_path, encoding)  # header=False: the first row's cells
        encoding, above, sep = _csv_start(csv_path, encoding)
        positions = column_positions(columns, found, str(csv_path), header=header)
        used = sorted(set(positions))
        # Only empty cells are missing values: a file called "NA" stays a file name; labels as
        # text, so that _parse_labels sees "2.5" and "007" as written.
        df = pd.read_csv(csv_path, usecols=used, dtype=str, sep=sep, encoding=encoding,
                         skip_blank_lines=False, keep_default_na=False, na_values=[""],
                         header=above if header else None)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{csv_path}: the file is empty or blank; expected a header line with "
                           f"columns {list(columns)}") from None
    except UnicodeError as e:  # a byte that is no character, or utf-16 without its mark
        reason = f"{e.reason} at byte {e.start}" if isinstance(e, UnicodeDecodeError) else e
        raise DatasetError(f"{csv_path}: not {encoding} text ({reason}); pass its encoding, e.g. "
                           "encoding='latin-1' (--encoding latin-1) for a spreadsheet "
                           "export") from None
    df = pd.DataFrame({c: df.iloc[:, used.index(p)] for c, p in zip(columns, positions)},
                      index=df.index)
    # The header is line above + 1; without one, line 1 is row 0. Blank rows keep their numbers,
    df.index = df.index + (above + 2 if header else 1)
    df = df[~df.isna().all(axis=1)]  # then are dropped: they hold no row
    if len(df) == 0:
        raise DatasetError(f"{csv_path}: no data rows" + (" below the header" if header else ""))
    return df


def _plain(column: pd.Series) -> pd.Series:
    """A DataFrame's column with a categorical dtype as plain values (object), else as it is."""
    return column.astype(object) if isinstance(column.dtype, pd.CategoricalDtype) else column


def _warn_of_a_row_as_header(csv_path: Path, encoding: str) -> None:
    """A header line naming an image file ("00001.png,3") is the first row of a table without
    one (fastai's header=None): read as a header, that row's image is left out without a word."""
    names = [str(name) for name in csv_columns(csv_path, encoding)]
    extensions = image_extensions()
    if looks := [name for name in names if os.path.splitext(name)[1].lower() in extensions]:
        warnings.warn(f"{csv_path}: its header line names {looks[0]!r}, which looks like an image "
                      "file: if the first line is a row, pass header=False (--no-header) and name "
                      "the columns by position, or that row is left out", stacklevel=4)


def column_positions(columns: Sequence[Column], found: list, source: str, *,
                     header: bool) -> list[int]:
    """The 0-based position of each column among the header's names `found` (without a header:
    the first row's cells, for their count). A name the header has wins; else an int, or a
    string of digits (as a flag gives it), is a position: a header cell literally "0" is what
    --file-column 0 names, wherever it stands; in Python, file_column=0 is always position 0."""
    positions, missing = [], []
    for column in columns:
        text = str(column).strip()
        if header and column in found:
            positions.append(found.index(column))
        elif isinstance(column, (int, np.integer)) or text.isdigit():
            if not 0 <= int(text) < len(found):
                raise DatasetError(
                    f"{source}: no column at position {text} (0-based); the table has "
                    f"{len(found)} column(s)" + (f": {found}" if header else
                                                 " (no header line: columns by position only)"))
            positions.append(int(text))
        elif not header:
            raise DatasetError(f"{source}: column {column!r}: without a header line (header=False, "
                               "--no-header) columns are named by 0-based position (0, 1, ...); "
                               f"the first row has {len(found)} cells")
        else:
            missing.append(column)
    if missing:
        hint = (" (one column: the header seems to be separated by '|', not commas)"
                if len(found) == 1 and "|" in str(found[0]) else
                " (a NUL byte beside each letter: UTF-16 without a byte order mark? Pass "
                "encoding='utf-16-le' (--encoding utf-16-le), or utf-16-be)"
                if any("\0" in str(name) for name in found) else
                " (a row of empty cells above the header? Delete it)"
                if all(str(name).startswith("Unnamed: ") for name in found) else "")
        raise DatasetError(f"{source}: no column(s) {missing}; the columns are "
                           f"{list(found)}{hint}. Pass file_column= / "
                           "label_column= / split= (--file-column / --label-column / "
                           "--split-column) with the right names, or 0-based positions.")
    return positions


def _holds_names(values: pd.Series, source: str, column: Column) -> bool:
    """Whether a label column holds class names: text (not a numeric column) with a value that
    is not a whole number ("2019" among "cat", "dog"; "2.5" or "two" among 0 to 9). Whole
    numbers alone are class indices. Mostly whole numbers and a few others: names, with a
    warning (a typo would otherwise make a class of its own)."""
    if pd.api.types.is_bool_dtype(values) or (isinstance(values.dtype, pd.StringDtype)
                                               and values.dtype.na_value is pd.NA):
        return True  # pandas' nullable "string" dtype, asked for by name: list_image_folder's
    if pd.api.types.is_numeric_dtype(values):
        return False
    text = values.dropna().astype(str).str.strip()
    distinct = pd.Series(text[text != ""].unique())
    number = pd.to_numeric(distinct, errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(number) & (number == np.floor(number))
    if whole.all():
        return False
    if whole.sum() > (~whole).sum():
        others = distinct[~whole].tolist()
        shown = ", ".join(map(repr, others[:5])) + (", ..." if len(others) > 5 else "")
        warnings.warn(f"{source}: label column {column!r} holds {int(whole.sum())} distinct whole "
                      f"numbers and {len(others)} other value(s) ({shown}), so every label is "
                      "read as a class name, sorted as text ('10' before '2'); if those are "
                      "typos of class indices, correct them in the table", stacklevel=4)
    return True


def _parse_labels(values: pd.Series, classes: Sequence[str] | None, num_classes: int | None, *,
                  as_names: bool | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(labels (N,) int64, -1 where bad; the class names; what is wrong with each row or None):
    whole-column operations, with a Python loop over the bad rows only. as_names: whether the
    column holds class names (_holds_names, decided on the whole column; None: on `values`)."""
    what = np.full(len(values), None, dtype=object)
    original = values.to_numpy(dtype=object)
    texts = None
    if as_names is None:
        as_names = _holds_names(values, "", "")
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        values = values.where(values.isna(), values.astype(str).str.strip())  # " cat" is "cat"
        values = values.where(values != "", None)
        if as_names:  # else whole numbers: class indices, with classes given too
            texts = values
        else:
            original = values.to_numpy(dtype=object)
    empty = values.isna().to_numpy()
    if texts is not None:
        names = [str(c) for c in classes] if classes is not None else \
            sorted(texts.dropna().astype(str).unique())
        codes = texts.map({name: i for i, name in enumerate(names)}).to_numpy(dtype=np.float64)
        for j in np.flatnonzero(np.isnan(codes) & ~empty):
            what[j] = f"label {str(original[j]).strip()!r} is not one of the classes {names}"
        labels = np.where(np.isnan(codes), -1, codes).astype(np.int64)
    else:
        number = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(number) & (number == np.floor(number))
        for j in np.flatnonzero(~whole & ~empty):
            what[j] = f"label {original[j]!r} is not a whole number {EXPECTED_INDEX}"
        for j in np.flatnonzero(whole & (number < 0)):
            what[j] = f"label {int(number[j])} is negative {EXPECTED_INDEX}"
        too_large = whole & (number >= MAX_LABEL)  # int64 would wrap round: 1e20 to its minimum
        for j in np.flatnonzero(too_large):
            what[j] = f"label {original[j]} is too large (expected a class index below 2**31)"
        whole &= ~too_large
        if num_classes is not None:
            for j in np.flatnonzero(whole & (number >= num_classes)):
                what[j] = (f"label {int(number[j])} is out of range: "
                           f"expected 0 to {num_classes - 1}")
        labels = np.where(whole & (what == None), number, -1).astype(np.int64)  # noqa: E711
        if classes is None and num_classes is None:
            _reject_far_labels(labels, what)
        if classes is not None:  # e.g. train's classes, handed to valid / test by the loaders
            names = [str(c) for c in classes]
            for j in np.flatnonzero(whole & (number >= len(names)) & (what == None)):  # noqa: E711
                what[j] = (f"label {int(number[j])} is not one of the classes: expected 0 to "
                           f"{len(names) - 1}")
        else:
            names = [str(i) for i in range(num_classes if num_classes is not None
                                           else int(labels.max(initial=-1)) + 1)]
    what[empty] = "empty label"
    labels[empty] = -1
    if texts is not None and num_classes is not None and len(names) > num_classes:
        what[0] = what[0] or (f"{len(names)} class names {names} but num_classes={num_classes}")
    labels[what != None] = -1  # noqa: E711
    return labels, names, what


def _reject_far_labels(labels: np.ndarray, what: np.ndarray) -> None:
    """The largest integer label sets the number of classes: a typo such as 1000000 among 0-9
    would make a million. So without num_classes, a label >= max(10, 2 x distinct labels) is bad."""
    distinct = np.unique(labels[labels >= 0])
    limit = max(10, 2 * len(distinct))
    for j in np.flatnonzero(labels >= limit):
        what[j] = (f"label {labels[j]} is far above the others ({len(distinct)} distinct labels, "
                   f"the classes would be 0 to {labels[j]}); a typo? If there are that many "
                   "classes, pass num_classes= (--num-classes)")
        labels[j] = -1


def _check_repeats(keys: pd.Series, labels: np.ndarray, lines: np.ndarray, good: np.ndarray,
                   what: np.ndarray, row_names: RowNames | None = None) -> np.ndarray:
    """One file, one label: of the good rows, a later row of a file listed above gets a problem in
    `what` for another label, or for the same one is marked in the mask returned (to drop)."""
    listed = keys[good]
    later = listed.duplicated(keep="first")
    repeated = np.zeros(len(keys), dtype=bool)
    if not later.any():
        return repeated
    rows = np.flatnonzero(good)  # position of each listed row among all rows
    first = {key: j for key, j in zip(listed[~later], rows[~later.to_numpy()])
             if key in set(listed[later])}
    for j in rows[later.to_numpy()]:
        k = first[keys.iat[j]]
        if labels[j] == labels[k]:
            repeated[j] = True
        else:
            first_row = (row_names or RowNames())(int(lines[k]))  # "line 3", "row index 'a'"
            what[j] = f"the same file as {first_row}, with another label"
    return repeated


def _check_files(files: list[str], root: Path,
                 absolute: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """What is wrong with each file name (None: a regular file inside root), and file_identity
    (N, 5) int64. One lstat per file; only a path through a symbolic link pays for a realpath.
    absolute: a name from the root of the file system is read as written (no check that it
    stays inside root: it is not below it). A name not found: the first MAX_NAME_HINTS are
    looked around for the flag that finds them (_name_hint)."""
    what = np.full(len(files), None, dtype=object)
    stats = np.zeros((len(files), 5), dtype=np.int64)
    # Cheap substring tests pick the names that may break a rule; _name_problem decides.
    for j in [j for j, f in enumerate(files)
              if not f or f[0] in "/\\" or f[1:2] == ":" or ".." in f or "\0" in f]:
        if not (absolute and os.path.isabs(files[j]) and "\0" not in files[j]):
            what[j] = _name_problem(files[j])
    todo = np.flatnonzero(what == None)  # noqa: E711
    linked_folders = _linked_folders([files[j] for j in todo], root)
    prefix, listings, hints = str(root) + os.sep, {}, 0
    for j in todo:
        outside = absolute and os.path.isabs(files[j])
        path = files[j] if outside else prefix + files[j]
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            what[j] = f"file not found: {path}"
            if hints < MAX_NAME_HINTS:  # a few: each may list a folder
                hints += 1
                what[j] += _name_hint(path, str(root), listings)
            continue
        except OSError as e:  # a name too long for the file system, a folder we may not enter
            what[j] = f"cannot look at the file ({e.strerror}): {path}"
            continue
        if not outside and (stat.S_ISLNK(st.st_mode) or (
                linked_folders and files[j].rpartition("/")[0] in linked_folders)):
            real = Path(os.path.realpath(path))
            if not real.is_relative_to(root):
                what[j] = f"resolves outside img_dir (to {real}), through a symbolic link"
                continue
            if not real.exists():
                what[j] = f"file not found: {path} (a broken symbolic link)"
                continue
            st = os.stat(real)
        elif outside and stat.S_ISLNK(st.st_mode):  # read as written: where the link leads
            try:
                st = os.stat(path)
            except OSError:
                what[j] = f"file not found: {path} (a broken symbolic link)"
                continue
        if not stat.S_ISREG(st.st_mode):
            what[j] = f"not a regular file: {path}"
        elif st.st_size == 0:  # Pillow would say "cannot identify image file"
            what[j] = "empty file (0 bytes)"
        stats[j] = file_identity(st)
    return what, stats


def file_identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """(size, mtime_ns, ctime_ns, device, inode): the file checked, unchanged (the disk cache's
    key, the check that it was not replaced), whatever name or link reaches it."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino


def _name_hint(path: str, root: str, listings: dict[str, list[str]]) -> str:
    """"; found DIR/abc.jpg: pass --file-suffix .jpg (file_suffix='.jpg')" when exactly one image
    file is `path` plus an extension, beside it; or, for a name without a folder, exactly one
    such file or that name is in a subfolder of root (--file-prefix SUB/); else "". listings:
    each folder's names, listed once per check."""
    def matches(folder: str, stem: str) -> list[str]:
        if folder not in listings:
            try:
                listings[folder] = sorted(os.listdir(folder))
            except OSError:
                listings[folder] = []
        return [os.path.join(folder, name) for name in listings[folder] if name == stem or (
            os.path.splitext(name)[0] == stem
            and os.path.splitext(name)[1].lower() in extensions)]

    extensions = image_extensions()  # what the hint may find beside a name not found
    folder, stem = os.path.split(path)
    found, prefix = matches(folder, stem), ""
    if not found and folder == root:  # in a subfolder that the name leaves out (train/<id>.jpg)?
        if "\0subfolders" not in listings:  # root's subfolders, the first 50, listed once
            matches(root, "")
            listings["\0subfolders"] = [d for d in listings[root]
                                        if os.path.isdir(os.path.join(root, d))][:50]
        found = [f for d in listings["\0subfolders"]
                 for f in matches(os.path.join(root, d), stem)]
        prefix = os.path.basename(os.path.dirname(found[0])) + "/" if len(found) == 1 else ""
    if len(found) != 1:
        return ""
    suffix = found[0][len(os.path.join(os.path.dirname(found[0]), stem)):]
    flags = [f"--file-{k} {v}" for k, v in (("prefix", prefix), ("suffix", suffix)) if v]
    kwargs = [f"file_{k}={v!r}" for k, v in (("prefix", prefix), ("suffix", suffix)) if v]
    return f"; found {found[0]}: pass {' '.join(flags)} ({', '.join(kwargs)})"


def _name_problem(name: str) -> str | None:
    """Empty, absolute ("/a", "\\a", "C:a"), with a ".." part, or with a NUL byte; None if none."""
    if name == "":
        return "empty file name"
    if name.startswith(("/", "\\")) or (name[1:2] == ":" and name[0].isalpha() and (
            os.name == "nt" or name[2:3] in ("/", "\\"))):  # C:\x; on POSIX a:b.png is a name
        return ("absolute path; file names must be relative to img_dir (leave img_dir out, "
                "--img-dir, to read absolute paths as written)")
    if ".." in name.replace("\\", "/").split("/"):
        return "contains '..'; file names must stay inside img_dir"
    if "\0" in name:
        return "the file name contains a NUL byte"
    return None


def _linked_folders(files: list[str], root: Path) -> set[str]:
    """The folders in `files` (relative to root) that are, or are inside, a symbolic link."""
    is_link: dict[str, bool] = {"": False}

    def through_link(folder: str) -> bool:
        if folder not in is_link:
            parent = folder.rpartition("/")[0]
            is_link[folder] = os.path.islink(os.path.join(root, folder)) or through_link(parent)
        return is_link[folder]

    return {folder for folder in {f.rpartition("/")[0] for f in files} if through_link(folder)}


# ---- a folder of class folders: the same table a CSV gives ---------------------------------------

FOLDER_LAYOUTS = ("expected class folders (DIR/cat/1.png, DIR/dog/2.png: torchvision's "
                  "ImageFolder, Keras's image_dataset_from_directory, fastai's from_folder), split "
                  "folders "
                  "above them (DIR/train/cat/1.png, DIR/valid/... or DIR/val/..., DIR/test/...; a "
                  "test folder may hold its images directly, unlabelled), or a metadata.csv with "
                  "a file_name column (Hugging Face's imagefolder)")
METADATA_FILE = "metadata.csv"  # Hugging Face imagefolder's table, in a split folder or at the top
CACHE_FOLDER = ".cache"  # the disk cache's default place in the image folder: no user file


class FolderListing(NamedTuple):
    table: pd.DataFrame  # file (relative, '/'), label (None: unlabelled), split (split folders)
    layout: str  # the layout recognised, in words
    skipped: dict[str, list[str]]  # why (a key of SKIP_REASONS) -> the names skipped for it


SKIP_REASONS = {"not images": "file(s) not images by their extension",
                "hidden": "hidden file(s) or folder(s)",
                "beside": "file(s) beside the class or split folders",
                "odd names": "file(s) whose names are not UTF-8 text or hold a line break "
                             "(split.csv could not name them; rename them to be read)",
                "results": "folder(s) of this run's results",
                "links": "linked folder(s)"}


def list_image_folder(folder: str | Path, *, label_column: str | None = None,
                      encoding: str = "utf-8") -> pd.DataFrame:
    """A folder of class folders as the table a CSV gives: columns file (relative to folder,
    '/'-separated), label (the class folder's name; None for an unlabelled test image) and, when
    there are split folders, split (train, valid or test). Rows by split, class, then file.

        DIR/cat/1.png  DIR/dog/2.png                  ImageFolder, image_dataset_from_directory
        DIR/train/cat/1.png  DIR/val/dog/2.png        split folders (train; valid, val; test)
        DIR/test/3.png                                a test folder without classes: unlabelled
        DIR/train/metadata.csv  DIR/train/1.png       Hugging Face imagefolder: file_name column

    label_column: metadata.csv's label column (default: 'label' when it has one, else the class
    folders the files are in). Skipped files (not images by extension, hidden, beside the class
    folders) and linked folders already listed are counted in one warning. CsvImageDataset(table,
    folder, file_column="file", label_column="label", split=("split", "train")) reads it. The
    label column has pandas' "string" dtype, so that folders named 1, 2, 3 are class names, as in
    ImageFolder (a CSV of it, written with to_csv, reads them as class indices)."""
    listing = scan_image_folder(folder, label_column=label_column, encoding=encoding)
    if message := skipped_message(Path(folder), listing.skipped):
        warnings.warn(message, stacklevel=2)
    return listing.table.astype({"label": "string"})


def scan_image_folder(folder: str | Path, *, label_column: str | None = None,
                      encoding: str = "utf-8", exclude: Sequence[Path] = (),
                      images_alone: bool = False) -> FolderListing:
    """list_image_folder's table, with the layout recognised and what was skipped (no warning).
    exclude: folders inside it that are not the user's images (train.py's results folder).
    images_alone: a folder of images without class folders is unlabelled rows (the check
    command's, for a Kaggle test/ folder), not an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    walker = _FolderWalker(folder, exclude)
    walker.images_alone = images_alone
    dirs, files = walker.entries("")
    splits: dict[str, str] = {}  # split folder -> train / valid / test
    for name in dirs:
        split = next((s for s, names in SPLIT_SPELLINGS.items() if name.lower() in names), None)
        if split in splits.values():
            other = next(d for d, s in splits.items() if s == split)
            raise DatasetError(f"{folder}: two folders of the {split} split, {other!r} and "
                               f"{name!r}; keep one")
        if split is not None:
            splits[name] = split
    if splits and len(splits) < len(dirs):
        raise DatasetError(f"{folder}: split folders ({', '.join(splits)}) beside other folders "
                           f"({', '.join(d for d in dirs if d not in splits)}); "
                           f"{FOLDER_LAYOUTS}")
    if (folder / METADATA_FILE).is_file():  # one table for the whole folder
        rows, layout = walker.metadata_rows("", None, label_column, encoding)
        rows = [(file, label, _split_of(file)) for file, label, _ in rows]
        has_split, layouts = any(split for _, _, split in rows), [layout]
    else:
        if not dirs and not files:
            raise DatasetError(f"{folder}: empty (no files, no folders); {FOLDER_LAYOUTS}")
        has_split = bool(splits)
        parts = [(name, splits[name]) for name in sorted(splits, key=lambda d: list(
            SPLIT_SPELLINGS).index(splits[d]))] if splits else [("", None)]
        if splits:  # files beside the split folders
            walker.skipped["beside"] += files
        rows, layouts = [], []
        for rel, split in parts:
            if (folder / rel / METADATA_FILE).is_file():
                found, layout = walker.metadata_rows(rel, split, label_column, encoding)
            else:
                found, layout = walker.class_folder_rows(
                    rel, split, walker.entries(rel) if rel else (dirs, files))
            rows += found
            layouts.append(f"{rel}/: {layout}" if rel else layout)
        walker.follow_links(rows)
        listed = {(r[1], r[2]) for r in rows}
        for path, label, split in walker.classes:  # after the links: a class may be one
            if (label, split) not in listed and not path.is_symlink():  # a link: named skipped
                raise DatasetError(f"{path}: a class folder with no images (files ending in .png, "
                                   f".jpg, ... or another image extension); {FOLDER_LAYOUTS}")
    order = list(SPLIT_SPELLINGS)
    rows.sort(key=lambda r: (order.index(r[2]) if r[2] else -1, r[1] or "", r[0]))
    table = pd.DataFrame(rows, columns=["file", "label", "split"])
    if not has_split:
        table = table.drop(columns="split")
    return FolderListing(table, "; ".join(layouts), walker.skipped)


def skipped_message(folder: Path, skipped: dict[str, list[str]]) -> str | None:
    """What the listing of folder skipped, in one line; None when nothing was."""
    parts = [f"{len(names)} {SKIP_REASONS[why]} (such as {sorted(names)[0]!r})"
             for why, names in skipped.items() if names and why != "links"]
    parts += [f"linked folder {name}" for name in skipped["links"]]
    return f"{folder}: skipped " + "; ".join(parts) if parts else None


def folder_classes(labels: pd.Series) -> list[str]:
    """A listing's classes: its class folders' (or metadata.csv's) names, sorted as text, as
    torchvision's ImageFolder has them: folders 101, 205, 310 are three classes, not indices."""
    return sorted(set(labels.dropna().astype(str)) - {""})


def _split_of(file: str) -> str | None:
    """The split a metadata.csv at the top names by the file's first folder (train/1.png), if
    any."""
    first = file.partition("/")[0].lower() if "/" in file else ""
    return next((s for s, names in SPLIT_SPELLINGS.items() if first in names), None)


class _FolderWalker:
    """Walks one image folder: lists images, counts what it skips, and reads each real folder once
    (a linked subfolder is followed after every real one, so that a link to a folder listed
    anyway is skipped, and a loop of links ends)."""

    def __init__(self, folder: Path, exclude: Sequence[Path] = ()) -> None:
        self.folder, self.root = folder, os.path.realpath(folder)
        self.exclude = {os.path.realpath(path) for path in exclude}
        self.images_alone = False  # a folder of images alone: unlabelled rows (scan_image_folder)
        self.extensions = image_extensions()
        self.seen = {self.root}  # real paths of the folders listed
        self.skipped: dict[str, list[str]] = {why: [] for why in SKIP_REASONS}
        self.links: list[tuple[str, str | None, str | None]] = []  # (rel, label, split) to follow
        self.classes: list[tuple[Path, str, str | None]] = []  # (path, label, split) of each class

    def entries(self, rel: str) -> tuple[list[str], list[str]]:
        """(folders, files) in folder/rel, sorted, hidden ones counted as skipped."""
        dirs, files = [], []
        try:
            found = sorted(os.scandir(self.folder / rel), key=lambda e: e.name)
        except OSError as e:  # a folder we may not enter
            raise DatasetError(f"{self.folder / rel}: cannot be listed ({e.strerror})") from None
        for entry in found:
            if entry.name.startswith("."):
                if not (rel == "" and entry.name == CACHE_FOLDER):
                    self.skipped["hidden"].append(_join(rel, entry.name))
            elif entry.is_dir() and os.path.realpath(entry.path) in self.exclude:
                self.skipped["results"].append(_join(rel, entry.name))
            elif entry.is_dir():
                dirs.append(entry.name)
            elif entry.name != METADATA_FILE:
                files.append(entry.name)
        return dirs, files

    def images(self, rel: str, label: str | None, split: str | None) -> list[tuple]:
        """(file, label, split) of each image in folder/rel and below, its linked subfolders
        kept for follow_links; rel may be a link."""
        real = os.path.realpath(self.folder / rel)
        if real in self.seen or not (real + os.sep).startswith(self.root + os.sep):
            why = (f"a link to {os.path.relpath(real, self.root)!r}, listed already"
                   if real in self.seen else f"a link to {real}, outside {self.folder}")
            self.skipped["links"].append(f"{rel!r} ({why})")
            return []
        self.seen.add(real)
        rows = []
        dirs, files = self.entries(rel)
        for name in files:
            self._add_file(_join(rel, name), label, split, rows)
        for name in dirs:
            sub = _join(rel, name)
            if os.path.islink(self.folder / sub):
                self.links.append((sub, label, split))
            else:
                rows += self.images(sub, label, split)
        return rows

    def _add_file(self, file: str, label: str | None, split: str | None, rows: list) -> None:
        try:
            plain = "\r" not in file and "\n" not in file and bool(file.encode("utf-8"))
        except UnicodeEncodeError:  # a byte that is no UTF-8 character: a surrogate escape
            plain = False
        if not plain:
            self.skipped["odd names"].append(file.encode("utf-8", "backslashreplace").decode())
        elif Path(file).suffix.lower() in self.extensions and (self.folder / file).is_file():
            rows.append((file, label, split))
        else:
            self.skipped["not images"].append(file)

    def follow_links(self, rows: list) -> None:
        """The linked subfolders, each after every real folder was listed (a link's own links
        after it), into rows: once each, and not a folder listed already."""
        while self.links:
            rows += self.images(*self.links.pop(0))

    def class_folder_rows(self, rel: str, split: str | None,
                          entries: tuple[list[str], list[str]]) -> tuple[list[tuple], str]:
        """The rows of folder/rel's class folders (entries: its folders and files); a test folder
        without class folders: unlabelled rows. Files beside the class folders are skipped; a
        linked class folder is followed last (follow_links)."""
        (dirs, files), here = entries, self.folder / rel
        if not dirs:
            if (split == "test" or self.images_alone and rel == "") and files:  # Kaggle's test/
                rows: list[tuple] = []
                for name in files:
                    self._add_file(_join(rel, name), None, split, rows)
                if rows:
                    return rows, f"{len(rows)} image(s) without class folders (unlabelled)"
            raise DatasetError(f"{here}: no class folders" + (
                f" ({len(files)} file(s) directly in it)" if files else "") + f"; {FOLDER_LAYOUTS}")
        self.skipped["beside"] += [_join(rel, name) for name in files]
        rows = []
        for name in dirs:
            self.classes.append((here / name, name, split))
            if os.path.islink(here / name):
                self.links.append((_join(rel, name), name, split))
            else:
                rows += self.images(_join(rel, name), name, split)
        return rows, f"{len(dirs)} class folders"

    def metadata_rows(self, rel: str, split: str | None, label_column: str | None,
                      encoding: str) -> tuple[list[tuple], str]:
        """The rows metadata.csv in folder/rel lists: file_name relative to that folder; the
        label from label_column, else 'label', else the folder each file is in."""
        path = self.folder / rel / METADATA_FILE
        table = read_csv(path, ["file_name"], encoding)  # named errors: no column, encoding
        columns = csv_columns(path, encoding)
        if label_column is not None and label_column not in columns and split != "test":
            raise DatasetError(f"{path}: no column {label_column!r}; the columns are {columns}")
        # a test split's metadata without labels (a competition's): unlabelled, for --predict
        column = next((c for c in (label_column or "label",) if c in columns), None)
        if column is not None:
            table = read_csv(path, ["file_name", column], encoding)
        rows = []
        for i, name in zip(table.index, table["file_name"].fillna("").astype(str)):
            name = name.strip().replace("\\", "/")
            if column is not None:
                value = table.at[i, column]
                label = None if pd.isna(value) or str(value).strip() == "" else str(value).strip()
            else:  # as Hugging Face: the folder the file is in, below the metadata's folder
                parent = name.rpartition("/")[0].rpartition("/")[2]
                label = parent if parent and (rel or _split_of(name) is None or
                                              name.count("/") > 1) else None
            rows.append((_join(rel, name), label, split))
        source = f"labels from column {column!r}" if column else "labels from the class folders"
        return rows, f"{METADATA_FILE} ({len(rows)} rows, {source})"


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def image_extensions() -> set[str]:
    """The file name endings of the formats Pillow can open (".png", ".jpg", ...)."""
    return {e for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


# ---- the check command ---------------------------------------------------------------------------

def check_dataset(csv_path: str | Path | pd.DataFrame, img_dir: str | Path | None = None,
                  **dataset_kwargs) -> tuple[dict, list[Problem]]:
    """Every row checked and every image decoded: (summary, problems), not an error. dataset_kwargs:
    CsvImageDataset's file_column, label_column, mode, num_classes, split, image_size, encoding,
    resize, header, file_prefix, file_suffix."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = CsvImageDataset(csv_path, img_dir, skip_bad_rows=True, **dataset_kwargs)
        except DatasetError:  # every row is bad: say why, row by row
            keys = ("file_column", "label_column", "split", "num_classes", "encoding", "header",
                    "weight_column", "label_delim", "task")
            kwargs = {k: v for k, v in dataset_kwargs.items() if k in keys}
            names = FileNames(dataset_kwargs.get("file_prefix", ""),
                              dataset_kwargs.get("file_suffix", ""), img_dir is None)
            table = csv_path if isinstance(csv_path, pd.DataFrame) else Path(csv_path)
            _, _, problems = make_dataset(table, None if img_dir is None else Path(img_dir),
                                          names=names, **kwargs)
            if not problems:
                raise
            return {"rows": len({p[0] for p in problems}), "mode": "-"}, problems
    problems, sizes, modes, notes = list(ds.problems), Counter(), Counter(), Counter()
    for sample in ds.rows:
        try:
            with Image.open(sample.path) as im:
                sizes[f"{im.size[1]}x{im.size[0]}"] += 1  # HxW, as --image-size takes it
                modes[im.mode] += 1
                if im.mode in WIDE_GRAY_MODES:
                    notes["16-bit, scaled to 8 bits" if is_16_bit(im) else "32-bit float or "
                          "integer, 0..1 scaled by 255 or 0..255 as it is"] += 1
                notes["turned upright by their EXIF orientation"] += exif_orientation(im) != 1
                notes["with transparency, kept (RGBA)" if ds.mode == "RGBA" else
                      "with transparency, laid over white"] += has_transparency(im)
            decode_image(sample.path, ds.mode, ds.resize_to, ds.background, ds.resize)  # as read
        except DECODE_ERRORS as e:
            problems.append((sample.line, sample.file, f"cannot decode the image: {e}"))
    # The commonest size is the reference, not the first row's.
    problems = sorted(problems + ds.size_problems(), key=lambda p: p[0])
    counts = Counter(ds.targets) if ds.rows.multi_hot is None else \
        Counter(dict(enumerate(ds.rows.multi_hot.sum(0).tolist())))  # tags per class
    if ds.rows.values is not None:  # targets: every one on every good row
        counts = Counter(dict.fromkeys(range(len(ds.classes)), len(ds)))
    empty = [name for i, name in enumerate(ds.classes) if not counts.get(i)]
    messages = [str(w.message) for w in caught if not str(w.message).startswith("skipping")]
    messages += [empty_classes_message(empty, ds.classes)] if empty else []
    return {"rows": len(ds) + len({p[0] for p in ds.problems}), "mode": ds.mode,
            "classes": {name: counts.get(i, 0) for i, name in enumerate(ds.classes)},
            "sizes": dict(sizes), "modes": dict(modes), "mode_decision": ds.mode_decision,
            "notes": {k: n for k, n in notes.items() if n}, "names_rule": ds.names_rule,
            **({} if ds.rows.weights is None else {"weights": weight_summary(ds.rows.weights)}),
            **({} if ds.rows.multi_hot is None else {"multi_label": True}),
            **({} if ds.rows.values is None else {"targets": target_ranges(ds)}),
            "warnings": messages + odd_class_warnings([ds])}, problems


def target_ranges(ds: CsvImageDataset) -> dict[str, str]:
    """The check command's line per regression target: "min -45, max 44.9, mean 0.12"."""
    return {name: f"min {column.min():g}, max {column.max():g}, mean {column.mean():g}"
            for name, column in zip(ds.classes, ds.rows.values.T)}


def weight_summary(weights: np.ndarray) -> str:
    """The check command's line on a weight column's good rows: "0 to 2.5, mean 1.1 (3 rows 0)"."""
    zeros = int((weights == 0).sum())
    return (f"{weights.min():g} to {weights.max():g}, mean {weights.astype(np.float64).mean():g}"
            + (f" ({zeros} row{'s' if zeros != 1 else ''} weigh 0)" if zeros else ""))


def empty_classes_message(empty: Sequence[str], classes: Sequence[str]) -> str:
    """Integer labels are class indices 0 to N-1: labels 3 and 7 alone make 8 classes, 6 empty."""
    return (f"{len(empty)} of the {len(classes)} classes {'has' if len(empty) == 1 else 'have'} "
            f"no image: {', '.join(empty[:20])}"
            f"{' ...' if len(empty) > 20 else ''}. Integer labels are class indices (0 to "
            f"{len(classes) - 1} here), so the model gets {len(classes)} outputs; to have just the "
            "classes you use, write the labels as names (a text column: 'cat', 'dog', or 'three', "
            "'seven')")


def odd_class_warnings(datasets: Sequence[CsvImageDataset]) -> list[str]:
    """Class names that look like typos, over datasets that share one list of classes: names the
    same but for case, spaces or punctuation ('Apple', 'apple'), and a class of one or two images
    where the median class has 20 times as many. Text labels only: integer labels are indices."""
    classes = datasets[0].classes
    if all(name.isdigit() for name in classes):
        return []
    found, spellings = [], {}
    for name in classes:
        spellings.setdefault(re.sub(r"[\W_]+", "", name.casefold()), []).append(name)
    for names in spellings.values():
        if len(names) > 1:
            found.append(f"classes {', '.join(map(repr, names))} differ only in case, spaces or "
                         "punctuation: one class written two ways? Each is a class of its own; "
                         "write them alike in the CSV if they are one")
    if any(ds.rows.multi_hot is not None for ds in datasets):
        return found  # tags: a rare tag is no typo of a class index
    found += tag_set_warnings(classes) if all(ds.rows.values is None for ds in datasets) else []
    if any(ds.rows.values is not None for ds in datasets):
        return []  # regression: the names are the target columns
    counts = sum(np.bincount(ds.rows.labels[ds.rows.labels >= 0], minlength=len(classes))
                 for ds in datasets)
    median = float(np.median(counts[counts > 0])) if counts.any() else 0.0
    for k, name in enumerate(classes):
        if 0 < counts[k] <= 2 and median >= 20 * counts[k]:
            rows = [ds.place(line) for ds in datasets
                    for line in ds.rows.lines[ds.rows.labels == k].tolist()]
            found.append(f"class {name!r} has {counts[k]} image(s) ({'; '.join(rows)}) where the "
                         f"median class has {median:g}: a typo of another label? If so, correct "
                         "it in the CSV")
    return found


TAG_DELIMS = (" ", "|", ";", ",")  # the usual joints of a cell of tags (Planet's, Pascal's, ...)


def tag_set_warnings(classes: Sequence[str]) -> list[str]:
    """Classes that are other classes joined by one delimiter ('cat dog' beside 'cat' and 'dog';
    'eight|five'): a column of tags read without --label-delim, each combination a class of its
    own. One warning naming the delimiter, for the first that joins any."""
    names = set(classes)
    for delim in TAG_DELIMS:
        pieces = {name: [p.strip() for p in name.split(delim) if p.strip()] for name in classes}
        joined = [name for name in classes
                  if len(pieces[name]) > 1 and all(p in names for p in pieces[name])]
        if joined:
            shown = ", ".join(map(repr, joined[:3])) + (" ..." if len(joined) > 3 else "")
            return [f"{len(joined)} of the {len(classes)} classes ({shown}) are other classes "
                    f"joined by {delim!r}: several labels per image? Pass --label-delim "
                    f"{delim!r} (label_delim={delim!r}) to read each cell as tags; as read, each "
                    "combination is a class of its own"]
    return []


def problems_message(csv_path: str | Path, problems: list[Problem], n_rows: int, command: str,
                     limit: int | None = MAX_LISTED_PROBLEMS, *, by_reason: bool | None = None,
                     list_rows: bool = True, row_names: RowNames | None = None) -> str:
    """The bad rows as one message. by_reason=True: grouped by reason with counts, each hint once,
    then (with list_rows) the rows without hints; False: a line each; None: True if a reason
    repeats. `limit` rows at most, then how many more and `command`, which lists them all.
    csv_path: the table's name (table_name); row_names: how rows are named (CSV lines)."""
    row_names = row_names or RowNames()
    groups = problem_groups(problems)
    if by_reason is None:
        by_reason = any(count > 1 for count, *_ in groups)
    lines = [f"{csv_path}: {len(problems)} bad row(s) out of {n_rows}"
             + (", by reason:" if by_reason else ":")]
    for count, reason, hint, first in groups if by_reason else []:
        more = ", ..." if count > len(first) else ""
        lines.append(f"  {count} row(s) ({row_names.several(first)}{more}), such as: {reason}")
        lines += [f"      {hint}"] if hint else []
    if list_rows:
        shown = problems if limit is None else problems[:limit]
        lines += ["the rows:"] if by_reason else []
        lines += [f"  {row_names(line)}: {file!r}: "
                  f"{what.partition('; ')[0] if by_reason else what}"
                  for line, file, what in shown]
        if len(problems) > len(shown):
            lines.append(f"  ... and {len(problems) - len(shown)} more; `{command}` lists them all")
    return "\n".join(lines)


def problem_groups(problems: list[Problem]) -> list[tuple[int, str, str | None, list[int]]]:
    """The bad rows grouped by what is wrong, commonest first: (count, the first row's reason
    without its hint, the first hint after ';' or None, the first lines)."""
    groups: dict[str, list] = {}
    for line, _, what in problems:
        reason, _, hint = what.partition("; ")
        key = re.sub(r"'[^']*'|\d+|/\S*", "#", reason)  # names, numbers and paths aside
        group = groups.setdefault(key, [0, reason, hint or None, []])
        group[2] = group[2] or hint or None  # a row's hint, where the first has none
        group[0] += 1
        if len(group[3]) < 5:
            group[3].append(line)
    return sorted((tuple(g) for g in groups.values()), key=lambda g: -g[0])


def parse_image_size(text: str) -> tuple[int, int]:
    """"64" -> (64, 64); "48x64" -> (48, 64) as (H, W): the --image-size flag of both commands."""
    try:
        sizes = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        sizes = ()
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with whole numbers >= 1, got {text!r}")
    return (sizes[0], sizes[-1])


def check_parser() -> argparse.ArgumentParser:
    """The check command's flags: the table's, as train.py names them."""
    p = argparse.ArgumentParser(description="Check a CSV + image folder without training: every "
                                            "row, every image. Exit status 0 when clean, else 1. "
                                            "A folder alone: its class folders (as train.py "
                                            "--image-folder lists them).")
    p.add_argument("csv_path", help="the CSV; or a folder of class folders, without img_dir")
    p.add_argument("img_dir", nargs="?", default=None,
                   help="the folder the file names are relative to (default: the CSV's folder, "
                        "and absolute names are read as written; given, they are refused)")
    p.add_argument("--file-column", default="File Name",
                   help="column with the file names, or its 0-based position (default: "
                        "%(default)s)")
    p.add_argument("--label-column", default="Class Label",
                   help="column with the labels, or its 0-based position (default: %(default)s)")
    p.add_argument("--weight-column", default=None,
                   help="column of a number >= 0 per row weighting its loss: each checked, "
                        "and their range reported")
    p.add_argument("--label-delim", default=None,
                   help="several labels per image, split on this (' ', '|', ';'): the check "
                        "reports tags per class")
    p.add_argument("--task", default="classification", choices=TASKS,
                   help="regression: --label-column names one or more columns of numbers "
                        "(angle,scale); the check reports each one's range (default: "
                        "%(default)s)")
    p.add_argument("--no-header", action="store_true",
                   help="the first line is a row, not column names: columns by position")
    p.add_argument("--file-prefix", default="",
                   help="put before each file name, e.g. train/ (the file read: IMG_DIR/"
                        "PREFIX+NAME+SUFFIX)")
    p.add_argument("--file-suffix", default="",
                   help="put after each file name, e.g. .jpg for ids without an extension")
    p.add_argument("--mode", default="auto", choices=MODES,
                   help="image mode: auto is L when every image is gray, else RGB; RGBA keeps "
                        "transparency as a 4th channel (default: %(default)s)")
    p.add_argument("--num-classes", type=int, default=None, help="labels must be below this")
    p.add_argument("--split-column", default=None, help="column naming each row's split")
    p.add_argument("--split", default=None, help="check only rows of this split")
    p.add_argument("--valid-column", default=None,
                   help="a True / False column marking the valid rows (fastai's is_valid): its "
                        "cells are checked and counted")
    p.add_argument("--image-size", type=parse_image_size, default=None,
                   help="resize every image to N x N or HxW as it is read")
    p.add_argument("--resize", default="squish", choices=RESIZE_METHODS,
                   help="with --image-size, an image of another shape is squish: stretched, crop: "
                        "its short side fitted and the rest centre-cropped, pad: fitted inside "
                        "and centred on black (default: %(default)s)")
    p.add_argument("--encoding", default="utf-8", help="the CSV's text encoding (default: utf-8)")
    p.add_argument("--all", action="store_true", help="list every bad row, not the first 20")
    return p


def main(argv: list[str] | None = None) -> int:
    p = check_parser()
    args = p.parse_args(argv)
    if args.resize != "squish" and args.image_size is None:
        p.error(f"--resize {args.resize} goes with --image-size (the size to {args.resize} to)")
    if args.img_dir is None and Path(args.csv_path).is_dir():  # a folder of class folders
        if args.split_column is not None:
            p.error("a folder's split folders are its split: pass --split alone")
        label = None if args.label_column == "Class Label" else args.label_column
        return check_folder_command(Path(args.csv_path), label_column=label, mode=args.mode,
                                    num_classes=args.num_classes, split=args.split,
                                    image_size=args.image_size, encoding=args.encoding,
                                    list_all=args.all, resize=args.resize)
    if (args.split_column is None) != (args.split is None):
        p.error("--split-column and --split go together")
    split = (args.split_column, args.split) if args.split_column else None
    img_dir = None if args.img_dir is None else Path(args.img_dir)
    names = FileNames(args.file_prefix, args.file_suffix, img_dir is None)
    try:
        summary, problems = check_dataset(
            args.csv_path, img_dir, file_column=args.file_column,
            label_column=args.label_column, mode=args.mode, num_classes=args.num_classes,
            split=split, image_size=args.image_size, encoding=args.encoding,
            resize=args.resize, header=not args.no_header, file_prefix=args.file_prefix,
            file_suffix=args.file_suffix, weight_column=args.weight_column,
            label_delim=args.label_delim, **({} if args.task == "classification" else
                                             {"task": args.task}))
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    command = check_command(Path(args.csv_path), img_dir, args.file_column, args.label_column,
                            args.encoding, header=not args.no_header, names=names,
                            weight_column=args.weight_column, label_delim=args.label_delim,
                            task=args.task)
    if summary["mode"] == "-":  # no good row: only the reasons
        print(problems_message(Path(args.csv_path), problems, summary["rows"], command,
                               by_reason=True, list_rows=False))
        if all(what.startswith("file not found") and "; found " not in what  # else the flag
               for _, _, what in problems):  # to pass is named above
            folder = args.img_dir or f"{Path(args.csv_path).parent} (the CSV's folder)"
            print(f"hint: no file was found: the CSV's names are looked up below {folder}; "
                  "is that the folder that holds them?")
        return 1
    status = print_check(Path(args.csv_path), summary, problems, command, args.image_size,
                         args.all, resize=args.resize)
    if args.valid_column is not None:
        status |= check_valid_column(Path(args.csv_path), args.valid_column, args.file_column,
                                     args.encoding, not args.no_header)
    return status


def check_valid_column(csv_path: Path, column: Column, file_column: Column, encoding: str,
                       header: bool) -> int:
    """The check command's lines for --valid-column: its counts, or each value that is not True /
    False (1 / 0, yes / no, any case) with its count and first line; 1 when there is one."""
    try:
        values = read_csv(csv_path, [file_column, column], encoding, header=header)[column]
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    flags = split_names(values).map(FLAGS)
    bad = values[flags.isna()].fillna("").astype(str).str.strip()
    if len(bad):
        counts = bad.groupby(bad, sort=False).size().sort_values(ascending=False, kind="stable")
        print(f"valid column {column!r}: values that are not True / False: " + ", ".join(
            f"{value!r} ({n} row{'s' if n > 1 else ''}, first on line "
            f"{int(bad.index[bad == value][0])})" for value, n in counts.items()))
        return 1
    valid = int(flags.astype(bool).sum())
    print(f"valid column {column!r}: {valid} valid, {len(flags) - valid} train rows")
    return 0


def print_check(name: Path, summary: dict, problems: list[Problem], command: str,
                image_size: tuple[int, int] | None, list_all: bool, unlabelled: bool = False,
                resize: str = "squish") -> int:
    """The check command's report of check_dataset's (summary, problems); its exit status.
    unlabelled: rows without labels (a folder's test images, for --predict)."""
    if unlabelled:
        print(f"{name}: {summary['rows']} rows without labels (for --predict)")
    elif summary.get("targets"):
        print(f"{name}: {summary['rows']} rows, {len(summary['targets'])} target(s)")
    else:
        print(f"{name}: {summary['rows']} rows, {len(summary['classes'])} classes")
    if summary.get("names_rule"):  # a folder's listing: relative to it, as its first line says
        print(summary["names_rule"])
    for target, text in summary.get("targets", {}).items():
        print(f"target {target!r}: {text}")
    if not unlabelled and not summary.get("targets"):
        print(("tags per class: " if summary.get("multi_label") else "classes: ")
              + ", ".join(f"{name}: {n}" for name, n in summary["classes"].items()))
    if summary.get("weights"):
        print(f"weights: {summary['weights']}")
    sizes = Counter(summary["sizes"]).most_common()
    print("image sizes (HxW): " + ", ".join(f"{s}: {n}" for s, n in sizes[:5])
          + (f", and {len(sizes) - 5} other sizes" if len(sizes) > 5 else ""))
    print("image modes: " + ", ".join(f"{m}: {n}" for m, n in summary["modes"].items())
          + f" (converted to {summary['mode']}: {summary['mode_decision']})"
          + (f", resized to {image_size[0]}x{image_size[1]} (HxW)" if image_size else "")
          + (f" by {resize}" if resize != "squish" else ""))
    for note, n in summary["notes"].items():
        print(f"{n} image(s) {note}")
    for warning in summary["warnings"]:
        print(f"warning: {warning}")
    if problems:
        print(problems_message(name, problems, summary["rows"], command,
                               None if list_all else MAX_LISTED_PROBLEMS))
        return 1
    print("OK: no problems found")
    return 0


def check_folder_command(folder: Path, *, label_column: str | None, mode: str,
                         num_classes: int | None, split: str | None,
                         image_size: tuple[int, int] | None, encoding: str,
                         list_all: bool, resize: str = "squish") -> int:
    """`python dataset.py DIR`: the folder listed (list_image_folder), then its labelled rows
    checked as a CSV's and its unlabelled ones (a test folder without classes) as --predict's.
    Lines are those of the listing, as train.py --image-folder writes it to split.csv."""
    try:
        listing = scan_image_folder(folder, label_column=label_column, encoding=encoding,
                                    images_alone=True)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{folder}: {listing.layout}")
    print(f"warning: {skipped_message(folder, listing.skipped)}" if any(listing.skipped.values())
          else "skipped: nothing")
    table = listing.table
    labelled = table["label"].notna()
    if split is not None and "split" not in table:
        print(f"error: {folder} has no split folders; leave out --split", file=sys.stderr)
        return 1
    chosen = table["split"].isin(split_spellings(split)[:1]) if split is not None else True
    if split is not None and not chosen.any():
        print(f"error: {folder}: no {split!r} split folder; its splits are "
              f"{sorted(set(table['split']), key=list(SPLIT_SPELLINGS).index)}", file=sys.stderr)
        return 1
    table = table.assign(checked=np.where(labelled & chosen, "labelled",
                                          np.where(chosen, "unlabelled", "")))
    command = shlex.join(["python", "dataset.py", str(folder), "--all"])
    status = 0
    with tempfile.TemporaryDirectory(prefix="csvimg-tmp-") as tmp:
        path = Path(tmp) / "listing.csv"
        table.to_csv(path, index=False, lineterminator="\n")
        for kind, label in (("labelled", "label"), ("unlabelled", None)):
            if not (table["checked"] == kind).any():
                continue
            try:
                summary, problems = check_dataset(
                    path, folder, file_column="file", label_column=label, mode=mode,
                    num_classes=num_classes, split=("checked", kind), image_size=image_size,
                    resize=resize, classes=folder_classes(table["label"]))
            except DatasetError as e:
                print(f"error: {str(e).replace(str(path), f'{folder} (listed)')}", file=sys.stderr)
                return 1
            summary["warnings"] = [w.replace(str(path), f"{folder} (listed)")
                                   for w in summary.get("warnings", [])]  # none: no good row
            summary["names_rule"] = None
            if summary["mode"] == "-":
                print(problems_message(folder, problems, summary["rows"], command,
                                       by_reason=True, list_rows=False))
                status = 1
                continue
            status |= print_check(folder, summary, problems, command, image_size, list_all,
                                  unlabelled=label is None, resize=resize)
    return status


if __name__ == "__main__":
    sys.exit(main())
