"""Figures of a training run, as the lecture's helper_plotting.py draws them: the loss of every
minibatch, the accuracy per epoch, and example predictions; and what the model gets wrong: the
confusion matrix and the most confident mistakes; a regression's predicted-vs-true scatter and
its worst errors.

In a notebook, call them and then plt.show(), as the lecture does:

    plot_training_loss(minibatch_loss_list=minibatch_loss_list, num_epochs=NUM_EPOCHS,
                       iter_per_epoch=len(train_loader), results_dir=None, averaging_iterations=20)
    plt.show()

Each function draws one new figure and returns it; with results_dir it also writes the figure
there as a PNG file (loss.png, accuracy.png, examples.png, confusion_matrix.png, mistakes.png,
scatter.png, worst_errors.png).
Importing this file leaves matplotlib's backend alone, so figures show inline in a notebook;
train.py picks the file-only Agg backend.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator


def plot_training_loss(minibatch_loss_list: Sequence[float], num_epochs: int,
                       iter_per_epoch: int | None = None, results_dir: str | Path | None = None,
                       averaging_iterations: int = 20) -> plt.Figure:
    """Loss of every minibatch, its running average, and a second x-axis in epochs."""
    losses = torch.tensor(minibatch_loss_list, dtype=torch.float64)
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(range(1, len(losses) + 1), losses.tolist(), label="Minibatch loss", alpha=0.5)
    if len(losses) >= averaging_iterations:
        n = averaging_iterations
        kernel = torch.full((1, 1, n), 1.0 / n, dtype=torch.float64)
        running = torch.nn.functional.conv1d(losses.view(1, 1, -1), kernel).flatten()  # valid part
        ax1.plot(range(averaging_iterations, len(losses) + 1), running.tolist(),
                 label=f"Running average ({averaging_iterations} iterations)")
    ax1.set_xlabel("Iterations")
    ax1.set_ylabel("Cross-entropy loss")
    finite = losses[torch.isfinite(losses)]  # a run that diverged has inf or nan losses
    if len(finite) and float(finite.max()) > 0:
        ax1.set_ylim(0, float(finite.max()) * 1.05)
    ax1.legend()
    # Second x-axis below the first, in epochs.
    ax2 = ax1.twiny()
    iter_per_epoch = iter_per_epoch or max(len(losses) // max(num_epochs, 1), 1)
    ax2.set_xlim(ax1.get_xlim())
    ticks = [e * iter_per_epoch for e in range(0, num_epochs + 1, max(num_epochs // 5, 1))]
    ax2.set_xticks(ticks)
    ax2.set_xticklabels([str(t // iter_per_epoch) for t in ticks])
    ax2.xaxis.set_ticks_position("bottom")
    ax2.xaxis.set_label_position("bottom")
    ax2.spines["bottom"].set_position(("outward", 45))
    ax2.set_xlabel("Epochs")
    fig.tight_layout()
    return _maybe_save(fig, results_dir, "loss.png")


def plot_accuracy(train_acc_list: Sequence[float], valid_acc_list: Sequence[float],
                  results_dir: str | Path | None = None) -> plt.Figure:
    """Train and validation accuracy (in %) per epoch."""
    epochs = range(1, len(train_acc_list) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, list(train_acc_list), label="Training")
    ax.plot(epochs, list(valid_acc_list), label="Validation")
    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no tick at 2.5
    ax.set_ylabel("Accuracy (%)")
    ax.legend()
    fig.tight_layout()
    return _maybe_save(fig, results_dir, "accuracy.png")


@torch.no_grad()
def show_examples(model: torch.nn.Module, data_loader, results_dir: str | Path | None = None, *,
                  class_names: Sequence[str] | None = None, num_examples: int = 15) -> plt.Figure:
    """A grid of images of `data_loader`, each titled "P: <predicted> | T: <true>": up to
    num_examples, spread over the classes (as many of each as can be), in the loader's order.

    The batch goes to the model's device; uint8 batches are scaled to [0, 1] first, as in train.py.
    """
    model.eval()
    images, labels = _spread_over_classes(data_loader, num_examples)  # (B, C, H, W), (B,)
    predictions = model(_model_input(model, images)).argmax(dim=1).cpu()
    titles = [f"P: {_name(p, class_names)} | T: {_name(t, class_names)}"
              for p, t in zip(predictions.tolist(), labels.tolist())]
    return _maybe_save(_image_grid(_for_display(images, data_loader), titles), results_dir,
                       "examples.png")


def _spread_over_classes(data_loader, num_examples: int,
                         max_images: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to num_examples images of data_loader, round-robin over its classes (in the order they
    first appear, num_examples classes at most), kept in the loader's order; reads at most
    max_images images."""
    by_class: dict[int, list] = {}  # label -> [(position in the loader, image)]
    seen = 0
    for images, labels, *_ in data_loader:  # weights, with a weight column, unused
        for image, label in zip(images, labels.tolist()):
            if label in by_class or len(by_class) < num_examples:
                bucket = by_class.setdefault(label, [])
                if len(bucket) < num_examples:
                    bucket.append((seen, image, label))
            seen += 1
        if seen >= max_images:
            break
    picked, depth = [], 0
    while len(picked) < num_examples and any(len(b) > depth for b in by_class.values()):
        picked += [b[depth] for b in by_class.values() if len(b) > depth]
        depth += 1
    picked = sorted(picked[:num_examples], key=lambda p: p[0])
    if not picked:
        return torch.zeros(0, 1, 1, 1), torch.zeros(0, dtype=torch.int64)
    return torch.stack([p[1] for p in picked]), torch.tensor([p[2] for p in picked])


@torch.no_grad()
def show_mistakes(model: torch.nn.Module, data_loader, results_dir: str | Path | None = None, *,
                  class_names: Sequence[str] | None = None, num_examples: int = 15) -> plt.Figure:
    """The images of data_loader the model got most confidently wrong (highest loss), each
    titled "P: <predicted> (<its probability>) | T: <true>"."""
    model.eval()
    worst = []  # (loss, image, predicted, probability, true) of the wrong ones; the worst kept
    for images, labels, *_ in data_loader:  # weights, with a weight column, unused
        probs = torch.softmax(model(_model_input(model, images)).float(), dim=1).cpu()  # (B, C)
        confidence, predicted = probs.max(dim=1)
        losses = -probs.gather(1, labels.view(-1, 1)).clamp(min=1e-12).log().flatten()
        for j in torch.nonzero(predicted != labels).flatten().tolist():
            worst.append((losses[j].item(), images[j], predicted[j].item(), confidence[j].item(),
                          labels[j].item()))
        worst = sorted(worst, key=lambda w: -w[0])[:num_examples]
    titles = [f"P: {_name(p, class_names)} ({c:.2f}) | T: {_name(t, class_names)}"
              for _, _, p, c, t in worst]
    images = torch.stack([w[1] for w in worst]) if worst else torch.zeros(0, 1, 1, 1)
    return _maybe_save(_image_grid(_for_display(images, data_loader), titles), results_dir,
                       "mistakes.png")


def plot_regression_scatter(predicted: torch.Tensor, targets: torch.Tensor,
                            target_names: Sequence[str],
                            results_dir: str | Path | None = None) -> plt.Figure:
    """A regression's predictions (N, T) against the true targets (N, T), in their own units: one
    panel per target, with the y = x line a perfect model's points lie on (scatter.png)."""
    predicted, targets = torch.as_tensor(predicted).double(), torch.as_tensor(targets).double()
    n = len(target_names)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), squeeze=False)
    for t, (ax, name) in enumerate(zip(axes[0], target_names)):
        x, y = targets[:, t].numpy(), predicted[:, t].numpy()
        ax.scatter(x, y, s=8, alpha=0.5)
        both = [v for v in (*x.tolist(), *y.tolist())] or [0.0, 1.0]
        low, high = min(both), max(both)
        ax.plot([low, high], [low, high], color="black", linewidth=1, label="y = x")
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.legend(loc="upper left")
    fig.tight_layout()
    return _maybe_save(fig, results_dir, "scatter.png")


@torch.no_grad()
def show_worst_errors(model: torch.nn.Module, data_loader, mean: Sequence[float],
                      std: Sequence[float], results_dir: str | Path | None = None, *,
                      target_names: Sequence[str] | None = None,
                      num_examples: int = 15) -> plt.Figure:
    """The images of data_loader a regression model is furthest off on (the largest squared
    error over the targets, each in units of its std), titled "true 12.3, predicted 40.1" (a
    line per target, named, when there are several). mean, std (T,): the train split's, which
    turn the model's standardised outputs back into the targets' units."""
    model.eval()
    mean_t = torch.as_tensor(list(mean), dtype=torch.float64)
    std_t = torch.as_tensor(list(std), dtype=torch.float64)
    worst = []  # (error, image, predicted (T,), true (T,)); the worst kept
    for images, labels, *_ in data_loader:
        predicted = model(_model_input(model, images)).double().cpu() * std_t + mean_t  # (B, T)
        truth = labels.double().reshape(len(labels), -1)  # (B, T)
        errors = (((predicted - truth) / std_t) ** 2).sum(dim=1)  # (B,)
        worst += [(errors[j].item(), images[j], predicted[j], truth[j]) for j in range(len(images))]
        worst = sorted(worst, key=lambda w: -w[0])[:num_examples]
    names = list(target_names) if target_names is not None and len(target_names) > 1 else None
    titles = ["\n".join((f"{names[t]}: " if names else "") + f"true {tv:.3g}, predicted {pv:.3g}"
                        for t, (tv, pv) in enumerate(zip(truth.tolist(), pred.tolist())))
              for _, _, pred, truth in worst]
    images = torch.stack([w[1] for w in worst]) if worst else torch.zeros(0, 1, 1, 1)
    return _maybe_save(_image_grid(_for_display(images, data_loader), titles), results_dir,
                       "worst_errors.png")


def plot_confusion_matrix(cm: torch.Tensor, class_names: Sequence[str],
                          results_dir: str | Path | None = None) -> plt.Figure:
    """cm[true, predicted] counts as a heat map, class names on both axes; the count in each cell
    for up to 30 classes (beyond that, colour only)."""
    n = len(class_names)
    size = min(max(5.0, 0.45 * n + 2), 24.0)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm.numpy(), cmap="Blues")
    font = 10 if n <= 12 else 7 if n <= 30 else 5
    ax.set_xticks(range(n), [str(c) for c in class_names], rotation=90 if n > 10 else 0,
                  fontsize=font)
    ax.set_yticks(range(n), [str(c) for c in class_names], fontsize=font)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    if n <= 30:
        top = float(cm.max()) if cm.numel() else 0.0
        for (i, j), count in zip(torch.cartesian_prod(torch.arange(n), torch.arange(n)).tolist(),
                                 cm.flatten().tolist()):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=font,
                    color="white" if count > top / 2 else "black")
    fig.tight_layout()
    return _maybe_save(fig, results_dir, "confusion_matrix.png")


def _model_input(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The batch on the model's device; uint8 scaled to [0, 1], as train.py does."""
    inputs = images.to(next(model.parameters(), torch.empty(0)).device)
    if not inputs.is_floating_point():
        # dataset.to_float01, copied so that this file stands alone (a test pins the two equal)
        inputs = inputs.to(torch.float32).mul_(1.0 / 255)
    return inputs


def _for_display(images: torch.Tensor, data_loader) -> torch.Tensor:
    """Images as a viewer shows them, float in [0, 1]: uint8 scaled, and a Normalize in the
    dataset's transform (torchvision's, or any with mean and std) undone."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    transform = getattr(getattr(data_loader, "dataset", None), "transform", None)
    steps = list(getattr(transform, "transforms", [transform]))  # a Compose, or one transform
    for step in reversed(steps):
        if type(step).__name__ == "Normalize" and hasattr(step, "mean") and hasattr(step, "std"):
            mean = torch.as_tensor(step.mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.as_tensor(step.std, dtype=torch.float32).view(1, -1, 1, 1)
            x = x * std + mean
            break
    return x.clamp(0, 1)


def _name(index: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[index]) if class_names is not None else str(index)


def _image_grid(images: torch.Tensor, titles: list[str]) -> plt.Figure:
    """Up to 5 images a row, each with its title: images in [0, 1], one channel drawn in gray
    (0 black, 1 white, as a viewer shows the file), three in colour."""
    cols = 5
    rows = max((len(images) + cols - 1) // cols, 1)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, rows * 2.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        pixels = image.float().permute(1, 2, 0)  # (H, W, C)
        if pixels.shape[2] == 1:
            ax.imshow(pixels[:, :, 0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(pixels.numpy())
        # A fixed y skips matplotlib's title placement, which measures every axis (slow).
        ax.set_title(title, fontsize=9 if len(title) <= 22 else 7, y=1.02)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92, wspace=0.1, hspace=0.35)
    return fig


TEMP_TAG = "csvimg-tmp"  # loaders.py's: train.py removes a killed run's leftovers by it


def _maybe_save(fig: plt.Figure, results_dir: str | Path | None, name: str) -> plt.Figure:
    """Save fig whole or not at all (a full disk or a kill leaves the earlier file): drawn into
    memory, written beside it, then renamed over it."""
    if results_dir is not None:
        path = Path(results_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=100, format=path.suffix[1:])
        tmp = path.with_name(f".{name}.{TEMP_TAG}-{os.getpid()}")
        try:
            tmp.write_bytes(buffer.getvalue())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return fig
