"""The lecture's own notebook runs on our files: every helper call exactly as it writes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import ROOT

OURS = ["dataset.py", "loaders.py", "model.py", "evaluate.py", "train.py", "plot.py", "make_subset.py"]


def test_the_lectures_notebook_runs_on_our_helpers(tmp_path):
    for name in OURS:
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "mnist-5k", tmp_path / "mnist-5k")
    for name in ("inline_backend.py", "train_model_notebook.py"):
        shutil.copy(ROOT / "tests" / "lecture" / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    made = subprocess.run([sys.executable, "make_subset.py"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert made.returncode == 0 and "Wrote 768 images" in made.stdout, made.stderr
    run = subprocess.run([sys.executable, "train_model_notebook.py"], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "Image batch dimensions: torch.Size([64, 1, 28, 28])" in out
    assert "Image label dimensions: torch.Size([64])" in out
    assert "Epoch: 001/003 | Batch 0000/0004 | Loss: " in out and "Epoch: 003/003 | Train: " in out
    assert "Total Training Time: " in out
    test_line = next(line for line in out.splitlines() if line.startswith("Test accuracy: "))
    assert test_line.replace("Test accuracy: ", "test accuracy again: ") in out  # printed by train_model
    assert "lists: 12 3 3" in out  # 3 epochs of 4 batches; one accuracy per epoch
    assert out.count("open figures before show: 1") == 3  # each plot left its figure open for plt.show()
    # Each plt.show() displayed one figure: the loss (two x-axes), the accuracy, the 15 examples.
    shown = eval(out.split("shown: ", 1)[1])
    assert shown[0] == ["Iterations", "Epochs"] and shown[1] == ["Epoch"]
    assert len(shown[2]) == 15 and all(title.startswith("P: ") and " | T: " in title for title in shown[2])
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "results").exists()  # no results_dir: no files
