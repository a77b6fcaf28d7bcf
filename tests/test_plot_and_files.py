"""plot.py draws figures a notebook can show and writes files only when asked; files copy alone."""

from __future__ import annotations

import shutil
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest
import torch

import plot
from conftest import ROOT
from dataset import to_float01


class Always7(torch.nn.Module):
    def forward(self, x):
        assert not self.training  # show_examples puts the model in eval mode
        self.seen = x
        return torch.nn.functional.one_hot(torch.full((len(x),), 7), 10).float()


def test_show_examples_titles_prediction_then_truth_and_scales_uint8_as_the_dataset(tmp_path):
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    model = Always7().train()
    fig = plot.show_examples(model, [(images, torch.tensor([3, 3, 1, 0]))])
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [
        "P: 7 | T: 3", "P: 7 | T: 3", "P: 7 | T: 1", "P: 7 | T: 0"]
    assert torch.equal(model.seen, to_float01(images))  # plot.py's copy of the scaling, pinned equal
    assert list(tmp_path.iterdir()) == []  # no results_dir: no file
    plt.close(fig)
    named = plot.show_examples(model, [(images, torch.tensor([1, 0, 1, 0]))], tmp_path, class_names=list("abcdefghij"))
    assert named.axes[0].get_title() == "P: h | T: b" and (tmp_path / "examples.png").stat().st_size > 0
    plt.close(named)


def test_loss_and_accuracy_figures_are_written_only_with_a_results_dir(tmp_path):
    losses = torch.linspace(2.3, 0.5, 40).tolist()
    figures = [plot.plot_training_loss(losses, 4), plot.plot_accuracy([10, 20, 30, 40], [9, 18, 27, 36])]
    assert list(tmp_path.iterdir()) == [] and all(f.axes for f in figures)
    figures += [plot.plot_training_loss(losses, 4, 10, tmp_path), plot.plot_accuracy([10, 20], [9, 18], tmp_path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png", "loss.png"]
    assert figures[2].axes[1].get_xticklabels()[-1].get_text() == "4"  # the epoch axis
    for fig in figures:
        plt.close(fig)


def test_dataset_and_model_copied_alone_train_one_epoch_with_a_plain_dataloader(tiny_data, tmp_path):
    for name in ("dataset.py", "model.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    script = f"""
import torch
from torch.utils.data import DataLoader
from dataset import CsvImageDataset
from model import MLP
torch.manual_seed(0)
ds = CsvImageDataset({str(tiny_data / "mnist_train.csv")!r}, {str(tiny_data / "mnist_train")!r})
loader = DataLoader(ds, batch_size=8, shuffle=True)
model = MLP()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for images, labels in loader:
    assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1, images.dtype
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad(); loss.backward(); optimizer.step()
print("batches", len(loader), "shape", tuple(images.shape), "loss", round(loss.item(), 3))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("batches 5 shape (8, 1, 28, 28) loss ")


def test_each_module_imports_alone_from_an_empty_folder(tmp_path):
    groups = {"dataset": ["dataset.py"], "model": ["model.py"], "plot": ["plot.py"],
              "make_subset": ["make_subset.py"], "loaders": ["loaders.py", "dataset.py"],
              "evaluate": ["evaluate.py", "loaders.py", "dataset.py", "model.py"]}
    # evaluate.py works with what it imports beside it: the lecture's compute_accuracy on a model
    # whose predictions are the labels
    works = ("; import torch; m = torch.nn.Linear(4, 3); x = torch.rand(6, 4); "
             "print(evaluate.compute_accuracy(m, [(x, m(x).argmax(1))], 'cpu'))")
    procs = []
    for module, files in groups.items():
        folder = tmp_path / module
        folder.mkdir()
        for name in files:
            shutil.copy(ROOT / name, folder / name)
        code = f"import {module}" + (works if module == "evaluate" else "")
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=folder,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for module, proc in zip(groups, procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{module}: {err}"
        if module == "evaluate":
            assert out.strip() == "100.0"


def test_to_float01_is_v2_to_dtype_bit_for_bit():
    from torchvision.transforms import v2

    every_value = torch.arange(256, dtype=torch.uint8).view(1, 16, 16)
    assert torch.equal(to_float01(every_value), v2.ToDtype(torch.float32, scale=True)(every_value))


# ---- figures as a viewer shows the images (issue 20) -----------------------------------------------

class ListDataset(torch.utils.data.Dataset):
    def __init__(self, images, labels, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        return (self.transform(image) if self.transform else image), self.labels[i]


def test_examples_spread_over_every_class_in_the_loaders_order():
    images = torch.zeros(30, 1, 8, 8, dtype=torch.uint8)
    labels = [0] * 10 + [1] * 10 + [2] * 10  # sorted by class, as many test CSVs are
    loader = torch.utils.data.DataLoader(ListDataset(images, labels), batch_size=8)
    fig = plot.show_examples(Always7(), loader)
    truths = [ax.get_title().split("T: ")[1] for ax in fig.axes if ax.get_title()]
    assert truths == ["0"] * 5 + ["1"] * 5 + ["2"] * 5
    plt.close(fig)


def test_one_channel_is_drawn_in_gray_with_white_as_white_and_a_normalize_is_undone():
    from torchvision.transforms import v2
    pixels = torch.linspace(0, 1, 64).view(1, 8, 8)
    normalize = v2.Compose([v2.Normalize([0.5], [0.25])])
    loader = torch.utils.data.DataLoader(ListDataset([pixels, pixels], [0, 1], normalize), batch_size=2)
    fig = plot.show_examples(Always7(), loader)
    shown = fig.axes[0].get_images()[0]
    assert shown.get_cmap().name == "gray" and shown.get_clim() == (0.0, 1.0)
    assert torch.allclose(torch.as_tensor(shown.get_array()), pixels[0], atol=1e-6)  # not clipped, not inverted
    plt.close(fig)
    colour = torch.rand(2, 3, 8, 8)
    fig = plot.show_examples(Always7(), [(colour, torch.tensor([0, 1]))])
    assert torch.allclose(torch.as_tensor(fig.axes[0].get_images()[0].get_array()), colour[0].permute(1, 2, 0))
    plt.close(fig)


def test_the_accuracy_figure_ticks_whole_epochs():
    fig = plot.plot_accuracy([10, 20, 30, 40], [9, 18, 27, 36])
    ticks = fig.axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    plt.close(fig)


def test_a_figure_is_saved_whole_or_not_at_all_on_a_full_disk(tmp_path, monkeypatch):
    import errno
    import os
    from pathlib import Path

    fig = plot.plot_accuracy([10.0, 20.0], [5.0, 15.0], tmp_path)
    plt.close(fig)
    before = (tmp_path / "accuracy.png").read_bytes()
    real_write = Path.write_bytes

    def full(self, data):  # the disk fills halfway through the file
        real_write(self, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match="No space left"):
        plot.plot_accuracy([10.0, 20.0, 30.0], [5.0, 15.0, 25.0], tmp_path)
    plt.close("all")
    assert (tmp_path / "accuracy.png").read_bytes() == before  # the earlier figure, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.png"]  # no half-written file
