"""Rare classes and weights: balanced accuracy and macro F1, --monitor, --balance sampler / loss,
--weight-column (issue 31 point 3), exact as every order and loss of the project is."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import dataset
import train
from conftest import ROOT, no_figures, write_png
from dataset import CsvImageDataset, DatasetError
from evaluate import balanced_accuracy_of, compute_scores, macro_f1_of
from loaders import EpochBatchSampler, balanced_order, get_dataloaders, loaders_from_datasets

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch):
    no_figures(monkeypatch)  # these runs test figures per epoch, orders and bits


def keras_table(folder: Path, rows: int = 100, rare_every: int = 20, weights=None) -> Path:
    """Keras's flow_from_dataframe layout: labels.csv `filename,class,weight` and the images
    beside it; every rare_every-th row is class "rare" (95 / 5 for 20), brighter than "common"."""
    rng = np.random.default_rng(0)
    lines = ["filename,class,weight"]
    for i in range(rows):
        rare = i % rare_every == 0
        pixels = (rng.integers(0, 100, (4, 4)) + (120 if rare else 0)).astype(np.uint8)
        write_png(folder / "images" / f"{i:03d}.png", pixels)
        weight = 1 + i % 3 if weights is None else weights[i]
        lines.append(f"images/{i:03d}.png,{'rare' if rare else 'common'},{weight}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def run(table: Path, results: Path, *extra: str, epochs: int = 3):
    return train.main(["--csv", str(table), "--file-column", "filename", "--label-column", "class",
                       "--epochs", str(epochs), "--seed", "3", "--batch-size", "8",
                       "--no-disk-cache", "--results-dir", str(results), *extra])


def same_weights(a: Path, b: Path) -> bool:
    ma = torch.load(a / "checkpoint.pt", weights_only=True)["model"]
    mb = torch.load(b / "checkpoint.pt", weights_only=True)["model"]
    return all(torch.equal(ma[k], mb[k]) for k in ma)


# ---- the figures ---------------------------------------------------------------------------------

def test_balanced_accuracy_and_macro_f1_of_a_hand_made_confusion_matrix():
    cm = torch.tensor([[3, 1, 1],   # class 0: 5 images, 3 found
                       [0, 2, 0],   # class 1: 2 images, both found
                       [0, 0, 0]])  # class 2: no image, predicted once
    assert balanced_accuracy_of(cm) == pytest.approx(100 * (3 / 5 + 2 / 2) / 2)  # class 2 absent
    # F1 = 2TP / (true + predicted): 6/8, 4/5, and 0 for class 2, predicted but never true
    assert macro_f1_of(cm) == pytest.approx((6 / 8 + 4 / 5 + 0) / 3)


class Constant(torch.nn.Module):
    """Always says class 0 ("common"), whatever the image."""

    def forward(self, x):
        return torch.tensor([[2.0, 0.0]]).expand(len(x), 2)


def test_a_model_that_never_says_the_rare_class_scores_95_but_balanced_50(tmp_path):
    table = keras_table(tmp_path)
    ds = CsvImageDataset(table, file_column="filename", label_column="class")
    _, loader, _ = loaders_from_datasets(ds, ds, None, batch_size=8, eval_batch_size=7)
    scores = compute_scores(Constant(), loader, CPU, num_classes=2)
    assert scores["accuracy"] == 95.0 and scores["balanced_accuracy"] == 50.0
    assert scores["macro_f1"] == pytest.approx((2 * 95 / (95 + 100) + 0) / 2)


def test_the_lectures_run_prints_no_second_line_and_an_uneven_run_does(tiny_data, tmp_path, capsys):
    train.main(["--epochs", "1", "--seed", "1", "--batch-size", "8", "--data-dir", str(tiny_data),
                "--results-dir", str(tmp_path / "even")])
    out = capsys.readouterr().out
    assert "Balanced accuracy" not in out and "Train order" not in out and "Loss weighted" not in out
    header = (tmp_path / "even" / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,train_acc,valid_acc,epoch_seconds,")  # new columns at the end
    assert "valid_balanced_accuracy" in header and "valid_macro_f1" in header
    run(keras_table(tmp_path / "t"), tmp_path / "uneven", epochs=1)  # 95 / 5: shown unasked
    assert "Epoch: 001/001 | Balanced accuracy: train " in capsys.readouterr().out


# ---- --monitor -----------------------------------------------------------------------------------

def test_best_epoch_follows_the_monitored_figure():
    history = train.History(train_acc=[1, 2, 3], valid_acc=[50.0, 60.0, 55.0],
                            valid_scores=[{"balanced_accuracy": 70.0, "loss": 0.5},
                                          {"balanced_accuracy": 40.0, "loss": 0.7},
                                          {"balanced_accuracy": 80.0, "loss": 0.4}])
    assert train.best_epoch(history) == 2  # accuracy, the default
    history.monitor = "balanced_accuracy"
    assert train.best_epoch(history) == 3
    history.valid_scores[0]["loss"] = 0.3
    history.monitor = "loss"  # lower is better
    assert train.best_epoch(history) == 1


def test_monitor_is_recorded_picks_best_pt_and_resume_inherits_or_refuses_it(tmp_path, capsys):
    table = keras_table(tmp_path)
    history = run(table, tmp_path / "r", "--monitor", "balanced_accuracy", epochs=2)
    saved = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert saved["config"]["monitor"] == "balanced_accuracy" and history.monitor == "balanced_accuracy"
    with open(tmp_path / "r" / "metrics.csv") as f:
        valid = [float(row["valid_balanced_accuracy"]) for row in csv.DictReader(f)]
    best = torch.load(tmp_path / "r" / "best.pt", weights_only=True)
    assert best["epoch"] == valid.index(max(valid)) + 1
    assert "validation balanced accuracy" in capsys.readouterr().out  # the Best epoch line
    resumed = run(table, tmp_path / "r", "--resume", epochs=3)  # left out: the checkpoint's
    assert resumed.monitor == "balanced_accuracy" and len(resumed.valid_scores) == 3
    with pytest.raises(SystemExit) as info:
        run(table, tmp_path / "r", "--resume", "--monitor", "loss", epochs=4)
    assert "monitor: checkpoint has 'balanced_accuracy', this run has 'loss'" in str(info.value)


def test_early_stopping_follows_the_monitored_loss(tmp_path, capsys):
    history = run(keras_table(tmp_path), tmp_path / "r", "--monitor", "loss", "--early-stopping", "1",
                  "--lr", "5", epochs=6)  # a rate too high: the validation loss soon rises
    losses = [scores["loss"] for scores in history.valid_scores]
    best = losses.index(min(losses)) + 1
    assert len(losses) == best + 1 < 6
    assert f"Early stopping: no better validation loss in the 1 epoch after epoch {best}" in \
        capsys.readouterr().out


# ---- --balance sampler ---------------------------------------------------------------------------

def test_the_balanced_order_draws_each_class_about_equally_from_seed_and_epoch_alone():
    labels = np.array([0] * 95 + [1] * 5)
    drawn = np.concatenate([balanced_order(labels, 7, epoch) for epoch in range(200)])
    assert len(drawn) == 200 * 100 and abs((labels[drawn] == 1).mean() - 0.5) < 0.02
    assert np.array_equal(balanced_order(labels, 7, 3), balanced_order(labels, 7, 3))
    assert not np.array_equal(balanced_order(labels, 7, 3), balanced_order(labels, 7, 4))
    assert set(drawn[labels[drawn] == 1].tolist()) == {95, 96, 97, 98, 99}  # each rare image


def test_each_rank_takes_a_disjoint_share_of_the_same_balanced_draw():
    labels = np.array([0] * 95 + [1] * 5)

    def order(rank: int, world_size: int) -> list[np.ndarray]:
        sampler = EpochBatchSampler(100, 8, shuffle=True, drop_last=True, seed=5, rank=rank,
                                    world_size=world_size, balance_labels=labels)
        sampler.set_epoch(2)
        return [batch.indices for batch in sampler]

    whole, first, second = order(0, 1), order(0, 2), order(1, 2)
    assert len(whole) == len(first) == len(second) == 12
    for batch, a, b in zip(whole, first, second):  # positions 0, 2, 4, ... and 1, 3, 5, ...
        assert np.array_equal(batch[0::2], a) and np.array_equal(batch[1::2], b)


def test_get_dataloaders_balance_sampler_draws_the_rare_class_half_the_time(tmp_path):
    table = keras_table(tmp_path)
    frame = pd.read_csv(table).assign(split=lambda t: ["valid" if i % 10 == 1 else "train" for i in range(len(t))])
    train_loader, _, _ = get_dataloaders(10, csv_path=frame, img_dir=tmp_path, balance="sampler",
                                         dataset_kwargs={"file_column": "filename", "label_column": "class"})
    labels = torch.cat([labels for epoch in range(30) for _, labels in train_loader])
    assert abs(labels.float().mean().item() - 0.5) < 0.05  # "rare" is class 1
    with pytest.raises(ValueError, match="balance must be None or 'sampler'"):
        get_dataloaders(10, csv_path=frame, img_dir=tmp_path, balance="loss",
                        dataset_kwargs={"file_column": "filename", "label_column": "class"})


def test_balanced_order_is_exact_for_any_workers_and_after_resume(tmp_path, capsys):
    table = keras_table(tmp_path)
    run(table, tmp_path / "plain", "--balance", "sampler", epochs=3)
    assert "Train order (--balance sampler): 80 images drawn per epoch with replacement" in capsys.readouterr().out
    run(table, tmp_path / "workers", "--balance", "sampler", "--num-workers", "2", "--cache-mb", "0", epochs=3)
    assert same_weights(tmp_path / "plain", tmp_path / "workers")
    run(table, tmp_path / "resumed", "--balance", "sampler", epochs=1)
    torch.manual_seed(999)  # whatever happened in between must not matter
    run(table, tmp_path / "resumed", "--resume", epochs=3)  # --balance inherited
    assert same_weights(tmp_path / "plain", tmp_path / "resumed")
    run(table, tmp_path / "unbalanced", epochs=3)  # a check that can fail: the order differs
    assert not same_weights(tmp_path / "plain", tmp_path / "unbalanced")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_balance_and_weights_under_torchrun_match_one_process(tmp_path):
    """Two ranks, each a disjoint share of the balanced draw, with row weights normalised over
    both shares: the weights one process learns, to float rounding."""
    table = keras_table(tmp_path, weights=[1 + (i % 7) for i in range(100)])
    flags = ["--csv", str(table), "--file-column", "filename", "--label-column", "class",
             "--weight-column", "weight", "--epochs", "2", "--seed", "3", "--batch-size", "8",
             "--no-disk-cache", "--balance", "sampler", "--lr", "0.5"]
    probe = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
             str(ROOT / "tests" / "ddp_probe.py"), "train"]
    done = subprocess.run([*probe, *flags, "--results-dir", str(tmp_path / "ddp")], capture_output=True,
                          text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    train.main([*flags, "--results-dir", str(tmp_path / "one")])
    a = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


# ---- --balance loss ------------------------------------------------------------------------------

def test_balance_loss_weighs_classes_by_inverse_frequency_and_records_them(tmp_path, capsys):
    run(keras_table(tmp_path), tmp_path / "r", "--balance", "loss", epochs=1)
    saved = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["config"]
    split = pd.read_csv(tmp_path / "r" / "split.csv")
    counts = split[split["split"] == "train"]["class"].value_counts()  # of the 80 train rows
    assert saved["balance"] == "loss" and counts["rare"] < 0.1 * counts["common"]
    assert saved["class_weights"] == [80 / (2 * counts["common"]), 80 / (2 * counts["rare"])]
    assert ("Loss weighted by class (--balance loss, inverse frequency in train): common "
            f"{80 / (2 * counts['common']):.4g}, rare {80 / (2 * counts['rare']):.4g}") in capsys.readouterr().out


def test_class_weights_are_torchs_weighted_cross_entropy():
    logits, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 2, 0, 1])
    weights = torch.tensor(train.inverse_frequency(labels.numpy(), 3))
    ours = train.Classification(class_weights=weights).loss(logits, labels)
    assert torch.allclose(ours, torch.nn.functional.cross_entropy(logits, labels, weight=weights))


# ---- --weight-column -----------------------------------------------------------------------------

def test_a_row_weighing_0_changes_the_gradient_no_more_than_dropping_it():
    torch.manual_seed(0)
    model, images, labels = torch.nn.Linear(4, 3), torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    weights = torch.tensor([1.0, 2.0, 0.0, 0.5, 3.0])
    task = train.Classification()

    def gradient(x, y, w):
        model.zero_grad()
        task.loss(model(x), y, w).backward()
        return model.weight.grad.clone()

    keep = weights > 0
    assert torch.allclose(gradient(images, labels, weights), gradient(images[keep], labels[keep], weights[keep]))
    # sum(w * loss) / sum(w): twice every weight is the same loss
    assert torch.allclose(task.loss(model(images), labels, weights), task.loss(model(images), labels, 2 * weights))


def test_weighted_items_and_batches_in_the_keras_layout(tmp_path):
    table = keras_table(tmp_path, rows=20)
    ds = CsvImageDataset(table, file_column="filename", label_column="class", weight_column="weight")
    image, label, weight = ds[1]
    assert image.shape == (1, 4, 4) and label == 0 and weight == 2.0
    images, labels, weights = ds[[0, 1, 2]]
    assert weights.dtype == torch.float32 and weights.tolist() == [1.0, 2.0, 3.0]
    frame = pd.read_csv(table).assign(split=["valid" if i % 5 == 1 else "train" for i in range(20)])
    loader, valid, _ = get_dataloaders(4, csv_path=frame, img_dir=tmp_path, dataset_kwargs={
        "file_column": "filename", "label_column": "class", "weight_column": "weight"})
    assert all(len(batch) == 3 and batch[2].shape == (4,) for batch in loader)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    history = train.train_model(model, 2, loader, valid, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                device=CPU, logging_interval=100)  # (images, labels, weights) batches
    assert len(history.valid_acc) == 2 and len(history.valid_scores) == 2


def test_bad_weights_are_row_problems_named_by_line_and_the_check_command_reports_them(tmp_path, capsys):
    table = keras_table(tmp_path, rows=8, weights=[1, -1, "nan", "abc", "", 0, 2.5, 1])
    with pytest.raises(DatasetError) as info:
        CsvImageDataset(table, file_column="filename", label_column="class", weight_column="weight")
    message = str(info.value)
    for line, what in ((3, "weight -1 is negative"), (4, "weight 'nan' is not a number"),
                       (5, "weight 'abc' is not a number"), (6, "empty weight")):
        assert f"line {line}: 'images/{line - 2:03d}.png': {what}" in message
    command = dataset.check_command(table, None, "filename", "class", "utf-8", weight_column="weight")
    assert command.endswith("--weight-column weight --all")  # named past 20 bad rows
    status = dataset.main([str(table), "--file-column", "filename", "--label-column", "class",
                           "--weight-column", "weight"])
    out = capsys.readouterr().out
    assert status == 1 and "weights: 0 to 2.5, mean 1.125 (1 row weigh 0)" in out
    assert "line 3: 'images/001.png': weight -1 is negative (expected a number >= 0)" in out


def test_train_py_refuses_bad_weights_and_trains_with_good_ones(tmp_path, capsys):
    table = keras_table(tmp_path, rows=40, weights=[0 if i == 7 else 1 for i in range(40)])
    history = run(table, tmp_path / "r", "--weight-column", "weight", epochs=1)
    saved = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["config"]
    assert saved["weight_column"] == "weight" and len(history.valid_scores) == 1
    assert "Balanced accuracy" in capsys.readouterr().out  # a weighted run shows the figures
    bad = keras_table(tmp_path / "bad", rows=40, weights=["x" if i == 9 else 1 for i in range(40)])
    with pytest.raises(DatasetError, match="line 11: 'images/009.png': weight 'x' is not a number"):
        run(bad, tmp_path / "bad" / "r", "--weight-column", "weight", epochs=1)


def test_a_checkpoint_of_an_earlier_version_resumes_and_its_epochs_get_empty_new_columns(tiny_data, tmp_path):
    flags = ["--seed", "1", "--batch-size", "8", "--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "r")]
    train.main(["--epochs", "1", *flags])
    path = tmp_path / "r" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    for key in ("train_scores", "valid_scores", "monitor"):  # as the main branch wrote them
        del checkpoint["history"][key]
    for key in ("monitor", "balance", "class_weights", "weight_column"):
        del checkpoint["config"][key]
    torch.save(checkpoint, path)
    history = train.main(["--epochs", "2", "--resume", *flags])
    assert history.valid_scores[0] == {} and set(history.valid_scores[1]) == {"balanced_accuracy", "macro_f1", "loss"}
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert rows[1].endswith(",,,,,,") and not rows[2].endswith(",")
