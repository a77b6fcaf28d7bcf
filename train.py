"""Train the lecture's MLP (or a conv net) on images listed in CSV files: accuracy per epoch,
checkpoints, plots.

    python train.py --epochs 100 --seed 123                 # builds data/ first if it is missing
    python train.py --epochs 100 --seed 123 --resume        # continue from results/checkpoint.pt
    python train.py --model cnn --epochs 100 --seed 123     # a small conv net: about 92% test
    python train.py --csv photos/labels.csv --file-column path --label-column label \
        --mode RGB --image-size 32 --augment                # your own images, any size and format
    torchrun --standalone --nproc_per_node=2 train.py --epochs 3 --seed 123
    python train.py --evaluate                              # the saved model, on the test split
    python train.py --predict new-images/                   # a folder or CSV: predictions.csv

Writes into --results-dir: metrics.csv (one row per epoch), checkpoint.pt (model, optimizer,
schedule, history, every RNG state, the run's settings, and the classes, mode and image size that
say how to read new images; after each epoch, atomically), best.pt (the same, of the best
validation epoch), loss.png, accuracy.png and examples.png; from the test split,
confusion_matrix.csv / .png, per_class.csv and mistakes.png; with --csv and no --split-column,
split.csv (every row of the CSV and the split drawn for it, by class).
Same seed, same data, same machine and library versions: bit-identical weights, whatever
--num-workers, and after any number of interruptions and --resume.

In a notebook, the lecture's helpers are here: set_all_seeds, set_deterministic, compute_accuracy
and train_model, whose result unpacks as the lecture's does:

    minibatch_loss_list, train_acc_list, valid_acc_list = train_model(
        model=model, num_epochs=10, train_loader=train_loader, valid_loader=valid_loader,
        test_loader=test_loader, optimizer=optimizer, device=device)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import datetime
import functools
import hashlib
import io
import os
import random
import shlex
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dataset import (CsvImageDataset, DatasetError, csv_separator, make_dataset, parse_image_size,
                     read_csv, to_float01)
from loaders import (SPLITS, TEMP_TAG, DecodedImages, decoded, folder_layout,
                     loaders_from_datasets, make_datasets, make_loader, split_csv)
from model import MODELS, PretrainedWeightsMissing, build_model

DEFAULT_DATA_DIR = "data"
OPTIMIZERS, LR_SCHEDULES = ("sgd", "adam", "adamw"), ("constant", "cosine", "onecycle")
DEFAULT_LR = {"sgd": 0.1, "adam": 0.001, "adamw": 0.001}  # SGD's: the lecture's


# ---- the lecture's helpers: seeds, accuracy, the training loop -----------------------------------

def set_all_seeds(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and every GPU) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def set_deterministic() -> None:
    """Make PyTorch pick deterministic kernels, and fail loudly where none exists."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


@contextlib.contextmanager
def global_settings_kept():
    """Give back, when the block ends or raises, the process-wide torch settings it may change:
    deterministic algorithms (and warn_only), the cuDNN flags, the number of threads and
    CUBLAS_WORKSPACE_CONFIG. main() runs in it, so a notebook that calls it keeps its own."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    threads, cublas = torch.get_num_threads(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        torch.set_num_threads(threads)
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


@torch.no_grad()
def compute_accuracy(model: torch.nn.Module, data_loader, device: torch.device | str) -> float:
    """Accuracy in % over every batch of data_loader (over all ranks' shares under torchrun)."""
    model.eval()
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # correct, total
    for images, labels in data_loader:
        labels = labels.to(device, non_blocking=True)
        predictions = model(to_input(images, device)).argmax(dim=1)
        counts[0] += (predictions == labels).sum()
        counts[1] += labels.numel()
    correct, total = _sum_over_ranks(counts).tolist()
    return 100.0 * correct / total


@torch.no_grad()
def compute_confusion_matrix(model: torch.nn.Module, data_loader, device: torch.device | str,
                             num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, cm[true, predicted], over every batch of
    data_loader (and every rank's share under torchrun)."""
    model.eval()
    cm = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    for images, labels in data_loader:
        predictions = model(to_input(images, device)).argmax(dim=1)
        cm += torch.bincount(labels.to(device) * num_classes + predictions, minlength=cm.numel())
    return _sum_over_ranks(cm).view(num_classes, num_classes).cpu()


@dataclasses.dataclass
class History:
    """What a run measured; accuracies in %. Unpacks as the lecture's result:
    `minibatch_loss_list, train_acc_list, valid_acc_list = train_model(...)`."""
    minibatch_loss: list[float] = dataclasses.field(default_factory=list)
    train_acc: list[float] = dataclasses.field(default_factory=list)  # one per epoch, as below
    valid_acc: list[float] = dataclasses.field(default_factory=list)
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    test_acc: float | None = None  # after the last epoch, when a test loader was given
    best_test_acc: float | None = None  # of best.pt's model (train.py)

    def __iter__(self):
        return iter((self.minibatch_loss, self.train_acc, self.valid_acc))


@dataclasses.dataclass
class RunConfig:
    """What one training run is, from the flags and the data (run_config): the checkpoint records
    it as "config", --resume refuses any difference, and --evaluate, --predict and --resume
    rebuild the model from it without the flags being repeated."""
    data: str  # fingerprint of the CSVs (data_fingerprint)
    mode: str
    image_size: list[int]  # [H, W]
    channels: int
    num_classes: int
    model: str = "mlp"
    hidden: int = 100  # the MLP's hidden units
    pretrained: bool = False
    mean: list[float] | None = None  # --normalize: per channel, of the train split's pixels
    std: list[float] | None = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    schedule_epochs: int | None = None  # the schedule's length in epochs; None when constant
    batch_size: int = 64
    seed: int = 123
    augment: bool = False
    # Where the data came from, for messages: [csv path, split value or None, rows] per split.
    # Not compared (the data fingerprint is): a moved data folder is the same data.
    data_files: list | None = dataclasses.field(default=None, compare=False)

    def differences(self, other: RunConfig) -> list[str]:
        """What differs from another run's settings, in words; [] when none."""
        out = []
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if not field.compare or mine == theirs:
                continue
            if field.name == "data":
                out.append(f"data: the checkpoint's run read {describe_data(self.data_files)}; "
                           f"this one reads {describe_data(other.data_files)}, and the rows or "
                           "labels differ (the CSVs' contents are compared, not their paths)")
            else:
                out.append(f"{field.name}: checkpoint has {mine!r}, this run has {theirs!r}"
                           + (" (the schedule spans --epochs)" if field.name == "schedule_epochs"
                              else ""))
        return out

    def as_checkpoint(self) -> dict:
        return {**dataclasses.asdict(self),
                "num_features": self.channels * self.image_size[0] * self.image_size[1]}

    @classmethod
    def from_checkpoint(cls, saved: dict) -> RunConfig:
        """A checkpoint's config; one of an earlier version (the MLP and SGD only) gets the
        defaults of the fields it lacks."""
        saved = dict(saved)
        if "channels" not in saved:
            h, w = saved["image_size"]
            saved["channels"] = saved["num_features"] // (h * w)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})

    def build_model(self, load_pretrained: bool = True) -> torch.nn.Module:
        """The model, initialised from the global RNG (and the ImageNet weights if pretrained
        and load_pretrained; a checkpoint's weights replace them anyway)."""
        return build_model(self.model, self.channels, tuple(self.image_size), self.num_classes,
                           hidden=self.hidden, pretrained=self.pretrained,
                           load_weights=load_pretrained, mean=self.mean, std=self.std)


def train_model(model: torch.nn.Module, num_epochs: int, train_loader, valid_loader,
                test_loader=None, *, optimizer: torch.optim.Optimizer, device: torch.device | str,
                history: History | None = None, train_eval_loader=None, logging_interval: int = 50,
                on_epoch_end: Callable[[History], None] | None = None, scheduler=None,
                early_stopping: int | None = None) -> History:
    """The lecture's loop: train for num_epochs, printing the loss every logging_interval batches
    and the train / validation accuracy after each epoch, then the test accuracy if test_loader
    is given.

    history: a History to continue (resume), which is extended in place; epochs it already holds are
    skipped. Epoch e's training order is set with train_loader.sampler.set_epoch(e), so it does not
    depend on how the loaders were used before. train_eval_loader (default: train_loader) is what
    train accuracy is measured on. on_epoch_end(history) runs after each epoch (train.py saves the
    checkpoint there); a Ctrl-C during that step waits until it is done. scheduler: a learning
    rate schedule, stepped after every batch. early_stopping=N: stop once N epochs have passed
    without a better validation accuracy than the best so far.
    """
    history = history if history is not None else History()
    start = time.perf_counter()
    for epoch in range(len(history.train_acc), num_epochs):
        if early_stopping is not None and epoch - best_epoch(history) >= early_stopping:
            print(f"Early stopping: no better validation accuracy in the {early_stopping} "
                  f"epoch{'s' if early_stopping > 1 else ''} after epoch {best_epoch(history)}")
            break
        epoch_start = time.perf_counter()
        model.train()
        for loader in (train_loader, train_eval_loader, valid_loader):  # epoch: order, augmentation
            if hasattr(getattr(loader, "sampler", None), "set_epoch"):
                loader.sampler.set_epoch(epoch)
        for batch_idx, (images, labels) in enumerate(train_loader):
            images, labels = to_input(images, device), labels.to(device, non_blocking=True)
            logits = model(images)  # (B, num_classes)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            history.minibatch_loss.append(_mean_over_ranks(loss))
            if batch_idx % logging_interval == 0:
                print(f"Epoch: {epoch + 1:03d}/{num_epochs:03d} "
                      f"| Batch {batch_idx:04d}/{len(train_loader):04d} "
                      f"| Loss: {history.minibatch_loss[-1]:.4f}")
        with ctrl_c_deferred():  # the epoch's weights are final: a Ctrl-C waits until they're saved
            train_acc = compute_accuracy(model, train_eval_loader or train_loader, device)
            history.train_acc.append(train_acc)
            history.valid_acc.append(compute_accuracy(model, valid_loader, device))
            history.epoch_seconds.append(time.perf_counter() - epoch_start)
            print(f"Epoch: {epoch + 1:03d}/{num_epochs:03d} | Train: {history.train_acc[-1]:.2f}% "
                  f"| Validation: {history.valid_acc[-1]:.2f}%")
            print(f"Time elapsed: {sum(history.epoch_seconds) / 60:.2f} min")
            if on_epoch_end is not None:
                on_epoch_end(history)
    print(f"Total Training Time: {(time.perf_counter() - start) / 60:.2f} min")
    if test_loader is not None:
        history.test_acc = compute_accuracy(model, test_loader, device)
        print(f"Test accuracy: {history.test_acc:.2f}%")
    return history


def to_input(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Move a batch to the device; uint8 batches are scaled to float32 [0, 1] there, as the
    dataset would."""
    images = images.to(device, non_blocking=True)
    return images if images.is_floating_point() else to_float01(images)


def describe_data(data_files: list | None) -> str:
    """"data/mnist_train.csv (256 rows), ..." or "labels.csv (train 80, valid 10, test 10 rows)"."""
    if not data_files:
        return "data it did not record (a checkpoint of an earlier version)"
    by_csv: dict[str, list] = {}
    for csv_path, split, rows in data_files:
        by_csv.setdefault(csv_path, []).append((split, rows))
    return ", ".join(f"{csv_path} ({rows} rows)" if len(parts) == 1 and split is None else
                     f"{csv_path} (" + ", ".join(f"{s} {n}" for s, n in parts) + " rows)"
                     for csv_path, parts in by_csv.items() for split, rows in [parts[0]])


class Terminated(KeyboardInterrupt):
    """SIGTERM, what a cluster's scheduler sends before it kills a job: handled as a Ctrl-C (the
    last complete checkpoint kept, the resume command printed), but the exit status is 143."""


def _raise_terminated(signum, frame):
    raise Terminated


def exit_status(interrupt: KeyboardInterrupt) -> int:
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While the block runs, SIGTERM raises Terminated (a KeyboardInterrupt), as SIGINT raises
    KeyboardInterrupt; the previous handler comes back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def ctrl_c_deferred():
    """Hold a Ctrl-C (SIGINT) or a SIGTERM back while the block runs, then raise it after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    received = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise Terminated if signal.SIGTERM in received else KeyboardInterrupt


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def peers_answer(rank: int, minutes: float):
    """Under torchrun, an exchange that times out (another process stopped or hangs) ends this
    process with a sentence instead of gloo's RuntimeError."""
    try:
        yield
    except RuntimeError as e:
        if not _distributed() or "timed out" not in str(e).lower():
            raise
        raise SystemExit(f"train.py: error: process {rank} waited {minutes:g} min (--dist-timeout) "
                         "for the other processes at an exchange, and one did not answer: it has "
                         "stopped or hangs (its own error, if any, is above). Resume with "
                         "--resume once it is fixed; pass a larger --dist-timeout if rank 0's "
                         "first decode of a large dataset takes longer.") from None


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _mean_over_ranks(loss: torch.Tensor) -> float:
    """The batch's loss as one float; under torchrun, the mean of the ranks' equal shares."""
    world_size = dist.get_world_size() if _distributed() else 1
    return _sum_over_ranks(loss.detach().clone()).item() / world_size


# ---- checkpoints: atomic files that torch.load(weights_only=True) reads --------------------------

def write_atomic(path: Path, data: bytes) -> None:
    """Write a temporary file beside `path`, fsync, then rename it over: old or new, never half."""
    tmp = path.with_name(f".{path.name}.{TEMP_TAG}-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_atomic(path, buffer.getvalue())


def save_run(results_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler, config: RunConfig, classes: list[str], history: History) -> None:
    """checkpoint.pt and metrics.csv after an epoch: everything --resume needs, and what a
    checkpoint alone needs to read new images (classes, mode, image_size); the same checkpoint
    as best.pt too when the epoch's validation accuracy is the best so far."""
    checkpoint = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "epoch": len(history.train_acc), "history": dataclasses.asdict(history),
        "config": config.as_checkpoint(), "classes": list(classes), "mode": config.mode,
        "image_size": config.image_size, "rng": rng_states(),
        "versions": {"torch": str(torch.__version__)}}
    # best.pt first: a kill between the two files leaves the previous checkpoint.pt, whose
    # --resume replays this epoch and writes the same best.pt again
    if best_epoch(history) == len(history.valid_acc):
        save_checkpoint(results_dir / "best.pt", checkpoint)
    save_checkpoint(results_dir / "checkpoint.pt", checkpoint)
    write_atomic(results_dir / "metrics.csv", metrics_csv(history))


def best_epoch(history: History) -> int:
    """The first epoch (from 1) with the highest validation accuracy; 0 before the first."""
    valid = history.valid_acc
    return valid.index(max(valid)) + 1 if valid else 0


def read_checkpoint(path: Path) -> dict:
    """torch.load(weights_only=True), to the CPU, of a checkpoint that train.py wrote; anything
    else (a truncated, empty or foreign file) is one sentence, not torch's internals."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in ("model", "optimizer", "epoch", "history", "config", "rng")
                   if k not in checkpoint]
    except Exception as e:  # noqa: BLE001  (torch raises many kinds for a damaged file)
        missing, checkpoint = [f"readable content ({type(e).__name__})"], None
    if missing:
        raise SystemExit(f"train.py: error: {path} is damaged or not a checkpoint of train.py "
                         f"(no {', '.join(missing)}). Start afresh without --resume (move the file "
                         "away first, to keep it), or pass the right --checkpoint / --results-dir.")
    return checkpoint


def saved_config(checkpoint: dict, path: Path) -> RunConfig:
    """The checkpoint's RunConfig; a config that train.py did not write (edited, or from another
    program) is one sentence."""
    try:
        return RunConfig.from_checkpoint(checkpoint["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"train.py: error: {path}'s settings (its 'config') are not those train.py "
                         f"writes ({type(e).__name__}: {e}); pass the --checkpoint of a train.py "
                         "run") from None


def model_from_checkpoint(checkpoint: dict, path: Path, device: torch.device) -> torch.nn.Module:
    """The checkpoint's model, rebuilt from its config, with its weights; one sentence when the
    two do not fit (an edited or foreign file)."""
    try:
        model = saved_config(checkpoint, path).build_model(load_pretrained=False)
        model.load_state_dict(checkpoint["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise SystemExit(f"train.py: error: {path}'s weights do not fit the model its config "
                         f"names ({type(e).__name__}: {first}); pass the --checkpoint of a "
                         "train.py run") from None
    return model.to(device)


def load_run(checkpoint: dict, path: Path, model: torch.nn.Module,
             optimizer: torch.optim.Optimizer, scheduler, epochs: int) -> History:
    """Restore model, optimizer, schedule and every RNG state from a checkpoint of the same run
    (check_resume has compared the settings); returns its history."""
    if checkpoint["epoch"] > epochs:
        print(f"train.py: error: --epochs {epochs}, but {path} already holds {checkpoint['epoch']} "
              f"epochs; pass --epochs {checkpoint['epoch']} or more", file=sys.stderr)
        raise SystemExit(2)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_states(checkpoint["rng"])
    print(f"Resuming from {path} after epoch {checkpoint['epoch']}")
    return History(**checkpoint["history"])


def check_resume(saved: RunConfig, config: RunConfig, path: Path) -> None:
    differences = saved.differences(config)
    if differences:
        raise SystemExit(f"train.py: error: cannot --resume from {path}: "
                         "it was made by a different run:\n  "
                         + "\n  ".join(differences)
                         + "\nUse the original flags and data, or start afresh without --resume.")


def rng_states() -> dict:
    """Every global RNG state as tensors and plain Python values (weights_only loads no ndarray)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(mt_state), gauss_next],
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, mt_state, gauss_next = states["python"]
    random.setstate((version, tuple(mt_state), gauss_next))


RESULT_FILES = ("checkpoint.pt", "best.pt", "metrics.csv", "loss.png", "accuracy.png", "examples.png",
                "confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "mistakes.png",
                "split.csv", "predictions.csv")


REPORT_FILES = ("confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "mistakes.png")


@contextlib.contextmanager
def results_folder(results_dir: Path, move: tuple[str, ...], main_process: bool):
    """Hold results_dir while the block runs: an OS lock (flock) that a killed run releases too,
    so a second run into the same folder stops with a message naming the first. This run's
    leftovers of an earlier kill (temporary files) are removed. Earlier files named in `move`
    (results this run would overwrite) go into results_dir/version_N first."""
    if not main_process:  # under torchrun, rank 0 holds the folder for every rank
        yield
        return
    from make_subset import lock_or_holder

    results_dir.mkdir(parents=True, exist_ok=True)
    fd = _open_results_lock(results_dir)
    try:
        holder = lock_or_holder(fd)
        if holder is not None:
            raise SystemExit(f"train.py: error: {results_dir} is in use by another train.py run "
                             f"(process {holder}); wait for it to finish, or pass another "
                             "--results-dir")
        for name in RESULT_FILES:  # only this project's temporaries: nobody else of ours
            for leftover in results_dir.glob(f".{name}.{TEMP_TAG}-*"):  # writes while we hold it
                leftover.unlink(missing_ok=True)
        move_aside(results_dir, move)
        yield
    finally:
        os.close(fd)


def move_aside(results_dir: Path, names: tuple[str, ...]) -> None:
    """Those of `names` that results_dir holds go into a new results_dir/version_N."""
    earlier = [name for name in names if (results_dir / name).exists()]
    if earlier:
        taken = {int(p.name[8:]) for p in results_dir.glob("version_*") if p.name[8:].isdigit()}
        version = results_dir / f"version_{max(taken, default=0) + 1}"
        version.mkdir()
        for name in earlier:
            os.replace(results_dir / name, version / name)
        what = " and ".join(earlier) if len(earlier) <= 2 else "results"  # e.g. predictions.csv
        print(f"Earlier {what} in {results_dir} moved to {version}/")


def _open_results_lock(folder: Path) -> int:
    from make_subset import LockFileError, open_lock

    try:
        return open_lock(folder / ".lock", "pass another --results-dir")
    except LockFileError as e:
        raise SystemExit(f"train.py: error: {e}") from None


@contextlib.contextmanager
def finished_checkpoint(checkpoint_path: Path, results_dir: Path):
    """While the block reads checkpoint_path from another folder than results_dir (which this run
    holds), hold that folder's lock shared: a train.py run writing there holds it exclusively,
    and its checkpoint is of an unfinished run, so this refuses instead of reading it."""
    import fcntl

    folder = checkpoint_path.resolve().parent  # through a link: the folder of the file itself
    if not folder.is_dir() or folder == results_dir.resolve():
        yield  # results_folder holds this folder's lock already
        return
    try:  # read-only: a shared lock needs no write access (another user's folder of checkpoints)
        fd = os.open(folder / ".lock", os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        yield  # no lock file: no train.py run has written there since it was made
        return
    except OSError as e:
        raise SystemExit(f"train.py: error: {folder / '.lock'} cannot be used as a lock "
                         f"({e.strerror}; a symbolic link is not followed); remove it, or pass "
                         "another --checkpoint") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise SystemExit(f"train.py: error: {checkpoint_path} belongs to a train.py run that "
                             f"is still going (process {holder}), so it is not final; wait for it "
                             "to finish, or pass the --checkpoint of a finished run") from None
        yield
    finally:
        os.close(fd)


def results_to_move(args: argparse.Namespace, checkpoint_path: Path) -> tuple[str, ...]:
    """What this run would overwrite in its results folder, to be moved to version_N first: all
    of a new run's files; resuming or evaluating any checkpoint but this folder's checkpoint.pt
    (another folder's, or another file here), all its files or its reports; earlier predictions."""
    own = (Path(args.results_dir) / "checkpoint.pt").resolve()
    elsewhere = checkpoint_path.resolve() != own
    if args.predict is not None:  # predict() moves the earlier one when it has a new one
        return ()
    if args.evaluate:  # and, from another folder, the split it reads, which replaces this one's
        other_folder = checkpoint_path.resolve().parent != own.parent
        return (*REPORT_FILES, *(["split.csv"] if other_folder else [])) if elsewhere else ()
    if args.resume and elsewhere:  # the file resumed from stays where it is, to be read
        reading = checkpoint_path.resolve()
        return tuple(n for n in RESULT_FILES if (Path(args.results_dir) / n).resolve() != reading)
    return RESULT_FILES if not args.resume else ()


def data_fingerprint(csv_paths: list[Path]) -> str:
    """sha256 of the CSVs the datasets were read from: a resumed run must see the same rows."""
    digest = hashlib.sha256()
    for path in csv_paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def metrics_csv(history: History) -> bytes:
    rows = ["epoch,train_acc,valid_acc,epoch_seconds"]
    epochs = zip(history.train_acc, history.valid_acc, history.epoch_seconds)
    for i, (tr, va, sec) in enumerate(epochs):
        rows.append(f"{i + 1},{tr!r},{va!r},{sec:.4f}")  # repr: exact floats, comparable
    return ("\n".join(rows) + "\n").encode()


# ---- command line --------------------------------------------------------------------------------

def _at_least(minimum: float, kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value >= minimum or value != value:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _positive_float(text: str) -> float:
    value = _at_least(0.0, float)(text)
    if value == 0 or value > torch.finfo(torch.float32).max:  # the weights are float32
        raise argparse.ArgumentTypeError(f"must be a number > 0 that float32 holds, got {text}")
    return value


def _finite(text: str) -> float:
    value = _at_least(0.0, float)(text)
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _minutes(text: str) -> float:
    value = _positive_float(text)
    if not 0.05 <= value <= 7 * 24 * 60:  # torch's socket timeouts overflow beyond a few years
        raise argparse.ArgumentTypeError(f"must be from 0.05 (3 s) to 10080 (a week), got {text}")
    return value


def _seed(text: str) -> int:
    value = _at_least(0, int)(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"must be below 2**32 (NumPy's and the data order's "
                                         f"limit), got {text}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown, but not None: those flags say in their help what happens without them."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train a model (the lecture's MLP by default) on images listed in CSV files.",
        formatter_class=_HelpFormatter)
    data = p.add_argument_group("data: the lecture's folder of three CSVs, or one CSV of your own")
    data.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                      help="folder with mnist_{train,valid,test}.csv and image folders; "
                           f"'{DEFAULT_DATA_DIR}' is built with make_subset.py when missing")
    data.add_argument("--csv", help="CSV listing every image (instead of --data-dir)")
    data.add_argument("--img-dir", help="folder the CSV's file names are relative to "
                                        "(default: the CSV's folder)")
    data.add_argument("--split-column", help="column saying train, valid or test for each row "
                                             "(default: none; a split is drawn by class)")
    data.add_argument("--valid-fraction", type=_fraction, default=0.1,
                      help="share of each class for valid")
    data.add_argument("--test-fraction", type=_fraction, default=0.1,
                      help="share of each class for test")
    data.add_argument("--split-seed", type=_at_least(0, int), default=0,
                      help="seed of the drawn split (apart from --seed: a new seed keeps the split)")
    data.add_argument("--file-column", default="File Name", help="column with the file names")
    data.add_argument("--label-column", default="Class Label", help="column with the labels")
    data.add_argument("--mode", default="auto", choices=["auto", "L", "RGB"],
                      help="gray (L, 1 channel) or RGB (3); auto: L when every image is gray, "
                           "else RGB, from the files' headers")
    data.add_argument("--image-size", type=parse_image_size, default=None,
                      help="resize every image to N x N or HxW as it is read (default: images "
                           "must share one size)")
    data.add_argument("--encoding", default="utf-8", help="the CSV's text encoding")
    data.add_argument("--num-classes", type=_at_least(1, int), default=None,
                      help="integer labels are 0 to N-1 (default: up to the largest label, which "
                           "must not be far above the others)")
    data.add_argument("--augment", action="store_true",
                      help="train-only random rotation (up to 10 degrees) and shift (up to 10%%), "
                           "the same for any --num-workers and after --resume")
    data.add_argument("--num-workers", type=_at_least(0, int), default=0,
                      help="DataLoader worker processes; they also share the first pass's decoding")
    data.add_argument("--persistent-workers", action="store_true",
                      help="keep every loader's workers alive between epochs (those that run "
                           "--augment on images held in memory are kept alive anyway)")
    data.add_argument("--cache-mb", type=_at_least(0.0, float), default=1024.0,
                      help="keep decoded images in memory up to this many MiB per split; a larger "
                           "split is kept in the disk cache, memory-mapped (0: decode every pass)")
    disk = data.add_mutually_exclusive_group()
    disk.add_argument("--cache-dir", default=None,
                      help="folder for decoded images, so that later runs skip decoding "
                           "(default: .cache in the data folder)")
    disk.add_argument("--no-disk-cache", action="store_true",
                      help="decode in memory only, write no cache files")

    inherited = " (default: %s; with --resume, --evaluate or --predict: the checkpoint's)"
    model = p.add_argument_group("model (see README: Choosing a model)")
    model.add_argument("--model", choices=MODELS, default=None,
                       help="mlp: the lecture's; cnn: a small conv net; resnet18: torchvision's"
                            + inherited % "mlp")
    model.add_argument("--hidden", type=_at_least(1, int), default=None,
                       help="hidden units of the MLP" + inherited % 100)
    model.add_argument("--pretrained", action="store_true", default=None,
                       help="resnet18 from torchvision's ImageNet weights (downloaded into "
                            "$TORCH_HOME/hub/checkpoints/ when missing and the machine is online)")
    model.add_argument("--normalize", action="store_true", default=None,
                       help="feed the model (x - mean) / std per channel, of the train split's "
                            "pixels; kept in the checkpoint, so --predict applies it too")

    optimisation = p.add_argument_group("optimisation")
    optimisation.add_argument("--epochs", type=_at_least(1, int), default=100,
                              help="number of epochs")
    optimisation.add_argument("--seed", type=_seed, default=123,
                              help="seed for the weights and the data order (0 to 2**32 - 1)")
    optimisation.add_argument("--batch-size", type=_at_least(1, int), default=64,
                              help="minibatch size (under torchrun: the global batch, split "
                                   "between ranks)")
    optimisation.add_argument("--eval-batch-size", type=_at_least(1, int), default=256,
                              help="batch size for measuring accuracy (does not change the "
                                   "results)")
    optimisation.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                              help="sgd is the lecture's" + inherited % "sgd")
    optimisation.add_argument("--lr", type=_positive_float, default=None,
                              help="learning rate (default: 0.1 for sgd, the lecture's; 0.001 for "
                                   "adam and adamw; with --resume: the checkpoint's)")
    optimisation.add_argument("--momentum", type=_finite, default=None,
                              help="SGD's momentum" + inherited % 0)
    optimisation.add_argument("--weight-decay", type=_finite, default=None,
                              help="L2 penalty (decoupled for adamw)"
                                   + inherited % "0; 0.01 for adamw, torch's")
    optimisation.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                              help="the learning rate over the run, set after every batch: "
                                   "cosine decays to 0; onecycle warms up for 30%% of the "
                                   "batches to --lr, then anneals" + inherited % "constant")
    optimisation.add_argument("--early-stopping", type=_at_least(1, int), default=None,
                              metavar="N", help="stop after N epochs without a better validation "
                                                "accuracy (default: train every epoch)")

    outputs = p.add_argument_group("outputs, and using a saved model (which trains nothing)")
    outputs.add_argument("--results-dir", default=None,
                         help="where metrics, checkpoints and figures go; with --checkpoint and "
                              "--resume, --evaluate or --predict, that file's folder "
                              "(default: results)")
    outputs.add_argument("--resume", action="store_true",
                         help="continue from RESULTS_DIR/checkpoint.pt")
    outputs.add_argument("--evaluate", action="store_true",
                         help="the checkpoint on the test split of the same data flags: the test "
                              "accuracy, confusion matrix, per-class figures and mistakes")
    outputs.add_argument("--predict", metavar="PATH",
                         help="the class of every image in a folder (and its subfolders) or "
                              "listed in a CSV (label column optional), into "
                              "RESULTS_DIR/predictions.csv")
    outputs.add_argument("--checkpoint",
                         help="the checkpoint to use, such as RESULTS_DIR/best.pt (default: "
                              "RESULTS_DIR/checkpoint.pt)")
    outputs.add_argument("--logging-interval", type=_at_least(1, int), default=50,
                         help="print the loss every N batches")

    hardware = p.add_argument_group("device and processes")
    hardware.add_argument("--device", default="auto",
                          help="auto (cuda, then mps, else cpu), or any torch device")
    hardware.add_argument("--dist-timeout", type=_minutes, default=30.0, metavar="MINUTES",
                          help="under torchrun: how long a process waits for the others at each "
                               "exchange, rank 0's first decode of the data included, before it "
                               "stops with an error (torch's default)")
    args = p.parse_args(argv)
    resuming = args.resume or args.evaluate or args.predict is not None  # the model is recorded
    if args.pretrained and args.model != "resnet18" and not (resuming and args.model is None):
        p.error("--pretrained goes with --model resnet18 (the weights are ResNet-18's)")
    if args.pretrained and args.normalize:
        p.error("--pretrained and --normalize: choose one (the pretrained model is fed the "
                "ImageNet mean and std it was trained with)")
    if args.csv is not None and args.data_dir != DEFAULT_DATA_DIR:
        p.error("--csv and --data-dir: choose one (one CSV for all images, or the folder of "
                "three CSVs)")
    if args.split_column is not None and args.csv is None:
        p.error("--split-column goes with --csv")
    if args.img_dir is not None and args.csv is None and args.predict is None:
        p.error("--img-dir goes with --csv or --predict")
    if args.valid_fraction + args.test_fraction >= 1:
        p.error("--valid-fraction and --test-fraction must add up to less than 1")
    if args.csv is not None and not Path(args.csv).is_file():
        p.error(f"--csv {args.csv}: no such file")
    if args.data_dir != DEFAULT_DATA_DIR and not Path(args.data_dir).is_dir():
        p.error(f"--data-dir {args.data_dir}: no such folder (make one with: "
                f"python make_subset.py --out-dir {args.data_dir})")
    if sum((args.resume, args.evaluate, args.predict is not None)) > 1:
        p.error("--resume, --evaluate and --predict: choose one")
    uses_checkpoint = args.resume or args.evaluate or args.predict is not None
    if args.results_dir is None:  # the reports of another folder's model go beside it
        args.results_dir = str(Path(args.checkpoint).parent) if args.checkpoint and \
            uses_checkpoint else "results"
    checkpoint = Path(args.checkpoint or Path(args.results_dir) / "checkpoint.pt")
    if args.resume and not checkpoint.is_file():
        p.error(f"--resume: no checkpoint at {checkpoint}")
    if (args.evaluate or args.predict) and not checkpoint.is_file():
        p.error(f"no checkpoint at {checkpoint}: train first, or pass --checkpoint FILE")
    if args.predict is not None and not Path(args.predict).exists():
        p.error(f"--predict {args.predict}: no such file or folder")
    try:
        device = torch.device("cpu" if args.device == "auto" else args.device)
    except RuntimeError as e:
        p.error(f"--device {args.device}: {e}")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this machine has no CUDA device; "
                "use --device cpu (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        p.error(f"--device {args.device}: MPS is not available here; use --device cpu (or auto)")
    results = Path(args.results_dir)
    if results.exists() and not results.is_dir():
        p.error(f"--results-dir {results}: a file is there, not a folder; choose another path")
    writable = next((f for f in [results, *results.parents] if f.exists()), Path("."))
    if not os.access(writable, os.W_OK | os.X_OK):
        p.error(f"--results-dir {results}: {writable} cannot be written; choose another path")
    return args


def _fraction(text: str) -> float:
    value = _at_least(0.0, float)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be below 1, got {text}")
    return value


def data_sources(csv: str | None, data_dir: str | None, img_dir: str | None,
                 split_column: str | None, split_path: Path, split_options: dict,
                 main_process: bool, keep_split: bool = False) -> list[tuple]:
    """(csv, image folder, split) of train, valid and test: the three-CSV folder, or one CSV with
    a split column, or one without, whose split is drawn into split_path. Only the main process
    (rank 0) builds the default data or writes split.csv. keep_split (--resume, --evaluate): an
    existing split_path is the split the model was trained on (main() has compared it with the
    split drawn now, before anything was written), so it is kept."""
    if csv is None:
        if main_process and data_dir == DEFAULT_DATA_DIR:
            ensure_default_data(Path(data_dir))
        return folder_layout(data_dir)
    folder = Path(img_dir) if img_dir is not None else Path(csv).parent
    if split_column is None:  # draw one, kept with the results
        if main_process and not (keep_split and split_path.is_file()):
            split_csv(csv, split_path, **split_options)
        csv, split_column = split_path, "split"
    return [(Path(csv), folder, (split_column, split)) for split in SPLITS]


def _same_split_or_refuse(csv: str, split_path: Path, split_options: dict) -> None:
    """The split drawn now must be the one in split_path, that the checkpoint was trained on."""
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_TAG}-") as tmp:
        drawn = split_csv(csv, Path(tmp) / split_path.name, **split_options).read_bytes()
    if drawn != split_path.read_bytes():
        raise SystemExit(f"train.py: error: the split drawn from {csv} with these flags differs "
                         f"from {split_path}, the one the checkpoint's run was trained on (the "
                         "CSV, --split-seed, --valid-fraction or --test-fraction changed); it is "
                         "left as it is. Use the flags and CSV of that run, or start afresh "
                         "without --resume / --evaluate.")


def pick_device(name: str, local_rank: int) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def write_reports(model: torch.nn.Module, cm: torch.Tensor, test_loader, results_dir: Path,
                  class_names: list[str]) -> None:
    """From the test split: confusion_matrix.csv and .png, per_class.csv and mistakes.png."""
    import matplotlib.pyplot as plt  # here, not at the top: --help and --predict start faster

    from plot import plot_confusion_matrix, show_mistakes

    names = [str(c) for c in class_names]
    rows = [["true \\ predicted", *names]] + [[n, *row] for n, row in zip(names, cm.tolist())]
    write_atomic(results_dir / "confusion_matrix.csv", csv_bytes(rows))
    support, correct, predicted = cm.sum(1).tolist(), cm.diagonal().tolist(), cm.sum(0).tolist()
    rows = [["class", "support", "correct", "recall", "precision"]]
    for name, n, ok, p in zip(names, support, correct, predicted):
        recall, precision = (f"{ok / d:.4f}" if d else "" for d in (n, p))  # empty: no such images
        rows.append([name, n, ok, recall, precision])
    write_atomic(results_dir / "per_class.csv", csv_bytes(rows))
    # Under torchrun, the figure of mistakes looks at every test image, on this rank alone.
    whole = make_loader(test_loader.dataset, test_loader.sampler.batch_size, shuffle=False,
                        drop_last=False, seed=test_loader.sampler.seed, rank=0, world_size=1)
    for figure in (plot_confusion_matrix(cm, names, results_dir),
                   show_mistakes(model, whole, results_dir, class_names=names)):
        plt.close(figure)


def evaluate(checkpoint: dict, checkpoint_path: Path, config: RunConfig, classes: list[str],
             test_loader, results_dir: Path, device: torch.device, rank: int) -> History:
    """--evaluate: the saved model on the test split, with the reports of a training run; the
    checkpoint and metrics.csv are left as they are."""
    saved = saved_config(checkpoint, checkpoint_path)
    data_keys = ("data", "channels", "num_classes", "mode", "image_size")
    differences = [d for d in saved.differences(config) if d.split(":")[0] in data_keys]
    if checkpoint.get("classes", list(classes)) != list(classes):
        differences.append(f"classes: checkpoint has {checkpoint['classes']}, the data {classes}")
    if differences:
        raise SystemExit(f"train.py: error: cannot --evaluate {checkpoint_path}: it was trained on "
                         "other data:\n  " + "\n  ".join(differences)
                         + "\nUse the data flags of the training run.")
    model = model_from_checkpoint(checkpoint, checkpoint_path, device)
    cm = compute_confusion_matrix(model, test_loader, device, len(classes))
    test_acc = compute_accuracy(model, test_loader, device)
    print(f"Test accuracy: {test_acc:.2f}%")
    if rank == 0:
        results_dir.mkdir(parents=True, exist_ok=True)
        write_reports(model, cm, test_loader, results_dir, classes)
        print(f"Reports of {checkpoint_path} written to {results_dir}/")
    return History(test_acc=test_acc)


def refuse_other_model_flags(args: argparse.Namespace, saved: RunConfig, path: Path) -> None:
    """--evaluate, --predict and --resume rebuild the checkpoint's model by themselves; a model
    flag given that says otherwise is refused."""
    use = "--resume from" if args.resume else "--evaluate" if args.evaluate else "--predict with"
    has = {"model": saved.model, "hidden": saved.hidden, "pretrained": saved.pretrained,
           "normalize": saved.mean is not None}
    differences = [f"--{key} {value} (the checkpoint's: {has[key]})" for key in has
                   if (value := getattr(args, key)) is not None and value != has[key]]
    if differences:
        raise SystemExit(f"train.py: error: cannot {use} {path}: it holds another model than "
                         f"{', '.join(differences)} asks for. The model is rebuilt from the "
                         "checkpoint, so leave those flags out, or pass the --checkpoint of such "
                         "a model")


@torch.no_grad()
def predict(path: str, checkpoint: dict, checkpoint_path: Path, results_dir: Path,
            columns: tuple[str, str], img_dir: str | None, encoding: str,
            device: torch.device) -> Path:
    """--predict: the checkpoint's classes for one image, the images of a folder or those of a
    CSV, read in the checkpoint's mode and size, into results_dir/predictions.csv (written whole,
    or not at all). An image that cannot be read is named in a warning and gets a row with an
    empty prediction and the reason; none readable at all is an error."""
    if "classes" not in checkpoint:
        raise SystemExit(f"train.py: error: {checkpoint_path} does not say its classes, mode and "
                         "image size (it predates them): train again to use --predict")
    classes = [str(c) for c in checkpoint["classes"]]
    model = model_from_checkpoint(checkpoint, checkpoint_path, device)
    model.eval()
    options = {"mode": checkpoint["mode"], "image_size": tuple(checkpoint["image_size"]),
               "classes": classes}
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_TAG}-") as tmp:
        ds, unreadable, in_csv = _images_to_predict(Path(path), columns, img_dir, encoding,
                                                    Path(tmp), options)
    labelled = ds is not None and ds.targets[0] >= 0
    k = min(3, len(classes))
    head = ["file", "predicted", "probability"]
    head += [f"top{j}{suffix}" for j in range(1, k + 1) for suffix in ("", "_probability")]
    rows, correct, predicted = [head + (["true"] if labelled else []) + ["problem"]], 0, 0
    for start in range(0, len(ds) if ds is not None else 0, 256):
        good, images = [], []
        for i in range(start, min(start + 256, len(ds))):
            try:
                images.append(ds.load_image(i))  # (C, H, W) uint8, at the checkpoint's size
                good.append(i)
            except DatasetError as e:  # the image, not the row: named, and the others go on
                where = f"line {ds.rows[i].line}: " if in_csv else ""
                unreadable.append((ds.rows[i].file, where + str(e).removeprefix(
                    ds.where(i) + ": ")))
        if not good:
            continue
        probs = torch.softmax(model(to_input(torch.stack(images), device)), dim=1).cpu()  # (B, C)
        top_p, top_i = probs.topk(k, dim=1)
        for j, i in enumerate(good):
            cells = [ds.rows[i].file, classes[top_i[j, 0]], f"{top_p[j, 0]:.4f}"]
            cells += [c for c_i, q in zip(top_i[j].tolist(), top_p[j].tolist())
                      for c in (classes[c_i], f"{q:.4f}")]
            label = ds.rows[i].label
            cells += [classes[label]] if labelled else []
            rows.append(cells + [""])
            correct += labelled and label == top_i[j, 0].item()
        predicted += len(good)
    if not predicted:
        raise DatasetError(f"{path}: no image could be read, so nothing was predicted:\n"
                           + "\n".join(f"  {f!r}: {why}" for f, why in unreadable[:10]))
    blank = [""] * (len(head) - 1 + labelled)
    rows += [[file, *blank, why] for file, why in unreadable]
    if in_csv:  # the CSV's order (a folder's is by name): by line, which each problem begins with
        line_of = {ds.rows[i].file: ds.rows[i].line for i in range(len(ds))} if ds else {}
        rows[1:] = sorted(rows[1:], key=lambda row: int(row[-1].split()[1].rstrip(":"))
                          if row[-1] else line_of[row[0]])
    else:
        rows[1:] = sorted(rows[1:], key=lambda row: row[0])
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / "predictions.csv"
    move_aside(results_dir, ("predictions.csv",))  # only now: a refused --predict moves nothing
    write_atomic(out, csv_bytes(rows))
    print(f"Predicted {predicted} image{'s' if predicted != 1 else ''} with {checkpoint_path}: "
          f"{out}" + (f"\n{rows[1][0]}: {rows[1][1]} ({rows[1][2]})" if len(rows) == 2 else ""))
    if unreadable:
        warnings.warn(f"{len(unreadable)} of {predicted + len(unreadable)} images could not be "
                      "read; they have rows with an empty prediction and the reason in "
                      f"{out}:\n" + "\n".join(f"  {f!r}: {why}" for f, why in unreadable[:10])
                      + (f"\n  ... and {len(unreadable) - 10} more" if len(unreadable) > 10 else ""))
    if labelled:
        print(f"Accuracy: {100.0 * correct / predicted:.2f}% ({correct} of {predicted})")
    return out


def _images_to_predict(path: Path, columns: tuple[str, str], img_dir: str | None, encoding: str,
                       tmp: Path, options: dict) -> tuple[CsvImageDataset | None, list, bool]:
    """(the readable rows, or None; [(file, why)] of the others; whether they came from the
    user's CSV): one image file, every image file in a folder and below it (sorted by path), or
    the rows of a CSV (labelled when it has the label column)."""
    file_column, label_column = columns
    in_csv = not path.is_dir() and path.suffix.lower() not in image_extensions()
    if not in_csv:  # the listing is ours: its lines and name are not shown
        names = _image_files_below(path) if path.is_dir() else [path.name]
        if not names:
            raise DatasetError(f"{path}: no image files in this folder or below it")
        listing, folder = tmp / "images.csv", path if path.is_dir() else path.parent
        listing.write_bytes(csv_bytes([["File Name"]] + [[n] for n in names]))
        csv_path, kwargs = listing, {"file_column": "File Name", "label_column": None,
                                     "encoding": "utf-8"}
    else:
        read_csv(path, [file_column], encoding)  # a missing file or column: named errors
        header = pd.read_csv(path, nrows=0, encoding=encoding, sep=csv_separator(path, encoding))
        folder, csv_path = Path(img_dir) if img_dir else path.parent, path
        kwargs = {"file_column": file_column, "encoding": encoding,
                  "label_column": label_column if label_column in header.columns else None}
    _, _, problems = make_dataset(csv_path, folder, classes=options["classes"], **kwargs)
    unreadable = [(file, f"line {line}: {what}" if in_csv else what)
                  for line, file, what in problems]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped rows are listed by predict instead
            return CsvImageDataset(csv_path, folder, skip_bad_rows=True, **kwargs,
                                   **options), unreadable, in_csv
    except DatasetError:
        if len(unreadable) == 0:
            raise
        return None, unreadable, in_csv


def image_extensions() -> set[str]:
    """The file name endings of the formats Pillow can open (".png", ".jpg", ...)."""
    return {e for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _image_files_below(folder: Path) -> list[str]:
    """Every image file in folder and below, as sorted relative names, through linked subfolders
    that stay inside it (once each); a link that leads out of it is named on stderr and skipped."""
    extensions = image_extensions()
    root, names, seen, skipped = folder.resolve(), [], set(), []
    for here, dirs, files in os.walk(folder, followlinks=True):
        real = Path(here).resolve()
        if not real.is_relative_to(root) or real in seen:  # out of the folder, or a loop
            skipped += [] if real in seen else [Path(here)]
            dirs[:] = []
            continue
        seen.add(real)
        for name in files:
            file = Path(here) / name
            if file.suffix.lower() in extensions and file.is_file():
                names.append(file.relative_to(folder).as_posix())
    for link in skipped:
        print(f"train.py: warning: skipped {link}: a link to {link.resolve()}, outside {folder}",
              file=sys.stderr)
    return sorted(names)


def csv_bytes(rows: list[list]) -> bytes:
    """Rows as UTF-8 CSV text, quoted where a cell needs it (a comma or quote in a class name)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode()


def augmentation():
    """--augment: a small random rotation and shift, which suit small images of any class; no
    flips, which would mirror digits and letters."""
    from torchvision.transforms import v2  # imported only when asked for

    return v2.RandomAffine(degrees=10, translate=(0.1, 0.1))


def ensure_default_data(data_dir: Path) -> None:
    """Build the default data when it is missing; when another run is building it (two first runs
    at once), wait for that one to finish instead."""
    import fcntl

    import make_subset  # only needed the first time

    def complete() -> bool:
        return all(csv.is_file() for csv, _, _ in folder_layout(data_dir))

    for _ in range(5):  # another run may take the lock between our look and our build: again
        if complete():
            return
        try:
            lock = make_subset.open_lock(data_dir.parent / f".{data_dir.name}.lock",
                                         "pass another --data-dir")
        except make_subset.LockFileError as e:
            raise SystemExit(f"train.py: error: {e}") from None
        try:
            if make_subset.lock_or_holder(lock) is not None:  # another run builds it: wait
                print(f"Waiting for another run to finish building {data_dir}/ ...")
                fcntl.flock(lock, fcntl.LOCK_EX)
        finally:
            os.close(lock)  # make_subset takes the lock again itself
        if complete():
            return
        print(f"No dataset in {data_dir}/: building it with make_subset.py's defaults "
              "(bundled MNIST digits)")
        try:
            make_subset.main(["--out-dir", str(data_dir)])
            return
        except (FileExistsError, SystemExit) as e:
            if "another make_subset.py run" not in str(e):
                raise


def write_figures(history: History, model: torch.nn.Module, test_loader, results_dir: Path,
                  class_names: list[str]) -> None:
    """loss.png, accuracy.png and examples.png in results_dir; each figure closed once written."""
    import matplotlib.pyplot as plt  # here, not at the top: --help and --predict start faster

    from plot import plot_accuracy, plot_training_loss, show_examples

    epochs = len(history.train_acc)
    for figure in (
        plot_training_loss(history.minibatch_loss, epochs, len(history.minibatch_loss) // epochs,
                           results_dir),
        plot_accuracy(history.train_acc, history.valid_acc, results_dir),
        show_examples(model, test_loader, results_dir, class_names=class_names),
    ):
        plt.close(figure)


def error_message(e: DatasetError) -> str:
    """e's own message. One raised in a DataLoader worker (images decoded as batches are read,
    with --cache-mb 0 or over budget) arrives as torch's report of it, "Caught ImageLoadError in
    DataLoader worker process 0. Original Traceback ...", which ends with the message."""
    text = str(e)
    if text.startswith("Caught ") and "Original Traceback" in text:
        marker = f"{type(e).__name__}: "
        text = text[text.rfind(marker) + len(marker):].strip() if marker in text else text
    return text


@global_settings_kept()  # set_deterministic() is for this run, not for whoever calls main()
@sigterm_as_interrupt()
def main(argv: list[str] | None = None) -> History | Path:
    args = parse_args(argv)
    # The command as the user ran it (script path included), for the hints after a Ctrl-C.
    command = ["python", *(sys.argv if argv is None else ["train.py", *argv])]
    resume_command = shlex.join(command + ([] if args.resume else ["--resume"]))
    if "RANK" in os.environ:  # started by torchrun, whose own flags this process cannot see
        resume_command = f"your torchrun command, with {shlex.join(command[1:])} --resume"
    evaluate_command = shlex.join([c for c in command if c != "--resume"] + ["--evaluate"])
    hints = {"resume": resume_command, "evaluate": evaluate_command}
    checkpoint_path = Path(args.checkpoint or Path(args.results_dir) / "checkpoint.pt")
    results_dir, move = Path(args.results_dir), results_to_move(args, checkpoint_path)
    split_options = {"label_column": args.label_column, "file_column": args.file_column,
                     "seed": args.split_seed,
                     "valid_fraction": args.valid_fraction, "test_fraction": args.test_fraction,
                     "encoding": args.encoding}
    trained_split = checkpoint_path.resolve().parent / "split.csv"  # the checkpoint run's split
    if (args.resume or args.evaluate) and args.csv and args.split_column is None \
            and trained_split.is_file():  # refused before anything is moved or written
        _same_split_or_refuse(args.csv, trained_split, split_options)
    if args.predict is not None:  # needs the checkpoint and the new images, nothing else
        with results_folder(results_dir, move, True), finished_checkpoint(checkpoint_path,
                                                                          results_dir):
            checkpoint = read_checkpoint(checkpoint_path)
            refuse_other_model_flags(args, saved_config(checkpoint, checkpoint_path),
                                     checkpoint_path)
            return predict(args.predict, checkpoint, checkpoint_path, results_dir,
                           (args.file_column, args.label_column), args.img_dir, args.encoding,
                           pick_device(args.device, 0))

    with process_group(args) as (rank, world_size, device), \
            results_folder(results_dir, move, main_process=rank == 0), \
            finished_checkpoint(checkpoint_path, results_dir), \
            peers_answer(rank, args.dist_timeout):
        # One run at a time in a results folder; earlier results it would overwrite went aside.
        checkpoint = read_checkpoint(checkpoint_path) if args.resume or args.evaluate else None
        saved = None if checkpoint is None else saved_config(checkpoint, checkpoint_path)
        if saved is not None:
            refuse_other_model_flags(args, saved, checkpoint_path)
        if args.evaluate and args.csv is None and args.data_dir == DEFAULT_DATA_DIR and not all(
                csv.is_file() for csv, _, _ in folder_layout(DEFAULT_DATA_DIR)):
            raise SystemExit(f"train.py: error: --evaluate reads the test split of the data flags "
                             f"given, and none were: {checkpoint_path} was trained on "
                             f"{describe_data(saved.data_files)}. Pass the data flags of that run "
                             "(--csv and its column, encoding and --image-size flags, or "
                             "--data-dir)")
        datasets, loaders = prepare_data(args, results_dir, split_options, rank, world_size,
                                         device)
        config = run_config(args, datasets, saved)
        if args.evaluate:
            return evaluate(checkpoint, checkpoint_path, config, datasets[0].classes, loaders[2],
                            results_dir, device, rank)
        if args.resume:
            check_resume(saved, config, checkpoint_path)
        model, net, history = fit(args, config, datasets[0].classes, loaders, device, rank,
                                  checkpoint, checkpoint_path, results_dir, hints)
        finish(model, net, history, loaders[2], results_dir, datasets[0].classes, device, rank,
               checkpoint_path, hints)
        return history


@contextlib.contextmanager
def process_group(args: argparse.Namespace):
    """torchrun: one process per device, in a process group; yields (rank, world_size, device).
    Under plain `python train.py` nothing happens here: (0, 1, device)."""
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    device = pick_device(args.device, local_rank)
    if not ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        yield 0, 1, device
        return
    if args.batch_size % world_size:  # every rank stops alike, before any of them waits
        fits = args.batch_size // world_size * world_size or world_size
        if rank == 0:  # printed now: torchrun stops every rank as soon as one has exited
            print(f"train.py: error: --batch-size {args.batch_size} is the global batch, split "
                  f"between the {world_size} processes: pass a multiple of {world_size}, such as "
                  f"{fits}", file=sys.stderr, flush=True)
        else:
            time.sleep(2)  # give rank 0 the time to say why before torchrun stops it
        raise SystemExit(1)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            timeout=datetime.timedelta(minutes=args.dist_timeout))
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # only rank 0 prints (its errors still go to stderr)
    yield rank, world_size, device
    # Done (an error skips this: torchrun stops the others): wait for rank 0's files, since gloo
    # may abort a rank that leaves early, then leave the group on every path, --evaluate's too.
    dist.barrier()
    dist.destroy_process_group()


def prepare_data(args: argparse.Namespace, results_dir: Path, split_options: dict, rank: int,
                 world_size: int, device: torch.device) -> tuple[list[DecodedImages], tuple]:
    """The train, valid and test datasets, and the loaders (train, valid, test, train_eval)."""
    ddp = world_size > 1 or _distributed()
    sources = data_sources(args.csv, args.data_dir, args.img_dir, args.split_column,
                           results_dir / "split.csv", split_options, main_process=rank == 0,
                           keep_split=args.resume or args.evaluate)
    if ddp:
        dist.barrier()  # the others wait for rank 0's data (and split.csv)
    set_deterministic()
    set_all_seeds(args.seed)
    data_folder = args.data_dir if args.csv is None else args.img_dir or Path(args.csv).parent
    cache_dir = None if args.no_disk_cache or args.cache_mb == 0 else \
        Path(args.cache_dir or Path(data_folder) / ".cache")  # --cache-mb 0: no cache anywhere
    if cache_dir is not None:
        print(f"Disk cache of decoded images: {cache_dir} (--no-disk-cache: none)")
    # On a GPU, batches travel as uint8 and are scaled there (to_input): a quarter of the bytes
    dataset_kwargs = {"pixels": "uint8" if device.type == "cuda" else "float01",
                      "file_column": args.file_column, "label_column": args.label_column,
                      "mode": args.mode, "image_size": args.image_size,
                      "encoding": args.encoding, "num_classes": args.num_classes}
    loader_kwargs = {"num_workers": args.num_workers, "pin_memory": device.type == "cuda"}
    if args.persistent_workers and args.num_workers:
        loader_kwargs["persistent_workers"] = True  # else the loaders choose (plan_workers)
    datasets = decoded(make_datasets(sources, dataset_kwargs,
                                     augmentation() if args.augment else None),
                       cache_mb=args.cache_mb, cache_dir=cache_dir)  # each split's decoded images
    train_ds = datasets[0]
    if args.batch_size > len(train_ds) and not args.evaluate:
        print(f"train.py: error: --batch-size {args.batch_size} is larger than the "
              f"{len(train_ds)} training images (the last partial batch is dropped, so no "
              f"batch would be left); pass --batch-size {len(train_ds)} or less", file=sys.stderr)
        raise SystemExit(2)
    if ddp and cache_dir is not None:  # rank 0 fills the disk cache; the others read it
        if rank == 0:
            for ds in datasets:
                ds.preload(num_workers=args.num_workers)
        dist.barrier()
    batch_size = min(args.batch_size, len(train_ds)) if args.evaluate else args.batch_size
    loaders = loaders_from_datasets(  # --evaluate: test only
        *datasets, batch_size=batch_size, eval_batch_size=args.eval_batch_size, seed=args.seed,
        loader_kwargs=loader_kwargs)
    train_eval_loader = make_loader(train_ds, args.eval_batch_size, shuffle=False,
                                    drop_last=False, seed=args.seed, loader_kwargs=loader_kwargs)
    print(f"Data: {len(train_ds)} train, {len(datasets[1])} valid, {len(datasets[2])} test "
          f"images from {args.csv or args.data_dir + '/'}, read as {train_ds.mode} "
          f"({train_ds.mode_decision}); {train_ds.cache_decision}; "
          f"device {device}" + (f"; {world_size} processes" if world_size > 1 else ""))
    if args.num_workers:
        print(f"Workers (--num-workers {args.num_workers}): " + describe_workers(
            dict(zip(("train", "valid", "test"), loaders))))
    return datasets, (*loaders, train_eval_loader)


def describe_workers(loaders: dict[str, DataLoader]) -> str:
    """Where each loader makes its batches (loaders.plan_workers), loaders that agree named once:
    'train, valid, test: batches are gathered in this process ...'."""
    by_decision: dict[str, list[str]] = {}
    for name, loader in loaders.items():
        by_decision.setdefault(loader.workers_decision, []).append(name)
    return "; ".join(f"{', '.join(names)}: {decision}" for decision, names in by_decision.items())


def run_config(args: argparse.Namespace, datasets: list[DecodedImages],
               saved: RunConfig | None) -> RunConfig:
    """The run's settings from the flags and the data; a model or optimisation flag left out
    takes the checkpoint's value (saved: --resume, --evaluate), else its default."""
    def pick(flag: str, default):
        value = getattr(args, flag)
        return value if value is not None else getattr(saved, flag, default)

    train_ds, optimizer, schedule = datasets[0], pick("optimizer", "sgd"), pick("lr_schedule",
                                                                             "constant")
    momentum = pick("momentum", 0.0)
    if momentum and optimizer != "sgd":
        raise SystemExit(f"train.py: error: --momentum is SGD's; {optimizer} has its own betas "
                         "(leave --momentum out, or pass --optimizer sgd)")
    normalize = args.normalize if args.normalize is not None else \
        (saved is not None and saved.mean is not None)
    mean, std = channel_stats(train_ds, args.num_workers) if normalize else (None, None)
    return RunConfig(
        data=data_fingerprint([ds.csv_path for ds in datasets]), mode=train_ds.mode,
        image_size=list(train_ds.image_size), channels=train_ds.channels,
        num_classes=len(train_ds.classes), model=pick("model", "mlp"), hidden=pick("hidden", 100),
        pretrained=bool(pick("pretrained", False)), mean=mean, std=std, optimizer=optimizer,
        lr=pick("lr", DEFAULT_LR[optimizer]), momentum=momentum,
        weight_decay=pick("weight_decay", 0.01 if optimizer == "adamw" else 0.0),  # torch's
        lr_schedule=schedule, schedule_epochs=None if schedule == "constant" else args.epochs,
        batch_size=args.batch_size, seed=args.seed, augment=args.augment,
        data_files=[[str(ds.csv_path), ds.split[1] if ds.split else None, len(ds)]
                    for ds in datasets])


def channel_stats(ds: DecodedImages, num_workers: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ds's pixels in [0, 1], before any transform; exact: integer
    sums of the decoded uint8 pixels (from the cache; decoded one by one when it is off)."""
    cache = ds.preload(num_workers=num_workers)
    chunks = (cache[i:i + 1024] for i in range(0, len(ds), 1024)) if cache is not None else \
        (ds.load_image(i)[None] for i in range(len(ds)))
    sums, squares, n = [0] * ds.channels, [0] * ds.channels, 0
    for chunk in chunks:  # (B, C, H, W) uint8
        x = chunk.to(torch.int64).transpose(0, 1).reshape(ds.channels, -1)  # (C, B*H*W)
        sums = [a + b for a, b in zip(sums, x.sum(1).tolist())]
        squares = [a + b for a, b in zip(squares, (x * x).sum(1).tolist())]
        n += x.shape[1]
    mean = [s / n / 255 for s in sums]
    std = [((q * n - s * s) / n / n) ** 0.5 / 255 or 1.0 for s, q in zip(sums, squares)]
    return mean, std  # std 1.0 for a channel that is one colour: nothing to divide


def make_optimizer(config: RunConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    kind = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The learning rate schedule, stepped after every batch; None for a constant rate."""
    if config.lr_schedule == "constant":
        return None
    total = config.schedule_epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    # The rate alone is cycled: SGD without momentum stays without it.
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                               cycle_momentum=False)


def fit(args: argparse.Namespace, config: RunConfig, classes: list[str], loaders: tuple,
        device: torch.device, rank: int, checkpoint: dict | None, checkpoint_path: Path,
        results_dir: Path, hints: dict) -> tuple[torch.nn.Module, torch.nn.Module, History]:
    """Build the model, optimizer and schedule (or restore them, --resume), then train; returns
    (model, the model as trained (DDP's wrapper under torchrun), history)."""
    train_loader, valid_loader, test_loader, train_eval_loader = loaders
    try:
        model = config.build_model(load_pretrained=not args.resume).to(device)
    except PretrainedWeightsMissing as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValueError as e:  # an image too small for the model
        raise SystemExit(f"train.py: error: {e}") from None
    optimizer = make_optimizer(config, model.parameters())
    scheduler = make_scheduler(config, optimizer, len(train_loader))
    history = History()
    if args.resume:
        history = load_run(checkpoint, checkpoint_path, model, optimizer, scheduler, args.epochs)
    net = model
    if _distributed():
        device_ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids)
    save = None
    if rank == 0:
        save = functools.partial(save_run, results_dir, model, optimizer, scheduler, config,
                                 classes)
    try:
        train_model(net, args.epochs, train_loader, valid_loader, test_loader,
                    optimizer=optimizer, device=device, history=history,
                    train_eval_loader=train_eval_loader, logging_interval=args.logging_interval,
                    on_epoch_end=save, scheduler=scheduler, early_stopping=args.early_stopping)
    except ValueError as e:
        if "Expected more than 1 value per channel" not in str(e):
            raise
        raise SystemExit(f"train.py: error: --model {config.model}'s BatchNorm needs more than one "
                         "value per channel in training, but a batch of one image reaches a 1x1 "
                         "feature map: pass a larger --batch-size (per process under torchrun) or "
                         "--image-size") from None
    except KeyboardInterrupt as e:
        saved = len(history.train_acc)  # train_model extends history in place, saving each
        how = "Terminated (SIGTERM)" if isinstance(e, Terminated) else "Interrupted"
        print(f"\n{how} before the first epoch ended; nothing was saved." if not saved
              else f"\n{how}. The checkpoint of epoch {saved} is in {checkpoint_path}.\n"
              f"Resume with: {hints['resume']}")
        raise SystemExit(exit_status(e)) from None
    return model, net, history


def finish(model: torch.nn.Module, net: torch.nn.Module, history: History, test_loader,
           results_dir: Path, classes: list[str], device: torch.device, rank: int,
           checkpoint_path: Path, hints: dict) -> None:
    """After training: the best epoch's model on the test split beside the last one's, then the
    figures and reports (of the last epoch's model, as checkpoint.pt holds it)."""
    try:
        history.best_test_acc = best_model_test_accuracy(model, history, test_loader,
                                                         results_dir, device, rank)
        best, epochs = best_epoch(history), len(history.valid_acc)
        if best == epochs:
            print(f"Best epoch: the last, {best}, validation {history.valid_acc[-1]:.2f}% "
                  f"({results_dir / 'best.pt'} holds it too)")
        elif history.best_test_acc is not None:
            print(f"Best epoch: {best} of {epochs}, validation {history.valid_acc[best - 1]:.2f}%; "
                  f"its model ({results_dir / 'best.pt'}) scores {history.best_test_acc:.2f}% on "
                  f"test, the last epoch's {history.test_acc:.2f}%")
        cm = compute_confusion_matrix(net, test_loader, device, len(classes))  # on every rank
        if rank == 0:
            write_figures(history, model, test_loader, results_dir, classes)
            write_reports(model, cm, test_loader, results_dir, classes)
    except KeyboardInterrupt as e:
        how = "Terminated (SIGTERM)" if isinstance(e, Terminated) else "Interrupted"
        print(f"\n{how} after training: the checkpoint of epoch {len(history.train_acc)} "
              f"in {checkpoint_path} is complete; some figures or reports may be missing. "
              f"Write the reports with: {hints['evaluate']}")
        raise SystemExit(exit_status(e)) from None


@torch.no_grad()
def best_model_test_accuracy(model: torch.nn.Module, history: History, test_loader,
                             results_dir: Path, device: torch.device, rank: int) -> float | None:
    """Test accuracy of best.pt's model: the last epoch's when that was the best; read by rank 0
    (which wrote it) and sent to the others under torchrun. None without best.pt or a test."""
    best, path = best_epoch(history), results_dir / "best.pt"
    if not best or history.test_acc is None:
        return None
    if best == len(history.valid_acc):
        return history.test_acc
    best_model, state = copy.deepcopy(model), None
    if rank == 0 and path.is_file():
        try:
            state = torch.load(path, map_location=device, weights_only=True)["model"]
            best_model.load_state_dict(state)
        except Exception as e:  # noqa: BLE001  (damaged since it was written)
            state = None
            warnings.warn(f"{path} cannot be read ({type(e).__name__}), so the best epoch's model "
                          "was not tested; the last epoch's checkpoint.pt is whole")
    have = torch.tensor([rank != 0 or state is not None], dtype=torch.int64, device=device)
    if _distributed():
        dist.all_reduce(have, op=dist.ReduceOp.MIN)
    if not have.item():  # no best.pt (resumed from a version without it, or another folder's)
        return None
    if _distributed():
        for tensor in best_model.state_dict().values():
            dist.broadcast(tensor, src=0)
    return compute_accuracy(best_model, test_loader, device)


if __name__ == "__main__":
    # A script writes figure files and opens no window. Set for matplotlib, which is imported
    # only when figures are drawn.
    os.environ["MPLBACKEND"] = "Agg"
    warnings.formatwarning = lambda message, *args, **kwargs: f"train.py: warning: {message}\n"
    try:
        main()
    except DatasetError as e:  # bad rows or images: the message names them; no traceback
        sys.exit(f"train.py: error: {error_message(e)}")
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM anywhere else: reading data, --predict
        print(f"\ntrain.py: {'terminated' if isinstance(e, Terminated) else 'interrupted'}; every "
              "file is written whole or not at all, so none was left half-written", file=sys.stderr)
        sys.exit(exit_status(e))
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
