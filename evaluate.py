"""How good a model is: the lecture's helper_evaluation.py (compute_accuracy, set_all_seeds,
set_deterministic), the confusion matrix and the reports drawn from it, and a saved model on new
images (train.py --evaluate, --predict).

    from evaluate import compute_accuracy, set_all_seeds, set_deterministic
    set_all_seeds(123)
    set_deterministic()
    print(f"Test accuracy: {compute_accuracy(model, test_loader, device):.2f}%")

Under torchrun every rank passes its share of the batches and gets the accuracy over all of them.
compute_scores adds balanced accuracy, macro F1 and the loss, from the same confusion matrix.
Needs loaders.py, dataset.py and model.py beside it (for --predict's images and the model).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import functools
import io
import math
import os
import random
import stat
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from dataset import (CsvImageDataset, DatasetError, FileNames, column_positions, csv_columns,
                     make_dataset, read_csv, to_float01)
from loaders import TEMP_TAG, make_loader, write_atomic
from model import ModelConfig, build_model, non_finite, refuse_beyond_memory


@torch.no_grad()
def compute_accuracy(model: torch.nn.Module, data_loader, device: torch.device | str) -> float:
    """Accuracy in % over every batch of data_loader (over all ranks' shares under torchrun)."""
    model.eval()
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # correct, total
    for images, labels, *_ in data_loader:  # (images, labels) or (images, labels, weights)
        labels = labels.to(device, non_blocking=True)
        predictions = model(to_input(images, device)).argmax(dim=1)  # (B,)
        counts[0] += (predictions == labels).sum()
        counts[1] += labels.numel()
    correct, total = sum_over_ranks(counts).tolist()
    return 100.0 * correct / total


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


def to_input(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A batch on the device; uint8 scaled to float32 [0, 1] there, as the dataset would."""
    images = images.to(device, non_blocking=True)
    return images if images.is_floating_point() else to_float01(images)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    if distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_over_ranks(share: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Under torchrun, every rank's share (n_r, ...) of a split's outputs, on the CPU, joined in
    rank order (sum n_r, ...) on every rank, so that each computes the same figure from all of
    them; share itself in one process. A rank's empty share (a split with fewer images in its
    last batch than ranks) is left out. Every rank must call it (a collective)."""
    if not distributed():
        return share
    shares = [None] * dist.get_world_size()
    dist.all_gather_object(shares, share)  # pickled: the same bits, any backend (gloo, nccl)
    shares = [s for s in shares if len(s)] or shares[:1]
    return np.concatenate(shares) if isinstance(share, np.ndarray) else torch.cat(shares)


def whole_split_loader(loader):
    """A loader of every image of loader's split, in one process's order (rank 0 of 1), for a
    figure that rank 0 draws alone under torchrun; loader itself in one process."""
    if not distributed():
        return loader
    return make_loader(loader.dataset, loader.sampler.batch_size, shuffle=False, drop_last=False,
                       seed=loader.sampler.seed, rank=0, world_size=1)


@torch.no_grad()
def compute_confusion_matrix(model: torch.nn.Module, data_loader, device: torch.device | str,
                             num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, cm[true, predicted], over every batch of
    data_loader (and every rank's share under torchrun). Its accuracy: accuracy_of(cm)."""
    model.eval()
    cm = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    for images, labels, *_ in data_loader:
        predictions = model(to_input(images, device)).argmax(dim=1)  # (B,)
        cm += torch.bincount(labels.to(device) * num_classes + predictions, minlength=cm.numel())
    return sum_over_ranks(cm).view(num_classes, num_classes).cpu()


def accuracy_of(cm: torch.Tensor) -> float:
    """Accuracy in % from a confusion matrix: the same integers as compute_accuracy counts."""
    return 100.0 * cm.diagonal().sum().item() / cm.sum().item()


def balanced_accuracy_of(cm: torch.Tensor) -> float:
    """Balanced accuracy in %: the mean recall (share of its images found) of the classes present
    (those with images in cm's split: a true row that is not all 0), each class counting alike."""
    support = cm.sum(dim=1)  # (K,) images of each true class
    present = support > 0
    recall = cm.diagonal()[present].double() / support[present].double()
    return 100.0 * recall.mean().item()


def macro_f1_of(cm: torch.Tensor) -> float:
    """Macro F1 in [0, 1]: the mean over classes of 2TP / (2TP + FP + FN), of the classes that are
    true or predicted at least once in cm (scikit-learn's f1_score(average="macro"))."""
    both = (cm.sum(dim=1) + cm.sum(dim=0)).double()  # (K,) 2TP + FP + FN: true + predicted
    seen = both > 0
    return (2 * cm.diagonal()[seen].double() / both[seen]).mean().item()


FAR_BELOW = 0.25  # missed_classes: a recall under this share of the classes' median recall


def missed_classes(cm: torch.Tensor) -> tuple[list[int], float]:
    """The classes the model misses in cm's split (cm[true, predicted] counts): those with images
    whose recall is 0 or under FAR_BELOW times the median recall of the classes with images,
    worst first (lowest recall, then most images); and that median, in [0, 1]. A quarter of the
    median: the lecture's default run (recalls 0.64 to 1.00, median 0.76) names none, a model
    that never says a class names it."""
    support = cm.sum(dim=1)  # (K,) images of each true class
    present = torch.nonzero(support > 0).flatten()
    if len(present) == 0:
        return [], 0.0
    recall = cm.diagonal().double() / support.clamp_min(1).double()  # (K,)
    median = float(np.median(recall[present].numpy()))
    missed = [k for k in present.tolist() if recall[k] == 0 or recall[k] < FAR_BELOW * median]
    return sorted(missed, key=lambda k: (recall[k].item(), -support[k].item())), median


@torch.no_grad()
def compute_scores(model: torch.nn.Module, data_loader, device: torch.device | str,
                   num_classes: int) -> dict[str, float]:
    """One pass over data_loader (all ranks' shares under torchrun): accuracy and balanced
    accuracy in %, macro F1 in [0, 1] (from one confusion matrix), and loss, the mean
    cross-entropy per image (unweighted)."""
    model.eval()
    cm = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)  # summed per image
    for images, labels, *_ in data_loader:  # (images, labels) or (images, labels, weights)
        labels = labels.to(device, non_blocking=True)
        logits = model(to_input(images, device))  # (B, num_classes)
        cm += torch.bincount(labels * num_classes + logits.argmax(dim=1), minlength=cm.numel())
        # cross-entropy summed per image, written out: not through F.cross_entropy, the
        # training loss's function, which a test may replace
        loss -= torch.log_softmax(logits.double(), dim=1).gather(1, labels[:, None]).sum()
    cm = sum_over_ranks(cm).view(num_classes, num_classes).cpu()
    return {"accuracy": accuracy_of(cm), "balanced_accuracy": balanced_accuracy_of(cm),
            "macro_f1": macro_f1_of(cm), "loss": sum_over_ranks(loss).item() / cm.sum().item()}


def average_precision(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """One class's average precision: the mean, over its positives, of the precision among the
    images ranked at or above each (scores (N,) descending; ties in input order); nan without a
    positive."""
    order = torch.sort(scores, descending=True, stable=True).indices
    hits = positives[order].double()  # (N,) 1 where the image at that rank is a positive
    if hits.sum() == 0:
        return float("nan")
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return (precision * hits).sum().item() / hits.sum().item()


def mean_average_precision(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """The mean of average_precision over the classes with a positive (0 when none has)."""
    aps = [average_precision(probs[:, k], targets[:, k] > 0.5) for k in range(probs.shape[1])]
    aps = [a for a in aps if a == a]
    return sum(aps) / len(aps) if aps else 0.0


def alike_average_precision(targets: torch.Tensor) -> float:
    """The mean average precision a model that scores every image alike can expect: each class's
    share of positives (its average precision over a random order), averaged over the classes with
    a positive, as mean_average_precision averages; targets (N, C). 0 when none has."""
    positives = (targets > 0.5).double().mean(dim=0) if len(targets) else torch.zeros(0)  # (C,)
    present = positives[positives > 0]
    return present.mean().item() if len(present) else 0.0


def example_f1(predicted: torch.Tensor, targets: torch.Tensor) -> float:
    """Example-based F1: per image 2|P and T| / (|P| + |T|) (1 when both are empty), averaged."""
    p, t = predicted.bool(), targets > 0.5  # (N, C)
    both = (p & t).sum(1).double()
    size = (p.sum(1) + t.sum(1)).double()
    per_image = torch.where(size > 0, 2 * both / size.clamp_min(1), torch.ones_like(size))
    return per_image.mean().item() if len(per_image) else 0.0


MULTI_LABEL_REPORT = "multi_label_report.csv"


def multi_label_report(probs: torch.Tensor, targets: torch.Tensor, classes: list[str],
                       threshold: float) -> str:
    """A CSV: per class its support (images tagged), precision, recall and F1 at threshold, and
    average precision (empty without a positive); probs, targets (N, C)."""
    rows = ["class,support,precision,recall,f1,average_precision"]
    predicted, truth = probs >= threshold, targets > 0.5
    for k, name in enumerate(classes):
        tp = int((predicted[:, k] & truth[:, k]).sum())
        said, support = int(predicted[:, k].sum()), int(truth[:, k].sum())
        precision = tp / said if said else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        ap = average_precision(probs[:, k], truth[:, k])
        quoted = '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\n') else name
        rows.append(f"{quoted},{support},{precision:.4f},{recall:.4f},{f1:.4f},"
                    + ("" if ap != ap else f"{ap:.4f}"))
    return "\n".join(rows) + "\n"


# ---- regression (--task regression): figures in the targets' own units ------------------------

REGRESSION_REPORT = "regression_report.csv"


@torch.no_grad()
def regression_outputs(model: torch.nn.Module, loader, device: torch.device | str,
                       mean: list[float], std: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(predictions (N, T), targets (N, T)) of every batch, float64 NumPy in the targets' own
    units: the model's standardised outputs times std plus mean (the train split's). Under
    torchrun each rank measures its own share and gets every rank's (gather_over_ranks), in rank
    order: every rank must call it."""
    model.eval()
    predicted, targets = [], []
    for images, labels, *_ in loader:
        predicted.append(model(to_input(images, device)).double().cpu().numpy())  # (B, T)
        targets.append(labels.double().cpu().numpy().reshape(len(labels), -1))
    if not predicted:
        predicted, targets = np.zeros((0, len(mean))), np.zeros((0, len(mean)))
    else:
        predicted = np.concatenate(predicted) * np.asarray(std) + np.asarray(mean)
        targets = np.concatenate(targets)
    return gather_over_ranks(predicted), gather_over_ranks(targets)


def regression_scores(predicted: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per target (arrays (T,)), float64: rmse and mae in the target's units, and r2, one minus
    the squared error over the squared spread round the split's own mean (NaN where the targets
    do not vary); predicted, targets (N, T)."""
    error = predicted - targets
    spread = ((targets - targets.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(spread > 0, 1.0 - (error ** 2).sum(axis=0) / spread, np.nan)
    return {"rmse": np.sqrt((error ** 2).mean(axis=0)), "mae": np.abs(error).mean(axis=0),
            "r2": r2}


def regression_report(predicted: np.ndarray, targets: np.ndarray, names: list[str],
                      train_mean: list[float]) -> str:
    """A CSV: per target its count, RMSE, MAE and R2, and the RMSE of predicting the train
    split's mean for every image (the figure a model must beat); predicted, targets (N, T)."""
    scores = regression_scores(predicted, targets)
    baseline = np.sqrt(((targets - np.asarray(train_mean)) ** 2).mean(axis=0))
    rows = ["target,count,rmse,mae,r2,rmse_of_train_mean"]
    for t, name in enumerate(names):
        quoted = '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\n') else name
        r2 = scores["r2"][t]
        rows.append(f"{quoted},{len(targets)},{scores['rmse'][t]:.6g},{scores['mae'][t]:.6g},"
                    + ("" if r2 != r2 else f"{r2:.4f}") + f",{baseline[t]:.6g}")
    return "\n".join(rows) + "\n"


class RunError(Exception):
    """What stops a train.py run with a sentence: train.main turns it into "train.py: error:
    <message>" and the exit status (1, or 2 for a flag), once; None: printed already, or none."""

    def __init__(self, message: str | None, status: int = 1) -> None:
        super().__init__(message or "")
        self.message, self.status = message, status


# ---- reports of the test split: files a person opens -----------------------------------------

REPORT_FILES = ("confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "mistakes.png")


def csv_bytes(rows: list[list]) -> bytes:
    """Rows as UTF-8 CSV text, quoted where a cell needs it (a comma or quote in a class name)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode()


def per_class_rows(cm: torch.Tensor, names: list[str]) -> list[list]:
    """per_class.csv: support, correct, recall and precision of each class; empty where a class
    has no images (recall) or no predictions (precision)."""
    support, correct, predicted = cm.sum(1).tolist(), cm.diagonal().tolist(), cm.sum(0).tolist()
    rows = [["class", "support", "correct", "recall", "precision"]]
    for name, n, ok, p in zip(names, support, correct, predicted):
        recall, precision = (f"{ok / d:.4f}" if d else "" for d in (n, p))
        rows.append([name, n, ok, recall, precision])
    return rows


def write_reports(model: torch.nn.Module, cm: torch.Tensor, test_loader, results_dir: Path,
                  class_names: list[str]) -> None:
    """From the test split: confusion_matrix.csv and .png, per_class.csv and mistakes.png."""
    import matplotlib.pyplot as plt  # here, not at the top: --help and --predict start faster

    from plot import plot_confusion_matrix, show_mistakes

    names = [str(c) for c in class_names]
    rows = [["true \\ predicted", *names]] + [[n, *row] for n, row in zip(names, cm.tolist())]
    write_atomic(results_dir / "confusion_matrix.csv", csv_bytes(rows))
    write_atomic(results_dir / "per_class.csv", csv_bytes(per_class_rows(cm, names)))
    # Under torchrun, the figure of mistakes looks at every test image, on this rank alone.
    whole = make_loader(test_loader.dataset, test_loader.sampler.batch_size, shuffle=False,
                        drop_last=False, seed=test_loader.sampler.seed, rank=0, world_size=1)
    for figure in (plot_confusion_matrix(cm, names, results_dir),
                   show_mistakes(model, whole, results_dir, class_names=names)):
        plt.close(figure)


def evaluate_model(model: torch.nn.Module, test_loader, classes: list[str], results_dir: Path,
                   device: torch.device, rank: int, *,
                   test_line: Callable[[float, float], str] | None = None,
                   missed: Callable[[torch.Tensor], list[str]] | None = None) -> float:
    """--evaluate: the test accuracy (printed and returned) and, on rank 0, the reports; one pass
    over the test split, the accuracy read from the confusion matrix. test_line(accuracy,
    balanced_accuracy): the printed line (default "Test accuracy: 78.12%"); missed(cm): lines
    printed on rank 0 after the reports (train.py: the classes the model misses), as a training
    run prints them."""
    cm = compute_confusion_matrix(model, test_loader, device, len(classes))
    test_acc = accuracy_of(cm)
    print(test_line(test_acc, balanced_accuracy_of(cm)) if test_line is not None
          else f"Test accuracy: {test_acc:.2f}%")
    if rank == 0:
        results_dir.mkdir(parents=True, exist_ok=True)
        write_reports(model, cm, test_loader, results_dir, classes)
        for line in missed(cm) if missed is not None else []:
            print(line)
    return test_acc


# ---- a saved model: train.py's checkpoints, read with weights_only=True ------------------------

CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "history", "config", "rng")


def read_checkpoint(path: Path) -> dict:
    """torch.load(weights_only=True), to the CPU, of a checkpoint train.py wrote; anything else
    (damaged, foreign, unreadable, a FIFO: not waited on) is one sentence, not torch's internals."""
    try:  # O_NONBLOCK: opening a FIFO would wait for a writer forever
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise RunError(f"{path} cannot be read ({e.strerror}): pass a --checkpoint this user may "
                       "read, or ask its owner for read access") from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunError(f"{path} is not a regular file (a FIFO, device or socket): pass the "
                           "--checkpoint file of a train.py run")
        try:
            checkpoint = torch.load(f, map_location="cpu", weights_only=True)
            missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint]
        except Exception as e:  # noqa: BLE001  (torch raises many kinds for a damaged file)
            missing, checkpoint = [f"readable content ({type(e).__name__})"], None
    if missing:
        raise RunError(f"{path} is damaged or not a checkpoint of train.py (no "
                       f"{', '.join(missing)}). Start afresh without --resume (move the file away "
                       "first, to keep it), or pass the right --checkpoint / --results-dir.")
    return checkpoint


def saved_model_config(checkpoint: dict, path: Path) -> ModelConfig:
    """The checkpoint's ModelConfig; a config that train.py did not write (edited, or from another
    program) is one sentence."""
    try:
        return ModelConfig.from_checkpoint(checkpoint["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{path}'s settings (its 'config') are not those train.py writes "
                       f"({type(e).__name__}: {e}); pass the --checkpoint of a train.py "
                       "run") from None


def model_from_checkpoint(checkpoint: dict, path: Path, device: torch.device) -> torch.nn.Module:
    """The checkpoint's model, rebuilt from its config, with its weights; one sentence when the
    two do not fit (an edited or foreign file)."""
    try:
        model = build_model(saved_model_config(checkpoint, path), load_weights=False)
        model.load_state_dict(checkpoint["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise RunError(f"{path}'s weights do not fit the model its config names "
                       f"({type(e).__name__}: {first}); pass the --checkpoint of a train.py "
                       "run") from None
    if bad := non_finite(model.state_dict()):  # a diverged run's, or an edited file
        raise RunError(f"{path}'s weights hold NaN or infinite values ({bad[0]}): its predictions "
                       "would mean nothing; pass the --checkpoint of a run that trained well")
    return model.to(device)


@torch.no_grad()
def saved_model_accuracy(model: torch.nn.Module, path: Path, test_loader,
                         device: torch.device, rank: int) -> float | None:
    """Test accuracy of the weights in `path` (best.pt) put into a copy of model; read by rank 0
    (which wrote it) and sent to the others under torchrun. None when it cannot be read."""
    best_model = saved_model(model, path, device, rank)
    return None if best_model is None else compute_accuracy(best_model, test_loader, device)


@torch.no_grad()
def saved_model(model: torch.nn.Module, path: Path, device: torch.device,
                rank: int) -> torch.nn.Module | None:
    """A copy of model holding the weights in `path` (best.pt); read by rank 0 (which wrote it)
    and sent to the others under torchrun. None, on every rank, when it cannot be read."""
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
    if distributed():
        dist.all_reduce(have, op=dist.ReduceOp.MIN)
    if not have.item():  # no best.pt (resumed from a version without it, or another folder's)
        return None
    if distributed():
        for tensor in best_model.state_dict().values():
            dist.broadcast(tensor, src=0)
    return best_model


# ---- --predict: the classes of new images ------------------------------------------------------

PREDICT_BATCH = 256  # images decoded and predicted at a time: memory stays small for any folder
Unreadable = tuple[str, int, str]  # (file, CSV line or 0 for a folder's image, why)


class ToPredict(NamedTuple):
    """The images --predict was asked for: the readable ones (a dataset, or None when none is),
    the others as [(file, line, why)], every one as [(line or 0, file)] in the order that
    predictions.csv keeps (the table's rows; a folder's files by name), and whether the lines are
    those of the user's table (else a folder's listing, whose lines are not shown)."""
    ds: CsvImageDataset | None
    unreadable: list[Unreadable]
    listed: list[tuple[int, str]]
    in_csv: bool

    @classmethod
    def of(cls, ds: CsvImageDataset) -> ToPredict:
        """A dataset built elsewhere (such as the unlabelled test rows of a training table): its
        rows, and the bad rows it skipped as unreadable."""
        bad = [(file, line, f"line {line}: {what}") for line, file, what in ds.problems]
        listed = sorted([(row.line, row.file) for row in ds.rows]
                        + [(line, file) for file, line, _ in bad])
        return cls(ds, bad, listed, True)


@torch.no_grad()
def predict(path: str, checkpoint: dict, checkpoint_path: Path, results_dir: Path, *,
            columns: tuple[str, str], img_dir: str | None, encoding: str,
            device: torch.device, submission: tuple[str, str] | None = None,
            file_names: tuple[str, str] = ("", ""), header: bool = True) -> Path:
    """--predict: the checkpoint's classes for one image, the images of a folder or those of a
    CSV, read in the checkpoint's mode and size, into results_dir/predictions.csv (written whole,
    or not at all). An image that cannot be read is named in a warning and gets a row with an
    empty prediction and the reason; none readable at all is an error.

    submission=(ID, LABEL) (--predict-columns): a table's ids are read from its ID column (its
    LABEL column, placeholders in a sample submission, is not read), and predictions.csv holds
    exactly those two columns: write_predictions. file_names: (--file-prefix, --file-suffix): a
    table's files are prefix + id + suffix and its ids are written as the table has them; a
    folder's ids are written without the suffix."""
    if "classes" not in checkpoint:
        raise RunError(f"{checkpoint_path} does not say its classes, mode and image size (it "
                       "predates them): train again to use --predict")
    classes = [str(c) for c in checkpoint["classes"]]
    config = saved_model_config(checkpoint, checkpoint_path)  # an edited file's sizes: refused
    if len(classes) != config.num_classes:  # (a prediction with no name, or no memory for it)
        raise RunError(f"{checkpoint_path} names {len(classes)} classes but its model has "
                       f"{config.num_classes} outputs; pass the --checkpoint of a train.py run")
    try:
        refuse_beyond_memory(f"{PREDICT_BATCH} images of {config.channels}x{config.image_size[0]}x"
                             f"{config.image_size[1]} ({checkpoint_path}'s size)", PREDICT_BATCH
                             * config.channels * math.prod(config.image_size), "pass the "
                             "--checkpoint of a train.py run")
    except ValueError as e:
        raise RunError(str(e)) from None
    model = model_from_checkpoint(checkpoint, checkpoint_path, device).eval()
    options = {"mode": checkpoint["mode"], "image_size": tuple(checkpoint["image_size"]),
               "classes": classes, "resize": checkpoint.get("resize", "squish")}  # old: squish
    delim = checkpoint["config"].get("label_delim")  # a --label-delim run's: tags, not a class
    if delim is not None:
        options["label_delim"] = delim
    regression = None  # a --task regression run's: numbers, not a class
    if checkpoint["config"].get("task") == "regression":
        options["task"] = "regression"
        regression = (checkpoint["config"]["target_mean"], checkpoint["config"]["target_std"])
    if submission is not None:  # the LABEL column is what we fill in, not a truth
        columns = (submission[0], None)
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_TAG}-") as tmp:
        try:
            found = images_to_predict(Path(path), columns, img_dir, encoding, Path(tmp), options,
                                      file_names, header)
        except DatasetError as e:  # the ids are in --predict-columns ID, not --file-column
            if submission is None or not str(e).startswith(f"{path}: no column(s) "):
                raise
            raise DatasetError(f"{path}: no column {columns[0]!r} of ids; the columns are "
                               f"{csv_columns(Path(path), encoding)}: pass --predict-columns "
                               "ID,LABEL with the ids' column first") from None
    return write_predictions(model, found, classes, device, results_dir, source=Path(path),
                             model_path=checkpoint_path, submission=submission,
                             file_suffix="" if found.in_csv else file_names[1],
                             multi_label=None if delim is None else
                             (delim, checkpoint["config"].get("threshold", 0.5)),
                             regression=regression)


@torch.no_grad()
def write_predictions(model: torch.nn.Module, found: ToPredict, classes: list[str],
                      device: torch.device, results_dir: Path, *, source: Path, model_path: Path,
                      submission: tuple[str, str] | None = None, file_suffix: str = "",
                      multi_label: tuple[str, float] | None = None,
                      regression: tuple[list[float], list[float]] | None = None) -> Path:
    """Predict found's images (ToPredict.of(ds) for a dataset of your own) and write
    results_dir/predictions.csv (an earlier one moves to version_N), printing what
    report_predictions says; returns its path. Without submission: prediction_table's columns.
    With submission=(ID, LABEL): exactly those two columns, a row for every image (submission_table;
    one that cannot be read is an error, and nothing is written). source and model_path name the
    images and the model in messages; file_suffix: taken off a file's name to make its id.
    multi_label=(delimiter, threshold) of a --label-delim model: multi_label_rows' columns.
    regression=(mean, std) of a --task regression model: regression_rows' columns."""
    unreadable = list(found.unreadable)
    model.eval()
    rows_of = predicted_rows if multi_label is None else functools.partial(
        multi_label_rows, delim=multi_label[0], threshold=multi_label[1])
    if regression is not None:
        rows_of = functools.partial(regression_rows, mean=regression[0], std=regression[1])
    predicted = [] if found.ds is None else rows_of(model, found.ds, classes, device,
                                                    unreadable, found.in_csv)
    if not predicted:
        reasons = {why.partition(": ")[2] for _, _, why in unreadable}  # without "line N"
        reason = reasons.pop() if len(reasons) == 1 else ""
        placeholders = len(unreadable) > 1 and ("is not one of the classes" in reason
                                                or "not among the classes" in reason)  # one
        # label (a class, or a --label-delim model's tags) on every row
        raise DatasetError(f"{source}: no image could be read, so nothing was predicted:\n"
                           + "\n".join(f"  {f!r}: {why}" for f, _, why in unreadable[:10])
                           + ("\nA sample submission's placeholder labels? --predict-columns "
                              "ID,LABEL does not read the LABEL column, and writes a submission"
                              if placeholders else ""))
    labelled = submission is None and found.ds.targets[0] >= 0
    if submission is None and regression is not None:  # each target's value, by its name
        head = ["file", *classes] + ([f"true_{c}" for c in classes] if labelled else [])
        rows = prediction_table(predicted, unreadable, len(classes), found.in_csv, labelled,
                                file_suffix, head=head)
    elif submission is None and multi_label is not None:
        head = ["file", "predicted", *classes] + (["true"] if labelled else [])
        rows = prediction_table(predicted, unreadable, len(classes), found.in_csv, labelled,
                                file_suffix, head=head)
    elif submission is None:
        rows = prediction_table(predicted, unreadable, len(classes), found.in_csv, labelled,
                                file_suffix)
    else:
        rows = submission_table(predicted, unreadable, found.listed, submission, source,
                                file_suffix)
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / "predictions.csv"
    move_aside(results_dir, ("predictions.csv",))  # only now: a refused --predict moves nothing
    write_atomic(out, csv_bytes(rows))
    report_predictions(out, rows, model_path, unreadable,
                       labelled and multi_label is None and regression is None, classes)
    if labelled and regression is not None:
        values = np.array([[float(v) for v in cells[1:]] for _, _, cells in predicted])  # (N, 2T)
        scores = regression_scores(values[:, :len(classes)], values[:, len(classes):])
        print("; ".join(f"{name}: RMSE {scores['rmse'][t]:.4g}, MAE {scores['mae'][t]:.4g}"
                        for t, name in enumerate(classes)) + f" ({len(predicted)} images)")
        truth = values[:, len(classes):]
        same = [t for t in range(len(classes))
                if len(truth) > 1 and (truth[:, t] == truth[0, t]).all()]
        if same:  # a sample submission's placeholders (0.0 on every row) scored as the truth
            warnings.warn("every image's true " + " and ".join(
                f"{classes[t]!r} is {truth[0, t]:g}" for t in same) + ": if the table holds a "
                "sample submission's placeholders, these RMSE and MAE mean nothing "
                "(--predict-columns ID,TARGET does not read them, and writes a submission)")
    if labelled and multi_label is not None:
        probs = torch.tensor([[float(p) for p in cells[2:2 + len(classes)]]
                              for _, _, cells in predicted])  # (N, C)
        truth = [set(filter(None, cells[-1].split(multi_label[0]))) for _, _, cells in predicted]
        targets = torch.tensor([[float(c in tags) for c in classes] for tags in truth])  # (N, C)
        exact = sum(set(filter(None, cells[1].split(multi_label[0]))) == tags
                    for (_, _, cells), tags in zip(predicted, truth))
        print(f"Mean average precision: {mean_average_precision(probs, targets):.4f}; exact tag "
              f"sets: {100.0 * exact / len(predicted):.2f}% ({exact} of {len(predicted)})")
        if len(truth) > 1 and all(tags == truth[0] for tags in truth):  # Planet's "clear primary"
            warnings.warn(f"every image's true tags are {multi_label[0].join(sorted(truth[0]))!r}: "
                          "if the label column holds a sample submission's placeholders, these "
                          "figures mean nothing (--predict-columns ID,LABEL does not read it, and "
                          "writes a submission)")
    endings = {Path(file).suffix for _, file in found.listed}  # a folder's: ".png", say
    if submission and not found.in_csv and not file_suffix and len(endings) == 1:
        ending = endings.pop()
        print(f"The ids keep their {ending}: pass --file-suffix {ending} for ids without it, as a "
              "sample_submission.csv has them")
    return out


def readable_batches(ds: CsvImageDataset, unreadable: list[Unreadable], in_csv: bool):
    """Yields (indices, images (B, C, H, W) uint8 at the checkpoint's size) of ds's images that
    decode, PREDICT_BATCH rows at a time; an image that does not decode is added to `unreadable`
    with its reason (the image, not the row: named, and the others go on)."""
    for start in range(0, len(ds), PREDICT_BATCH):
        good, images = [], []
        for i in range(start, min(start + PREDICT_BATCH, len(ds))):
            try:
                images.append(ds.load_image(i))  # (C, H, W) uint8
                good.append(i)
            except DatasetError as e:
                row, why = ds.rows[i], str(e).removeprefix(ds.where(i) + ": ")
                unreadable.append((row.file, row.line, f"line {row.line}: {why}" if in_csv
                                   else why))
        if good:
            yield good, torch.stack(images)


def predicted_rows(model: torch.nn.Module, ds: CsvImageDataset, classes: list[str],
                   device: torch.device, unreadable: list[Unreadable], in_csv: bool) -> list[tuple]:
    """(file, CSV line, cells) of every image of ds that decodes: the top-k classes and their
    probabilities (and the true class when labelled). An image that does not decode is added to
    `unreadable` with its reason, and the others go on."""
    k, labelled, out = min(3, len(classes)), ds.targets[0] >= 0, []
    for good, images in readable_batches(ds, unreadable, in_csv):
        probs = torch.softmax(model(to_input(images, device)), dim=1).cpu()  # (B, C)
        top_p, top_i = probs.topk(k, dim=1)  # (B, k)
        for j, i in enumerate(good):
            row = ds.rows[i]
            cells = [row.file, classes[top_i[j, 0]], f"{top_p[j, 0]:.4f}"]
            cells += [c for c_i, q in zip(top_i[j].tolist(), top_p[j].tolist())
                      for c in (classes[c_i], f"{q:.4f}")]
            cells += [classes[row.label]] if labelled else []
            out.append((row.file, row.line, cells))
    return out


@torch.no_grad()
def multi_label_rows(model: torch.nn.Module, ds: CsvImageDataset, classes: list[str],
                     device: torch.device, unreadable: list[Unreadable], in_csv: bool, *,
                     delim: str, threshold: float) -> list[tuple]:
    """predicted_rows of a --label-delim model: (file, CSV line, cells), the cells: file, the
    tags whose probability reaches threshold joined by delim, each class's probability (a
    sigmoid each), and the true tags when labelled."""
    labelled, out = ds.targets[0] >= 0, []
    join = delim if delim.strip() else " "
    for good, images in readable_batches(ds, unreadable, in_csv):
        probs = torch.sigmoid(model(to_input(images, device)).float()).cpu()  # (B, C)
        for j, i in enumerate(good):
            row = ds.rows[i]
            cells = [row.file, join.join(c for c, p in zip(classes, probs[j].tolist())
                                         if p >= threshold)]
            cells += [f"{p:.4f}" for p in probs[j].tolist()]
            cells += [join.join(c for c, t in zip(classes, ds.rows.multi_hot[i].tolist()) if t)] \
                if labelled else []
            out.append((row.file, row.line, cells))
    return out


@torch.no_grad()
def regression_rows(model: torch.nn.Module, ds: CsvImageDataset, classes: list[str],
                    device: torch.device, unreadable: list[Unreadable], in_csv: bool, *,
                    mean: list[float], std: list[float]) -> list[tuple]:
    """predicted_rows of a --task regression model: (file, CSV line, cells), the cells: file,
    each target's predicted value in its own units (the standardised output times the train
    split's std plus its mean), and the true values when labelled."""
    labelled, out = ds.targets[0] >= 0, []
    for good, images in readable_batches(ds, unreadable, in_csv):
        outputs = model(to_input(images, device)).double().cpu().numpy()  # (B, T)
        values = outputs * np.asarray(std) + np.asarray(mean)
        for j, i in enumerate(good):
            row = ds.rows[i]
            cells = [row.file] + [repr(float(v)) for v in values[j]]
            cells += [repr(float(v)) for v in ds.rows.values[i]] if labelled else []
            out.append((row.file, row.line, cells))
    return out


def prediction_table(predicted: list[tuple], unreadable: list[Unreadable], num_classes: int,
                     in_csv: bool, labelled: bool, file_suffix: str = "",
                     head: list[str] | None = None) -> list[list]:
    """predictions.csv's rows, header first: file (the id: as the table has it, a folder's path
    without file_suffix), predicted, probability, the top 3 with theirs, true (when labelled) and
    problem. By CSV line for a CSV (its order), by name for a folder; unreadable rows among them."""
    if head is None:  # else the columns given (multi_label_rows')
        k = min(3, num_classes)
        head = ["file", "predicted", "probability"]
        head += [f"top{j}{suffix}" for j in range(1, k + 1) for suffix in ("", "_probability")]
        head += ["true"] if labelled else []
    rows = [(line if in_csv else file, [without_suffix(file, file_suffix)] + cells[1:] + [""])
            for file, line, cells in predicted]
    rows += [(line if in_csv else file,
              [without_suffix(file, file_suffix)] + [""] * (len(head) - 1) + [why])
             for file, line, why in unreadable]
    return [head + ["problem"]] + [cells for _, cells in sorted(rows, key=lambda r: r[0])]


def submission_table(predicted: list[tuple], unreadable: list[Unreadable],
                     listed: list[tuple[int, str]], columns: tuple[str, str], source: Path,
                     file_suffix: str = "") -> list[list]:
    """predictions.csv as a submission (Kaggle's sample_submission.csv form): the header ID,LABEL,
    then for every image asked for, in `listed`'s order, its id and the predicted class name. A
    row left out would be a silent hole, so an image that cannot be read is an error naming it."""
    named = {file: cells[1] for file, _, cells in predicted}
    missing = [(line, file) for line, file in listed if file not in named]
    if missing:
        why = {file: reason for file, _, reason in unreadable}
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DatasetError(
            f"{source}: {len(missing)} of {len(listed)} images could not be read, so no "
            "submission was written (it would lack their rows):\n"
            + "\n".join(f"  {file!r}: {why.get(file, 'not read')}" for _, file in missing[:10])
            + f"{more}\nReplace or remove them; without --predict-columns, predictions.csv "
            "holds every readable image and the reason for each other")
    return [list(columns)] + [[without_suffix(file, file_suffix), named[file]]
                              for _, file in listed]


def without_suffix(file: str, suffix: str) -> str:
    """The id of a file named id + suffix (--file-suffix .png: "a1b2.png" is "a1b2")."""
    return file[:-len(suffix)] if suffix and file.endswith(suffix) else file


def report_predictions(out: Path, rows: list[list], checkpoint_path: Path,
                       unreadable: list[Unreadable], labelled: bool, classes: list[str]) -> None:
    """The lines --predict prints: where the file is (and one image's class), the unreadable
    images in a warning, and the accuracy when the CSV had labels."""
    done = [row for row in rows[1:] if not row[-1]] if rows[0][-1] == "problem" else rows[1:]
    one = "" if len(rows) != 2 else f"\n{rows[1][0]}: {rows[1][1]}" + (
        f" ({rows[1][2]})" if len(rows[1]) > 2 else "")
    print(f"Predicted {len(done)} image{'s' if len(done) != 1 else ''} with {checkpoint_path}: "
          f"{out}" + ("" if rows[0][-1] == "problem" else f" (columns {','.join(rows[0])})")
          + one)
    if unreadable:
        warnings.warn(f"{len(unreadable)} of {len(done) + len(unreadable)} images could not be "
                      "read; they have rows with an empty prediction and the reason in "
                      f"{out}:\n" + "\n".join(f"  {f!r}: {why}" for f, _, why in unreadable[:10])
                      + (f"\n  ... and {len(unreadable) - 10} more" if len(unreadable) > 10
                         else ""))
    if labelled:
        correct = sum(row[1] == row[-2] for row in done)
        print(f"Accuracy: {100.0 * correct / len(done):.2f}% ({correct} of {len(done)})")
        if len(done) > 1 and len({row[-2] for row in done}) == 1:
            warnings.warn(f"every image's true class is {done[0][-2]!r}: if the label column holds "
                          "a sample submission's placeholders, this accuracy means nothing "
                          "(--predict-columns ID,LABEL does not read it, and writes a submission)")


def images_to_predict(path: Path, columns: tuple[str, str | None], img_dir: str | None,
                      encoding: str, tmp: Path, options: dict,
                      file_names: tuple[str, str] = ("", ""), header: bool = True) -> ToPredict:
    """The images asked for: one image file, every image file in a folder and below it (sorted
    by path), or the rows of a CSV (labelled when it has the label column; columns[1] None: not
    read; file_names: its (prefix, suffix), the ids staying as the table has them; without
    img_dir, absolute names are read as written; header=False: its first line is a row)."""
    file_column, label_column = columns
    if not path.is_dir() and not path.is_file():  # opening a FIFO would wait for a writer
        raise DatasetError(f"{path} is neither a folder nor a regular file (a FIFO, device or "
                           "socket): pass an image, a folder of images or a CSV")
    in_csv = not path.is_dir() and not is_image_file(path)
    naming = FileNames()
    if not in_csv:  # the listing is ours: its lines and name are not shown
        names = image_files_below(path) if path.is_dir() else [path.name]
        if not names:
            raise DatasetError(f"{path}: no image files in this folder or below it")
        listing, folder = tmp / "images.csv", path if path.is_dir() else path.parent
        listing.write_bytes(csv_bytes([["File Name"]] + [[n] for n in names]))
        csv_path, kwargs = listing, {"file_column": "File Name", "label_column": None,
                                     "encoding": "utf-8"}
        listed = [(0, n) for n in names]
    else:
        read_csv(path, [file_column], encoding, header=header)  # no file or column: named errors
        if options.get("task") == "regression":  # scored when the table has every target column
            found = csv_columns(path, encoding) if header else []
            label_column = list(options["classes"]) if all(
                c in found for c in options["classes"]) else None
        else:
            label_column = _label_to_read(path, label_column, encoding, header)
        labels = [] if label_column is None else \
            label_column if isinstance(label_column, list) else [label_column]
        table = read_csv(path, [file_column] + labels, encoding, header=header)
        folder, csv_path = Path(img_dir) if img_dir else path.parent, path
        kwargs = {"file_column": file_column, "encoding": encoding, "label_column": label_column,
                  "header": header}
        naming = FileNames(*file_names, absolute=not img_dir)
        listed = list(zip(table.index.tolist(), table[file_column].fillna("").astype(str).tolist()))
    _, _, problems = make_dataset(csv_path, folder, classes=options["classes"], names=naming,
                                  label_delim=options.get("label_delim"),
                                  task=options.get("task", "classification"), **kwargs)
    unreadable = [(file, line if in_csv else 0, f"line {line}: {what}" if in_csv else what)
                  for line, file, what in problems]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped rows are listed by predict instead
            ds = CsvImageDataset(csv_path, folder, skip_bad_rows=True, **kwargs, **options,
                                 file_prefix=naming.prefix, file_suffix=naming.suffix,
                                 absolute_paths=naming.absolute)
    except DatasetError:
        if len(unreadable) == 0:
            raise
        ds = None
    return ToPredict(ds, unreadable, listed, in_csv)


def _label_to_read(path: Path, label_column: str | None, encoding: str,
                   header: bool) -> str | None:
    """The label column a --predict table is scored against: the one --label-column names (by
    name or position; one it lacks is an error, not a silent run without scores), or the default
    'Class Label' where the table has it; None: predictions alone."""
    if label_column is None:
        return None
    found = csv_columns(path, encoding)  # below blank lines; UTF-16 by its byte order mark
    try:
        column_positions([label_column], found, str(path), header=header)
        return label_column
    except DatasetError as e:
        if label_column == "Class Label":  # not asked for: a table of images alone
            return None
        raise DatasetError(f"{e} (--label-column names the true classes the predictions are "
                           "scored against: leave it out to predict without them)") from None


def is_image_file(path: Path) -> bool:
    """An image by its extension, else by its content (a photo without one is not a CSV)."""
    if path.suffix.lower() in image_extensions():
        return True
    try:
        with Image.open(path):
            return True
    except Exception:  # noqa: BLE001  (not an image: Pillow's many kinds of refusal)
        return False


def image_extensions() -> set[str]:
    """The file name endings of the formats Pillow can open (".png", ".jpg", ...)."""
    return {e for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def image_files_below(folder: Path) -> list[str]:
    """Every image file in folder and below, as sorted relative names (a linked file counts).
    A linked subfolder is not entered, and is named on stderr in one line: one that leads inside
    the folder holds images listed already under their own path (or is a loop), one that leads
    out of it is not the folder's."""
    extensions = image_extensions()
    root, names, others = folder.resolve(), [], []
    for here, dirs, files in os.walk(folder):  # a link to a folder is in dirs, not entered
        for name in sorted(d for d in dirs if os.path.islink(os.path.join(here, d))):
            link = Path(here) / name
            real = Path(os.path.realpath(link))  # a loop of links resolves as far as it can
            where = (f"outside {folder}" if not real.is_relative_to(root) else
                     f"{folder} itself" if real == root else
                     f"a folder of {folder} whose images are listed under their own path")
            print(f"train.py: warning: skipped {link}: a link to {real}, {where}",
                  file=sys.stderr)
        for name in files:
            file = Path(here) / name
            if file.suffix.lower() in extensions and file.is_file():
                names.append(file.relative_to(folder).as_posix())
            elif not any(part.startswith(".") for part in file.relative_to(folder).parts):
                others.append(file.relative_to(folder).as_posix())  # hidden ones go unsaid
    if others:  # said, not dropped in silence: an image saved without an extension is one
        print(f"train.py: warning: skipped {len(others)} file(s) in {folder} that are not image "
              f"files by their extension, such as {sorted(others)[0]!r} (list them in a CSV, or "
              "pass one as --predict FILE, to predict them)", file=sys.stderr)
    return sorted(names)


def move_aside(results_dir: Path, names: tuple[str, ...], into: Path | None = None) -> Path | None:
    """Those of `names` that results_dir holds go into a new results_dir/version_N (or `into`, the
    one an earlier call made); returns the folder, or None when none of them is there."""
    earlier = [name for name in names if (results_dir / name).exists()]
    if not earlier:
        return into
    version = into
    if version is None:
        taken = {int(p.name[8:]) for p in results_dir.glob("version_*") if p.name[8:].isdigit()}
        version = results_dir / f"version_{max(taken, default=0) + 1}"
        version.mkdir()
    for name in earlier:
        os.replace(results_dir / name, version / name)
    what = " and ".join(earlier) if len(earlier) <= 2 else "results"  # e.g. predictions.csv
    print(f"Earlier {what} in {results_dir} moved to {version}/")
    return version
