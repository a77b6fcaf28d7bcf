"""Figures of a training run, as the lecture's helper_plotting.py draws them: the loss of every
minibatch, the accuracy per epoch, and example predictions (the wrong ones first, titled in red);
and what the model gets wrong: the confusion matrix (row-normalised colours, counts) and the most
confident mistakes. With several labels per image (train.py --label-delim), show_tag_examples and
show_tag_mistakes draw the predicted and true tag sets; with numbers (--task regression),
plot_regression_scatter and show_worst_errors draw predicted against true and the worst errors.

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
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator


def plot_training_loss(minibatch_loss_list: Sequence[float], num_epochs: int,
                       iter_per_epoch: int | None = None, results_dir: str | Path | None = None,
                       averaging_iterations: int = 20, *,
                       best_epoch: int | None = None) -> plt.Figure:
    """Loss of every minibatch, its running average, and a second x-axis in epochs; best_epoch
    (from 1, the one best.pt holds): a dashed vertical line where that epoch's iterations end."""
    losses = torch.tensor(minibatch_loss_list, dtype=torch.float64)
    iter_per_epoch = iter_per_epoch or max(len(losses) // max(num_epochs, 1), 1)
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
    if best_epoch:
        ax1.axvline(best_epoch * iter_per_epoch, color=BEST_COLOUR, linestyle="--",
                    label=f"Best epoch ({best_epoch})")
    ax1.legend()
    # Second x-axis below the first, in epochs.
    ax2 = ax1.twiny()
    ticks = [e * iter_per_epoch for e in range(0, num_epochs + 1, max(num_epochs // 5, 1))]
    ax2.set_xticks(ticks)
    ax2.set_xticklabels([str(t // iter_per_epoch) for t in ticks])
    ax2.set_xlim(ax1.get_xlim())  # after the ticks, which would widen it to 0: epochs line up
    ax2.xaxis.set_ticks_position("bottom")
    ax2.xaxis.set_label_position("bottom")
    ax2.spines["bottom"].set_position(("outward", 45))
    ax2.set_xlabel("Epochs")
    fig.tight_layout()
    return _maybe_save(fig, results_dir, "loss.png")


BEST_COLOUR = "tab:green"  # the best epoch's line, on loss.png and accuracy.png alike
MIN_SPAN = 10.0  # accuracy.png's y-axis spans at least this many percentage points


def plot_accuracy(train_acc_list: Sequence[float], valid_acc_list: Sequence[float],
                  results_dir: str | Path | None = None, *, best_epoch: int | None = None,
                  baseline: float | None = None, baseline_label: str | None = None,
                  best_label: str | None = None) -> plt.Figure:
    """Train and validation accuracy (in %) per epoch. best_epoch (from 1, the one best.pt
    holds): a dashed vertical line there, named best_label (default: its validation accuracy;
    train.py names the figure that chose it, --monitor's). baseline: the accuracy (in %) of always saying the
    majority class, a dotted horizontal line named baseline_label. The y-axis spans at least
    MIN_SPAN points, so that a flat line does not look like learning."""
    epochs = range(1, len(train_acc_list) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, list(train_acc_list), label="Training")
    ax.plot(epochs, list(valid_acc_list), label="Validation")
    if best_epoch:
        value = (f": validation {valid_acc_list[best_epoch - 1]:.2f}%"
                 if 1 <= best_epoch <= len(valid_acc_list) else "")
        ax.axvline(best_epoch, color=BEST_COLOUR, linestyle="--",
                   label=best_label or f"Best epoch ({best_epoch}){value}")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle=":",
                   label=baseline_label or f"Majority-class baseline: {baseline:.2f}%")
    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no tick at 2.5
    ax.set_ylabel("Accuracy (%)")
    ax.set_ylim(*_at_least_span(*ax.get_ylim(), MIN_SPAN))
    for text in ax.legend().get_texts():  # the baseline's label holds a class name, as written
        text.set_parse_math(False)
    fig.tight_layout()
    return _maybe_save(fig, results_dir, "accuracy.png")


def _at_least_span(low: float, high: float, span: float) -> tuple[float, float]:
    """(low, high) widened about its middle to span, then kept within -1..101 (accuracies in %,
    and a little room for a line at 0 or 100): slid inside, the span kept, and cut to that window
    only when wider. matplotlib's own margins can pass 100: a flat line at 100% got
    (94.5, 105.5), the line in the middle under a "105" tick; it gets (90, 101)."""
    if high - low < span:
        middle = (low + high) / 2
        low, high = middle - span / 2, middle + span / 2
    if high > 101.0:
        low, high = low - (high - 101.0), 101.0
    if low < -1.0:
        low, high = -1.0, min(high + (-1.0 - low), 101.0)
    return low, high


WRONG = "red"  # the colour of a wrong prediction's title, in examples.png and mistakes.png


@torch.no_grad()
def show_examples(model: torch.nn.Module, data_loader, results_dir: str | Path | None = None, *,
                  class_names: Sequence[str] | None = None, num_examples: int = 15) -> plt.Figure:
    """A grid of up to num_examples images of data_loader, each titled "P: <predicted> | T:
    <true>", a wrong prediction's title in red.

    How they are chosen, from the loader's first 10,000 images: the wrong ones first, up to a third
    of the grid (more when too few are right), then right ones; each part spread over the true
    classes (as many of each as can be) and in the loader's order. A line above says how many
    were wrong. The batch goes to the model's device; uint8 batches are scaled to [0, 1] first, as
    in train.py.
    """
    model.eval()
    items, seen = [], 0  # (true class, wrong?, (image, predicted, true)) in the loader's order
    for images, labels, *_ in data_loader:  # weights, with a weight column, unused
        predicted = model(_model_input(model, images)).argmax(dim=1).cpu()  # (B,)
        items += [(t, p != t, (image, p, t))
                  for image, p, t in zip(images, predicted.tolist(), labels.tolist())]
        seen += len(images)
        if seen >= 10_000:
            break
    picked, wrong = _wrong_first(items, num_examples)
    titles = [f"P: {_name(p, class_names)} | T: {_name(t, class_names)}" for _, p, t in picked]
    shown_wrong = sum(p != t for _, p, t in picked)
    line = (f"{wrong} of {len(items)} images predicted wrong: {shown_wrong} shown first, in red"
            if wrong else f"All {len(items)} images predicted right")
    return _maybe_save(_image_grid(_for_display(_stack(picked), data_loader), titles,
                                   [WRONG if p != t else None for _, p, t in picked], line),
                       results_dir, "examples.png")


def _wrong_first(items: list, num_examples: int) -> tuple[list, int]:
    """(up to num_examples payloads, how many items are wrong) of items (group, wrong?, payload):
    the wrong ones first, up to a third of num_examples (all of them when too few are right),
    then the right ones; each part round-robin over its groups (num_examples groups at most, in
    the order they first appear) and kept in the items' order."""
    by_group: tuple[dict, dict] = ({}, {})  # right, wrong: group -> [(position, payload)]
    for position, (group, wrong, payload) in enumerate(items):
        groups = by_group[bool(wrong)]
        if group in groups or len(groups) < num_examples:
            bucket = groups.setdefault(group, [])
            if len(bucket) < num_examples:
                bucket.append((position, payload))
    wrong = _round_robin(by_group[1], max(num_examples // 3, 1) if num_examples else 0)
    right = _round_robin(by_group[0], num_examples - len(wrong))
    wrong = _round_robin(by_group[1], num_examples - len(right))
    return wrong + right, sum(bool(w) for _, w, _ in items)


def _round_robin(by_group: dict, count: int) -> list:
    """Up to count payloads of by_group (group -> [(position, payload)]): the first of each group,
    then the second, ...; returned in position order."""
    picked, depth = [], 0
    while len(picked) < count and any(len(b) > depth for b in by_group.values()):
        picked += [b[depth] for b in by_group.values() if len(b) > depth]
        depth += 1
    return [payload for _, payload in sorted(picked[:count], key=lambda p: p[0])]


def _stack(picked: list) -> torch.Tensor:
    """The images (each payload's first element) as one (B, C, H, W) batch."""
    return torch.stack([p[0] for p in picked]) if picked else torch.zeros(0, 1, 1, 1)


@torch.no_grad()
def show_mistakes(model: torch.nn.Module, data_loader, results_dir: str | Path | None = None, *,
                  class_names: Sequence[str] | None = None, num_examples: int = 15) -> plt.Figure:
    """The images of data_loader the model got most confidently wrong: of those predicted wrong,
    the num_examples whose predicted class has the highest probability p (the first in the
    loader's order on a tie), each titled "P: <predicted> (p=<p>) | T: <true>" in red."""
    model.eval()
    worst, wrong, seen = [], 0, 0  # (p, image, predicted, true) of the wrong ones; the worst kept
    for images, labels, *_ in data_loader:  # weights, with a weight column, unused
        probs = torch.softmax(model(_model_input(model, images)).float(), dim=1).cpu()  # (B, C)
        confidence, predicted = probs.max(dim=1)  # (B,), (B,)
        for j in torch.nonzero(predicted != labels).flatten().tolist():
            worst.append((confidence[j].item(), images[j], predicted[j].item(), labels[j].item()))
            wrong += 1
        worst = sorted(worst, key=lambda w: -w[0])[:num_examples]  # stable: earlier first on ties
        seen += len(images)
    titles = [f"P: {_name(p, class_names)} (p={c:.2f}) | T: {_name(t, class_names)}"
              for c, _, p, t in worst]
    line = (f"Most confidently wrong: {len(worst)} of the {wrong} mistakes in {seen} images, "
            "highest predicted probability p first" if wrong else f"No mistakes in {seen} images")
    return _maybe_save(_image_grid(_for_display(_stack([w[1:] for w in worst]), data_loader),
                                   titles, [WRONG] * len(worst), line),
                       results_dir, "mistakes.png")


@torch.no_grad()
def _tagged(model: torch.nn.Module, data_loader, class_names: Sequence[str], delim: str,
            threshold: float, max_images: int = 10_000) -> list:
    """(true tags, wrong?, (image, predicted tags, true tags, loss)) of each image of data_loader
    (its first max_images), with several labels per image: targets (B, C) multi-hot; a tag is
    predicted from probability threshold; loss is the image's binary cross-entropy, averaged
    over the C tags; tags are joined by delim, "(none)" for no tag."""
    model.eval()
    items, seen = [], 0
    for images, targets, *_ in data_loader:  # weights, with a weight column, unused
        logits = model(_model_input(model, images)).float().cpu()  # (B, C)
        targets = targets.float().cpu()  # (B, C) multi-hot
        losses = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, targets, reduction="none").mean(dim=1)  # (B,)
        predicted = torch.sigmoid(logits) >= threshold  # (B, C)
        for image, p, t, loss in zip(images, predicted, targets.bool(), losses.tolist()):
            pred, true = _tags(p, class_names, delim), _tags(t, class_names, delim)
            items.append((true, bool((p != t).any()), (image, pred, true, loss)))
        seen += len(images)
        if seen >= max_images:
            break
    return items


def _tags(row: torch.Tensor, class_names: Sequence[str], delim: str) -> str:
    """The names of a (C,) bool row's tags joined by delim; "(none)" when it has none."""
    return delim.join(str(class_names[i]) for i in torch.nonzero(row).flatten().tolist()) \
        or "(none)"


def _tag_title(predicted: str, true: str, width: int = 30) -> str:
    """ "pred: <tags> | true: <tags>" on one line when it fits in width characters, else each
    part on lines of its own (wrapped at width)."""
    title = f"pred: {predicted} | true: {true}"
    if len(title) <= width:
        return title
    return "\n".join(textwrap.wrap(f"pred: {predicted}", width) + textwrap.wrap(f"true: {true}", width))


def show_tag_examples(model: torch.nn.Module, data_loader, results_dir: str | Path | None = None,
                      *, class_names: Sequence[str], delim: str = " ", threshold: float = 0.5,
                      num_examples: int = 15) -> plt.Figure:
    """show_examples for several labels per image (train.py --label-delim): each image titled
    "pred: <predicted tags> | true: <true tags>" (joined by delim, "(none)" for no tag), in red
    when the two sets differ. Chosen as show_examples chooses: those with a wrong tag first (up
    to a third of the grid), each part spread over the true tag sets, in the loader's order."""
    items = _tagged(model, data_loader, class_names, delim, threshold)
    picked, wrong = _wrong_first(items, num_examples)
    titles = [_tag_title(p, t) for _, p, t, _ in picked]
    shown_wrong = sum(p != t for _, p, t, _ in picked)
    line = (f"{wrong} of {len(items)} images with a wrong tag (threshold {threshold:g}): "
            f"{shown_wrong} shown first, in red" if wrong else
            f"All {len(items)} images tagged right (threshold {threshold:g})")
    return _maybe_save(_image_grid(_for_display(_stack(picked), data_loader), titles,
                                   [WRONG if p != t else None for _, p, t, _ in picked], line),
                       results_dir, "examples.png")


def show_tag_mistakes(model: torch.nn.Module, data_loader, results_dir: str | Path | None = None,
                      *, class_names: Sequence[str], delim: str = " ", threshold: float = 0.5,
                      num_examples: int = 15) -> plt.Figure:
    """show_mistakes for several labels per image: of the images whose predicted tags differ
    from the true ones, the num_examples of highest loss (the image's binary cross-entropy,
    averaged over its tags; the first in the loader's order on a tie), each titled "pred: <tags>
    | true: <tags>" and "BCE <loss>" in red."""
    items = _tagged(model, data_loader, class_names, delim, threshold)
    worst = sorted((payload for _, bad, payload in items if bad), key=lambda w: -w[3])
    wrong = len(worst)
    worst = worst[:num_examples]
    titles = [f"{_tag_title(p, t)}\nBCE {loss:.3f}" for _, p, t, loss in worst]
    line = (f"Highest loss first: {len(worst)} of the {wrong} images with a wrong tag in "
            f"{len(items)}, by the image's BCE averaged over its {len(class_names)} tags"
            if wrong else f"No image with a wrong tag in {len(items)} (threshold {threshold:g})")
    return _maybe_save(_image_grid(_for_display(_stack(worst), data_loader), titles,
                                   [WRONG] * len(worst), line), results_dir, "mistakes.png")


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
                          results_dir: str | Path | None = None, *,
                          max_classes: int = 30) -> plt.Figure:
    """cm[true, predicted] counts as a heat map: each cell coloured by its share of the true
    class's images (each row sums to 1; a class with no images gets the lightest colour), its
    count written in it (none for 0), class names on both axes (as written: a "$" starts no
    mathtext). The figure grows with the classes up to max_classes; beyond, it shows the
    max_classes classes with the most confusions (images of the class predicted as another,
    plus images of others predicted as it; the first on a tie), in class order, with a last
    column "other" for predictions of the classes left out, and a line below saying how many
    were left out, and how many of those only by class order, on a tie (confusion_matrix.csv
    keeps them all)."""
    n = len(class_names)
    cm = cm.to(torch.int64)
    shown, tied = torch.arange(n), 0
    if n > max_classes:
        confusions = cm.sum(dim=1) + cm.sum(dim=0) - 2 * cm.diagonal()  # (n,)
        order = torch.argsort(-confusions, stable=True)
        shown = order[:max_classes].sort().values
        # left out only by class order: as many confusions as the least confused class shown
        tied = int((confusions[order[max_classes:]] == confusions[order[max_classes - 1]]).sum())
    counts = cm[shown][:, shown]  # (k, k)
    names = [str(class_names[i]) for i in shown.tolist()]
    left_out = n - len(shown)
    if left_out:  # predictions of a class left out: one column, so that each row still sums
        counts = torch.cat([counts, cm[shown].sum(dim=1, keepdim=True)
                            - counts.sum(dim=1, keepdim=True)], dim=1)  # (k, k + 1)
    share = counts.double() / cm[shown].sum(dim=1, keepdim=True).clamp(min=1)  # rows sum to 1
    k, cols = counts.shape
    size = min(max(5.0, 0.42 * cols + 2.5), 16.0)  # 0.42 inch a cell, 16 inches at most
    fig, ax = plt.subplots(figsize=(size + 1.0, size))  # + 1 inch for the colour bar
    image = ax.imshow(share.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of the true class's images")
    font = 10 if cols <= 12 else 8
    long_names = cols > 10 or max((len(s) for s in names), default=0) > 4
    ax.set_xticks(range(cols), names + ([f"other ({left_out})"] if left_out else []),
                  rotation=90 if long_names else 0, fontsize=font, parse_math=False)
    ax.set_yticks(range(k), names, fontsize=font, parse_math=False)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title("Colour: share of the true class's images (each row sums to 1)\n"
                 "Number: count", fontsize=10)
    for (i, j), count in zip(torch.cartesian_prod(torch.arange(k), torch.arange(cols)).tolist(),
                             counts.flatten().tolist()):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=font,
                    color="white" if share[i, j] > 0.5 else "black")
    if left_out:
        ties = (f", {tied} of them only by class order: as many as a class shown" if tied
                else "")
        fig.text(0.01, 0.01, f"{left_out} of {n} classes left out (those with the fewest "
                 f"confusions{ties}); \"other ({left_out})\" counts predictions of them. "
                 f"confusion_matrix.csv keeps all {n}.", fontsize=10)
    fig.tight_layout(rect=(0, 0.03 if left_out else 0, 1, 1))
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


def _image_grid(images: torch.Tensor, titles: list[str], colors: list[str | None] | None = None,
                line: str | None = None) -> plt.Figure:
    """Up to 5 images a row, each with its title (in colors[i] where given): images in [0, 1], one
    channel drawn in gray (0 black, 1 white, as a viewer shows the file), three in colour; line,
    if any, above them all. Titles are drawn as written: class names are never read as
    matplotlib's $...$ mathtext (which garbles "US$_low | T: US$_high" and fails on "$^$")."""
    cols = 5
    rows = max((len(images) + cols - 1) // cols, 1)
    extra = 0.4 if line else 0.0  # inches for the line above
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, rows * 2.0 + extra), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    colors = colors or [None] * len(titles)
    # A title too long for its image (long class names): the part after " | " on a line of its own
    titles = [t.replace(" | ", "\n", 1) if "\n" not in t and len(t) > 30 else t for t in titles]
    for ax, image, title, color in zip(axes.flat, images, titles, colors):
        pixels = image.float().permute(1, 2, 0)  # (H, W, C)
        if pixels.shape[2] == 1:
            ax.imshow(pixels[:, :, 0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(pixels.numpy())
        # A fixed y skips matplotlib's title placement, which measures every axis (slow).
        ax.set_title(title, fontsize=9 if len(title) <= 22 else 7, y=1.02, parse_math=False,
                     **({"color": color} if color else {}))
    if line:
        fig.suptitle(line, fontsize=9, y=1 - 0.1 / (rows * 2.0 + extra))
    top = 1 - (0.16 * rows + extra) / (rows * 2.0 + extra)  # 0.92 without the line, as before
    lines = max((t.count("\n") + 1 for t in titles), default=1)  # titles of 1 to 3 lines
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=top, wspace=0.1,
                        hspace=0.15 + 0.2 * lines)  # 0.35 for one line, as before
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
