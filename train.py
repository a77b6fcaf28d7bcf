"""Train the lecture's MLP (or a conv net) on images listed in CSV files: accuracy per epoch,
checkpoints, plots.

    python train.py --epochs 100 --seed 123                 # builds data/ first if it is missing
    python train.py --epochs 100 --seed 123 --resume        # continue from results/checkpoint.pt
    python train.py --model cnn --epochs 100 --seed 123     # a small conv net: about 92% test
    python train.py --csv photos/labels.csv --file-column path --label-column label \
        --mode RGB --image-size 32 --augment                # your own images, any size and format
    torchrun --standalone --nproc_per_node=2 train.py --epochs 3 --seed 123
    python train.py --image-folder photos/ --image-size 32  # class folders: photos/cat/1.jpg
    python train.py --csv labels.csv --balance sampler --monitor balanced_accuracy  # a rare class
    python train.py --csv t.csv --split-column split --task regression --label-column angle
    python train.py --evaluate                              # the saved model, on the test split
    python train.py --predict new-images/                   # a folder or CSV: predictions.csv

Writes checkpoints, metrics, figures and the test split's reports into --results-dir (each file:
docs/files.md). Same seed, same data, same machine and library versions: bit-identical weights,
whatever --num-workers, and after any number of interruptions and --resume.

In a notebook, train_model is the lecture's (set_all_seeds, set_deterministic and compute_accuracy
are in evaluate.py, and importable from here too); its result unpacks as the lecture's does:

    minibatch_loss_list, train_acc_list, valid_acc_list = train_model(
        model=model, num_epochs=10, train_loader=train_loader, valid_loader=valid_loader,
        test_loader=test_loader, optimizer=optimizer, device=device)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import errno
import functools
import hashlib
import importlib
import io
import math
import os
import random
import shlex
import signal
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

if __name__ == "__main__":  # a Ctrl-C or SIGTERM while torch is imported (a second or more): one
    def _stopped_while_starting(signum, frame):  # line and the signal's status, not a traceback
        how = "terminated" if signum == signal.SIGTERM else "interrupted"
        print(f"\ntrain.py: {how} while starting; nothing was written", file=sys.stderr)
        os._exit(128 + signum)

    for _signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signum, _stopped_while_starting)

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from dataset import (RESIZE_METHODS, TASKS, DatasetError, folder_classes, parse_image_size,
                     read_csv, scan_image_folder, skipped_message, split_names, split_spellings,
                     target_columns)
from evaluate import (FAR_BELOW, MULTI_LABEL_REPORT, REGRESSION_REPORT, REPORT_FILES,
                      alike_average_precision, compute_accuracy, compute_confusion_matrix,
                      compute_scores, csv_bytes, distributed, evaluate_model, example_f1,
                      gather_over_ranks, global_settings_kept, mean_average_precision,
                      missed_classes, model_from_checkpoint, move_aside, multi_label_report,
                      predict, read_checkpoint, regression_outputs, regression_report,
                      regression_scores, RunError, saved_model, saved_model_accuracy,
                      saved_model_config, set_all_seeds, set_deterministic, sum_over_ranks,
                      to_input, whole_split_loader, write_reports)
from loaders import (DEFAULT_FRACTION, SPLITS, TEMP_TAG, DecodedImages, LockFileError,
                     atomic_file, decoded, folder_layout, lock_or_holder, loaders_from_datasets,
                     make_datasets, make_loader, open_lock, split_csv, unlabelled_test,
                     write_atomic)
from model import (MODELS, ModelConfig, PretrainedWeightsMissing, build_model,
                   refuse_beyond_memory)

# ---- the lecture's loop --------------------------------------------------------------------------

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
    # The task's other figures per epoch (Classification: balanced_accuracy, macro_f1, loss), a
    # dict each; and the validation figure that picks the best epoch (best_epoch).
    train_scores: list[dict] = dataclasses.field(default_factory=list)
    valid_scores: list[dict] = dataclasses.field(default_factory=list)
    monitor: str = "accuracy"

    def __iter__(self):
        return iter((self.minibatch_loss, self.train_acc, self.valid_acc))


def train_model(model: torch.nn.Module, num_epochs: int, train_loader, valid_loader,
                test_loader=None, *, optimizer: torch.optim.Optimizer, device: torch.device | str,
                history: History | None = None, train_eval_loader=None, logging_interval: int = 50,
                on_epoch_end: Callable[[History], None] | None = None, scheduler=None,
                early_stopping: int | None = None,
                task: Classification | MultiLabel | Regression | None = None) -> History:
    """The lecture's loop: train for num_epochs, printing the loss every logging_interval batches
    and the train / validation accuracy after each epoch, then the test accuracy if test_loader
    is given.

    history: a History to continue (resume), extended in place; the epochs it holds are skipped.
    Each loader's sampler.set_epoch(e) fixes epoch e's order, whatever the loaders did before.
    train_eval_loader (default: train_loader) measures train accuracy. on_epoch_end(history)
    runs after each epoch (train.py saves there); scheduler is stepped after every batch;
    early_stopping=N stops after N epochs without a better validation figure (task.monitor).
    task (default Classification(): the lecture's loss) decides each batch's loss and what each
    epoch measures. Batches are (images, labels) or (images, labels, weights).
    """
    history = history if history is not None else History()
    task = task if task is not None else Classification()
    history.monitor = task.monitor
    for scores in (history.train_scores, history.valid_scores):  # a history of an earlier version
        scores += [{}] * (len(history.train_acc) - len(scores))
    start = time.perf_counter()
    for epoch in range(len(history.train_acc), num_epochs):
        if early_stopping is not None and epoch - best_epoch(history) >= early_stopping:
            print(f"Early stopping: no better validation {task.names[task.monitor]} in the "
                  f"{early_stopping} epoch{'s' if early_stopping > 1 else ''} after epoch "
                  f"{best_epoch(history)}")
            break
        epoch_start = time.perf_counter()
        model.train()
        for loader in (train_loader, train_eval_loader, valid_loader):  # epoch: order, augmentation
            if hasattr(getattr(loader, "sampler", None), "set_epoch"):
                loader.sampler.set_epoch(epoch)
        for batch_idx, (images, labels, *weights) in enumerate(train_loader):
            images, labels = to_input(images, device), labels.to(device, non_blocking=True)
            weights = weights[0].to(device, non_blocking=True) if weights else None  # (B,)
            logits = model(images)  # (B, num_classes)
            loss = task.loss(logits, labels, weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            history.minibatch_loss.append(_mean_over_ranks(loss))
            if not math.isfinite(history.minibatch_loss[-1]):  # every rank sees the same mean
                raise LossNotFinite(f"the loss is {history.minibatch_loss[-1]} at epoch "
                                    f"{epoch + 1}, batch {batch_idx}: training diverged")
            if batch_idx % logging_interval == 0:
                print(f"Epoch: {epoch + 1:03d}/{num_epochs:03d} "
                      f"| Batch {batch_idx:04d}/{len(train_loader):04d} "
                      f"| Loss: {history.minibatch_loss[-1]:.4f}")
        with ctrl_c_deferred():  # the epoch's weights are final: a Ctrl-C waits until they're saved
            for loader, acc, scores in ((train_eval_loader or train_loader, history.train_acc,
                                         history.train_scores),
                                        (valid_loader, history.valid_acc, history.valid_scores)):
                measured = task.scores(model, loader, device, logits.shape[1])
                acc.append(measured.pop("accuracy"))
                scores.append(measured)
            history.epoch_seconds.append(time.perf_counter() - epoch_start)
            line = task.line(history.train_acc[-1], history.valid_acc[-1],
                             history.valid_scores[-1].get("balanced_accuracy"))
            print(f"Epoch: {epoch + 1:03d}/{num_epochs:03d} | {line}")
            if task.report:
                print(f"Epoch: {epoch + 1:03d}/{num_epochs:03d} | {task.summary(history)}")
            print(f"Time elapsed: {sum(history.epoch_seconds) / 60:.2f} min")
            if on_epoch_end is not None:
                on_epoch_end(history)
    print(f"Total Training Time: {(time.perf_counter() - start) / 60:.2f} min")
    if test_loader is not None:
        history.test_acc = task.test_figure(model, test_loader, device)
        print(task.test_line(history.test_acc))
    return history


class LossNotFinite(ArithmeticError):
    """The loss became NaN or infinite: the weights are lost, so train_model stops there."""


# ---- the task: the loss and what each epoch measures, decided in one place ----------------------

# The validation figures that can pick the best epoch (--monitor), as sentences name them.
MONITORS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
            "macro_f1": "macro F1", "loss": "loss"}
# A --label-delim run's (MultiLabel): --monitor accuracy (the default) follows mean_ap there
MULTI_LABEL_MONITORS = {"mean_ap": "mean average precision", "loss": "loss"}
# A --task regression run's: --monitor accuracy (the default) follows rmse there
REGRESSION_MONITORS = {"rmse": "RMSE", "mae": "MAE", "r2": "R²", "loss": "loss"}
LOWER_IS_BETTER = ("loss", "rmse", "mae")
UNEVEN = 1.5  # a train split whose largest class has this many times its smallest's images


def weighted_mean(per_image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w_i * loss_i) / sum(w_i) of a batch's losses (B,) and row weights (B,), every task's
    weighted loss (0 when every w_i is 0). Under torchrun sum(w_i) is the ranks' mean total: DDP
    averages the ranks' gradients, so that they are one process's."""
    w = weights.to(per_image.dtype)
    total = w.sum().detach()
    if distributed():
        total = sum_over_ranks(total.clone()) / dist.get_world_size()
    return (w * per_image).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


@dataclasses.dataclass
class Classification:
    """One class per image, the lecture's task: the one place that decides, from the run's
    settings, each batch's loss (loss) and what each epoch measures (scores, summary); train_model
    asks nothing else of it. Another kind of target would be another class answering these.

    class_weights: (num_classes,) each class's weight in the loss (--balance loss:
        inverse_frequency), or None. monitor: the validation figure that picks the best epoch
        and drives early stopping (MONITORS; loss: lower is better). report: print a second line
        per epoch with balanced accuracy, macro F1 and the validation loss. baseline: the
        majority-class baseline (majority_baseline); a validation or test figure no better than
        it on both counts, accuracy and balanced accuracy (Baseline.no_better), is marked on its
        line. None (classes even): lines as the lecture's."""
    class_weights: torch.Tensor | None = None
    monitor: str = "accuracy"
    report: bool = False
    baseline: Baseline | None = None

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {list(MONITORS)}, got {self.monitor!r}")
        self.names = MONITORS
        self.test_balanced = None  # test_figure's balanced accuracy, for test_line (a baseline)
        if self.class_weights is not None:
            self.class_weights = torch.as_tensor(self.class_weights, dtype=torch.float32)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's cross-entropy: the lecture's mean over its images; with row weights (B,)
        or class weights, sum(w_i * loss_i) / sum(w_i), w_i = the row's weight times its class's
        (0 when every w_i is 0). Under torchrun sum(w_i) is over every rank's share, so that the
        ranks' averaged gradients are one process's."""
        if weights is None and self.class_weights is None:
            return F.cross_entropy(logits, labels)  # the lecture's, bit for bit
        w = torch.ones_like(logits[:, 0]) if weights is None else weights.to(logits.dtype)  # (B,)
        if self.class_weights is not None:
            w = w * self.class_weights.to(logits.device, logits.dtype)[labels]
        return weighted_mean(F.cross_entropy(logits, labels, reduction="none"), w)  # (B,)

    def scores(self, model: torch.nn.Module, loader, device: torch.device | str,
               num_classes: int) -> dict[str, float]:
        """accuracy, balanced_accuracy (%), macro_f1 and loss of loader's split, in one pass."""
        return compute_scores(model, loader, device, num_classes)

    def line(self, train: float, valid: float, balanced: float | None = None) -> str:
        """The epoch's line after "Epoch: 001/100 | ": the lecture's accuracies (and, when the
        validation split's are no better than the majority-class baseline on both counts, a note
        saying so; balanced: its balanced accuracy, which the second line prints)."""
        return (f"Train: {train:.2f}% | Validation: {valid:.2f}%"
                + (self.baseline.note(valid, self.baseline.valid, balanced,
                                      self.baseline.valid_balanced) if self.baseline else ""))

    def test_figure(self, model: torch.nn.Module, loader, device: torch.device | str) -> float:
        """The test split's figure after the last epoch: accuracy in %. With a baseline, from
        the same pass its balanced accuracy too, kept for test_line (self.test_balanced)."""
        if self.baseline is None or not self.baseline.num_classes:
            return compute_accuracy(model, loader, device)  # the lecture's
        # one pass; its accuracy counts the same integers as compute_accuracy: the same figure
        scores = compute_scores(model, loader, device, self.baseline.num_classes)
        self.test_balanced = scores["balanced_accuracy"]
        return scores["accuracy"]

    def test_line(self, value: float, balanced: float | None = None) -> str:
        """"Test accuracy: 78.12%", marked when no better than the baseline on both counts, with
        the balanced accuracy that beats it when the accuracy does not. balanced: the test
        balanced accuracy (default: test_figure's)."""
        balanced = self.test_balanced if balanced is None else balanced
        return (f"Test accuracy: {value:.2f}%"
                + (self.baseline.note(value, self.baseline.test, balanced,
                                      self.baseline.test_balanced, explain=True)
                   if self.baseline else ""))

    def summary(self, history: History) -> str:
        """The epoch's second line: "Balanced accuracy: train 50.00%, validation 50.00% | ..."."""
        train, valid = history.train_scores[-1], history.valid_scores[-1]
        return (f"Balanced accuracy: train {train['balanced_accuracy']:.2f}%, validation "
                f"{valid['balanced_accuracy']:.2f}% | Macro F1: train {train['macro_f1']:.4f}, "
                f"validation {valid['macro_f1']:.4f} | Validation loss: {valid['loss']:.4f}")


@dataclasses.dataclass
class MultiLabel:
    """Several labels per image (--label-delim): targets (B, C) multi-hot float32, one sigmoid
    per class. The same questions as Classification: loss (BCEWithLogitsLoss), scores (the mean
    average precision over classes, the primary figure, in "accuracy"; example-based F1 at
    threshold; loss), summary. monitor: mean_ap (higher is better) or loss."""
    threshold: float = 0.5
    monitor: str = "mean_ap"
    report: bool = True

    def __post_init__(self) -> None:
        if self.monitor not in MULTI_LABEL_MONITORS:
            raise ValueError(f"monitor must be one of {list(MULTI_LABEL_MONITORS)}, "
                             f"got {self.monitor!r}")
        self.names = MULTI_LABEL_MONITORS

    def loss(self, logits: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """Binary cross-entropy of each (image, class), averaged; with row weights (B,), each
        image's mean over classes weighed: sum(w_i * loss_i) / sum(w_i)."""
        if weights is None:
            return F.binary_cross_entropy_with_logits(logits, targets)
        per_image = F.binary_cross_entropy_with_logits(logits, targets,
                                                       reduction="none").mean(dim=1)  # (B,)
        return weighted_mean(per_image, weights)

    def scores(self, model: torch.nn.Module, loader, device: torch.device | str,
               num_classes: int) -> dict[str, float]:
        """accuracy: the mean average precision (the primary figure, as train_model keeps it),
        mean_ap (the same), example_f1 at threshold and loss (mean BCE), in one pass."""
        probs, targets = multi_label_outputs(model, loader, device)
        loss = F.binary_cross_entropy(probs.double(), targets.double()).item() if len(probs) \
            else float("nan")
        m = mean_average_precision(probs, targets)
        return {"accuracy": m, "mean_ap": m,
                "example_f1": example_f1(probs >= self.threshold, targets), "loss": loss}

    def line(self, train: float, valid: float, balanced: float | None = None) -> str:
        return f"Train mAP: {train:.4f} | Validation mAP: {valid:.4f}"  # balanced: not one's

    def test_figure(self, model: torch.nn.Module, loader, device: torch.device | str) -> float:
        """The test mAP; keeps the outputs (every rank's under torchrun) for the reports
        (self.test_outputs: probabilities, targets (N, C))."""
        self.test_outputs = multi_label_outputs(model, loader, device)
        return mean_average_precision(*self.test_outputs)

    def test_line(self, value: float) -> str:
        """"Test mAP: 0.9962 (scoring every image alike: 0.1818)", what the model must beat
        (alike_average_precision of the test tags), or "(no better than scoring every image
        alike: ...)" when it does not."""
        if getattr(self, "test_outputs", None) is None:
            return f"Test mAP: {value:.4f}"
        alike = alike_average_precision(self.test_outputs[1])
        if round(value, 4) <= round(alike, 4):
            return f"Test mAP: {value:.4f} (no better than scoring every image alike: {alike:.4f})"
        return f"Test mAP: {value:.4f} (scoring every image alike: {alike:.4f})"

    def summary(self, history: History) -> str:
        train, valid = history.train_scores[-1], history.valid_scores[-1]
        return (f"Example F1 (threshold {self.threshold:g}): train {train['example_f1']:.4f}, "
                f"validation {valid['example_f1']:.4f} | Validation loss: {valid['loss']:.4f}")


@torch.no_grad()
def multi_label_outputs(model: torch.nn.Module, loader,
                        device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (N, C) float32, targets (N, C) float32) of every batch, on the CPU. Under
    torchrun each rank measures its own share and gets every rank's (gather_over_ranks), in
    rank order, so that average precision ranks every image: every rank must call it."""
    model.eval()
    probs, targets = [], []
    for images, labels, *_ in loader:
        probs.append(torch.sigmoid(model(to_input(images, device)).float()).cpu())
        targets.append(labels.float().cpu())
    if not probs:  # under torchrun, a rank whose share of a small split is empty
        probs, targets = [torch.zeros(0, 0)], [torch.zeros(0, 0)]
    return gather_over_ranks(torch.cat(probs)), gather_over_ranks(torch.cat(targets))


REGRESSION_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss}


@dataclasses.dataclass
class Regression:
    """Numbers per image (--task regression): targets (B, T) float32 in their own units, one
    output per target. The model learns the targets standardised with the train split's mean
    and std (T,) (float64, from the rows alone: exact); every figure is in the targets' own
    units. The same questions as Classification: loss (--loss mse, l1 or huber, on the
    standardised targets), scores (RMSE, the primary figure, in "accuracy"; MAE; R²; loss; each
    the mean over targets), summary. monitor: rmse, mae, loss (lower is better) or r2."""
    mean: list[float]
    std: list[float]
    loss_name: str = "mse"
    monitor: str = "rmse"
    report: bool = True

    def __post_init__(self) -> None:
        if self.monitor not in REGRESSION_MONITORS:
            raise ValueError(f"monitor must be one of {list(REGRESSION_MONITORS)}, "
                             f"got {self.monitor!r}")
        if self.loss_name not in REGRESSION_LOSSES:
            raise ValueError(f"loss must be one of {list(REGRESSION_LOSSES)}, "
                             f"got {self.loss_name!r}")
        self.names = REGRESSION_MONITORS

    def standardise(self, targets: torch.Tensor) -> torch.Tensor:
        """(B, T) targets in their units -> (B, T) float32 standardised, the sums in float64."""
        mean = torch.tensor(self.mean, dtype=torch.float64, device=targets.device)
        std = torch.tensor(self.std, dtype=torch.float64, device=targets.device)
        return ((targets.double() - mean) / std).float()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of the outputs (B, T) against the standardised targets, averaged; with row
        weights (B,), each image's mean over targets weighed: sum(w_i * loss_i) / sum(w_i)."""
        z = self.standardise(targets).to(outputs.dtype)
        if weights is None:
            return REGRESSION_LOSSES[self.loss_name](outputs, z)
        per_image = REGRESSION_LOSSES[self.loss_name](outputs, z, reduction="none").mean(dim=1)
        return weighted_mean(per_image, weights)

    def scores(self, model: torch.nn.Module, loader, device: torch.device | str,
               num_classes: int) -> dict[str, float]:
        """accuracy: the RMSE (the primary figure, as train_model keeps it), rmse (the same), mae
        and r2, each the mean over targets, and loss (unweighted, standardised), in one pass."""
        predicted, targets = regression_outputs(model, loader, device, self.mean, self.std)
        figures = {name: float(np.mean(v)) for name, v in
                   regression_scores(predicted, targets).items()}
        r2 = regression_scores(predicted, targets)["r2"]  # NaN for a target that does not vary:
        if np.isnan(r2).any() and not np.isnan(r2).all():  # the mean over those that do
            figures["r2"] = float(np.mean(r2[~np.isnan(r2)]))
        z = self.standardise(torch.from_numpy(targets))
        z_predicted = self.standardise(torch.from_numpy(predicted))
        loss = REGRESSION_LOSSES[self.loss_name](z_predicted.double(), z.double()).item() \
            if len(targets) else float("nan")
        return {"accuracy": figures["rmse"], **figures, "loss": loss}

    def line(self, train: float, valid: float, balanced: float | None = None) -> str:
        return f"Train RMSE: {train:.4f} | Validation RMSE: {valid:.4f}"  # balanced: not one's

    def test_figure(self, model: torch.nn.Module, loader, device: torch.device | str) -> float:
        """The test RMSE (mean over targets); keeps that of predicting the train mean for every
        image, what the model must beat, for test_line."""
        predicted, targets = regression_outputs(model, loader, device, self.mean, self.std)
        self.test_outputs = predicted, targets  # for the reports (every rank's under torchrun)
        self.mean_rmse = float(np.mean(np.sqrt(np.mean(
            (targets - np.asarray(self.mean)) ** 2, axis=0)))) if len(targets) else None
        return float(np.mean(regression_scores(predicted, targets)["rmse"]))

    def test_line(self, value: float) -> str:
        """"Test RMSE: 7.7800 (predicting the train mean: 25.5700)", or "(no better than
        predicting the train mean for every image: ...)" when it is not below that."""
        mean_rmse = getattr(self, "mean_rmse", None)
        if mean_rmse is None:
            return f"Test RMSE: {value:.4f}"
        if round(value, 4) >= round(mean_rmse, 4):
            return (f"Test RMSE: {value:.4f} (no better than predicting the train mean for "
                    f"every image: {mean_rmse:.4f})")
        return f"Test RMSE: {value:.4f} (predicting the train mean: {mean_rmse:.4f})"

    def summary(self, history: History) -> str:
        train, valid = history.train_scores[-1], history.valid_scores[-1]
        return (f"MAE: train {train['mae']:.4f}, validation {valid['mae']:.4f} | R²: train "
                f"{train['r2']:.4f}, validation {valid['r2']:.4f} | Validation loss: "
                f"{valid['loss']:.4f}")


def target_standardisation(values: np.ndarray) -> tuple[list[float], list[float]]:
    """The train split's targets (N, T) -> (mean, std), T floats each, in float64 (population
    std; 1.0 for a target that never varies: nothing to divide)."""
    values = np.asarray(values, dtype=np.float64)
    mean, std = values.mean(axis=0), values.std(axis=0)
    return mean.tolist(), [float(s) if s > 0 else 1.0 for s in std.tolist()]


def inverse_frequency(labels: np.ndarray, num_classes: int) -> list[float]:
    """--balance loss: class c weighs N / (K * n_c), N images of K classes present, n_c of class
    c (each class's images then weigh N / K in all, as many as in an even split); 0 for a class
    with no images. From the labels' integer counts alone: exact."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    present = int((counts > 0).sum())
    return [len(labels) / (present * int(n)) if n else 0.0 for n in counts]


def make_task(train: TrainConfig, labels: np.ndarray, num_classes: int, *,
              baseline: Baseline | None = None) -> Classification | MultiLabel | Regression:
    """The run's task from its settings: Regression with --task regression (monitoring rmse, mae,
    r2 or loss); MultiLabel with --label-delim (monitoring mean_ap, or loss); else Classification
    with class weights (--balance loss), the monitored figure, and a second line per epoch when the
    run asks for the figures (--balance, --monitor, --weight-column) or the train split is uneven
    (its largest class UNEVEN times its smallest), and the majority-class baseline its lines are
    compared with (majority_baseline)."""
    if train.task == "regression":
        if train.balance != "none":
            raise RunError("--balance is for classes; a --task regression run has none")
        if train.monitor not in ("accuracy", *REGRESSION_MONITORS):
            raise RunError(f"--monitor {train.monitor} is for classes; a --task regression run "
                           "follows rmse (the default), mae, r2 or loss")
        return Regression(mean=train.target_mean, std=train.target_std, loss_name=train.loss,
                          monitor="rmse" if train.monitor == "accuracy" else train.monitor)
    if train.monitor in REGRESSION_MONITORS and train.monitor != "loss":
        raise RunError(f"--monitor {train.monitor} is for --task regression")
    if train.label_delim is not None:
        if train.balance != "none":
            raise RunError("--balance is for one class per image; a --label-delim run has no "
                           "class per image to balance")
        if train.monitor not in ("accuracy", "loss"):
            raise RunError(f"--monitor {train.monitor} is for one class per image; a "
                           "--label-delim run follows mean average precision (the default) or loss")
        return MultiLabel(threshold=train.threshold,
                          monitor="loss" if train.monitor == "loss" else "mean_ap")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    uneven = counts.max() >= UNEVEN * counts.min()
    report = (train.balance != "none" or train.monitor != "accuracy"
              or train.weight_column is not None or bool(uneven))
    return Classification(class_weights=train.class_weights, monitor=train.monitor, report=report,
                          baseline=baseline)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The majority-class baseline of an uneven run: the accuracy in % that a model always saying
    train's most common class (name) scores on each split, counted from the labels, and its
    balanced accuracy there (*_balanced: 100 / K, K the classes with images in that split; 0
    when name has none there; None: not known, the accuracy alone decides). test: of the split
    that train_model's test_loader reads (the validation split when there is no test split);
    has_test: whether there is one. num_classes: the run's classes (its model's outputs; 0: not
    known), for measuring a balanced accuracy."""
    name: str
    train: float
    valid: float
    test: float
    has_test: bool = True
    train_balanced: float | None = None
    valid_balanced: float | None = None
    test_balanced: float | None = None
    num_classes: int = 0

    def no_better(self, accuracy: float, baseline: float, balanced: float | None = None,
                  balanced_baseline: float | None = None) -> bool:
        """The rule: a model is no better than always saying name when, as printed (two
        decimals), its accuracy is not above baseline AND its balanced accuracy is not above
        balanced_baseline (the same split's). One that finds the rare classes (balanced accuracy
        above) is not useless, even with an accuracy under the majority's share."""
        if round(accuracy, 2) > round(baseline, 2):
            return False
        return (balanced is None or balanced_baseline is None
                or round(balanced, 2) <= round(balanced_baseline, 2))

    def note(self, accuracy: float, baseline: float, balanced: float | None = None,
             balanced_baseline: float | None = None, *, explain: bool = False) -> str:
        """" (no better than always 'cat': 94.59%)" when no_better(...); else "", or with
        explain, for an accuracy not above baseline whose balanced accuracy is, the figure that
        beats it: " (balanced accuracy 88.16%, above the 50.00% of always 'cat')" (for a line
        with no balanced-accuracy line beside it)."""
        if self.no_better(accuracy, baseline, balanced, balanced_baseline):
            return f" (no better than always {self.name!r}: {baseline:.2f}%)"
        if explain and balanced is not None and round(accuracy, 2) <= round(baseline, 2):
            return (f" (balanced accuracy {balanced:.2f}%, above the {balanced_baseline:.2f}% of "
                    f"always {self.name!r})")
        return ""

    def line(self) -> str:
        """The line printed once before training."""
        test = f", test {self.test:.2f}%" if self.has_test else ""
        balanced = [b for b in (self.train_balanced, self.valid_balanced,
                                self.test_balanced if self.has_test else None) if b is not None]
        if not balanced:
            return (f"Majority-class baseline (train's classes are uneven): always saying "
                    f"{self.name!r} scores train {self.train:.2f}%, validation {self.valid:.2f}%"
                    f"{test}; a validation or test accuracy not above it is marked \"no better\"")
        if len({f"{b:.2f}" for b in balanced}) == 1:  # as usual: every split has the same classes
            balanced_text = f"{balanced[0]:.2f}%"
        else:
            balanced_text = (f"train {self.train_balanced:.2f}%, validation "
                             f"{self.valid_balanced:.2f}%"
                             + (f", test {self.test_balanced:.2f}%" if self.has_test else ""))
        return (f"Majority-class baseline (train's classes are uneven): always saying "
                f"{self.name!r} scores train {self.train:.2f}%, validation {self.valid:.2f}%"
                f"{test} (balanced accuracy {balanced_text}); a validation or test result above "
                f"neither is marked \"no better\"")


def majority_baseline(labels: list[np.ndarray | None], classes: list[str]) -> Baseline | None:
    """The Baseline of the train, valid and test labels (class indices; test None: no test
    split), or None when train's classes are even (its largest class under UNEVEN times its
    smallest, the notion make_task uses): then the lecture's lines stay as they were."""
    counts = np.bincount(np.asarray(labels[0], dtype=np.int64), minlength=len(classes))
    if counts.max() < UNEVEN * counts.min():
        return None
    majority = int(counts.argmax())  # the first of the most common, on a tie

    def share(split: np.ndarray) -> float:
        split = np.asarray(split, dtype=np.int64)
        return 100.0 * int((split == majority).sum()) / len(split) if len(split) else 0.0

    def balanced(split: np.ndarray) -> float:  # the mean recall: 1 for majority, 0 for the rest
        split = np.asarray(split, dtype=np.int64)
        return 100.0 / len(np.unique(split)) if (split == majority).any() else 0.0

    test = labels[2] if labels[2] is not None else labels[1]
    return Baseline(str(classes[majority]), share(labels[0]), share(labels[1]), share(test),
                    has_test=labels[2] is not None, train_balanced=balanced(labels[0]),
                    valid_balanced=balanced(labels[1]), test_balanced=balanced(test),
                    num_classes=len(classes))


def missed_lines(cm: torch.Tensor, classes: list[str], *, most: int = 10, split: str = "test",
                 helps: str | None = None) -> list[str]:
    """The lines naming the classes the model misses on `split` (missed_classes: recall 0 or
    under FAR_BELOW times the median recall), each with its images found, up to `most` of them,
    and what helps (what_helps(); by default that of an uneven run); [] when it misses none."""
    missed, median = missed_classes(cm)
    if not missed:
        return []
    support, found = cm.sum(dim=1).tolist(), cm.diagonal().tolist()
    named = ", ".join(f"{str(classes[k])!r} ({found[k]} of {support[k]} images found)"
                      for k in missed[:most])
    more = (f", and {len(missed) - most} more (per_class.csv lists every class)"
            if len(missed) > most else "")
    why = (f"recall 0, or below {FAR_BELOW:g} x the median recall of {100 * median:.2f}%"
           if median > 0 else  # no figure is below 0 x 0: say what a median of 0 means instead
           "recall 0; at least half the classes have it, the median recall being 0")
    return [f"Classes the model misses on {split} ({why}): {named}{more}",
            "  What helps: " + (what_helps(True, "none") if helps is None else helps)]


def what_helps(uneven: bool, balance: str, model: str = "mlp", weighted: bool = False) -> str:
    """The advice after missed classes, for the run as it was: balancing is offered only to a run
    whose train classes are uneven and that did not balance them already; --model cnn only to a
    run of the MLP (model: --model's name); --weight-column only to a run without one
    (weighted: the run had one, and is told to weigh the missed classes' rows more instead)."""
    if not uneven:
        larger = "--model cnn, docs/models.md" if model == "mlp" else "docs/models.md"
        return (f"more images, more epochs or a larger model ({larger}); "
                "train's classes are even, so balancing them will not help")
    if balance != "none":
        return (f"more images of them (this run already balanced its classes: --balance "
                f"{balance}); a larger model (docs/models.md)")
    weights = ("larger weights for their rows (this run already weighed its rows: "
               "--weight-column)" if weighted else "--weight-column")
    return ("more images of them; --balance sampler or --balance loss, with --monitor "
            "balanced_accuracy so that best.pt is not picked by accuracy (which favours always "
            f"saying the common class); {weights} (docs/rare-classes.md)")


def monitored(history: History) -> list[float]:
    """The validation figure history.monitor names, one per epoch."""
    if history.monitor == "accuracy":
        return history.valid_acc
    return [scores[history.monitor] for scores in history.valid_scores]


def best_epoch(history: History) -> int:
    """The first epoch (from 1) with the best validation figure history.monitor names (the
    highest accuracy, by default; the lowest loss); 0 before the first."""
    values = monitored(history)
    if not values:
        return 0
    return values.index(min(values) if history.monitor in LOWER_IS_BETTER else max(values)) + 1


def monitored_text(history: History, epoch: int) -> str:
    """Epoch's (from 1) monitored validation figure: "77.73%", or "balanced accuracy 50.00%"."""
    value = monitored(history)[epoch - 1]
    if history.monitor == "accuracy":
        return f"{value:.2f}%"
    unit = "%" if history.monitor == "balanced_accuracy" else ""
    name = {**MONITORS, **MULTI_LABEL_MONITORS, **REGRESSION_MONITORS}[history.monitor]
    return f"{name} {value:.{2 if unit else 4}f}{unit}"


def _mean_over_ranks(loss: torch.Tensor) -> float:
    """The batch's loss as one float; under torchrun, the mean of the ranks' equal shares."""
    world_size = dist.get_world_size() if distributed() else 1
    return sum_over_ranks(loss.detach().clone()).item() / world_size


# ---- the run's settings: built once in main from the flags ---------------------------------------

DEFAULT_DATA_DIR = "data"
OPTIMIZERS, LR_SCHEDULES = ("sgd", "adam", "adamw"), ("constant", "cosine", "onecycle")
DEFAULT_LR = {"sgd": 0.1, "adam": 0.001, "adamw": 0.001}  # SGD's: the lecture's


@dataclasses.dataclass
class DataSettings:
    """Where the images are and how they are read and batched: the data flags, one field each."""
    data_dir: str = DEFAULT_DATA_DIR
    csv: str | None = None
    img_dir: str | None = None
    class_folders: str | None = None  # --image-folder: listed into split.csv (listed())
    split_column: str | None = None
    valid_column: str | None = None
    valid_fraction: float | None = None  # None: not given (DEFAULT_FRACTION where a split is drawn)
    test_fraction: float | None = None
    split_seed: int = 0
    file_column: str = "File Name"  # a name, or a 0-based position ("0") no column is named
    label_column: str = "Class Label"
    weight_column: str | None = None  # a number per row weighting its loss (Keras's weight_col)
    label_delim: str | None = None  # several labels per cell, split on it: multi-label
    task: str | None = None  # regression: label_column names columns of numbers; None: classes
    no_header: bool = False
    file_prefix: str = ""
    file_suffix: str = ""
    mode: str = "auto"
    image_size: tuple[int, int] | None = None
    resize: str | None = None  # squish, crop or pad; None: the checkpoint's, else squish
    encoding: str = "utf-8"
    num_classes: int | None = None
    augment: bool = False
    num_workers: int = 0
    persistent_workers: bool = False
    cache_mb: float = 1024.0
    cache_dir: str | None = None
    no_disk_cache: bool = False
    batch_size: int = 64
    eval_batch_size: int = 256

    def draws_split(self) -> bool:
        """Whether the run draws a split into results/split.csv: a CSV without a split column
        (valid and test, 0.1 each by default), with --valid-column (test only with
        --test-fraction), or with a split column and a fraction given (what it lacks)."""
        return self.csv is not None and self.class_folders is None and (
            self.split_column is None or self.valid_fraction is not None
            or self.test_fraction is not None)  # a folder's listing draws its own (listed())

    def split_options(self) -> dict:
        """split_csv's arguments for a split this run draws (draws_split)."""
        own_column = self.split_column is not None or self.valid_column is not None
        test = self.test_fraction if self.test_fraction is not None or not own_column else 0.0
        return {"label_column": self.label_column, "file_column": self.file_column,
                "seed": self.split_seed, "valid_fraction": self.valid_fraction,
                "test_fraction": test, "encoding": self.encoding,
                "split_column": self.split_column, "valid_column": self.valid_column,
                "header": not self.no_header,  # a regression's rows: drawn at random, not by class
                **({"task": "regression"} if self.task == "regression" else {})}

    def table_options(self) -> dict:
        """How the dataset reads the table's rows and finds each row's file. The split drawn into
        split.csv has a header line of its own (columns by position, 0, 1, ..., for a CSV without
        one). Without --img-dir, absolute names are read as written; with it, they are refused."""
        return {"file_column": self.file_column, "label_column": self.label_column,
                "header": not (self.no_header and not self.draws_split()),
                "file_prefix": self.file_prefix, "file_suffix": self.file_suffix,
                "absolute_paths": self.csv is not None and self.img_dir is None,
                "encoding": self.encoding, "weight_column": self.weight_column,
                **({} if self.label_delim is None else {"label_delim": self.label_delim}),
                **({} if self.task in (None, "classification") else {"task": self.task})}

    def label_columns(self) -> str:
        """The label column, or a regression's first target column: whether a row is labelled."""
        if self.task == "regression":
            return target_columns(self.label_column)[0]
        return self.label_column

    def listed(self, split_path: Path) -> DataSettings:
        """--image-folder DIR as the run it is: --csv split_path (the folder's listing) --img-dir
        DIR --split-column split, the column and encoding flags as given; else self."""
        if self.class_folders is None:
            return self
        # The disk cache beside split.csv, not in DIR: a .cache folder there would be one more
        # class to torchvision's ImageFolder and Keras reading the same folder.
        return dataclasses.replace(self, csv=str(split_path), img_dir=self.class_folders,
                                   split_column="split",
                                   cache_dir=self.cache_dir or str(split_path.parent / ".cache"))

    def image_folder(self) -> Path:
        """The folder the images are in: --data-dir, or --img-dir (default: the CSV's folder)."""
        if self.csv is None:
            return Path(self.data_dir)
        return Path(self.img_dir) if self.img_dir is not None else Path(self.csv).parent

    def disk_cache(self) -> Path | None:
        """--cache-dir, else .cache in the image folder; None if --no-disk-cache or --cache-mb 0."""
        if self.no_disk_cache or self.cache_mb == 0:
            return None
        return Path(self.cache_dir or self.image_folder() / ".cache")


@dataclasses.dataclass
class TrainConfig:
    """How the weights are learned; the checkpoint records it beside ModelConfig. lr and
    weight_decay None: their defaults for the optimizer (resolved())."""
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.0
    weight_decay: float | None = None
    lr_schedule: str = "constant"
    schedule_epochs: int | None = None  # the schedule's length in epochs; None when constant
    batch_size: int = 64
    seed: int = 123
    augment: bool = False
    monitor: str = "accuracy"  # the validation figure that picks best.pt (MONITORS)
    balance: str = "none"  # sampler: a class-balanced order; loss: class_weights
    class_weights: list[float] | None = None  # --balance loss: inverse_frequency of train
    weight_column: str | None = None  # the table's column weighting each row's loss
    task: str = "classification"  # or "multi_label" (--label-delim), "regression" (--task)
    label_delim: str | None = None  # the tags' delimiter of a multi_label run
    threshold: float = 0.5  # multi_label: a class is predicted from this probability
    loss: str = "mse"  # regression: mse, l1 or huber, on the standardised targets
    # regression: the train split's mean and std per target (target_standardisation), which
    # standardise the targets for the loss and turn the outputs back into the targets' units
    target_mean: list[float] | None = None
    target_std: list[float] | None = None

    def resolved(self) -> TrainConfig:
        """lr from DEFAULT_LR; weight_decay 0.01 for adamw (torch's), else 0."""
        lr = DEFAULT_LR[self.optimizer] if self.lr is None else self.lr
        decay = self.weight_decay
        if decay is None:
            decay = 0.01 if self.optimizer == "adamw" else 0.0
        return dataclasses.replace(self, lr=lr, weight_decay=decay)


# The fields set from the data and the run, not by a flag of their own; every other field of
# ModelConfig and TrainConfig is a flag that --resume, --evaluate and --predict take from the
# checkpoint when it is left out.
FROM_DATA = {ModelConfig: ("image_size", "channels", "num_classes", "mean", "std"),
             TrainConfig: ("schedule_epochs", "batch_size", "seed", "augment", "class_weights",
                           "weight_column", "task", "label_delim", "target_mean", "target_std")}
INHERITED = {cls: tuple(f.name for f in dataclasses.fields(cls) if f.name not in FROM_DATA[cls])
             for cls in FROM_DATA}


@dataclasses.dataclass
class Settings:
    """Every flag, read once from the command line (from_args); steps below main take the parts
    they use. `given` holds the inherited flags (INHERITED, and normalize) that were given."""
    data: DataSettings
    given: dict
    epochs: int = 100
    seed: int = 123
    early_stopping: int | None = None
    logging_interval: int = 50
    results_dir: Path = Path("results")
    checkpoint: Path = Path("results/checkpoint.pt")
    resume: bool = False
    evaluate: bool = False
    predict: str | None = None
    predict_columns: tuple[str, str] | None = None
    device: str = "auto"
    dist_timeout: float = 30.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        values = vars(args)
        data = DataSettings(**{f.name: values[f.name] for f in dataclasses.fields(DataSettings)})
        names = [*INHERITED[ModelConfig], *INHERITED[TrainConfig], "normalize"]
        own = {f.name for f in dataclasses.fields(cls)} - {"data", "given", "checkpoint"}
        results = Path(args.results_dir)
        return cls(data=data, given={k: values[k] for k in names if values[k] is not None},
                   checkpoint=Path(args.checkpoint or results / "checkpoint.pt"),
                   **{k: results if k == "results_dir" else values[k] for k in own})


def inherit(cls, given: dict, saved, **from_data):
    """An instance of cls (ModelConfig or TrainConfig): each field from `from_data`, else the
    flag given, else the checkpoint's value (saved, on --resume / --evaluate), else the default."""
    return cls(**{f.name: from_data[f.name] if f.name in from_data else given[f.name]
                  if f.name in given else getattr(saved, f.name, f.default)  # saved None: default
                  for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class RunConfig:
    """What one training run is, from the flags and the data (run_config): the checkpoint records
    it as "config", --resume refuses any difference, and --evaluate, --predict and --resume
    rebuild the model from it without the flags being repeated."""
    data: str  # fingerprint of the CSVs (data_fingerprint)
    mode: str
    net: ModelConfig
    train: TrainConfig
    # Where the data came from, for messages: [csv path, split value or None, rows] per split.
    # Not compared (the data fingerprint is): a moved data folder is the same data.
    data_files: list | None = None
    resize: str = "squish"  # how images reach image_size (--resize); a checkpoint without: squish

    ORDER = ("data", "mode", "resize",
             *(f.name for cls in FROM_DATA for f in dataclasses.fields(cls)))
    DATA_FIELDS = ("data", "channels", "num_classes", "mode", "resize", "image_size")

    def flat(self) -> dict:
        """The compared settings, one level, as the checkpoint holds them (image_size a list)."""
        values = {"data": self.data, "mode": self.mode, "resize": self.resize,
                  **dataclasses.asdict(self.net),
                  **dataclasses.asdict(self.train)}
        values["image_size"] = list(self.net.image_size)
        return {name: values[name] for name in self.ORDER}

    def differences(self, other: RunConfig, only: tuple[str, ...] = ORDER) -> list[str]:
        """What differs from another run's settings (among `only`), in words; [] when none."""
        mine, theirs, out = self.flat(), other.flat(), []
        for name in (n for n in self.ORDER if n in only and mine[n] != theirs[n]):
            if name == "data":
                out.append(f"data: the checkpoint's run read {describe_data(self.data_files)}; "
                           f"this one reads {describe_data(other.data_files)}, and the rows or "
                           "labels differ (the CSVs' contents are compared, not their paths)")
            else:
                out.append(f"{name}: checkpoint has {mine[name]!r}, this run has {theirs[name]!r}"
                           + (" (the schedule spans --epochs)" if name == "schedule_epochs"
                              else ""))
        return out

    def as_checkpoint(self) -> dict:
        h, w = self.net.image_size
        return {**self.flat(), "data_files": self.data_files,
                "num_features": self.net.channels * h * w}

    @classmethod
    def from_checkpoint(cls, saved: dict, path: Path) -> RunConfig:
        """A checkpoint's config; one of an earlier version (the MLP and SGD only) gets the
        defaults of the fields it lacks. One that train.py did not write is one sentence."""
        try:
            train = TrainConfig(**{f.name: saved[f.name] for f in dataclasses.fields(TrainConfig)
                                   if f.name in saved})
            return cls(data=saved["data"], mode=saved["mode"],
                       net=ModelConfig.from_checkpoint(saved), train=train.resolved(),
                       data_files=saved.get("data_files"), resize=saved.get("resize", "squish"))
        except (KeyError, TypeError, ValueError) as e:
            raise RunError(f"{path}'s settings (its 'config') are not those train.py writes "
                           f"({type(e).__name__}: {e}); pass the --checkpoint of a train.py "
                           "run") from None


def run_config(settings: Settings, datasets: list[DecodedImages],
               saved: RunConfig | None) -> RunConfig:
    """The run's settings from the flags and the data; a model or optimisation flag left out
    takes the checkpoint's value (saved: --resume, --evaluate), else its default."""
    train_ds, data = datasets[0], settings.data
    # --label-delim left out on --resume: main read the data with the checkpoint's
    label_delim = data.label_delim if data.label_delim is not None or saved is None else \
        saved.train.label_delim
    # --task left out on --resume: main read the data as the checkpoint's task says
    regression = data.task == "regression" or data.task is None and saved is not None and \
        saved.train.task == "regression"
    train = inherit(TrainConfig, settings.given, saved and saved.train,
                    batch_size=data.batch_size, seed=settings.seed, augment=data.augment,
                    schedule_epochs=None, class_weights=None,
                    weight_column=data.weight_column, label_delim=label_delim,
                    task="multi_label" if label_delim is not None else
                    "regression" if regression else "classification",
                    target_mean=None, target_std=None).resolved()
    weights = train_ds.rows.weights  # a weight column: some train row must weigh something
    if weights is not None and len(weights) and not (weights > 0).any() and saved is None:
        raise RunError(f"every one of the {len(weights)} train rows weighs 0 in --weight-column "
                       f"{data.weight_column}: the loss would be 0 and nothing learned; give "
                       "the rows to learn from a weight above 0")
    if train.task == "regression":  # from the train rows alone: the same for any run of them
        train.target_mean, train.target_std = target_standardisation(train_ds.rows.values)
    if train.balance == "loss":
        train.class_weights = inverse_frequency(train_ds.targets, len(train_ds.classes))
    if train.lr_schedule != "constant":
        train.schedule_epochs = settings.epochs
    if train.momentum and train.optimizer != "sgd":
        raise RunError(f"--momentum is SGD's; {train.optimizer} has its own betas (leave "
                       "--momentum out, or pass --optimizer sgd)")
    normalize = settings.given.get("normalize", saved is not None and saved.net.mean is not None)
    mean, std = channel_stats(train_ds, data.num_workers) if normalize else (None, None)
    net = inherit(ModelConfig, settings.given, saved and saved.net,
                  channels=train_ds.channels, image_size=tuple(train_ds.image_size),
                  num_classes=len(train_ds.classes), mean=mean, std=std)
    net.pretrained = bool(net.pretrained)
    datasets = [ds for ds in datasets if ds is not None]  # test: none (no test split)
    return RunConfig(data=data_fingerprint([ds.csv_path for ds in datasets]), mode=train_ds.mode,
                     net=net, train=train,
                     data_files=[[str(ds.csv_path), ds.split[1] if ds.split else None, len(ds)]
                                 for ds in datasets], resize=train_ds.resize)


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


def data_fingerprint(csv_paths: list[Path]) -> str:
    """sha256 of the CSVs the datasets were read from: a resumed run must see the same rows."""
    digest = hashlib.sha256()
    for path in csv_paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def refuse_other_model_flags(given: dict, saved: ModelConfig, use: str, path: Path) -> None:
    """--evaluate, --predict and --resume rebuild the checkpoint's model by themselves; a model
    flag given that says otherwise is refused."""
    has = {name: getattr(saved, name) for name in INHERITED[ModelConfig]}
    has["normalize"] = saved.mean is not None
    differences = [f"--{key} {given[key]} (the checkpoint's: {has[key]})" for key in has
                   if key in given and given[key] != has[key]]
    if differences:
        raise RunError(f"cannot {use} {path}: it holds another model than "
                       f"{', '.join(differences)} asks for. The model is rebuilt from the "
                       "checkpoint, so leave those flags out, or pass the --checkpoint of such "
                       "a model")


# ---- checkpoints and resume: atomic files that torch.load(weights_only=True) reads ---------------

def save_run(results_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler, config: RunConfig, classes: list[str], history: History) -> None:
    """checkpoint.pt and metrics.csv after an epoch: everything --resume needs, and what a
    checkpoint alone needs to read new images (classes, mode, resize, image_size); the same
    checkpoint as best.pt too when the epoch's monitored validation figure is the best so far."""
    saved = config.as_checkpoint()
    checkpoint = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "epoch": len(history.train_acc), "history": dataclasses.asdict(history),
        "config": saved, "classes": list(classes), "mode": config.mode,
        "resize": config.resize, "image_size": saved["image_size"], "rng": rng_states(),
        "versions": {"torch": str(torch.__version__)}}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    # best.pt renamed first: a kill between the two leaves the previous checkpoint.pt, whose
    # --resume replays this epoch and writes the same best.pt again
    files = [(results_dir / "best.pt", buffer.getvalue())] if \
        best_epoch(history) == len(history.valid_acc) else []
    files += [(results_dir / "checkpoint.pt", buffer.getvalue()),
              (results_dir / "metrics.csv", metrics_csv(history))]
    try:
        write_together(files)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        epoch = len(history.train_acc)
        need = sum(len(data) for _, data in files) / 2**20
        kept = (f"{results_dir / 'checkpoint.pt'} still holds epoch {epoch - 1}, so free that "
                "much and resume with --resume" if epoch > 1 else "nothing was saved yet, so "
                "free that much and run again")
        raise RunError(f"the disk holding {results_dir} is full ({e.strerror}): epoch {epoch}'s "
                       f"files ({', '.join(p.name for p, _ in files)}) need {need:.1f} MiB "
                       f"there; {kept}") from None


def write_together(files: list[tuple[Path, bytes]]) -> None:
    """Each (path, bytes) written whole beside its path before any is renamed over it, in the
    order given: a full disk or a kill while writing leaves every earlier file as it was."""
    with contextlib.ExitStack() as stack:
        for path, data in reversed(files):  # the stack renames the last one entered first
            fd, _ = stack.enter_context(atomic_file(path))
            with open(fd, "wb", closefd=False) as f:
                f.write(data)


def metrics_csv(history: History) -> bytes:
    """One row per epoch; the task's other figures (train_balanced_accuracy, valid_..., ...)
    after the lecture's columns, empty for epochs of an earlier version that did not have them."""
    names = next((list(scores) for scores in history.valid_scores if scores), [])
    rows = [",".join(["epoch,train_acc,valid_acc,epoch_seconds",
                      *(f"{split}_{name}" for name in names for split in ("train", "valid"))])]
    epochs = zip(history.train_acc, history.valid_acc, history.epoch_seconds)
    for i, (tr, va, sec) in enumerate(epochs):
        row = f"{i + 1},{tr!r},{va!r},{sec:.4f}"  # repr: exact floats, comparable
        for name in names:
            row += "".join("," + (repr(scores[i][name]) if i < len(scores) and name in scores[i]
                                  else "")
                           for scores in (history.train_scores, history.valid_scores))
        rows.append(row)
    return ("\n".join(rows) + "\n").encode()


def load_run(checkpoint: dict, path: Path, model: torch.nn.Module,
             optimizer: torch.optim.Optimizer, scheduler, epochs: int) -> History:
    """Restore model, optimizer, schedule and every RNG state from a checkpoint of the same run
    (check_resume has compared the settings); returns its history."""
    if checkpoint["epoch"] > epochs:
        raise RunError(f"--epochs {epochs}, but {path} already holds {checkpoint['epoch']} "
                       f"epochs; pass --epochs {checkpoint['epoch']} or more", status=2)
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
        raise RunError(f"cannot --resume from {path}: it was made by a different run:\n  "
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


# ---- the results folder: one run at a time, nothing overwritten ----------------------------------

RESULT_FILES = ("checkpoint.pt", "best.pt", "metrics.csv", "loss.png", "accuracy.png",
                "examples.png", *REPORT_FILES, "split.csv", "predictions.csv")


@contextlib.contextmanager
def results_folder(results_dir: Path, main_process: bool):
    """Hold results_dir while the block runs: an OS lock (flock) that a killed run releases too,
    so a second run into the same folder stops with a message naming the first. This run's
    leftovers of an earlier kill (temporary files) are removed. (run() moves the earlier results
    this run would overwrite into results_dir/version_N once its checks passed.)"""
    if not main_process:  # under torchrun, rank 0 holds the folder for every rank
        yield
        return
    results_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = open_lock(results_dir / ".lock", "pass another --results-dir")
    except LockFileError as e:
        raise RunError(str(e)) from None
    try:
        holder = lock_or_holder(fd)
        if holder is not None:
            raise RunError(f"{results_dir} is in use by another train.py run (process {holder}); "
                           "wait for it to finish, or pass another --results-dir")
        for name in RESULT_FILES:  # our temporaries only: nothing of ours writes here meanwhile
            for leftover in results_dir.glob(f".{name}.{TEMP_TAG}-*"):
                leftover.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)


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
    try:  # read-only: a shared lock needs no write access (another user's folder of checkpoints);
        # O_NONBLOCK: a FIFO in its place would wait for a writer forever
        fd = os.open(folder / ".lock", os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        yield  # no lock file: no train.py run has written there since it was made
        return
    except OSError as e:
        raise RunError(f"{folder / '.lock'} cannot be used as a lock ({e.strerror}; a symbolic "
                       "link is not followed); remove it, or pass another --checkpoint") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunError(f"{folder / '.lock'} cannot be used as a lock (it is not a regular "
                           "file: a FIFO, device or socket); remove it, or pass another "
                           "--checkpoint")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunError(f"{checkpoint_path} belongs to a train.py run that is still going "
                           f"(process {holder}), so it is not final; wait for it to finish, or "
                           "pass the --checkpoint of a finished run") from None
        yield
    finally:
        os.close(fd)


def results_to_move(settings: Settings) -> tuple[str, ...]:
    """What this run would overwrite in its results folder, to be moved to version_N first: all
    of a new run's files; resuming or evaluating any checkpoint but this folder's checkpoint.pt
    (another folder's, or another file here), all its files or its reports; earlier predictions.
    A file this run reads (--csv results/split.csv, a drawn split reused) stays, to be read."""
    own = (settings.results_dir / "checkpoint.pt").resolve()
    reading = settings.checkpoint.resolve()
    names: tuple[str, ...] = RESULT_FILES if not settings.resume else ()
    if settings.predict is not None:  # predict() moves the earlier one when it has a new one
        names = ()
    elif settings.evaluate:  # and, from another folder, the split it reads, replacing this one's
        other_folder = reading.parent != own.parent
        names = (*REPORT_FILES, *(["split.csv"] if other_folder else [])) if reading != own else ()
    elif settings.resume and reading != own:  # the file resumed from stays where it is
        names = RESULT_FILES
    read = {reading} if settings.resume or settings.evaluate else set()
    read |= {Path(settings.data.csv).resolve()} if settings.data.csv else set()
    return tuple(n for n in names if (settings.results_dir / n).resolve() not in read)


# ---- signals: Ctrl-C and SIGTERM keep the last whole checkpoint ----------------------------------

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


# ---- torchrun: one process per device ------------------------------------------------------------

def pick_device(name: str, local_rank: int) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def process_group(device_name: str, batch_size: int, timeout_minutes: float):
    """torchrun: one process per device, in a process group; yields (rank, world_size, device).
    Under plain `python train.py` nothing happens here: (0, 1, device)."""
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    device = pick_device(device_name, local_rank)
    if not ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        yield 0, 1, device
        return
    if batch_size % world_size:  # every rank stops alike, before any of them waits
        fits = batch_size // world_size * world_size or world_size
        if rank == 0:  # printed now: torchrun stops every rank as soon as one has exited
            print(f"train.py: error: --batch-size {batch_size} is the global batch, split "
                  f"between the {world_size} processes: pass a multiple of {world_size}, such as "
                  f"{fits}", file=sys.stderr, flush=True)
        else:  # give rank 0 the time to say why; torchrun's SIGTERM may end the wait
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(2)
        raise RunError(None, status=1)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            timeout=datetime.timedelta(minutes=timeout_minutes))
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # only rank 0 prints (its errors still go to stderr)
    yield rank, world_size, device
    # Done (an error skips this: torchrun stops the others): wait for rank 0's files, since gloo
    # may abort a rank that leaves early, then leave the group on every path, --evaluate's too.
    barrier(rank, "rank 0 writes the figures and reports")
    dist.destroy_process_group()


WAIT_NOTICE_S = 60.0  # a wait at an exchange longer than this is said, once


def barrier(rank: int, what: str) -> None:
    """dist.barrier(); one that lasts over a minute says on stderr what it waits for (the
    default --dist-timeout is 30 minutes of silence otherwise)."""
    notice = threading.Timer(WAIT_NOTICE_S, lambda: print(
        f"train.py: process {rank} has waited {WAIT_NOTICE_S / 60:g} min for the others: {what} "
        "(it stops after --dist-timeout)", file=sys.stderr, flush=True))
    notice.daemon = True
    notice.start()
    try:
        dist.barrier()
    finally:
        notice.cancel()


@contextlib.contextmanager
def peers_answer(rank: int, minutes: float):
    """Under torchrun, an exchange that times out (another process stopped or hangs) ends this
    process with a sentence instead of gloo's RuntimeError."""
    try:
        yield
    except RuntimeError as e:
        if not distributed() or "timed out" not in str(e).lower():
            raise
        raise RunError(f"process {rank} waited {minutes:g} min (--dist-timeout) for the other "
                       "processes at an exchange, and one did not answer: it has stopped or "
                       "hangs (its own error, if any, is above). Resume with --resume once it is "
                       "fixed; pass a larger --dist-timeout if rank 0's first decode of a large "
                       "dataset takes longer.") from None


# ---- the data: sources, datasets and loaders -----------------------------------------------------

def data_sources(data: DataSettings, split_path: Path, main_process: bool,
                 keep_split: bool = False) -> list[tuple]:
    """(csv, image folder, split) of train, valid and test: the three-CSV folder, or one CSV with
    a split column, or one without, whose split is drawn into split_path. Only rank 0 builds the
    default data when missing (or waits for the run building it) or writes split.csv. keep_split
    (--resume, --evaluate): an existing split_path is the one the model was trained on (run()
    compared it with the split drawn now, before writing anything), so it is kept."""
    if data.csv is None:
        if main_process and data.data_dir == DEFAULT_DATA_DIR:
            import make_subset  # only needed the first time

            try:  # OutDirError: a CSV of it gone, a full disk
                make_subset.ensure_dataset(Path(data.data_dir))
            except (make_subset.LockFileError, make_subset.OutDirError) as e:
                raise RunError(str(e)) from None
        sources = folder_layout(data.data_dir)
        missing = [csv.name for csv, _, _ in sources if not csv.is_file()]
        if missing and (Path(data.data_dir) / ".make_subset.json").is_file():  # make_subset's
            raise RunError(f"{data.data_dir} holds an incomplete dataset ({', '.join(missing)} "
                           "missing); rebuild it with python make_subset.py --out-dir "
                           f"{data.data_dir} --force, which replaces only its own files")
        return sources
    if data.class_folders is not None and main_process and not (keep_split
                                                                and split_path.is_file()):
        listed, layout = folder_listing(data, split_path.parent)  # what --csv split_path reads
        write_atomic(split_path, listed)
        print(f"Image folder {data.class_folders}: {layout}; listed into {split_path}")
    csv, split_column = data.csv, data.split_column
    if data.draws_split():  # draw one (or what the table's split lacks), kept with the results
        if main_process and not (keep_split and split_path.is_file()):
            split_csv(csv, split_path, **data.split_options())
        csv, split_column = split_path, "split"
    return [(Path(csv), data.image_folder(), (split_column, split)) for split in SPLITS]


def unlabelled_source(data: DataSettings, split_path: Path) -> tuple | None:
    """The (csv, folder, (column, "test")) of the table's test rows when they have no labels (a
    Kaggle test set in the table), else None."""
    if data.csv is None or data.label_delim is not None:  # tags: an empty cell is no tags
        return None
    csv, column = (split_path, "split") if data.draws_split() else (data.csv, data.split_column)
    source = (Path(csv), data.image_folder(), (column, "test"))
    return source if unlabelled_test(source, data.file_column, data.label_columns(),
                                     data.encoding, data.table_options()["header"]) else None


def predict_test_rows(source: tuple, data: DataSettings, session: Session) -> Path:
    """The table's unlabelled test rows, not trained on or scored, predicted by the last epoch's
    model into predictions.csv as --predict writes it: a listing of them alone, each on its line
    of the table (blank lines between), so that a message names the table's line."""
    csv, folder, (column, _) = source
    header = data.table_options()["header"]  # a table without one: line 1 is a row
    table = read_csv(csv, [data.file_column, column], data.encoding, header=header)
    files = table[data.file_column][split_names(table[column]).isin(split_spellings("test"))]
    first = 2 if header else 1  # the table's first row's line
    lines = [""] * (int(files.index.max()) - first + 1)  # its lines up to the last test row's
    for line, name in files.items():
        lines[line - first] = csv_bytes([[name]]).decode().rstrip("\n")
    checkpoint_path = session.results_dir / "checkpoint.pt"
    print(f"The {len(files)} test rows of {data.csv} have no labels: not trained on or scored, but "
          f"predicted by the last epoch's model ({checkpoint_path}) into predictions.csv")
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_TAG}-") as tmp:
        listing = Path(tmp) / Path(csv).name
        listing.write_bytes((csv_bytes([[data.file_column]]) if header else b"")
                            + ("\n".join(lines) + "\n").encode())
        return predict(str(listing), read_checkpoint(checkpoint_path), checkpoint_path,
                       session.results_dir, columns=(data.file_column if header else "0", None),
                       img_dir=str(folder if folder is not None else Path(csv).parent),
                       encoding="utf-8", device=session.device,
                       file_names=(data.file_prefix, data.file_suffix), header=header)


def same_split_or_refuse(csv: str, split_path: Path, split_options: dict) -> None:
    """The split drawn now must be the one in split_path, that the checkpoint was trained on."""
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_TAG}-") as tmp:
        drawn = split_csv(csv, Path(tmp) / split_path.name, **split_options).read_bytes()
    if drawn != split_path.read_bytes():
        raise RunError(f"the split drawn from {csv} with these flags differs from {split_path}, "
                       "the one the checkpoint's run was trained on (the CSV, --split-seed, "
                       "--valid-fraction or --test-fraction changed); it is left as it is. Use "
                       "the flags and CSV of that run, or start afresh without --resume / "
                       "--evaluate.")


def folder_listing(data: DataSettings, results_dir: Path) -> tuple[bytes, str]:
    """--image-folder's split.csv (bytes) and the layout found, in words: the folder's listing,
    its columns named as --file-column and --label-column say, and where it has no split folders,
    a split drawn as for a CSV without a split column. Skipped files: one warning. results_dir
    (where split.csv goes), inside the folder (--image-folder .), is not a class of it."""
    label = None if data.label_column == DataSettings.label_column else data.label_column
    listing = scan_image_folder(data.class_folders, label_column=label, encoding=data.encoding,
                                exclude=[results_dir])
    if message := skipped_message(Path(data.class_folders), listing.skipped):
        warnings.warn(message, stacklevel=2)
    table = listing.table.rename(columns={"file": data.file_column, "label": data.label_column})
    text = table.to_csv(index=False, lineterminator="\n").encode(data.encoding)
    has_split = "split" in table.columns
    if has_split and data.valid_fraction is None and data.test_fraction is None:
        return text, listing.layout
    # no split folders: a split drawn as for a CSV; split folders and a fraction given: the
    # splits they lack drawn from their train rows, as for a CSV's split column
    options = dataclasses.replace(data, split_column="split" if has_split else None)
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_TAG}-") as tmp:
        (Path(tmp) / "listing.csv").write_bytes(text)
        drawn = split_csv(Path(tmp) / "listing.csv", Path(tmp) / "split.csv",
                          **options.split_options())
        return drawn.read_bytes(), listing.layout + (
            ": the splits it lacks drawn from train" if has_split else
            ", no split folders: split drawn")


def same_listing_or_refuse(data: DataSettings, split_path: Path) -> None:
    """The folder's listing now must be split_path, the one the checkpoint was trained on."""
    if folder_listing(data, split_path.parent)[0] != split_path.read_bytes():
        raise RunError(f"the listing of --image-folder {data.class_folders} with these flags "
                       f"differs from {split_path}, the one the checkpoint's run was trained on "
                       "(images added, removed or renamed, or --split-seed, --valid-fraction or "
                       "--test-fraction changed); it is left as it is. Restore the folder, or "
                       f"train on that listing as it is (--csv {split_path} --img-dir "
                       f"{data.class_folders} --split-column split), or start afresh without "
                       "--resume / --evaluate.")


def augmentation(resize: str = "squish", image_size: tuple[int, int] | None = None):
    """--augment: a small random rotation and shift, which suit small images of any class; no
    flips, which would mirror digits and letters. Under --resize crop a random crop first: a part
    of 80% to 100% of each side of the image as decoded (the centre crop, at image_size (H, W),
    the size every split is decoded and cached at), anywhere in it, scaled back to image_size.
    Like every transform, it draws from each sample's own seed: exact for any --num-workers and
    after --resume."""
    from torchvision.transforms import v2  # imported only when asked for

    affine = v2.RandomAffine(degrees=10, translate=(0.1, 0.1))
    if resize != "crop":
        return affine
    aspect = image_size[1] / image_size[0]  # W / H: the crop keeps the image's shape
    return v2.Compose([v2.RandomResizedCrop(image_size, scale=(CROP_SIDE[0] ** 2, 1.0),
                                            ratio=(aspect, aspect), antialias=True), affine])


CROP_SIDE = (0.8, 1.0)  # --augment's random crop under --resize crop: this share of each side


def build_datasets(data: DataSettings, sources: list[tuple], device: torch.device,
                   evaluating: bool) -> list[DecodedImages]:
    """Train, valid and test datasets, read as the data flags say; a --batch-size larger than
    the train split is refused (its last partial batch is dropped: no batch would be left)."""
    cache_dir = data.disk_cache()
    if cache_dir is not None:
        print(f"Disk cache of decoded images: {cache_dir} (--no-disk-cache: none)")
    # On a GPU, batches travel as uint8 and are scaled there (to_input): a quarter of the bytes
    dataset_kwargs = {"pixels": "uint8" if device.type == "cuda" else "float01",
                      **data.table_options(), "mode": data.mode, "image_size": data.image_size,
                      "num_classes": data.num_classes, "resize": data.resize or "squish"}
    if data.class_folders is not None:  # folder names are class names, whatever they look like
        labels = read_csv(Path(data.csv), [data.label_column], data.encoding)[data.label_column]
        dataset_kwargs["classes"] = folder_classes(labels)
    augment = augmentation(data.resize or "squish", data.image_size) if data.augment else None
    datasets = decoded(make_datasets(sources, dataset_kwargs, augment),
                       cache_mb=data.cache_mb, cache_dir=cache_dir)  # each split's decoded images
    channels, (height, width) = datasets[0].channels, datasets[0].image_size
    try:  # before the first pass decodes anything at that size
        batch = max(data.batch_size, data.eval_batch_size)
        refuse_beyond_memory(f"a batch of {batch} images of {channels}x{height}x{width} as float32",
                             4 * batch * channels * height * width,
                             "pass a smaller --image-size (or --batch-size, --eval-batch-size)")
    except ValueError as e:
        raise RunError(str(e), status=2) from None
    if data.batch_size > len(datasets[0]) and not evaluating:
        raise RunError(f"--batch-size {data.batch_size} is larger than the {len(datasets[0])} "
                       "training images (the last partial batch is dropped, so no batch would be "
                       f"left); pass --batch-size {len(datasets[0])} or less", status=2)
    return datasets


def prepare_data(data: DataSettings, *, split_path: Path, seed: int, evaluating: bool,
                 keep_split: bool, rank: int, world_size: int, device: torch.device,
                 balance: str = "none") -> tuple[list[DecodedImages], tuple]:
    """The train, valid and test datasets, and the loaders (train, valid, test, train_eval);
    balance "sampler": the train loader's order drawn class-balanced (--balance sampler)."""
    ddp = world_size > 1 or distributed()
    sources = data_sources(data, split_path, main_process=rank == 0, keep_split=keep_split)
    if ddp:
        barrier(rank, "rank 0 checks the data (and builds data/ or writes split.csv)")
    set_deterministic()
    set_all_seeds(seed)
    datasets = build_datasets(data, sources, device, evaluating)
    if ddp and data.disk_cache() is not None:  # rank 0 fills the disk cache; the others read it
        if rank == 0:
            for ds in filter(None, datasets):
                ds.preload(num_workers=data.num_workers)
        barrier(rank, "rank 0 decodes the images into the disk cache")
    loader_kwargs = {"num_workers": data.num_workers, "pin_memory": device.type == "cuda"}
    if data.persistent_workers and data.num_workers:
        loader_kwargs["persistent_workers"] = True  # else the loaders choose (plan_workers)
    train_ds = datasets[0]
    batch_size = min(data.batch_size, len(train_ds)) if evaluating else data.batch_size
    loaders = loaders_from_datasets(  # --evaluate: test only
        *datasets, batch_size=batch_size, eval_batch_size=data.eval_batch_size, seed=seed,
        loader_kwargs=loader_kwargs, balance="sampler" if balance == "sampler" else None)
    train_eval_loader = make_loader(train_ds, data.eval_batch_size, shuffle=False,
                                    drop_last=False, seed=seed, loader_kwargs=loader_kwargs)
    test = "no test" if datasets[2] is None else f"{len(datasets[2])} test"
    print(f"Data: {len(train_ds)} train, {len(datasets[1])} valid, {test} "
          f"images from {data.csv or data.data_dir + '/'}, read as {train_ds.mode} "
          f"({train_ds.mode_decision})" + (", resized to {}x{} (HxW) by {}".format(
              *train_ds.image_size, train_ds.resize) if train_ds.resize != "squish" else "")
          + f"; {train_ds.cache_decision}; "
          f"device {device}" + (f"; {world_size} processes" if world_size > 1 else ""))
    if balance == "sampler" and not evaluating:
        print(f"Train order (--balance sampler): {len(train_ds)} images drawn per epoch with "
              f"replacement, each of the {len(set(train_ds.targets))} classes in train equally "
              "likely")
    if data.class_folders is not None:  # the listing is the data: a CSV run reads it alike
        flags = [f for flag, value, default in (
            ("--file-column", data.file_column, DataSettings.file_column),
            ("--label-column", data.label_column, DataSettings.label_column),
            ("--encoding", data.encoding, DataSettings.encoding)) if value != default
            for f in (flag, value)]
        print(f"Image folder read as its listing, {data.csv}: the same data as "
              + shlex.join(["--csv", data.csv, "--img-dir", data.class_folders,
                            "--split-column", "split", *flags]))
    if data.num_workers:  # where each loader makes its batches; loaders that agree named once
        by_decision: dict[str, list[str]] = {}
        for name, loader in zip(SPLITS, loaders):
            if loader is not None:
                by_decision.setdefault(loader.workers_decision, []).append(name)
        print(f"Workers (--num-workers {data.num_workers}): "
              + "; ".join(f"{', '.join(names)}: {why}" for why, names in by_decision.items()))
    if loaders[2] is None:  # the valid loader stands in: train_model's test_loader, the reports
        print(NO_TEST_SPLIT)
        loaders = (loaders[0], loaders[1], loaders[1])
    return datasets, (*loaders, train_eval_loader)


NO_TEST_SPLIT = ("No test split: the test accuracy and reports below are of the validation split, "
                 "which chose the best epoch, so they are optimistic")


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


# ---- training, and what comes after it -----------------------------------------------------------

def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    kind = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The learning rate schedule, stepped after every batch; None for a constant rate."""
    if config.lr_schedule == "constant":
        return None
    total = config.schedule_epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    # The rate alone is cycled: SGD without momentum stays without it.
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                               cycle_momentum=False)


@dataclasses.dataclass
class Session:
    """Where this process stands in the run: what fit() and finish() share besides the model."""
    rank: int
    device: torch.device
    results_dir: Path
    checkpoint_path: Path
    hints: dict  # the commands to print after an interrupt: "resume", "evaluate"


def fit(settings: Settings, config: RunConfig, classes: list[str], loaders: tuple,
        session: Session, checkpoint: dict | None,
        task: Classification) -> tuple[torch.nn.Module, torch.nn.Module, History]:
    """Build the model, optimizer and schedule (or restore them, --resume), then train; returns
    (model, the model as trained (DDP's wrapper under torchrun), history)."""
    train_loader, valid_loader, test_loader, train_eval_loader = loaders
    try:
        model = build_model(config.net, load_weights=not settings.resume).to(session.device)
    except PretrainedWeightsMissing as e:
        raise RunError(str(e), status=2) from None
    except ValueError as e:  # an image too small for the model
        raise RunError(str(e)) from None
    optimizer = make_optimizer(config.train, model.parameters())
    scheduler = make_scheduler(config.train, optimizer, len(train_loader))
    history = load_run(checkpoint, session.checkpoint_path, model, optimizer, scheduler,
                       settings.epochs) if settings.resume else History()
    net = model
    if distributed():
        device_ids = [session.device.index] if session.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids)
    save = functools.partial(save_run, session.results_dir, model, optimizer, scheduler, config,
                             classes) if session.rank == 0 else None  # rank 0 alone writes
    try:
        train_model(net, settings.epochs, train_loader, valid_loader, test_loader,
                    optimizer=optimizer, device=session.device, history=history,
                    train_eval_loader=train_eval_loader,
                    logging_interval=settings.logging_interval, on_epoch_end=save,
                    scheduler=scheduler, early_stopping=settings.early_stopping, task=task)
    except ValueError as e:
        if "Expected more than 1 value per channel" not in str(e):
            raise
        raise RunError(f"--model {config.net.model}'s BatchNorm needs more than one value per "
                       "channel in training, but a batch of one image reaches a 1x1 feature map: "
                       "pass a larger --batch-size (per process under torchrun) or "
                       "--image-size") from None
    except LossNotFinite as e:
        saved = len(history.train_acc)
        raise RunError(f"{e}. The usual cause is a learning rate too high for this model and data "
                       f"(--lr {config.train.lr:g}: try a tenth of it), else weights or images "
                       "holding NaN. Nothing of this epoch was saved; "
                       + (f"{session.checkpoint_path} holds epoch {saved}" if saved else
                          "no checkpoint was written")) from None
    except KeyboardInterrupt as e:
        saved = len(history.train_acc)  # train_model extends history in place, saving each
        how = "Terminated (SIGTERM)" if isinstance(e, Terminated) else "Interrupted"
        print(f"\n{how} before the first epoch ended; nothing was saved." if not saved
              else f"\n{how}. The checkpoint of epoch {saved} is in {session.checkpoint_path}.\n"
              f"Resume with: {session.hints['resume']}")
        raise RunError(None, status=exit_status(e)) from None
    return model, net, history


def finish(model: torch.nn.Module, net: torch.nn.Module, history: History, test_loader,
           classes: list[str], session: Session, *, baseline: Baseline | None = None,
           missed: Callable | None = None) -> None:
    """After training: the best epoch's model on the test split beside the last one's, then the
    figures and reports (of the last epoch's model, as checkpoint.pt holds it), and the classes
    it misses on test (missed(cm): missed_lines, by default). baseline: drawn on accuracy.png,
    and a best epoch's test figure no better than it on both counts (accuracy and balanced
    accuracy) is marked."""
    results_dir = session.results_dir
    try:
        best, epochs, history.best_test_acc = best_epoch(history), len(history.valid_acc), None
        best_balanced = None  # best.pt's test balanced accuracy (with a baseline, for its mark)
        if best and history.test_acc is not None:  # best.pt's model: the last one's, or read
            history.best_test_acc, best_balanced = (history.test_acc, None) if best == epochs \
                else best_test_figures(model, results_dir / "best.pt", test_loader, session,
                                       baseline)
        if best == epochs:
            print(f"Best epoch: the last, {best}, validation {monitored_text(history, best)} "
                  f"({results_dir / 'best.pt'} holds it too)")
        elif history.best_test_acc is not None:
            print(f"Best epoch: {best} of {epochs}, validation {monitored_text(history, best)}; "
                  f"its model ({results_dir / 'best.pt'}) scores {history.best_test_acc:.2f}% on "
                  f"test{best_note(history.best_test_acc, best_balanced, baseline)}, "
                  f"the last epoch's {history.test_acc:.2f}%")  # the mark beside the figure it is of
        cm = compute_confusion_matrix(net, test_loader, session.device, len(classes))  # all ranks
        if session.rank == 0:
            write_figures(history, model, test_loader, results_dir, classes, baseline=baseline)
            write_reports(model, cm, test_loader, results_dir, classes)
            for line in (missed or functools.partial(missed_lines, classes=classes))(cm):
                print(line)
    except KeyboardInterrupt as e:
        how = "Terminated (SIGTERM)" if isinstance(e, Terminated) else "Interrupted"
        print(f"\n{how} after training: the checkpoint of epoch {len(history.train_acc)} "
              f"in {session.checkpoint_path} is complete; some figures or reports may be missing. "
              f"Write the reports with: {session.hints['evaluate']}")
        raise RunError(None, status=exit_status(e)) from None


def best_test_figures(model: torch.nn.Module, path: Path, test_loader, session: Session,
                      baseline: Baseline | None) -> tuple[float | None, float | None]:
    """(test accuracy, test balanced accuracy) in % of the weights in path (best.pt) in a copy of
    model; the balanced accuracy only with a baseline (for the mark), else None, the accuracy
    measured as it always was; (None, None) when path cannot be read."""
    if baseline is None or not baseline.num_classes:
        return saved_model_accuracy(model, path, test_loader, session.device, session.rank), None
    best_model = saved_model(model, path, session.device, session.rank)  # all ranks, or none
    if best_model is None:
        return None, None
    scores = compute_scores(best_model, test_loader, session.device, baseline.num_classes)
    return scores["accuracy"], scores["balanced_accuracy"]


def best_note(accuracy: float, balanced: float | None, baseline: Baseline | None) -> str:
    """The note beside best.pt's test accuracy on the "Best epoch" line: Baseline.note's, with
    the balanced accuracy that beats the baseline when the accuracy does not; "" without one."""
    if baseline is None:
        return ""
    return baseline.note(accuracy, baseline.test, balanced, baseline.test_balanced, explain=True)


def best_epoch_and_loss(history: History, session: Session) -> bool:
    """The start of a --label-delim or --task regression run's finish: the best epoch's line
    (every rank) and, on rank 0, loss.png with the best epoch marked; whether this rank goes on
    to write the reports (rank 0)."""
    import matplotlib.pyplot as plt

    from plot import plot_training_loss

    best, epochs = best_epoch(history), len(history.valid_acc)
    if best:
        print(f"Best epoch: {best} of {epochs}, validation {monitored_text(history, best)} "
              f"({session.results_dir / 'best.pt'} holds it)")
    if session.rank != 0:
        return False
    plt.close(plot_training_loss(history.minibatch_loss, epochs,
                                 len(history.minibatch_loss) // max(epochs, 1),
                                 session.results_dir, best_epoch=best or None))
    return True


def finish_multi_label(model: torch.nn.Module, history: History, test_loader, classes: list[str],
                       session: Session, task: MultiLabel) -> None:
    """After a --label-delim run: the best epoch, loss.png, and of the last epoch's model on the
    test split: the per-class report (multi_label_report.csv), examples.png and mistakes.png
    (predicted and true tag sets, joined by the run's delimiter). Under torchrun the report is
    of every rank's outputs (test_figure's, gathered), written by rank 0."""
    if not best_epoch_and_loss(history, session):
        return
    if test_loader is not None:
        write_tag_reports(model, test_loader, classes, task.threshold, session.results_dir,
                          session.device, outputs=getattr(task, "test_outputs", None))


def write_tag_reports(model: torch.nn.Module, test_loader, classes: list[str], threshold: float,
                      results_dir: Path, device: torch.device | str, *,
                      outputs: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Of test_loader's images (a --label-delim run's test split): multi_label_report.csv,
    examples.png and mistakes.png (predicted and true tag sets, joined by the run's delimiter),
    each written whole. outputs: multi_label_outputs of the split, measured already (under
    torchrun: by every rank, gathered; this runs on rank 0 alone). Under torchrun examples.png
    shows rank 0's share, mistakes.png looks at every image (on rank 0 alone)."""
    import matplotlib.pyplot as plt

    from plot import show_tag_examples, show_tag_mistakes

    probs, targets = multi_label_outputs(model, test_loader, device) if outputs is None \
        else outputs
    path = results_dir / MULTI_LABEL_REPORT
    write_atomic(path, multi_label_report(probs, targets, classes, threshold).encode())
    print(f"Per-class report of the test split: {path}")
    dataset = test_loader.dataset  # the delimiter: the CsvImageDataset's, under any wrapper
    while not hasattr(dataset, "label_delim") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    tags = dict(class_names=classes, delim=getattr(dataset, "label_delim", None) or " ",
                threshold=threshold)
    for figure in (show_tag_examples(model, test_loader, results_dir, **tags),
                   show_tag_mistakes(model, whole_split_loader(test_loader), results_dir,
                                     **tags)):
        plt.close(figure)


def finish_regression(model: torch.nn.Module, history: History, test_loader,
                      targets: list[str], session: Session, task: Regression) -> None:
    """After a --task regression run: the best epoch, loss.png, and of the test split with the
    last epoch's model: regression_report.csv, scatter.png and worst_errors.png. Under
    torchrun the report and scatter.png are of every rank's outputs (test_figure's, gathered),
    written by rank 0."""
    if not best_epoch_and_loss(history, session):
        return
    write_regression_reports(model, test_loader, targets, task, session.results_dir,
                             session.device, outputs=getattr(task, "test_outputs", None))


def write_regression_reports(model: torch.nn.Module, test_loader, targets: list[str],
                             task: Regression, results_dir: Path,
                             device: torch.device | str, *,
                             outputs: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """regression_report.csv (per target: count, RMSE, MAE, R², the RMSE of the train mean),
    scatter.png and worst_errors.png of test_loader's images, each written whole. outputs:
    regression_outputs of the split, measured already (under torchrun: by every rank, gathered;
    this runs on rank 0 alone); worst_errors.png looks at every image (on rank 0 alone)."""
    import matplotlib.pyplot as plt

    from plot import plot_regression_scatter, show_worst_errors

    predicted, truth = regression_outputs(model, test_loader, device, task.mean, task.std) \
        if outputs is None else outputs
    path = results_dir / REGRESSION_REPORT
    write_atomic(path, regression_report(predicted, truth, targets, task.mean).encode())
    plt.close(plot_regression_scatter(torch.from_numpy(predicted), torch.from_numpy(truth),
                                      targets, results_dir))
    plt.close(show_worst_errors(model, whole_split_loader(test_loader), task.mean, task.std,
                                results_dir, target_names=targets))
    print(f"Per-target report of the test split: {path}; figures: scatter.png, "
          "worst_errors.png")


def write_figures(history: History, model: torch.nn.Module, test_loader, results_dir: Path,
                  class_names: list[str], *, baseline: Baseline | None = None) -> None:
    """loss.png, accuracy.png and examples.png in results_dir; each figure closed once written.
    Both curves mark the best epoch (best.pt's; on accuracy.png named by the figure that chose
    it); accuracy.png draws the baseline's validation accuracy when there is one."""
    import matplotlib.pyplot as plt  # here, not at the top: --help and --predict start faster

    from plot import plot_accuracy, plot_training_loss, show_examples

    epochs, best = len(history.train_acc), best_epoch(history) or None
    for figure in (
        plot_training_loss(history.minibatch_loss, epochs, len(history.minibatch_loss) // epochs,
                           results_dir, best_epoch=best),
        plot_accuracy(history.train_acc, history.valid_acc, results_dir, best_epoch=best,
                      best_label=None if not best or history.monitor == "accuracy" else
                      f"Best epoch ({best}): validation {monitored_text(history, best)}",
                      baseline=None if baseline is None else baseline.valid,
                      baseline_label=None if baseline is None else
                      f"Always {baseline.name!r} (validation): {baseline.valid:.2f}%"),
        show_examples(model, test_loader, results_dir, class_names=class_names),
    ):
        plt.close(figure)


# ---- command line --------------------------------------------------------------------------------

def _at_least(minimum: float, kind: type, *limits: tuple[Callable, str]):
    """A flag's type: a number of `kind`, at least `minimum`, that passes each (test, what it must
    be) of `limits`; anything else is argparse's error with the sentence."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value >= minimum or value != value:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        for test, must in limits:
            if not test(value):
                raise argparse.ArgumentTypeError(f"{must}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


_FLOAT32 = (lambda v: 0 < v <= torch.finfo(torch.float32).max,  # the weights are float32
            "must be a number > 0 that float32 holds")
_positive_float = _at_least(0.0, float, _FLOAT32)
_finite = _at_least(0.0, float, (lambda v: v != float("inf"), "must be a finite number"))
_minutes = _at_least(0.0, float, _FLOAT32, (lambda v: 0.05 <= v <= 7 * 24 * 60,  # torch's timeouts
                                            "must be from 0.05 (3 s) to 10080 (a week)"))
_seed = _at_least(0, int, (lambda v: v < 2**32,
                           "must be below 2**32 (NumPy's and the data order's limit)"))
_fraction = _at_least(0.0, float, (lambda v: v < 1, "must be below 1"))


def _two_columns(text: str) -> tuple[str, str]:
    """--predict-columns: "ID,LABEL", two different column names."""
    names = tuple(name.strip() for name in text.split(","))
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise argparse.ArgumentTypeError(f"expected two column names, ID,LABEL (such as id,label "
                                         f"from sample_submission.csv), got {text!r}")
    return names


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
                                        "(default: the CSV's folder, and absolute names are "
                                        "read as written; given, they are refused)")
    data.add_argument("--image-folder", dest="class_folders", metavar="DIR",
                      help="a folder of class folders (DIR/cat/1.png), with split folders above "
                           "them where there are (train; valid or val; test), or Hugging Face's "
                           "metadata.csv, instead of --csv: listed into RESULTS_DIR/split.csv, "
                           "which the run then reads as a CSV")
    data.add_argument("--split-column", help="column saying train, valid or test for each row "
                                             "(default: none; a split is drawn by class, at "
                                             "random with --task regression); with "
                                             "no test rows, or only unlabelled ones, the reports "
                                             "are of valid")
    data.add_argument("--valid-column", help="a True / False (1 / 0, yes / no) column marking "
                                             "the valid rows, the rest train (fastai's is_valid); "
                                             "no test unless --test-fraction")
    data.add_argument("--valid-fraction", type=_fraction, default=None,
                      help="share of the table drawn for valid; with --split-column, of its "
                           "train rows, when the column has no valid rows "
                           f"(default: {DEFAULT_FRACTION})")
    data.add_argument("--test-fraction", type=_fraction, default=None,
                      help="share of the table drawn for test; with --split-column or "
                           "--valid-column, none unless given; 0: no test split, the reports are "
                           f"of valid (default: {DEFAULT_FRACTION})")
    data.add_argument("--split-seed", type=_at_least(0, int), default=DataSettings.split_seed,
                      help="seed of the drawn split (apart from --seed: a new seed keeps the "
                           "split)")
    data.add_argument("--file-column", default=DataSettings.file_column,
                      help="column with the file names, or its 0-based position (a column "
                           "named so wins)")
    data.add_argument("--label-column", default=DataSettings.label_column,
                      help="column with the labels, or its 0-based position; whole numbers "
                           "are class indices, any other text makes every label a class name")
    data.add_argument("--weight-column", default=None,
                      help="column of a number >= 0 per row weighting its loss (Keras's "
                           "weight_col): each batch's loss is sum(w * loss) / sum(w) (default: "
                           "none, every row alike)")
    data.add_argument("--label-delim", default=None, metavar="DELIM",
                      help="several labels per image, split on DELIM (' ', '|', ';'): one "
                           "sigmoid per class, BCE loss, mean average precision (default: one "
                           "class per image; with --evaluate or --predict: the checkpoint's)")
    data.add_argument("--task", choices=TASKS, default=None,
                      help="regression: --label-column names one or more columns of numbers "
                           "(angle, or angle,scale) to predict, standardised with the train "
                           "split's mean and std; RMSE, MAE and R² per epoch (default: "
                           "classification; with --resume, --evaluate or --predict: the "
                           "checkpoint's)")
    data.add_argument("--no-header", action="store_true",
                      help="the CSV's first line is a row: name columns by position "
                           "(--file-column 0 --label-column 1)")
    data.add_argument("--file-prefix", default=DataSettings.file_prefix,
                      help="put before each file name (the file read is IMG_DIR/PREFIX+NAME+"
                           "SUFFIX), e.g. train/")
    data.add_argument("--file-suffix", default=DataSettings.file_suffix,
                      help="put after each file name, e.g. .jpg for ids without an extension "
                           "(Kaggle's); --predict writes the ids without it")
    data.add_argument("--mode", default=DataSettings.mode, choices=["auto", "L", "RGB", "RGBA"],
                      help="gray (L, 1 channel) or RGB (3); auto: L when every image is gray, "
                           "else RGB, from the files' headers; RGBA (4) keeps transparency "
                           "instead of laying it over white")
    data.add_argument("--image-size", type=parse_image_size, default=None,
                      help="resize every image to N x N or HxW as it is read (default: images "
                           "must share one size)")
    data.add_argument("--resize", choices=RESIZE_METHODS, default=None,
                      help="how --image-size is reached by an image of another shape: squish "
                           "(stretched), crop (the short side fitted, the rest centre-cropped; "
                           "under --augment a random crop in training) or pad (fitted inside, "
                           "centred on black) (default: the checkpoint's with --resume, "
                           "--evaluate or --predict, else squish)")
    data.add_argument("--encoding", default=DataSettings.encoding, help="the CSV's text encoding")
    data.add_argument("--num-classes", type=_at_least(1, int), default=None,
                      help="integer labels are 0 to N-1 (default: up to the largest label, which "
                           "must not be far above the others)")
    data.add_argument("--augment", action="store_true",
                      help="train-only random rotation (up to 10 degrees) and shift (up to 10%%), "
                           "the same for any --num-workers and after --resume")
    data.add_argument("--num-workers", type=_at_least(0, int), default=DataSettings.num_workers,
                      help="DataLoader worker processes; they also share the first pass's decoding")
    data.add_argument("--persistent-workers", action="store_true",
                      help="keep every loader's workers alive between epochs (those that run "
                           "--augment on images held in memory are kept alive anyway)")
    data.add_argument("--cache-mb", type=_at_least(0.0, float), default=DataSettings.cache_mb,
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
                            + inherited % ModelConfig.model)
    model.add_argument("--hidden", type=_at_least(1, int), default=None,
                       help="hidden units of the MLP" + inherited % ModelConfig.hidden)
    model.add_argument("--pretrained", action="store_true", default=None,
                       help="resnet18 from torchvision's ImageNet weights (downloaded into "
                            "$TORCH_HOME/hub/checkpoints/ when missing and the machine is online)")
    model.add_argument("--normalize", action="store_true", default=None,
                       help="feed the model (x - mean) / std per channel, of the train split's "
                            "pixels; kept in the checkpoint, so --predict applies it too")

    optim = p.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=_at_least(1, int), default=Settings.epochs,
                       help="number of epochs")
    optim.add_argument("--seed", type=_seed, default=Settings.seed,
                       help="seed for the weights and the data order (0 to 2**32 - 1)")
    optim.add_argument("--batch-size", type=_at_least(1, int), default=DataSettings.batch_size,
                       help="minibatch size (under torchrun: the global batch, split between "
                            "ranks)")
    optim.add_argument("--eval-batch-size", type=_at_least(1, int),
                       default=DataSettings.eval_batch_size,
                       help="batch size for measuring accuracy (does not change the results)")
    optim.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                       help="sgd is the lecture's" + inherited % TrainConfig.optimizer)
    optim.add_argument("--lr", type=_positive_float, default=None,
                       help=f"learning rate (default: {DEFAULT_LR['sgd']:g} for sgd, the "
                            f"lecture's; {DEFAULT_LR['adam']:g} for adam and adamw; with "
                            "--resume: the checkpoint's)")
    optim.add_argument("--momentum", type=_finite, default=None,
                       help="SGD's momentum" + inherited % f"{TrainConfig.momentum:g}")
    optim.add_argument("--weight-decay", type=_finite, default=None,
                       help="L2 penalty (decoupled for adamw)"
                            + inherited % "0; 0.01 for adamw, torch's")
    optim.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                       help="the learning rate over the run, set after every batch: cosine "
                            "decays to 0; onecycle warms up for 30%% of the batches to --lr, "
                            "then anneals" + inherited % TrainConfig.lr_schedule)
    optim.add_argument("--early-stopping", type=_at_least(1, int), default=None, metavar="N",
                       help="stop after N epochs without a better validation figure (--monitor) "
                            "(default: train every epoch)")
    optim.add_argument("--monitor", choices=[*MONITORS, *(m for m in REGRESSION_MONITORS
                                                           if m not in MONITORS)], default=None,
                       help="the validation figure that picks the best epoch (best.pt) and drives "
                            "--early-stopping; loss: lower is better; rmse (the default), mae "
                            "or r2 with --task regression"
                            + inherited % TrainConfig.monitor)
    optim.add_argument("--threshold", type=_at_least(0.0, float, (lambda v: 0 < v < 1,
                                                                  "must be between 0 and 1")),
                       default=None, help="with --label-delim, a class is predicted when its "
                       "probability reaches this" + inherited % TrainConfig.threshold)
    optim.add_argument("--loss", choices=list(REGRESSION_LOSSES), default=None,
                       help="with --task regression, the loss on the standardised targets"
                            + inherited % TrainConfig.loss)
    optim.add_argument("--balance", choices=("sampler", "loss"), default=None,
                       help="rare classes: sampler draws each epoch's order with replacement, "
                            "each class equally likely; loss weighs each class by its inverse "
                            "frequency in train (default: neither; with --resume: the "
                            "checkpoint's)")

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
    outputs.add_argument("--predict-columns", type=_two_columns, metavar="ID,LABEL",
                         help="with --predict: predictions.csv is a submission, exactly these two "
                              "columns (id,label from Kaggle's sample_submission.csv): each "
                              "image's id and predicted class, in the table's row order; a table's "
                              "ids are read from its ID column, its LABEL column is not read")
    outputs.add_argument("--checkpoint",
                         help="the checkpoint to use, such as RESULTS_DIR/best.pt (default: "
                              "RESULTS_DIR/checkpoint.pt)")
    outputs.add_argument("--logging-interval", type=_at_least(1, int),
                         default=Settings.logging_interval, help="print the loss every N batches")

    hardware = p.add_argument_group("device and processes")
    hardware.add_argument("--device", default=Settings.device,
                          help="auto (cuda, then mps, else cpu), or any torch device")
    hardware.add_argument("--dist-timeout", type=_minutes, default=Settings.dist_timeout,
                          metavar="MINUTES",
                          help="under torchrun: how long a process waits for the others at each "
                               "exchange, rank 0's first decode of the data included, before it "
                               "stops with an error (torch's default)")
    args = p.parse_args(argv)
    resuming = args.resume or args.evaluate or args.predict is not None  # the model is recorded
    if args.pretrained and args.model != "resnet18" and not (resuming and args.model is None):
        p.error("--pretrained goes with --model resnet18 (the weights are ResNet-18's)")
    if args.pretrained and args.mode == "RGBA":
        p.error("--pretrained and --mode RGBA: the ImageNet weights take 3 colour channels, not "
                "4; pass --mode RGB (transparency laid over white), or leave --pretrained out")
    if args.resize not in (None, "squish") and args.image_size is None and not resuming:
        p.error(f"--resize {args.resize} goes with --image-size (the size to {args.resize} to)")
    if args.pretrained and args.normalize:
        p.error("--pretrained and --normalize: choose one (the pretrained model is fed the "
                "ImageNet mean and std it was trained with)")
    if args.csv is not None and args.data_dir != DEFAULT_DATA_DIR:
        p.error("--csv and --data-dir: choose one (one CSV for all images, or the folder of "
                "three CSVs)")
    if args.class_folders is not None:
        if args.csv is not None or args.data_dir != DEFAULT_DATA_DIR:
            p.error("--image-folder, --csv and --data-dir: choose one")
        if args.predict is not None:
            p.error("--predict PATH reads its own folder or CSV; leave out --image-folder")
        if not Path(args.class_folders).is_dir():
            p.error(f"--image-folder {args.class_folders}: no such folder")
    if args.split_column is not None and args.csv is None:
        p.error("--split-column goes with --csv")
    if args.valid_column is not None and args.csv is None:
        p.error("--valid-column goes with --csv")
    if args.valid_column is not None and args.split_column is not None:
        p.error("--valid-column and --split-column: choose one (a True / False column marking the "
                "valid rows, or a column naming each row's split)")
    if args.valid_column is not None and args.valid_fraction is not None:
        p.error("--valid-column marks the valid rows: leave --valid-fraction out")
    if args.valid_fraction == 0:
        p.error("--valid-fraction 0: a run needs validation rows (they choose the best epoch)")
    if args.img_dir is not None and args.csv is None and args.predict is None:
        p.error("--img-dir goes with --csv or --predict")
    if args.no_header and args.csv is None and args.predict is None:
        p.error("--no-header goes with --csv or --predict (a table without a header line)")
    if args.weight_column is not None and args.csv is None:
        p.error("--weight-column goes with --csv (a column of your table)")
    if args.label_delim is not None and args.balance is not None:
        p.error("--balance is for one class per image; a --label-delim run has no class per "
                "image to balance")
    if args.label_delim is not None and args.monitor not in (None, "accuracy", "loss"):
        p.error(f"--monitor {args.monitor} is for one class per image; a --label-delim run "
                "follows mean average precision (the default) or loss")
    regression = args.task == "regression"
    if regression and (args.label_delim is not None or args.balance is not None):
        p.error("--task regression predicts numbers: --label-delim and --balance are for classes")
    if regression and args.monitor in ("balanced_accuracy", "macro_f1"):
        p.error(f"--monitor {args.monitor} is for classes; a --task regression run follows rmse "
                "(the default), mae, r2 or loss")
    if not regression and args.monitor in ("rmse", "mae", "r2") and not resuming:
        p.error(f"--monitor {args.monitor} goes with --task regression")
    if args.loss is not None and not regression and not resuming:
        p.error("--loss goes with --task regression")
    if regression and args.csv is None and args.predict is None:
        p.error("--task regression goes with --csv (a table with columns of numbers)")
    if args.label_delim == "" or args.label_delim is not None and args.csv is None:
        p.error("--label-delim goes with --csv (a column of tags), and is one or more characters")
    own_column = args.split_column is not None or args.valid_column is not None
    fractions = [(0.0 if own else DEFAULT_FRACTION) if f is None else f for f, own in (
        (args.valid_fraction, args.valid_column is not None), (args.test_fraction, own_column))]
    if sum(fractions) >= 1:
        p.error("--valid-fraction and --test-fraction must add up to less than 1")
    if args.csv is not None and not Path(args.csv).is_file():
        p.error(f"--csv {args.csv}: no such file")
    if args.data_dir != DEFAULT_DATA_DIR and not Path(args.data_dir).is_dir():
        p.error(f"--data-dir {args.data_dir}: no such folder (make one with: "
                f"python make_subset.py --out-dir {args.data_dir})")
    if args.predict_columns is not None and args.predict is None:
        p.error("--predict-columns goes with --predict")
    if sum((args.resume, args.evaluate, args.predict is not None)) > 1:
        p.error("--resume, --evaluate and --predict: choose one")
    if args.results_dir is None:  # the reports of another folder's model go beside it
        args.results_dir = str(Path(args.checkpoint).parent) if args.checkpoint and \
            resuming else "results"
    checkpoint = Path(args.checkpoint or Path(args.results_dir) / "checkpoint.pt")
    if resuming and checkpoint.exists() and not checkpoint.is_file():  # never opened
        p.error(f"--checkpoint {checkpoint} is not a regular file (a FIFO, folder or device)")
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


# ---- main: the program, top to bottom ------------------------------------------------------------

@global_settings_kept()  # set_deterministic() is for this run, not for whoever calls main()
@sigterm_as_interrupt()
def main(argv: list[str] | None = None) -> History | Path:
    """train.py's program; returns the History of a training or --evaluate run, or --predict's
    predictions.csv. A RunError below becomes SystemExit here, with its sentence, once."""
    settings = Settings.from_args(parse_args(argv))
    # What torch imports on first use (an optimizer, the deterministic switch: 900 modules, a
    # second), imported whole: a Ctrl-C inside left them half-imported, and the next use raised
    # AttributeError instead of the interrupt.
    with ctrl_c_deferred():
        for name in ("torch._dynamo", "torch._inductor.config"):
            importlib.import_module(name)
    hints = hints_for(argv, settings.resume)
    try:
        return run(settings, hints)
    except (OSError, RuntimeError) as e:
        message = outside_cause(e, settings, hints)
        if message is None:
            raise
        raise SystemExit(f"train.py: error: {message}") from None
    except RunError as e:
        if e.message is not None and e.status == 1:
            raise SystemExit(f"train.py: error: {e.message}") from None
        if e.message is not None:
            print(f"train.py: error: {e.message}", file=sys.stderr)
        raise SystemExit(e.status) from None


def outside_cause(e: Exception, settings: Settings, hints: dict) -> str | None:
    """A sentence for what stopped the run from outside: a full disk, a DataLoader worker killed
    (most often by the out-of-memory killer); None for anything else."""
    resume = ""
    if not (settings.evaluate or settings.predict) and settings.checkpoint.is_file():
        resume = (f". The checkpoint of the last finished epoch is in {settings.checkpoint}; "
                  f"resume with: {hints['resume']}")
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        where = Path(e.filename).parent if isinstance(e.filename, str) else settings.results_dir
        return (f"the disk holding {where} is full ({e.strerror}): free some space there and run "
                "again (every file is written whole or not at all, so none was left "
                f"half-written){resume}")
    text = str(e)
    if isinstance(e, RuntimeError) and "DataLoader worker" in text and (
            "exited unexpectedly" in text or "killed by signal" in text):
        smaller = "--num-workers (0: none)" + (" or --cache-mb" if settings.data.cache_mb else "")
        return (f"a DataLoader worker process stopped ({text.splitlines()[0].strip()}); one "
                "killed by signal Killed is most often the out-of-memory killer: pass a smaller "
                f"{smaller}, or free memory{resume}")
    return None


def with_threshold(checkpoint: dict, given: dict) -> dict:
    """The checkpoint as --evaluate and --predict read it: with --threshold given, a --label-delim
    model's tags are those whose probability reaches it (a choice made when predicting, not a
    part of the model), else the checkpoint's."""
    if "threshold" not in given or checkpoint["config"].get("task") != "multi_label":
        return checkpoint
    return {**checkpoint, "config": {**checkpoint["config"], "threshold": given["threshold"]}}


def regression_data(data: DataSettings, targets: list[str]) -> DataSettings:
    """--task left out on --resume / --evaluate of a regression checkpoint: its task, and its
    target columns unless --label-column names them."""
    return dataclasses.replace(data, task="regression", **(
        {"label_column": ",".join(targets)}
        if data.label_column == DataSettings.label_column else {}))


def checkpoint_task(data: DataSettings, checkpoint_path: Path) -> DataSettings:
    """data with a regression checkpoint's task and target columns when --task is left out (a
    drawn split is compared before the checkpoint is read in full); else data. A checkpoint that
    cannot be read is left to the reading that names why."""
    if data.task is not None or not checkpoint_path.is_file():
        return data
    try:
        checkpoint = read_checkpoint(checkpoint_path)
        regression = checkpoint["config"].get("task") == "regression"
        targets = list(checkpoint["classes"])
    except Exception:  # noqa: BLE001 - named by the full read that follows
        return data
    return regression_data(data, targets) if regression else data


def hints_for(argv: list[str] | None, resuming: bool) -> dict:
    """The commands to print after an interrupt, as the user ran this one (script path included)."""
    command = ["python", *(sys.argv if argv is None else ["train.py", *argv])]
    resume_command = shlex.join(command + ([] if resuming else ["--resume"]))
    if "RANK" in os.environ:  # started by torchrun, whose own flags this process cannot see
        resume_command = f"your torchrun command, with {shlex.join(command[1:])} --resume"
    evaluate_command = shlex.join([c for c in command if c != "--resume"] + ["--evaluate"])
    return {"resume": resume_command, "evaluate": evaluate_command}


def run(settings: Settings, hints: dict) -> History | Path:
    data, checkpoint_path, results_dir = settings.data, settings.checkpoint, settings.results_dir
    move = results_to_move(settings)
    # split.csv goes aside once the checkpoint passed, when this run draws a new one as it reads the
    # data; the rest once the data passed too: a refused run moves nothing
    first = tuple(n for n in move if n == "split.csv" and (
        data.class_folders or data.draws_split()))
    reads_checkpoint = settings.resume or settings.evaluate  # and compares its run with this one
    trained_split = checkpoint_path.resolve().parent / "split.csv"  # the checkpoint run's split
    # a different split: refused before anything is moved or written
    if reads_checkpoint and data.draws_split() and trained_split.is_file():
        # a regression's split is drawn at random from its target columns: the checkpoint's task
        data = checkpoint_task(data, checkpoint_path)
        same_split_or_refuse(data.csv, trained_split, data.split_options())
    if reads_checkpoint and data.class_folders and trained_split.is_file():
        same_listing_or_refuse(data, trained_split)
    # --image-folder: from here on, the CSV run of its listing (split.csv, written by data_sources)
    data = data.listed(results_dir / "split.csv")
    settings = dataclasses.replace(settings, data=data)
    if settings.predict is not None:  # needs the checkpoint and the new images, nothing else
        with results_folder(results_dir, True), \
                finished_checkpoint(checkpoint_path, results_dir):
            checkpoint = read_checkpoint(checkpoint_path)
            refuse_other_model_flags(settings.given, saved_model_config(checkpoint,
                                                                        checkpoint_path),
                                     "--predict with", checkpoint_path)
            refuse_other_resize(data.resize, checkpoint.get("resize", "squish"), "--predict with",
                                checkpoint_path)
            return predict(settings.predict, with_threshold(checkpoint, settings.given),
                           checkpoint_path, results_dir,
                           columns=(data.file_column, data.label_column), img_dir=data.img_dir,
                           encoding=data.encoding, device=pick_device(settings.device, 0),
                           submission=settings.predict_columns,
                           file_names=(data.file_prefix, data.file_suffix),
                           header=not data.no_header)
    with process_group(settings.device, data.batch_size, settings.dist_timeout) as (
            rank, world_size, device), \
            results_folder(results_dir, main_process=rank == 0), \
            finished_checkpoint(checkpoint_path, results_dir), \
            peers_answer(rank, settings.dist_timeout):
        # One run at a time in a results folder.
        checkpoint = read_checkpoint(checkpoint_path) if reads_checkpoint else None
        saved = None if checkpoint is None else RunConfig.from_checkpoint(checkpoint["config"],
                                                                          checkpoint_path)
        if saved is not None:
            use = "--resume from" if settings.resume else "--evaluate"
            refuse_other_model_flags(settings.given, saved.net, use, checkpoint_path)
            if settings.evaluate:
                refuse_evaluate_without_data(data, saved, checkpoint_path)
            data = checkpoint_resize(data, saved, checkpoint_path, settings.evaluate)
            if data.label_delim is None and saved.train.label_delim is not None:
                data = dataclasses.replace(data, label_delim=saved.train.label_delim)
            if data.task is None and saved.train.task == "regression":  # its target columns
                data = regression_data(data, checkpoint["classes"])
        moved_into = move_aside(results_dir, first) if rank == 0 else None
        balance = inherit(TrainConfig, settings.given, saved and saved.train).balance
        datasets, loaders = prepare_data(
            data, split_path=results_dir / "split.csv", seed=settings.seed,
            evaluating=settings.evaluate, keep_split=reads_checkpoint,
            rank=rank, world_size=world_size, device=device, balance=balance)
        config, classes = run_config(settings, datasets, saved), datasets[0].classes
        session = Session(rank, device, results_dir, checkpoint_path, hints)
        if settings.evaluate:
            refuse_other_data(checkpoint, saved, config, classes, checkpoint_path)
        elif settings.resume:
            check_resume(saved, config, checkpoint_path)
        if rank == 0:
            move_aside(results_dir, tuple(n for n in move if n not in first), into=moved_into)
        baseline = None if (config.train.label_delim is not None  # classes alone have one
                            or config.train.task == "regression") else majority_baseline(
            [None if ds is None else np.asarray(ds.targets) for ds in datasets], classes)
        missed = functools.partial(  # the missed classes' lines, named by the split they are of
            missed_lines, classes=classes, split="test" if datasets[2] is not None else
            "validation (no test split)", helps=what_helps(
                baseline is not None, config.train.balance, config.net.model,
                weighted=config.train.weight_column is not None  # --evaluate: the run's
                or (saved is not None and saved.train.weight_column is not None)))
        if settings.evaluate:
            return evaluate(with_threshold(checkpoint, settings.given), classes, loaders[2],
                            session, baseline=baseline,
                            missed=missed)
        task = make_task(config.train, np.asarray(datasets[0].targets), len(classes),
                         baseline=baseline)
        if baseline is not None:
            print(baseline.line())
        if config.train.class_weights is not None:
            print("Loss weighted by class (--balance loss, inverse frequency in train): "
                  + ", ".join(f"{name} {w:.4g}" for name, w in zip(classes,
                                                                     config.train.class_weights)))
        model, net, history = fit(settings, config, classes, loaders, session, checkpoint, task)
        if isinstance(task, MultiLabel):
            finish_multi_label(model, history, loaders[2], classes, session, task)
            return history
        if isinstance(task, Regression):
            finish_regression(model, history, loaders[2], classes, session, task)
        else:
            finish(model, net, history, loaders[2], classes, session, baseline=baseline,
                   missed=missed)
        # the table's unlabelled test rows (a Kaggle test set): predicted, a number or a class
        to_predict = unlabelled_source(data, results_dir / "split.csv")
        if to_predict is not None and rank == 0:
            predict_test_rows(to_predict, data, session)
        return history


def checkpoint_resize(data: DataSettings, saved: RunConfig, path: Path,
                      evaluating: bool) -> DataSettings:
    """The data flags with --resize left out taken from the checkpoint (--resume, --evaluate);
    another --resize is refused before any image is read. --evaluate reads images at the size the
    model takes when --image-size is left out; --resume does not take it (a data flag, as --csv:
    the run's settings must be the same, and it is compared), and crop and pad need it."""
    refuse_other_resize(data.resize, saved.resize, "--evaluate" if evaluating else
                        "--resume from", path)
    resize = data.resize or saved.resize
    if evaluating and data.image_size is None:
        return dataclasses.replace(data, resize=resize, image_size=tuple(saved.net.image_size))
    if resize != "squish" and data.image_size is None:
        h, w = saved.net.image_size
        raise RunError(f"{path} was trained with --resize {resize}, which goes with --image-size: "
                       f"pass that run's --image-size ({h}x{w})")
    return dataclasses.replace(data, resize=resize)


def refuse_other_resize(given: str | None, saved: str, use: str, path: Path) -> None:
    """--predict, --evaluate and --resume read images as the checkpoint's run did: another
    --resize is refused."""
    if given is not None and given != saved:
        raise RunError(f"cannot {use} {path}: its model was trained on images read with "
                       f"--resize {saved}, not {given}; leave --resize out (the checkpoint's is "
                       "used)")


def refuse_evaluate_without_data(data: DataSettings, saved: RunConfig, path: Path) -> None:
    """--evaluate with no data flags reads data/: refused when that is not there, rather than
    building the lecture's digits to test a model of other data on."""
    if data.csv is None and data.data_dir == DEFAULT_DATA_DIR and not all(
            csv.is_file() for csv, _, _ in folder_layout(DEFAULT_DATA_DIR)):
        raise RunError(f"--evaluate reads the test split of the data flags given, and none were: "
                       f"{path} was trained on {describe_data(saved.data_files)}. Pass the data "
                       "flags of that run (--csv and its column and encoding flags, --image-folder "
                       "DIR, or --data-dir)")


def refuse_other_data(checkpoint: dict, saved: RunConfig, config: RunConfig, classes: list[str],
                      path: Path) -> None:
    """--evaluate of a checkpoint trained on other data than the flags read is refused."""
    differences = saved.differences(config, only=RunConfig.DATA_FIELDS)
    if checkpoint.get("classes", list(classes)) != list(classes):
        differences.append(f"classes: checkpoint has {checkpoint['classes']}, the data {classes}")
    if differences:
        raise RunError(f"cannot --evaluate {path}: it was trained on other data:\n  "
                       + "\n  ".join(differences) + "\nUse the data flags of the training run.")


def evaluate(checkpoint: dict, classes: list[str], test_loader, session: Session, *,
             baseline: Baseline | None = None, missed: Callable | None = None) -> History:
    """--evaluate: the saved model on the test split, with the reports of a training run and its
    lines: the test accuracy marked when it is no better than the majority-class baseline, and
    the classes the model misses (missed_lines); the checkpoint and metrics.csv are left as they
    are."""
    path = session.checkpoint_path
    model = model_from_checkpoint(checkpoint, path, session.device)
    if checkpoint["config"].get("task") == "multi_label":  # --label-delim: its own reports
        task = MultiLabel(threshold=checkpoint["config"].get("threshold", 0.5))
        outputs = task.test_outputs = multi_label_outputs(model, test_loader, session.device)
        test_map = mean_average_precision(*outputs)  # every rank's outputs, gathered
        print(task.test_line(test_map))
        if session.rank == 0:
            write_tag_reports(model, test_loader, classes,
                              checkpoint["config"].get("threshold", 0.5), session.results_dir,
                              session.device, outputs=outputs)
        return History(test_acc=test_map)
    if checkpoint["config"].get("task") == "regression":  # --task regression: its own reports
        task = Regression(mean=checkpoint["config"]["target_mean"],
                          std=checkpoint["config"]["target_std"],
                          loss_name=checkpoint["config"].get("loss", "mse"))
        test_rmse = task.test_figure(model, test_loader, session.device)
        print(task.test_line(test_rmse))
        if session.rank == 0:
            write_regression_reports(model, test_loader, classes, task, session.results_dir,
                                     session.device, outputs=task.test_outputs)
        return History(test_acc=test_rmse)
    test_acc = evaluate_model(model, test_loader, classes, session.results_dir, session.device,
                              session.rank, test_line=Classification(baseline=baseline).test_line,
                              missed=missed or functools.partial(missed_lines, classes=classes))
    if session.rank == 0:
        print(f"Reports of {path} written to {session.results_dir}/")
    return History(test_acc=test_acc)


def error_message(e: DatasetError) -> str:
    """e's own message. One raised in a DataLoader worker (images decoded as batches are read,
    with --cache-mb 0 or over budget) arrives as torch's report of it, "Caught ImageLoadError in
    DataLoader worker process 0. Original Traceback ...", which ends with the message."""
    text = str(e)
    if text.startswith("Caught ") and "Original Traceback" in text:
        marker = f"{type(e).__name__}: "
        text = text[text.rfind(marker) + len(marker):].strip() if marker in text else text
    return text


if __name__ == "__main__":
    # A script writes figure files and opens no window. Set for matplotlib, which is imported
    # only when figures are drawn.
    os.environ["MPLBACKEND"] = "Agg"
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on: KeyboardInterrupt
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (main turns SIGTERM into one, Terminated)
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
