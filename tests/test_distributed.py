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
