"""train.py under torchrun with 2 CPU processes (gloo): disjoint shards, whole-split metrics, one writer."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from conftest import ROOT
from loaders import get_dataloaders
from model import MLP

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(tmp_path: Path, data: Path, results: Path, *extra: str, env: dict | None = None):
    return subprocess.run(
        [*TORCHRUN, str(ROOT / "tests" / "ddp_probe.py"), "--epochs", "2", "--seed", "5", "--batch-size", "8",
         "--eval-batch-size", "6", "--data-dir", str(data), "--results-dir", str(results), *extra],
        env={**os.environ, "PROBE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_two_process_run_shards_the_data_and_writes_once(tiny_data, tmp_path):
    results = tmp_path / "results"
    run = torchrun(tmp_path, tiny_data, results)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("Test accuracy:") == 1 and run.stdout.count("Epoch: 001/002 | Train:") == 1
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in ("0", "1"):
        a, b = seen[0][epoch], seen[1][epoch]
        assert len(a) == len(b) == 20 and not set(a) & set(b)  # equal, disjoint shares
        assert sorted(a + b) == list(range(40))  # 40 = 5 full batches of 8: every sample once
    assert seen[0]["0"] != seen[0]["1"]  # reshuffled between epochs
    for name in ("metrics.csv", "checkpoint.pt", "loss.png", "accuracy.png", "examples.png"):
        assert (results / name).is_file()
    assert not list(results.glob(".*tmp*"))
    # The checkpoint loads in one process, and the metrics match a recount over the whole split.
    checkpoint = torch.load(results / "checkpoint.pt", weights_only=True)
    model = MLP()
    model.load_state_dict(checkpoint["model"])
    _, valid, test = get_dataloaders(8, tiny_data, eval_batch_size=7)
    with open(results / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    cpu = torch.device("cpu")
    assert float(last["valid_acc"]) == train.compute_accuracy(model, valid, cpu)
    assert f"Test accuracy: {train.compute_accuracy(model, test, cpu):.2f}%" in run.stdout
    # Two runs of the same command give the same bits.
    again = torchrun(tmp_path, tiny_data, tmp_path / "again")
    assert again.returncode == 0
    other = torch.load(tmp_path / "again" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(checkpoint["model"][k], other["model"][k]) for k in checkpoint["model"])
    # --resume works under torchrun too.
    shutil.copytree(results, tmp_path / "resumed")
    resumed = torchrun(tmp_path, tiny_data, tmp_path / "resumed", "--resume", "--epochs", "3")
    assert resumed.returncode == 0 and "Resuming from" in resumed.stdout and "Epoch: 003/003 | Train:" in resumed.stdout
    assert len(torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["history"]["train_acc"]) == 3


def test_a_failing_rank_stops_the_whole_job_with_its_error(tiny_data, tmp_path):
    run = torchrun(tmp_path, tiny_data, tmp_path / "results", env={"PROBE_FAIL_RANK": "1"})
    assert run.returncode != 0
    assert "probe: rank 1 fails on purpose" in run.stdout + run.stderr
