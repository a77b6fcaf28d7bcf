"""Figures a person can trust at a glance (issue 32 points 3-5, issue 31 point 1's figures), checked
through the data they are drawn from: titles, their colours and order, the confusion matrix's
image data, tick labels and text; not pixels."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from PIL import Image

import plot

RED = to_rgba("red")


class Fixed(torch.nn.Module):
    """Logits given per image: the image's first pixel indexes the rows of `logits`."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].round().long()]


def images_indexing(n):
    """(n, 1, 4, 4) float images whose first pixel is the image's index (Fixed's row)."""
    x = torch.zeros(n, 1, 4, 4)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)
    return x


def titled(fig):
    """(title, colour) of each image of a grid, in the order drawn."""
    return [(ax.get_title(), to_rgba(ax.title.get_color())) for ax in fig.axes if ax.get_title()]


# ---- examples.png: wrong ones first, in red ------------------------------------------------------

def test_examples_show_wrong_predictions_first_with_a_red_title_and_the_true_class():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    predicted = labels.clone()
    predicted[[4, 9]] = torch.tensor([0, 2])  # image 4 (a 1) said 0, image 9 (a 0) said 2
    model = Fixed(torch.nn.functional.one_hot(predicted, 3).float())
    fig = plot.show_examples(model, [(images_indexing(12)[:6], labels[:6]),
                                     (images_indexing(12)[6:], labels[6:])],
                             class_names=["cat", "dog", "fox"], num_examples=6)
    shown = titled(fig)
    assert shown[:2] == [("P: cat | T: dog", RED), ("P: fox | T: cat", RED)]  # the loader's order
    assert all(title.split(" | T: ")[0][3:] == title.split(" | T: ")[1] and colour != RED
               for title, colour in shown[2:])  # then right ones, in the usual colour
    assert len(shown) == 6 and fig.get_suptitle() == (
        "2 of 12 images predicted wrong: 2 shown first, in red")
    plt.close(fig)


def test_examples_keep_wrong_ones_to_a_third_of_the_grid_when_enough_are_right():
    labels = torch.arange(30) % 3
    predicted = torch.where(torch.arange(30) < 20, (labels + 1) % 3, labels)  # 20 wrong, 10 right
    model = Fixed(torch.nn.functional.one_hot(predicted, 3).float())
    fig = plot.show_examples(model, [(images_indexing(30), labels)])
    colours = [colour for _, colour in titled(fig)]
    assert colours[:5] == [RED] * 5 and RED not in colours[5:] and len(colours) == 15
    assert fig.get_suptitle().startswith("20 of 30 images predicted wrong: 5 shown first")
    plt.close(fig)


def test_examples_with_no_mistake_say_so_and_draw_no_red_title():
    labels = torch.tensor([0, 1, 1, 0])
    fig = plot.show_examples(Fixed(torch.nn.functional.one_hot(labels, 2).float()),
                             [(images_indexing(4), labels)])
    assert [t for t, _ in titled(fig)] == ["P: 0 | T: 0", "P: 1 | T: 1", "P: 1 | T: 1", "P: 0 | T: 0"]
    assert RED not in [c for _, c in titled(fig)]
    assert fig.get_suptitle() == "All 4 images predicted right"
    plt.close(fig)


# ---- mistakes.png: ordered by, and titled with, the predicted class's probability ---------------

def test_mistakes_are_the_most_confidently_wrong_titled_with_that_probability(tmp_path):
    labels = torch.tensor([0, 0, 0, 0, 1])
    logits = torch.tensor([[0.0, 0.2], [0.0, 3.0], [5.0, 0.0], [0.0, 1.0], [0.0, 0.4]])
    # wrong: image 0 (p=0.55), 1 (p=0.95), 3 (p=0.73); images 2 and 4 right
    fig = plot.show_mistakes(Fixed(logits), [(images_indexing(5), labels)], tmp_path,
                             class_names=["cat", "dog"])
    assert titled(fig) == [("P: dog (p=0.95) | T: cat", RED), ("P: dog (p=0.73) | T: cat", RED),
                           ("P: dog (p=0.55) | T: cat", RED)]
    assert fig.get_suptitle() == ("Most confidently wrong: 3 of the 3 mistakes in 5 images, "
                                        "highest predicted probability p first")
    assert (tmp_path / "mistakes.png").stat().st_size > 0
    plt.close(fig)


def test_mistakes_keep_the_most_confident_across_batches_and_the_first_on_a_tie():
    probs = torch.tensor([[0.4, 0.6, 0.0], [0.05, 0.9, 0.05], [0.3, 0.7, 0.0], [0.05, 0.9, 0.05],
                          [0.8, 0.2, 0.0], [0.01, 0.99, 0.0], [0.2, 0.8, 0.0], [0.4, 0.6, 0.0]])
    labels = torch.tensor([0, 0, 0, 2, 0, 0, 0, 0])  # image 4 right; images 1 and 3 tie at 0.90
    x = images_indexing(8)
    fig = plot.show_mistakes(Fixed(probs.clamp(min=1e-6).log()),
                             [(x[:3], labels[:3]), (x[3:], labels[3:])], num_examples=4)
    assert [t for t, _ in titled(fig)] == ["P: 1 (p=0.99) | T: 0", "P: 1 (p=0.90) | T: 0",
                                           "P: 1 (p=0.90) | T: 2", "P: 1 (p=0.80) | T: 0"]
    assert fig.get_suptitle().startswith("Most confidently wrong: 4 of the 7 mistakes in 8")
    plt.close(fig)


def test_a_title_too_long_for_its_image_puts_the_true_class_on_a_line_of_its_own():
    labels = torch.tensor([0, 1])
    fig = plot.show_mistakes(Fixed(torch.tensor([[0.0, 2.0], [0.0, 3.0]])), [(images_indexing(2), labels)],
                             class_names=["species_00", "species_01"])
    assert [t for t, _ in titled(fig)] == ["P: species_01 (p=0.88)\nT: species_00"]
    plt.close(fig)


def test_the_docs_name_the_order_mistakes_png_has():
    from conftest import ROOT
    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "evaluate-predict.md").read_text()
    assert "most confidently wrong" in text and "highest-loss" not in text
    assert "(p=<probability>)" in text


# ---- confusion_matrix.png: row shares, counts, bounded ------------------------------------------

def confusion(n, seed=0, images=4000):
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, n, (images,), generator=g)
    noise = torch.randint(0, n, (images,), generator=g)
    pred = torch.where(torch.rand(images, generator=g) < 0.7, true, noise)
    cm = torch.zeros(n, n, dtype=torch.int64)
    cm.index_put_((true, pred), torch.ones(images, dtype=torch.int64), accumulate=True)
    return cm


def cell_counts(ax):
    """{(row, column): count} of the numbers written in the cells."""
    return {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text())
            for t in ax.texts}


@pytest.mark.parametrize("n", [3, 10])
def test_confusion_matrix_colours_rows_by_share_and_writes_every_count(n):
    cm = confusion(n)
    cm[0] = 0  # a class with no test images: a white row, no division by zero
    fig = plot.plot_confusion_matrix(cm, [f"c{i}" for i in range(n)])
    ax = fig.axes[0]
    shares = torch.as_tensor(np.asarray(ax.images[0].get_array()))
    assert shares.shape == (n, n)
    assert torch.allclose(shares[1:].sum(dim=1), torch.ones(n - 1, dtype=shares.dtype))
    assert shares[0].sum() == 0
    assert torch.allclose(shares[1:], (cm[1:] / cm[1:].sum(dim=1, keepdim=True)).to(shares.dtype))
    written = cell_counts(ax)
    assert written == {(i, j): c for (i, j), c in np.ndenumerate(cm.numpy()) if c}  # 0: blank
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"c{i}" for i in range(n)]
    assert not fig.texts  # nothing left out
    plt.close(fig)


def test_confusion_matrix_grows_with_the_classes_up_to_a_bound():
    widths = []
    for n in (3, 10, 20, 30, 55, 200):
        fig = plot.plot_confusion_matrix(confusion(n), [str(i) for i in range(n)])
        widths.append(fig.get_size_inches()[1])
        plt.close(fig)
    assert widths[0] < widths[1] < widths[2] < widths[3] and max(widths) <= 16
    assert widths[4] == widths[5]  # past the bound, one size


def test_confusion_matrix_of_55_classes_shows_the_30_most_confused_and_says_so(tmp_path):
    n = 55
    cm = torch.diag(torch.full((n,), 50))
    confused = [3, 7, 40]  # these three mix their images up; every other class gets 1 confusion
    for a in confused:
        for b in confused:
            if a != b:
                cm[a, b] = 20
    for i in range(n):
        if i not in confused:
            cm[i, (i + 1) % n] += 1
    names = [f"class{i}" for i in range(n)]
    fig = plot.plot_confusion_matrix(cm, names, tmp_path)
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    assert len(rows) == 30 and columns == rows + ["other (25)"]
    assert {"class3", "class7", "class40"} <= set(rows)
    assert rows == sorted(rows, key=lambda name: int(name[5:]))  # in class order
    shares = torch.as_tensor(np.asarray(ax.images[0].get_array()))
    assert shares.shape == (30, 31)
    assert torch.allclose(shares.sum(dim=1), torch.ones(30, dtype=shares.dtype))  # with "other"
    assert [t.get_text() for t in fig.texts] == [
        '25 of 55 classes left out (those with the fewest confusions, 22 of them only by class '
        'order: as many as a class shown); "other (25)" counts predictions of them. '
        'confusion_matrix.csv keeps all 55.']
    assert fig.get_size_inches()[1] <= 16
    assert min(t.get_fontsize() for t in ax.texts + ax.get_xticklabels()) >= 7  # readable
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    plt.close(fig)


def test_the_confusion_matrix_line_says_when_a_tie_and_not_fewer_confusions_left_a_class_out():
    """Classes cut only by class order (as confused as one shown) are counted; a clean cut says
    nothing of ties."""
    n = 35
    clean = torch.diag(torch.full((n,), 50))
    for i in range(n):  # class i: n - i images predicted as the next class, a strict order
        clean[i, (i + 1) % n] = n - i
    clean[n - 1, 0] = 0  # ... and no class is predicted as class 0 from the last
    fig = plot.plot_confusion_matrix(clean, [f"c{i}" for i in range(n)])
    text = fig.texts[0].get_text()
    assert text.startswith("5 of 35 classes left out (those with the fewest confusions); ")
    plt.close(fig)
    tied = torch.diag(torch.full((n,), 5))
    tied[:, 0] = 0
    tied[:, 1] = 5  # every class's images predicted as class 1: each has 5 confusions (1: 170)
    tied[1, 1] = 5
    fig = plot.plot_confusion_matrix(tied, [f"c{i}" for i in range(n)])
    rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert rows[:3] == ["c0", "c1", "c2"] and "c34" not in rows  # the cut: class order
    assert fig.texts[0].get_text().startswith(
        "5 of 35 classes left out (those with the fewest confusions, 5 of them only by class "
        "order: as many as a class shown); ")
    plt.close(fig)


def test_write_reports_keeps_every_class_in_the_csv_past_the_figures_bound(tmp_path):
    """The lecture's CSV layout (`File Name,Class Label`), 55 named classes, one image each."""
    import evaluate
    from dataset import CsvImageDataset
    n = 55
    names = [f"k{i:02d}" for i in range(n)]
    for i, name in enumerate(names):
        Image.fromarray(np.full((4, 4), i, dtype=np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "classes55.csv").write_text("File Name,Class Label\n" + "".join(f"{c}.png,{c}\n" for c in names))
    ds = CsvImageDataset(tmp_path / "classes55.csv", tmp_path)
    assert ds.classes == names
    loader = evaluate.make_loader(ds, 16, shuffle=False, drop_last=False, seed=0, rank=0,
                                  world_size=1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, n))
    (tmp_path / "r").mkdir()  # train.py makes the results folder first
    evaluate.write_reports(model, confusion(n), loader, tmp_path / "r", names)
    lines = (tmp_path / "r" / "confusion_matrix.csv").read_text().splitlines()
    assert len(lines) == n + 1 and lines[0].split(",")[1:] == names
    assert (tmp_path / "r" / "confusion_matrix.png").is_file()
    assert (tmp_path / "r" / "mistakes.png").is_file()


# ---- several labels per image: tag sets ------------------------------------------------------------

TAGS = ["cat", "dog", "fox"]


def test_tag_examples_title_predicted_and_true_tag_sets_red_when_they_differ():
    targets = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1]], dtype=torch.float32)
    predicted = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.float32)
    model = Fixed(predicted * 8 - 4)  # probability 0.98 or 0.02
    fig = plot.show_tag_examples(model, [(images_indexing(4), targets)], class_names=TAGS)
    assert titled(fig) == [("pred: cat | true: cat dog", RED), ("pred: cat fox | true: fox", RED),
                           ("pred: cat | true: cat", titled(fig)[2][1]),
                           ("pred: (none) | true: (none)", titled(fig)[3][1])]
    assert RED not in (titled(fig)[2][1], titled(fig)[3][1])
    assert fig.get_suptitle() == ("2 of 4 images with a wrong tag (threshold 0.5): "
                                        "2 shown first, in red")
    plt.close(fig)


def test_tag_mistakes_are_ordered_by_the_images_loss_and_titled_with_it():
    targets = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float32)
    logits = torch.tensor([[-1.0, 0, 0], [-3.0, 0, 0], [3.0, -3, -3], [0.0, 0.5, -2]])
    # images 0 and 1 miss cat (1 worse), image 2 right, image 3 adds cat (a 0.5 tie: predicted)
    fig = plot.show_tag_mistakes(Fixed(logits), [(images_indexing(4), targets)], class_names=TAGS,
                                 delim="|")
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets,
                                                               reduction="none").mean(dim=1)
    assert [t for t, _ in titled(fig)] == [
        f"pred: dog|fox | true: cat\nBCE {bce[1]:.3f}",
        f"pred: dog|fox | true: cat\nBCE {bce[0]:.3f}",
        f"pred: cat|dog | true: dog\nBCE {bce[3]:.3f}"]
    assert all(colour == RED for _, colour in titled(fig))
    assert "by the image's BCE averaged over its 3 tags" in fig.get_suptitle()
    plt.close(fig)


def planet(tmp_path, n=24):
    """fastai's Planet layout: train_v2.csv `image_name,tags` (space-separated, some empty) and
    train-jpg/<image_name>.jpg, each tag lighting one quadrant of an 8x8 image."""
    rng = np.random.default_rng(0)
    (tmp_path / "train-jpg").mkdir()
    lines = ["image_name,tags"]
    for i in range(n):
        tags = [t for t in TAGS if rng.random() < 0.5]
        pixels = np.zeros((8, 8), dtype=np.uint8)
        for t in tags:
            k = TAGS.index(t)
            pixels[4 * (k // 2):4 * (k // 2) + 4, 4 * (k % 2):4 * (k % 2) + 4] = 255
        Image.fromarray(pixels).save(tmp_path / "train-jpg" / f"train_{i}.jpg", quality=95)
        lines.append(f"train_{i},{' '.join(tags)}")
    (tmp_path / "train_v2.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "train_v2.csv"


def test_a_label_delim_run_writes_tag_examples_and_mistakes(tmp_path, monkeypatch):
    import train
    drawn = {}
    for name in ("show_tag_examples", "show_tag_mistakes"):  # keep each figure drawn, to read
        real = getattr(plot, name)
        monkeypatch.setattr(plot, name, lambda *a, _real=real, _name=name, **k:
                            drawn.setdefault(_name, _real(*a, **k)))
    csv = planet(tmp_path)
    train.main(["--csv", str(csv), "--img-dir", str(tmp_path / "train-jpg"), "--file-column",
                "image_name", "--label-column", "tags", "--file-suffix", ".jpg", "--label-delim",
                " ", "--epochs", "1", "--batch-size", "8", "--results-dir", str(tmp_path / "r"),
                "--no-disk-cache", "--logging-interval", "1000"])
    for name in ("examples.png", "mistakes.png", "loss.png", "multi_label_report.csv"):
        assert (tmp_path / "r" / name).stat().st_size > 0
    truth = {line.split(",")[1] or "(none)" for line in csv.read_text().splitlines()[1:]}
    assert set(drawn) == {"show_tag_examples", "show_tag_mistakes"} and titled(drawn["show_tag_examples"])
    for fig in drawn.values():
        for title, colour in titled(fig):
            predicted, true = re.fullmatch(r"pred: (.*?)(?: \| |\n)true: (.*?)(\nBCE .*)?", title,
                                           re.S).group(1, 2)
            assert true in truth and (colour == RED) == (predicted != true)
    assert "tags" in drawn["show_tag_mistakes"].get_suptitle()
