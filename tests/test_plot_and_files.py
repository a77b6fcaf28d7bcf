"""plot.py writes files headless with the right titles; each module can be copied alone."""

from __future__ import annotations

import shutil
import subprocess
import sys

import torch

import plot
from conftest import ROOT


class Always7(torch.nn.Module):
    def forward(self, x):
        assert not self.training  # show_examples puts the model in eval mode
        return torch.nn.functional.one_hot(torch.full((len(x),), 7), 10).float()


def test_show_examples_titles_prediction_then_truth(tmp_path, monkeypatch):
    titles = []
    real_save = plot._save

    def record(fig, path):
        titles.extend(ax.get_title() for ax in fig.axes if ax.get_title())
        return real_save(fig, path)

    monkeypatch.setattr(plot, "_save", record)
    loader = [(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.tensor([3, 3, 1, 0]))]
    path = plot.show_examples(Always7().train(), loader, tmp_path / "ex.png")
    assert path.stat().st_size > 0
    assert titles == ["P: 7 | T: 3", "P: 7 | T: 3", "P: 7 | T: 1", "P: 7 | T: 0"]


def test_loss_and_accuracy_plots_are_written(tmp_path):
    losses = torch.linspace(2.3, 0.5, 40).tolist()
    assert plot.plot_training_loss(losses, 4, tmp_path / "loss.png").stat().st_size > 0
    assert plot.plot_accuracy([10, 20, 30, 40], [9, 18, 27, 36], tmp_path / "acc.png").stat().st_size > 0
    assert "plt.show" not in (ROOT / "plot.py").read_text()


def test_each_module_imports_alone_from_an_empty_folder(tmp_path):
    groups = {"dataset": ["dataset.py"], "model": ["model.py"], "plot": ["plot.py"],
              "make_subset": ["make_subset.py"], "loaders": ["loaders.py", "dataset.py"]}
    procs = []
    for module, files in groups.items():
        folder = tmp_path / module
        folder.mkdir()
        for name in files:
            shutil.copy(ROOT / name, folder / name)
        procs.append(subprocess.Popen([sys.executable, "-c", f"import {module}"], cwd=folder,
                                      stderr=subprocess.PIPE, text=True))
    for module, proc in zip(groups, procs):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{module}: {err}"
