"""Figures of a training run, as the lecture's helper_plotting.py draws them: the loss of every
minibatch, the accuracy per epoch, and example predictions.

In a notebook, call them and then plt.show(), as the lecture does:

    plot_training_loss(minibatch_loss_list=minibatch_loss_list, num_epochs=NUM_EPOCHS,
                       iter_per_epoch=len(train_loader), results_dir=None, averaging_iterations=20)
    plt.show()

Each function draws one new figure and returns it; with results_dir it also writes the figure
there as a PNG file (loss.png, accuracy.png, examples.png). Importing this file leaves matplotlib's
backend alone, so figures show inline in a notebook; train.py picks the file-only Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch


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
    if len(losses):
        ax1.set_ylim(0, float(losses.max()) * 1.05)
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
    ax.set_ylabel("Accuracy (%)")
    ax.legend()
    fig.tight_layout()
    return _maybe_save(fig, results_dir, "accuracy.png")


@torch.no_grad()
def show_examples(model: torch.nn.Module, data_loader, results_dir: str | Path | None = None, *,
                  class_names: Sequence[str] | None = None, num_examples: int = 15) -> plt.Figure:
    """A grid of the first images of `data_loader`, each titled "P: <predicted> | T: <true>".

    The batch goes to the model's device; uint8 batches are scaled to [0, 1] first, as in train.py.
    """
    model.eval()
    images, labels = next(iter(data_loader))  # (B, C, H, W), (B,)
    images, labels = images[:num_examples], labels[:num_examples]
    device = next(model.parameters(), torch.empty(0)).device
    inputs = images.to(device)
    if not inputs.is_floating_point():
        # dataset.to_float01, copied so that this file stands alone (a test pins the two equal)
        inputs = inputs.to(torch.float32).mul_(1.0 / 255)
    predictions = model(inputs).argmax(dim=1).cpu()
    names = list(class_names) if class_names is not None else None
    cols = 5
    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, rows * 2.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, true in zip(axes.flat, images, predictions.tolist(), labels.tolist()):
        pixels = image.float().permute(1, 2, 0)  # (H, W, C)
        if pixels.shape[2] == 1:
            ax.imshow(pixels[:, :, 0].numpy(), cmap="binary")
        else:
            ax.imshow((pixels / pixels.max().clamp(min=1e-12)).numpy())
        predicted, target = (names[pred], names[true]) if names else (pred, true)
        # A fixed y skips matplotlib's title placement, which measures every axis (slow).
        ax.set_title(f"P: {predicted} | T: {target}", fontsize=9, y=1.02)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92, wspace=0.1, hspace=0.35)
    return _maybe_save(fig, results_dir, "examples.png")


def _maybe_save(fig: plt.Figure, results_dir: str | Path | None, name: str) -> plt.Figure:
    if results_dir is not None:
        Path(results_dir).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(results_dir) / name, dpi=100)
    return fig
