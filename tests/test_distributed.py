"""train.py under torchrun with 2 CPU processes (gloo): disjoint shards, whole-split metrics, one writer."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import make_subset
import train
from conftest import ROOT
from loaders import get_dataloaders
from model import MLP

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(ROOT / "tests" / "ddp_probe.py")]


def torchrun(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, *args], env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                          capture_output=True, text=True, timeout=180)


def train_flags(data: Path, results: Path, *extra: str) -> list[str]:
    return ["train", "--epochs", "2", "--seed", "5", "--batch-size", "8", "--eval-batch-size", "6",
            "--data-dir", str(data), "--results-dir", str(results), *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "data"
    make_subset.main(["--out-dir", str(out), "--train-size", "40", "--valid-size", "20", "--test-size", "20"])
    return out


@pytest.fixture(scope="module")
def first_run(data) -> tuple[Path, subprocess.CompletedProcess]:
    results = data.parent / "results"
    run = torchrun(*train_flags(data, results))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return results, run


def test_each_rank_gets_an_equal_disjoint_share_of_every_epoch(data, tmp_path):
    run = torchrun("shards", str(data), str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in ("0", "1"):
        a, b = seen[0][epoch], seen[1][epoch]
        assert len(a) == len(b) == 20 and not set(a) & set(b)
        assert sorted(a + b) == list(range(40))  # 40 = 5 full batches of 8: every sample once
    assert seen[0]["0"] != seen[0]["1"]  # reshuffled between epochs


def test_only_rank_zero_prints_and_writes(first_run):
    results, run = first_run
    assert run.stdout.count("Test accuracy:") == 1 and run.stdout.count("Epoch: 001/002 | Train:") == 1
    assert "; 2 processes" in run.stdout
    for name in ("metrics.csv", "checkpoint.pt", "loss.png", "accuracy.png", "examples.png",
                 "confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "mistakes.png"):
        assert (results / name).is_file()
    assert not list(results.glob(".*tmp*"))


def test_the_confusion_matrix_counts_every_ranks_share(first_run):
    results, run = first_run
    rows = (results / "confusion_matrix.csv").read_text().splitlines()[1:]
    cm = torch.tensor([[int(v) for v in row.split(",")[1:]] for row in rows])
    assert cm.sum().item() == 20  # the whole test split, not one rank's half
    assert f"Test accuracy: {100.0 * cm.trace().item() / 20:.2f}%" in run.stdout


def test_metrics_count_every_image_of_the_split(data, first_run):
    results, run = first_run
    checkpoint = torch.load(results / "checkpoint.pt", weights_only=True)
    model = MLP()
    model.load_state_dict(checkpoint["model"])  # the checkpoint loads in one process
    _, valid, test = get_dataloaders(7, data)
    with open(results / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    cpu = torch.device("cpu")
    assert float(last["valid_acc"]) == train.compute_accuracy(model, valid, cpu)
    assert f"Test accuracy: {train.compute_accuracy(model, test, cpu):.2f}%" in run.stdout


def test_the_same_command_twice_gives_the_same_bits(data, first_run, tmp_path):
    results, _ = first_run
    again = torchrun(*train_flags(data, tmp_path / "again"))
    assert again.returncode == 0, again.stderr[-3000:]
    a = torch.load(results / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "again" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_works_under_torchrun(data, first_run, tmp_path):
    results, _ = first_run
    shutil.copytree(results, tmp_path / "resumed")
    resumed = torchrun(*train_flags(data, tmp_path / "resumed", "--resume", "--epochs", "3"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout and "Epoch: 003/003 | Train:" in resumed.stdout
    assert len(torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["history"]["train_acc"]) == 3


def test_a_failing_rank_stops_the_whole_job_with_its_error(data, tmp_path):
    broken = shutil.copytree(data, tmp_path / "broken")
    png = broken / "mnist_train" / "00003.png"
    whole = png.read_bytes()  # truncated, its header kept (the row check reads it): rank 1 fails while decoding
    png.write_bytes(whole[: len(whole) // 2])
    run = torchrun(*train_flags(data, tmp_path / "results"), env={"PROBE_RANK1_DATA_DIR": str(broken)})
    assert run.returncode != 0
    assert "mnist_train.csv, line 5: '00003.png': cannot decode the image" in run.stdout + run.stderr


def test_the_conv_net_trains_under_torchrun_and_a_single_process_reads_its_checkpoint(data, tmp_path):
    run = torchrun(*train_flags(data, tmp_path / "cnn", "--model", "cnn", "--early-stopping", "5"))
    assert run.returncode == 0, run.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "cnn" / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"]["model"] == "cnn" and (tmp_path / "cnn" / "best.pt").is_file()
    assert not any(k.startswith("module.") for k in checkpoint["model"])  # the unwrapped model
    evaluated = train.main(["--evaluate", "--batch-size", "8", "--data-dir", str(data),
                            "--results-dir", str(tmp_path / "cnn")])
    assert f"Test accuracy: {evaluated.test_acc:.2f}%" in run.stdout


def test_a_rank_that_stops_answering_is_named_within_the_timeout(data, tmp_path):
    start = time.monotonic()
    run = torchrun(*train_flags(data, tmp_path / "r", "--dist-timeout", "0.1"), env={"PROBE_RANK1_HANG": "1"})
    assert run.returncode != 0
    assert time.monotonic() - start < 60  # 6 s of timeout, then torchrun stops rank 1 at once
    assert ("train.py: error: process 0 waited 0.1 min (--dist-timeout) for the other processes at an "
            "exchange, and one did not answer") in run.stderr
    assert "gloo" not in run.stderr.replace("backend=gloo", "")  # a sentence, not gloo's RuntimeError


def test_a_batch_size_the_ranks_cannot_share_is_one_sentence(data, tmp_path):
    run = torchrun(*train_flags(data, tmp_path / "r", "--batch-size", "7"))
    assert run.returncode != 0
    assert run.stderr.count("train.py: error: --batch-size 7 is the global batch, split between the 2 "
                            "processes: pass a multiple of 2, such as 6") == 1
    assert "train.py\", line" not in run.stderr  # torchrun's own report of the exit aside, no traceback of ours


# ---- several labels and numbers per image: every rank's outputs gathered before the figures -----

def one_task_under_torchrun(tmp_path, flags, evaluate_flags, report: str) -> str:
    """The same torchrun command twice (2 CPU ranks, an eval batch of 3 so that the ranks' test
    shares differ: 7 and 3 of 10 images), then --evaluate of its checkpoint in one process;
    asserts bit-identical weights, the exact test figure of one process and a report of every
    test image. Returns the first run's stdout."""
    runs = []
    for name in ("a", "b"):
        figure = tmp_path / f"figure_{name}.txt"
        run = torchrun("train", *flags(tmp_path / name), "--eval-batch-size", "3",
                       "--device", "cpu", env={"PROBE_TEST_FIGURE": str(figure)})
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        runs.append((run, float(figure.read_text())))
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0][1] == runs[1][1]
    lines = (tmp_path / "a" / report).read_text().splitlines()
    shutil.copytree(tmp_path / "a", tmp_path / "one")
    evaluated = train.main([*evaluate_flags, "--evaluate", "--results-dir", str(tmp_path / "one"),
                            "--no-disk-cache"])
    assert runs[0][1] == pytest.approx(evaluated.test_acc, rel=1e-6)  # every rank's share
    one = (tmp_path / "one" / report).read_text().splitlines()
    assert [line.split(",")[:2] for line in lines] == [line.split(",")[:2] for line in one]
    for mine, its in zip(lines[1:], one[1:]):  # the figures of every test image, in one process
        assert [float(v) for v in mine.split(",")[2:] if v] == pytest.approx(
            [float(v) for v in its.split(",")[2:] if v], rel=1e-5)  # as written: 4 to 6 digits
    return runs[0][0].stdout


def test_regression_under_torchrun_measures_every_ranks_share(tmp_path):
    from test_regression import kaggle, regress_args
    csv = kaggle(tmp_path, n=50)  # 30 train, 10 valid, 10 test
    data = ["--csv", str(csv), "--img-dir", str(tmp_path / "train"), "--file-column", "id",
            "--file-suffix", ".jpg", "--split-column", "split"]
    out = one_task_under_torchrun(tmp_path, lambda r: regress_args(tmp_path, r), data,
                                  "regression_report.csv")
    report = (tmp_path / "a" / "regression_report.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in report[1:]] == [["angle", "10"], ["scale", "10"]]
    assert out.count("Test RMSE: ") == 1 and "Best epoch: " in out
    assert all((tmp_path / "a" / n).is_file() for n in ("scatter.png", "worst_errors.png"))


def test_tags_under_torchrun_are_measured_over_every_ranks_share(tmp_path):
    from test_multilabel import TAGS, planet, planet_args
    csv = planet(tmp_path, n=50)
    split = ["--split-column", "split"]
    rows = csv.read_text().splitlines()  # 30 train, 10 valid, 10 test, as the rows come
    csv.write_text("\n".join([rows[0] + ",split"] + [
        f"{r},{'train' if i < 30 else 'valid' if i < 40 else 'test'}"
        for i, r in enumerate(rows[1:])]) + "\n")
    data = ["--csv", str(csv), "--img-dir", str(tmp_path / "train-jpg"), "--file-column",
            "image_name", "--label-column", "tags", "--file-suffix", ".jpg", *split]
    out = one_task_under_torchrun(tmp_path, lambda r: planet_args(tmp_path, csv, r, *split), data,
                                  "multi_label_report.csv")
    report = (tmp_path / "a" / "multi_label_report.csv").read_text().splitlines()
    truth = [row.split(",")[1].split() for row in rows[41:51]]  # the test rows' tags
    assert [int(r.split(",")[1]) for r in report[1:]] == [
        sum(t in tags for tags in truth) for t in TAGS]  # every test image counted, once
    assert out.count("Test mAP: ") == 1 and "Best epoch: " in out
    assert all((tmp_path / "a" / n).is_file() for n in ("examples.png", "mistakes.png"))
