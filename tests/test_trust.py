"""Figures a person can trust and a console that says when a model is no better than guessing
(issue 32 points 1 and 2): the majority-class baseline, the classes a model misses, the best
epoch on accuracy.png and loss.png. Figures are checked through what they draw (lines, limits,
legend texts), not pixels."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import plot  # noqa: E402
import train  # noqa: E402
from conftest import write_png  # noqa: E402
from evaluate import FAR_BELOW, missed_classes  # noqa: E402

EPOCH_LINE = re.compile(r"^Epoch: \d{3}/\d{3} \| Train: \d+\.\d\d% \| Validation: (\d+\.\d\d)%(.*)$")
BALANCED_LINE = re.compile(r"^Epoch: \d{3}/\d{3} \| Balanced accuracy: train \d+\.\d\d%, "
                           r"validation (\d+\.\d\d)%")


def fastai_table(folder: Path, counts: dict[str, tuple[int, int]]) -> Path:
    """fastai's layout: labels.csv `fname,labels,is_valid` and the images beside it; counts:
    class -> (train images, valid images). Every image is the same kind of noise, so no model can
    tell the classes apart: the uneven table's model can only say its common class."""
    rng = np.random.default_rng(0)
    lines, i = ["fname,labels,is_valid"], 0
    for label, (n_train, n_valid) in counts.items():
        for j in range(n_train + n_valid):
            write_png(folder / "images" / f"{i:03d}.png", rng.integers(0, 255, (4, 4), dtype=np.uint8))
            lines.append(f"images/{i:03d}.png,{label},{j >= n_train}")
            i += 1
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def run_fastai(table: Path, results: Path, epochs: int = 2):
    return train.main(["--csv", str(table), "--file-column", "fname", "--label-column", "labels",
                       "--valid-column", "is_valid", "--epochs", str(epochs), "--seed", "1",
                       "--batch-size", "8", "--no-disk-cache", "--results-dir", str(results)])


def drawn(monkeypatch) -> dict[str, dict]:
    """The keyword arguments train.py's figures are drawn with, by function name; the figures are
    still drawn (and written) by plot.py."""
    seen: dict[str, dict] = {}
    for name in ("plot_accuracy", "plot_training_loss"):
        real = getattr(plot, name)

        def record(*args, _real=real, _name=name, **kwargs):
            seen[_name] = kwargs
            return _real(*args, **kwargs)

        monkeypatch.setattr(plot, name, record)
    return seen


# ---- the console ---------------------------------------------------------------------------------

@pytest.mark.figures
def test_an_uneven_run_prints_the_baseline_once_and_marks_what_does_not_beat_it(tmp_path, capsys,
                                                                               monkeypatch):
    table = fastai_table(tmp_path / "t", {"cat": (24, 10), "dog": (3, 1)})  # ~90 / 10
    figures = drawn(monkeypatch)
    history = run_fastai(table, tmp_path / "r")
    lines = capsys.readouterr().out.splitlines()
    # 24 of 27 train images and 10 of 11 valid are cats; no test split: valid stands in
    baseline = [line for line in lines if line.startswith("Majority-class baseline")]
    # (issue 32's new-user pass: the line states the rule on both counts; it said "a validation
    # or test accuracy not above it is marked", untrue once balanced accuracy counts too)
    assert baseline == ["Majority-class baseline (train's classes are uneven): always saying 'cat' "
                        "scores train 88.89%, validation 90.91% (balanced accuracy 50.00%); a "
                        "validation or test result above neither is marked \"no better\""]
    epochs = [EPOCH_LINE.match(line) for line in lines if EPOCH_LINE.match(line)]
    balanced = [float(m.group(1)) for m in map(BALANCED_LINE.match, lines) if m]
    assert len(epochs) == 2 and len(balanced) == 2
    for m, b in zip(epochs, balanced):  # marked exactly when above neither, as printed
        marked = m.group(2) == " (no better than always 'cat': 90.91%)"
        assert marked == (float(m.group(1)) <= 90.91 and b <= 50.0) and (marked or m.group(2) == "")
    # noise images: the model says "cat" to all, 10 of the 11 valid images
    assert f"Test accuracy: {history.test_acc:.2f}% (no better than always 'cat': 90.91%)" in lines
    assert history.test_acc == pytest.approx(100 * 10 / 11)
    # the rare class, never found, is named with its support and what helps
    # named by the split it is of: valid stands in for the missing test split
    assert ("Classes the model misses on validation (no test split) (recall 0, or below 0.25 x "
            "the median recall of 50.00%): 'dog' (0 of 1 images found)") in lines
    # best.pt's model, no better either, is marked on its line too
    best = [line for line in lines if line.startswith("Best epoch: ")]
    # beside best.pt's figure, not after the last epoch's, which it is not about
    assert len(best) == 1 and re.fullmatch(
        r"Best epoch: 1 of 2, .* scores \d+\.\d\d% on test \(no better than always 'cat': "
        r"90\.91%\), the last epoch's \d+\.\d\d%", best[0]), best
    assert lines[-1] == ("  What helps: more images of them; --balance sampler or --balance loss, "
                         "with --monitor balanced_accuracy so that best.pt is not picked by "
                         "accuracy (which favours always saying the common class); "
                         "--weight-column (docs/rare-classes.md)")
    assert "dog,1,0,0.0000," in (tmp_path / "r" / "per_class.csv").read_text()  # the same class
    # the figures: best.pt's epoch on both, the baseline of validation on accuracy.png
    assert figures["plot_accuracy"]["best_epoch"] == train.best_epoch(history) >= 1
    assert figures["plot_training_loss"]["best_epoch"] == train.best_epoch(history)
    assert figures["plot_accuracy"]["baseline"] == pytest.approx(100 * 10 / 11)
    assert figures["plot_accuracy"]["baseline_label"] == "Always 'cat' (validation): 90.91%"


def test_missed_lines_say_what_a_median_recall_of_0_means():
    cm = torch.tensor([[0, 4, 0], [0, 4, 0], [0, 4, 0]])  # only class 1 is ever said
    line = train.missed_lines(cm, ["a", "b", "c"], split="test", helps="x")[0]
    assert line == ("Classes the model misses on test (recall 0; at least half the classes have "
                    "it, the median recall being 0): 'a' (0 of 4 images found), "
                    "'c' (0 of 4 images found)")


def test_what_helps_fits_the_run_it_follows():
    cm = torch.tensor([[5, 0], [3, 0]])  # class 1 never found
    uneven, balanced, even = (train.what_helps(True, "none"), train.what_helps(True, "sampler"),
                              train.what_helps(False, "none"))
    assert "--balance sampler or --balance loss" in uneven
    assert "already balanced its classes: --balance sampler" in balanced
    assert "--balance sampler or" not in balanced and "--balance" not in even
    assert "train's classes are even, so balancing them will not help" in even
    assert "--model cnn" in even  # the MLP is told of the conv net; the conv net is not
    assert "--model cnn" not in train.what_helps(False, "none", "cnn")
    assert "a larger model (docs/models.md)" in train.what_helps(False, "none", "cnn")
    assert train.missed_lines(cm, ["a", "b"], split="test", helps=even)[1] == "  What helps: " + even
    assert train.missed_lines(cm, ["a", "b"])[1] == "  What helps: " + uneven  # the default
    assert uneven.endswith("; --weight-column (docs/rare-classes.md)")
    weighted = train.what_helps(True, "none", weighted=True)  # a --weight-column run: not told
    assert "; --weight-column (docs" not in weighted  # to add the column it has
    assert weighted.endswith("larger weights for their rows (this run already weighed its rows: "
                             "--weight-column) (docs/rare-classes.md)")


@pytest.mark.figures
def test_a_balanced_run_is_not_told_to_balance(tmp_path, capsys):
    table = fastai_table(tmp_path / "t", {"cat": (24, 10), "dog": (3, 1)})
    train.main(["--csv", str(table), "--file-column", "fname", "--label-column", "labels",
                "--valid-column", "is_valid", "--epochs", "1", "--seed", "1", "--batch-size", "8",
                "--no-disk-cache", "--results-dir", str(tmp_path / "r"), "--balance", "loss",
                "--lr", "1e-30"])  # no learning: the untrained model says one class to all
    lines = capsys.readouterr().out.splitlines()
    helps = [line for line in lines if line.startswith("  What helps: ")]
    assert helps == ["  What helps: " + train.what_helps(True, "loss")]


@pytest.mark.figures
def test_an_even_run_prints_the_lectures_lines_and_no_baseline(tmp_path, capsys, monkeypatch):
    table = fastai_table(tmp_path / "t", {"cat": (8, 4), "dog": (8, 4)})
    figures = drawn(monkeypatch)
    run_fastai(table, tmp_path / "r")
    out = capsys.readouterr().out
    assert "Majority-class baseline" not in out and "no better" not in out
    assert [m.group(2) for m in map(EPOCH_LINE.match, out.splitlines()) if m] == ["", ""]
    assert re.search(r"^Test accuracy: \d+\.\d\d%$", out, re.MULTILINE)
    assert figures["plot_accuracy"]["baseline"] is None


def test_majority_baseline_from_label_counts_is_none_when_train_is_even():
    classes = ["cat", "dog"]
    b = train.majority_baseline([np.array([0] * 19 + [1]), np.array([0] * 9 + [1]),
                                 np.array([0] * 3 + [1] * 5)], classes)
    assert (b.name, b.train, b.valid, b.test, b.has_test) == ("cat", 95.0, 90.0, 37.5, True)
    assert "test 37.50%" in b.line()
    # train.UNEVEN: largest / smallest of 1.5 is uneven, just under it even (the lecture's 26 / 25)
    assert train.majority_baseline([np.array([0] * 3 + [1] * 2), np.array([0]), None], classes)
    assert train.majority_baseline([np.array([0] * 26 + [1] * 25), np.array([0]), None],
                                   classes) is None
    # no test split: the validation split stands in for it and the line names none
    b = train.majority_baseline([np.array([1] * 6 + [0] * 2), np.array([1, 0, 0, 0]), None], classes)
    assert (b.name, b.valid, b.test, b.has_test) == ("dog", 25.0, 25.0, False)
    assert "test" not in b.line().split(";")[0]


def test_the_note_compares_accuracies_as_printed():
    b = train.Baseline("cat", 95.0, 94.59, 94.59)
    assert b.note(94.59, b.valid) == " (no better than always 'cat': 94.59%)"
    assert b.note(94.5912, b.valid) != ""  # printed as 94.59%: no better
    assert b.note(50.0, b.valid) != ""
    assert b.note(94.6, b.valid) == ""
    task = train.Classification(baseline=b)
    assert task.line(95.1, 94.59) == "Train: 95.10% | Validation: 94.59% (no better than always 'cat': 94.59%)"
    assert task.test_line(99.0) == "Test accuracy: 99.00%"
    assert train.Classification().line(95.1, 94.59) == "Train: 95.10% | Validation: 94.59%"


def confusion_of(support: list[int], correct: list[int]) -> torch.Tensor:
    """A confusion matrix whose rows have these supports and diagonals (the misses in column 0,
    or 1 for class 0)."""
    k = len(support)
    cm = torch.zeros(k, k, dtype=torch.int64)
    for i, (n, ok) in enumerate(zip(support, correct)):
        cm[i, i] = ok
        cm[i, 1 if i == 0 else 0] += n - ok
    return cm


def test_missed_classes_are_those_at_recall_0_or_far_below_the_median():
    # recalls 1.0, 0.9, 0.2, 0.0 and a class with no image: median 0.55, a quarter of it 0.1375
    missed, median = missed_classes(confusion_of([10, 10, 10, 5, 0], [10, 9, 2, 0, 0]))
    assert missed == [3] and median == pytest.approx(0.55)
    # recalls 1.0, 1.0, 0.2 (under a quarter of the median 1.0), 0.0, 0.0, 1.0, 1.0: worst first,
    # then the class with more images
    missed, median = missed_classes(confusion_of([4, 4, 10, 3, 6, 5, 5], [4, 4, 2, 0, 0, 5, 5]))
    assert FAR_BELOW == 0.25 and missed == [4, 3, 2] and median == pytest.approx(1.0)
    assert missed_classes(torch.zeros(3, 3, dtype=torch.int64)) == ([], 0.0)


def test_the_lectures_default_run_misses_no_class():
    # its per_class.csv (python train.py --epochs 100 --seed 123): recalls 0.64 to 1.00
    cm = confusion_of([26, 26, 25, 26, 26, 26, 26, 25, 25, 25], [23, 26, 16, 21, 19, 19, 22, 19, 16, 19])
    assert missed_classes(cm)[0] == []
    assert train.missed_lines(cm, [str(d) for d in range(10)]) == []


def test_missed_lines_name_support_and_stop_after_ten_classes():
    classes = [f"c{k}" for k in range(14)]
    cm = confusion_of([5] * 2 + [3] * 12, [5] * 2 + [0] * 12)  # 12 classes never found
    first, helps = train.missed_lines(cm, classes)
    assert first.startswith("Classes the model misses on test (recall 0; at least half the classes "
                            "have it, the median recall being 0): 'c2' (0 of 3 images found), "
                            "'c3' (0 of 3 images found)")
    assert first.count("images found") == 10 and first.endswith(
        ", and 2 more (per_class.csv lists every class)")
    assert "--balance sampler" in helps and "--weight-column" in helps


# ---- accuracy.png and loss.png -------------------------------------------------------------------

def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_accuracy_png_marks_the_best_epoch_and_the_baseline_on_ten_points_at_least(tmp_path):
    train_acc, valid_acc = [95.1, 95.1, 95.1], [94.59, 94.6, 94.59]  # flat: the 95 / 5
    fig = plot.plot_accuracy(train_acc, valid_acc, tmp_path, best_epoch=2, baseline=94.59,
                             baseline_label="Always 'cat' (validation): 94.59%")
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert high - low >= plot.MIN_SPAN and -1 <= low and high <= 101
    assert low < 94.59 and 95.1 < high
    assert (high - low) == pytest.approx(10.0)
    lines = {line.get_label(): line for line in ax.get_lines()}
    best = lines["Best epoch (2): validation 94.60%"]
    assert list(best.get_xdata()) == [2, 2]
    assert list(lines["Always 'cat' (validation): 94.59%"].get_ydata()) == [94.59, 94.59]
    assert legend_texts(ax) == ["Training", "Validation", "Best epoch (2): validation 94.60%",
                                "Always 'cat' (validation): 94.59%"]
    assert ax.get_xlabel() == "Epoch" and ax.get_ylabel() == "Accuracy (%)"
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    plt.close(fig)


@pytest.mark.parametrize("values, window", [([99.5, 100.0], (91.0, 101.0)), ([0.0, 1.0], (-1.0, 9.0)),
                                            ([50.0, 52.0], (46.0, 56.0))])
def test_accuracy_axis_widens_a_narrow_span_within_0_to_100(values, window):
    fig = plot.plot_accuracy(values, values)
    low, high = fig.axes[0].get_ylim()
    assert (low, high) == pytest.approx(window) and low <= min(values) and max(values) <= high
    plt.close(fig)


def test_the_lectures_accuracy_call_draws_its_two_curves_on_its_own_axis():
    train_acc, valid_acc = [10.0, 40.0, 85.0], [9.0, 35.0, 80.0]
    fig = plot.plot_accuracy(train_acc, valid_acc, None)  # the lecture's positional call
    ax = fig.axes[0]
    assert legend_texts(ax) == ["Training", "Validation"] and len(ax.get_lines()) == 2
    low, high = ax.get_ylim()
    assert low < 9 and 85 < high < 90  # matplotlib's own limits: wide already, left alone
    plt.close(fig)


def test_loss_png_marks_the_best_epoch_where_its_iterations_end(tmp_path):
    losses = [2.0 - 0.04 * i for i in range(40)]  # 4 epochs of 10 iterations
    fig = plot.plot_training_loss(losses, 4, 10, tmp_path, averaging_iterations=5, best_epoch=3)
    iterations, epochs = fig.axes
    best = [line for line in iterations.get_lines() if line.get_label() == "Best epoch (3)"]
    assert len(best) == 1 and list(best[0].get_xdata()) == [30, 30]
    assert legend_texts(iterations) == ["Minibatch loss", "Running average (5 iterations)",
                                        "Best epoch (3)"]
    # the epoch axis lines up with the iterations: its tick 3 sits at iteration 30
    assert epochs.get_xlim() == pytest.approx(iterations.get_xlim())
    assert list(epochs.get_xticks()) == [0, 10, 20, 30, 40]
    assert iterations.get_xlabel() == "Iterations" and epochs.get_xlabel() == "Epochs"
    assert (tmp_path / "loss.png").stat().st_size > 0
    plt.close(fig)
    lecture = plot.plot_training_loss(losses, 4, 10, None, averaging_iterations=5)  # as it was
    assert legend_texts(lecture.axes[0]) == ["Minibatch loss", "Running average (5 iterations)"]
    plt.close(lecture)


@pytest.mark.figures
def test_a_multi_label_run_marks_the_best_epoch_on_loss_png(tmp_path, monkeypatch):
    # fastai's Planet layout: image_name,tags and train-jpg/<image_name>.jpg
    rng = np.random.default_rng(0)
    lines = ["image_name,tags"]
    for i in range(24):
        tags = [t for t in ("clear", "road") if rng.random() < 0.5]
        write_png(tmp_path / "train-jpg" / f"train_{i}.png", rng.integers(0, 255, (4, 4), dtype=np.uint8))
        lines.append(f"train_{i},{' '.join(tags)}")
    (tmp_path / "train_v2.csv").write_text("\n".join(lines) + "\n")
    figures = drawn(monkeypatch)
    history = train.main(["--csv", str(tmp_path / "train_v2.csv"), "--img-dir",
                          str(tmp_path / "train-jpg"), "--file-column", "image_name",
                          "--label-column", "tags", "--file-suffix", ".png", "--label-delim", " ",
                          "--epochs", "2", "--batch-size", "8", "--no-disk-cache",
                          "--results-dir", str(tmp_path / "r")])
    assert figures["plot_training_loss"]["best_epoch"] == train.best_epoch(history) >= 1
    assert (tmp_path / "r" / "loss.png").is_file()


# ---- the rule: no better on BOTH counts, accuracy and balanced accuracy --------------------------
# A --balance model that finds the rare class (balanced accuracy 92%) often scores an accuracy
# under the majority's 95%: marked "no better than always 'four'" on every line, it read as useless.

def test_a_model_is_no_better_only_when_neither_accuracy_nor_balanced_accuracy_is_above():
    b = train.Baseline("four", 95.0, 95.0, 95.0, train_balanced=50.0, valid_balanced=50.0,
                       test_balanced=50.0, num_classes=2)
    assert not b.no_better(85.0, b.valid, 92.0, b.valid_balanced)  # finds the rare class
    assert b.no_better(95.0, b.valid, 50.0, b.valid_balanced)  # always 'four': both at baseline
    assert b.no_better(5.0, b.valid, 50.0, b.valid_balanced)  # always the rare class: useless too
    assert not b.no_better(95.01, b.valid, 50.0, b.valid_balanced)  # accuracy above: as before
    assert b.no_better(94.0, b.valid, 50.004, b.valid_balanced)  # printed 50.00%: not above
    assert not b.no_better(94.0, b.valid, 50.006, b.valid_balanced)  # printed 50.01%
    assert b.no_better(85.0, b.valid)  # no balanced accuracy given: the accuracy alone, as before
    task = train.Classification(baseline=b)
    # the epoch line: no mark, and no note (its second line prints the balanced accuracy)
    assert task.line(90.0, 85.0, 92.0) == "Train: 90.00% | Validation: 85.00%"
    assert task.line(95.0, 95.0, 50.0) == ("Train: 95.00% | Validation: 95.00% (no better than "
                                           "always 'four': 95.00%)")
    # the test line has no such second line: it says which figure beats the baseline
    assert task.test_line(85.0, 92.0) == ("Test accuracy: 85.00% (balanced accuracy 92.00%, above "
                                          "the 50.00% of always 'four')")
    assert task.test_line(95.0, 50.0) == "Test accuracy: 95.00% (no better than always 'four': 95.00%)"
    assert task.test_line(97.5, 60.0) == "Test accuracy: 97.50%"  # above on accuracy: as before
    assert train.best_note(85.0, 92.0, b) == " (balanced accuracy 92.00%, above the 50.00% of always 'four')"
    assert train.best_note(85.0, 92.0, None) == ""


def test_always_saying_one_class_scores_100_over_k_balanced_accuracy_on_each_split():
    classes = ["a", "b", "c"]
    # train: a, b, c present (K=3); valid: a and b (K=2); test: b and c only, no 'a' (0)
    b = train.majority_baseline([np.array([0] * 10 + [1] * 2 + [2]), np.array([0, 0, 1]),
                                 np.array([1, 2, 2])], classes)
    assert (b.name, b.num_classes) == ("a", 3)
    assert (b.train_balanced, b.valid_balanced, b.test_balanced) == pytest.approx((100 / 3, 50.0, 0.0))
    assert "(balanced accuracy train 33.33%, validation 50.00%, test 0.00%)" in b.line()
    # the balanced accuracy a model of always 'a' really scores there, as evaluate measures it
    from evaluate import balanced_accuracy_of
    for labels, figure in (([0] * 10 + [1] * 2 + [2], b.train_balanced), ([0, 0, 1], b.valid_balanced),
                           ([1, 2, 2], b.test_balanced)):
        cm = torch.zeros(3, 3, dtype=torch.int64)
        for k in labels:
            cm[k, 0] += 1
        assert balanced_accuracy_of(cm) == pytest.approx(figure)


def two_tone_table(folder: Path) -> Path:
    """fastai's layout, 95 / 5 in train and valid: bright cats, dark dogs; two of valid's 19 cats
    are dark. A model that learns the tone finds the dog (balanced accuracy above 50%) yet says
    "dog" to the dark cats too: 18 of 20, under always-'cat''s 95% in accuracy."""
    rng = np.random.default_rng(0)
    lines, i = ["fname,labels,is_valid"], 0
    rows = ([("cat", True, False)] * 38 + [("dog", False, False)] * 2 + [("cat", True, True)] * 17
            + [("cat", False, True)] * 2 + [("dog", False, True)])
    for label, bright, valid in rows:
        low = 200 if bright else 0
        write_png(folder / "images" / f"{i:03d}.png", rng.integers(low, low + 56, (4, 4), dtype=np.uint8))
        lines.append(f"images/{i:03d}.png,{label},{valid}")
        i += 1
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


@pytest.mark.figures
def test_a_balanced_model_that_finds_the_rare_class_is_not_marked_no_better(tmp_path, capsys):
    table = two_tone_table(tmp_path / "t")
    flags = ["--csv", str(table), "--file-column", "fname", "--label-column", "labels",
             "--valid-column", "is_valid", "--no-disk-cache", "--results-dir", str(tmp_path / "r")]
    history = train.main(flags + ["--epochs", "6", "--seed", "1", "--batch-size", "8",
                                  "--balance", "sampler", "--monitor", "balanced_accuracy"])
    lines = capsys.readouterr().out.splitlines()
    epochs = [EPOCH_LINE.match(line) for line in lines if EPOCH_LINE.match(line)]
    balanced = [float(m.group(1)) for m in map(BALANCED_LINE.match, lines) if m]
    # the last epoch's model found the dog but said "dog" to a dark cat: the case at issue
    assert history.valid_acc[-1] < 95.0 and balanced[-1] > 50.0
    for m, b in zip(epochs, balanced):  # the rule on every epoch line
        assert (m.group(2) != "") == (float(m.group(1)) <= 95.0 and b <= 50.0)
    assert epochs[-1].group(2) == ""
    test = [line for line in lines if line.startswith("Test accuracy: ")]
    assert test == [f"Test accuracy: {history.valid_acc[-1]:.2f}% (balanced accuracy "
                    f"{balanced[-1]:.2f}%, above the 50.00% of always 'cat')"]
    best = [line for line in lines if line.startswith("Best epoch: ")]
    # best.pt (an earlier epoch of the same figures) is told apart from the useless the same way
    assert len(best) == 1 and re.fullmatch(
        r"Best epoch: \d of 6, validation balanced accuracy 94\.74%; its model \(.*best\.pt\) "
        r"scores 90\.00% on test \(balanced accuracy 94\.74%, above the 50\.00% of always "
        r"'cat'\), the last epoch's 90\.00%", best[0]), best
    # --evaluate of the saved model (checkpoint.pt, the last epoch's) prints the same test line
    train.main(flags + ["--evaluate"])
    assert [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("Test accuracy: ")] == test


@pytest.mark.figures
def test_accuracy_png_names_the_best_epoch_by_the_figure_that_chose_it(tmp_path, monkeypatch):
    # --monitor balanced_accuracy picks best.pt: the dashed line's label says so, not the accuracy
    table = fastai_table(tmp_path / "t", {"cat": (24, 10), "dog": (3, 1)})
    figures = drawn(monkeypatch)
    history = train.main(["--csv", str(table), "--file-column", "fname", "--label-column", "labels",
                          "--valid-column", "is_valid", "--epochs", "2", "--seed", "1",
                          "--batch-size", "8", "--no-disk-cache", "--results-dir",
                          str(tmp_path / "r"), "--monitor", "balanced_accuracy"])
    best = train.best_epoch(history)
    value = history.valid_scores[best - 1]["balanced_accuracy"]
    assert figures["plot_accuracy"]["best_label"] == \
        f"Best epoch ({best}): validation balanced accuracy {value:.2f}%"
    fig = plot.plot_accuracy(history.train_acc, history.valid_acc, best_epoch=best,
                             best_label=figures["plot_accuracy"]["best_label"])
    assert f"Best epoch ({best}): validation balanced accuracy {value:.2f}%" in legend_texts(fig.axes[0])
    plt.close(fig)
    # the default --monitor accuracy keeps plot_accuracy's own label (the lecture's run's figure)
    run_fastai(table, tmp_path / "r2")
    assert figures["plot_accuracy"]["best_label"] is None


@pytest.mark.figures
def test_a_regression_run_marks_the_best_epoch_on_loss_png(tmp_path, monkeypatch):
    # a Kaggle-style regression table: id,angle,split and train/<id>.png
    rng = np.random.default_rng(0)
    lines = ["id,angle,split"]
    for i in range(30):
        angle = round(float(rng.uniform(-45, 45)), 1)
        write_png(tmp_path / "train" / f"img{i}.png", np.full((4, 4), int((angle + 45) * 2.8), dtype=np.uint8))
        lines.append(f"img{i},{angle},{'train' if i < 20 else 'valid' if i < 25 else 'test'}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    figures = drawn(monkeypatch)
    history = train.main(["--csv", str(tmp_path / "train.csv"), "--img-dir", str(tmp_path / "train"),
                          "--file-column", "id", "--file-suffix", ".png", "--split-column", "split",
                          "--task", "regression", "--label-column", "angle", "--epochs", "3",
                          "--batch-size", "8", "--seed", "1", "--no-disk-cache",
                          "--results-dir", str(tmp_path / "r")])
    assert figures["plot_training_loss"]["best_epoch"] == train.best_epoch(history) >= 1
    assert (tmp_path / "r" / "loss.png").is_file()
