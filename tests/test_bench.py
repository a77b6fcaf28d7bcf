"""bench.py keeps running: its --smoke mode, checked for a complete report (no timing thresholds)."""

from __future__ import annotations

import json
import subprocess
import sys

import bench
from conftest import ROOT

# Two halves of bench.py's sections, run side by side: most of the smoke's time is processes
# starting, which the two cores overlap (bench.py --smoke alone runs them all in one process).
HALVES = ("startup,models,rows,loaders,scaling,photos,pairs", "decode,end_to_end,workers,plain,busy,cached_workers,rare,rotate")


def test_bench_smoke_writes_a_complete_report(tmp_path):
    assert sorted(",".join(HALVES).split(",")) == sorted(bench.SECTIONS.split(","))  # every section
    runs = [subprocess.Popen([sys.executable, str(ROOT / "bench.py"), "--smoke", "--sections", sections,
                              "--json", str(tmp_path / f"b{k}.json")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=tmp_path) for k, sections in enumerate(HALVES)]
    outs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-3000:] for _, err in outs]
    report = {}
    for k in range(2):
        half = json.loads((tmp_path / f"b{k}.json").read_text(), object_hook=_int_keys)
        assert half["size"] == 200
        report.update(half)
    out = "".join(out for out, _ in outs)
    names = set(report["loaders"])
    assert {"lecture (PIL + ToTensor)", "ImageFolder + ToTensor", "ours (cache on)", "ours (cache off)"} <= names
    for figures in report["loaders"].values():
        assert figures["cold_img_s"] > 0 and figures["warm_img_s"] > 0
    assert set(report["end_to_end_s"]) == {"train.py", "lecture loop"}
    for name in ("ours (cache on)", "ours (cache off)"):  # memory, each measured in a fresh process
        assert len(report["loaders"][name]["rss_after_pass_mib"]) == 3
        assert report["loaders"][name]["peak_growth_mib"] >= 0
    assert "| ours (cache on) |" in out
    # Issue 13's rows: start-up, the first pass (workers, disk cache), big CSVs, workers' memory.
    assert set(report["startup_s"]) == {"import torch", "import torch, build an SGD optimizer", "train.py --help",
                                        "train.py --epochs 2 --seed 123"}
    assert all(seconds > 0 for seconds in report["startup_s"].values())
    assert report["decode"]["exact"] is True and report["decode"]["size"] == 600
    assert set(report["decode"]["seconds"]) >= {"cold, 0 workers", "cold, 2 workers", "fill the disk cache, 0 workers",
                                                "read the disk cache (a second process)"}
    assert report["rows"][2000]["us_per_row"] > 0 and report["rows"][2000]["peak_growth_mib"] >= 0
    for name in ("ours (names in NumPy arrays)", "lecture (names in a pandas column)"):
        assert len(report["worker_memory"][name]["end_mib"]) == 2  # one figure per worker
    assert "| read the disk cache (a second process) |" in out and "| 2,000 |" in out
    # Issue 17's rows: a CsvImageDataset's DecodedImages through torch's own DataLoader, with and without workers and
    # preload.
    assert len(report["plain"]) == 4 and all(m["warm_img_s"] > 0 for m in report["plain"].values())
    assert "| plain DataLoader, 2 workers, after store.preload(): they read the one copy |" in out
    # Issue 19's rows: seconds per epoch of each model, beside the MLP's.
    assert set(report["models"]) == {"mlp", "cnn", "resnet18"}
    assert all(m["epoch_s"] > 0 and m["parameters"] > 0 for m in report["models"].values())
    assert report["models"]["mlp"]["parameters"] == 784 * 100 + 100 + 100 * 10 + 10
    assert "| cnn |" in out and "| resnet18 |" in out
    # Issue 21's rows: photos to 64x64 against ImageFolder and the bare decoder, and PNG digits against the loop.
    assert set(report["photos"]["seconds"]) == {
        "ours, 0 workers", "ours, 2 workers", "ImageFolder + v2.Resize(64), 0 workers", "bare Pillow loop with draft",
        "bare Pillow loop, full decode", "PNG photos: ours, 0 workers", "PNG photos: bare Pillow loop, reducing_gap 3",
        "PNG photos: bare Pillow loop, exact resize", "PNG digits: ours, 0 workers", "PNG digits: bare Pillow loop"}
    assert all(seconds > 0 for seconds in report["photos"]["seconds"].values())
    assert "| bare Pillow loop with draft |" in out
    # Issue 21's cached pass, quiet and beside two busy processes that bench starts and stops itself.
    assert report["busy"]["quiet_s"] > 0 and report["busy"]["busy_s"] > 0 and "beside two busy processes" in out
    # Issue 21's whole runs on cached data with 0 and 2 workers, plain and with --augment.
    assert set(report["cached_workers"]["seconds"]) == {"--num-workers 0", "--num-workers 2", "--num-workers 0 --augment",
                                                        "--num-workers 2 --augment"}
    assert all(seconds > 0 for seconds in report["cached_workers"]["seconds"].values())
    assert "| `--num-workers 2 --augment` |" in out
    # Issue 31's rows: a rare class, plain and with --balance sampler and loss.
    assert set(report["rare"]["ways"]) == {"plain", "--balance sampler", "--balance loss"}
    assert all(0 <= m["balanced_accuracy"] <= 100 for m in report["rare"]["ways"].values())
    # Issue 31's several labels: pairs of digits, the test mean average precision and each tag's AP
    # (the tags, digits, read back as ints)
    assert 0 <= report["pairs"]["test_map"] <= 1 and sorted(report["pairs"]["ap"]) == list(range(10))
    # Issue 31's regression: turned digits, RMSE in degrees beside predicting the train mean.
    rotate = report["rotate"]
    assert rotate["test_rmse"] > 0 and rotate["test_mean_rmse"] > 0 and rotate["valid_mean_rmse"] > 0
    assert rotate["test_r2"] <= 1 and rotate["epochs"] == 2
    assert "Several labels per image: two real digits side by side" in out
    assert "| --balance sampler |" in out


def _int_keys(d: dict) -> dict:
    """JSON's keys are text: the rows' sizes (2000) back to ints, as bench.main returns them."""
    return {int(k) if k.isdigit() else k: v for k, v in d.items()}
