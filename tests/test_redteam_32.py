"""Red team of issue 32 (the console's baseline and missed classes, the figures): each test failed
before its fix."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import plot  # noqa: E402

# ---- class names with "$" are drawn as written, not as matplotlib's mathtext ---------------------
# A pair of "$" in a figure's text is mathtext to matplotlib: "P: US$_low | T: US$_high" was drawn
# as "P: US" + subscript "low|T:US" + "_high", and a name such as "$^$" made savefig raise
# ValueError after training (so the run ended in a traceback, its reports unwritten).

DOLLAR_NAMES = ["US$_low", "US$_high", "$^$"]


def tiny_loader(num_classes: int, n: int = 6) -> torch.utils.data.DataLoader:
    images = torch.arange(n * 4, dtype=torch.float32).view(n, 1, 2, 2) / (n * 4)
    labels = torch.arange(n) % num_classes
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=4)


def always(k: int, num_classes: int) -> torch.nn.Module:
    """A model that always says class k (bias only), confidently."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, num_classes))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.fill_(-5.0)
        model[1].bias[k] = 5.0
    return model


def assert_drawn_as_written(texts, expected: list[str]) -> None:
    assert [t.get_text() for t in texts] == expected
    assert all(not t.get_parse_math() for t in texts)


@pytest.mark.parametrize("say", [0, 2])
def test_examples_and_mistakes_titles_with_dollar_signs_are_drawn_as_written(tmp_path, say):
    model, loader = always(say, 3), tiny_loader(3)
    for draw in (plot.show_examples, plot.show_mistakes):
        fig = draw(model, loader, tmp_path, class_names=DOLLAR_NAMES)  # raised ValueError: "$^$"
        titled = [ax.title for ax in fig.axes if ax.get_title()]
        assert titled and all(DOLLAR_NAMES[say] in t.get_text() for t in titled)
        assert all(not t.get_parse_math() for t in titled)
        plt.close(fig)
    assert (tmp_path / "examples.png").stat().st_size > 0 and (tmp_path / "mistakes.png").exists()


def test_confusion_matrix_tick_labels_with_dollar_signs_are_drawn_as_written(tmp_path):
    fig = plot.plot_confusion_matrix(torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 1]]),
                                     DOLLAR_NAMES, tmp_path)  # raised ValueError
    ax = fig.axes[0]
    assert_drawn_as_written(ax.get_xticklabels(), DOLLAR_NAMES)
    assert_drawn_as_written(ax.get_yticklabels(), DOLLAR_NAMES)
    plt.close(fig)


def test_accuracy_png_baseline_label_with_dollar_signs_is_drawn_as_written(tmp_path):
    label = "Always '$^$' (validation): 95.00%"  # train.py's label of a class named "$^$"
    fig = plot.plot_accuracy([95.0, 95.0], [95.0, 95.0], tmp_path, best_epoch=1, baseline=95.0,
                             baseline_label=label)  # raised ValueError
    texts = fig.axes[0].get_legend().get_texts()
    assert texts[-1].get_text() == label and not texts[-1].get_parse_math()
    plt.close(fig)


def test_tag_figures_with_dollar_signs_in_tags_are_drawn_as_written(tmp_path):
    n = 6
    images = torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * (n // 2))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, targets),
                                         batch_size=4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([5.0, 5.0]))  # says both tags: every image wrong
    for draw in (plot.show_tag_examples, plot.show_tag_mistakes):
        fig = draw(model, loader, tmp_path, class_names=["a$^$", "b$_$"], delim="|")
        titled = [ax.title for ax in fig.axes if ax.get_title()]
        assert titled and all("a$^$|b$_$" in t.get_text() for t in titled)
        assert all(not t.get_parse_math() for t in titled)
        plt.close(fig)


# ---- --evaluate of an uneven run prints what the training run printed ----------------------------
# It printed "Test accuracy: 95.00%" alone: the symptom again (a model that only says the
# common class looks fine), though the training run marked that line and named the missed class.

@pytest.mark.figures
def test_evaluate_of_an_uneven_run_marks_the_test_line_and_names_the_missed_classes(tmp_path,
                                                                                 capsys):
    import train
    from test_trust import fastai_table, run_fastai

    table = fastai_table(tmp_path / "t", {"cat": (24, 10), "dog": (3, 1)})
    run_fastai(table, tmp_path / "r")
    trained = capsys.readouterr().out.splitlines()
    wanted = [line for line in trained if line.startswith(("Test accuracy", "Classes the model",
                                                           "  What helps"))]
    assert wanted[0].startswith("Test accuracy: ") and "(no better than always 'cat'" in wanted[0]
    assert len(wanted) == 3 and "'dog' (0 of 1 images found)" in wanted[1]
    train.main(["--csv", str(table), "--file-column", "fname", "--label-column", "labels",
                "--valid-column", "is_valid", "--no-disk-cache", "--results-dir",
                str(tmp_path / "r"), "--evaluate"])
    evaluated = capsys.readouterr().out.splitlines()
    assert [line for line in evaluated if line.startswith(("Test accuracy", "Classes the model",
                                                           "  What helps"))] == wanted


# ---- accuracy.png's y-axis stays within -1..101 -------------------------------------------------
# A flat line at 100% (a perfect run, a 1-epoch run on easy data) got matplotlib's own
# (94.5, 105.5): the line in the middle of the axis, under a "105" tick; the widening alone was
# kept in -1..101.

@pytest.mark.parametrize("train_acc, valid_acc, window", [
    ([100.0, 100.0], [100.0, 100.0], (90.0, 101.0)),  # was (94.5, 105.5)
    ([100.0], [100.0], (90.0, 101.0)),                # a 1-epoch run
    ([70.0, 100.0], [70.0, 100.0], (68.0, 101.0)),    # was (68.5, 101.5)
])
def test_accuracy_axis_never_passes_101(train_acc, valid_acc, window):
    fig = plot.plot_accuracy(train_acc, valid_acc, None, best_epoch=1)
    low, high = fig.axes[0].get_ylim()
    assert (low, high) == pytest.approx(window)
    assert high - low >= plot.MIN_SPAN and -1 <= low and high <= 101
    plt.close(fig)


def test_accuracy_axis_with_a_baseline_at_0_and_accuracy_at_100_is_the_whole_range():
    fig = plot.plot_accuracy([99.0, 100.0], [99.0, 100.0], None, baseline=0.0)
    assert fig.axes[0].get_ylim() == pytest.approx((-1.0, 101.0))  # was (-5, 105)
    plt.close(fig)
