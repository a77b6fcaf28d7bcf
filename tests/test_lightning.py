"""Our loaders under PyTorch Lightning's Trainer (skipped when lightning is not installed; it is not
in requirements.txt): with strategy ddp or ddp_spawn on 2 CPU processes and Lightning's defaults,
each training image is seen once per epoch over the ranks, in our (seed, epoch) order, and
validation gets every image once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, write_csv, write_png
from loaders import epoch_order

pytest.importorskip("lightning")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gloo processes on Linux / macOS")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """1,024 train, 302 valid, 4 test images whose pixels spell their row number."""
    root = tmp_path_factory.mktemp("lightning")
    rows = ["file,label,split"]  # other column names: through the DataModule's dataset_kwargs
    for i in range(1330):
        pixels = np.zeros((4, 4), dtype=np.uint8)
        pixels[0, 0], pixels[0, 1] = i % 256, i // 256
        write_png(root / "img" / f"{i}.png", pixels)
        rows.append(f"{i}.png,{i % 3},{'train' if i < 1024 else 'valid' if i < 1326 else 'test'}")
    write_csv(root / "labels.csv", "\n".join(rows) + "\n")
    return root


# ddp_spawn with workers spawns them too, each importing torch every epoch (minutes here): checked
# by hand once, kept out of the suite.
@pytest.mark.parametrize("strategy, how, workers", [("ddp", "datamodule", 2), ("ddp", "fit", 0),
                                                     ("ddp_spawn", "datamodule", 0), ("ddp_spawn", "fit", 0)])
def test_every_image_once_per_epoch_over_the_ranks(data, tmp_path, strategy, how, workers):
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "lightning_probe.py"), str(data), str(tmp_path),
                          strategy, how, str(workers)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in ("0", "1"):
        train = [ranks[0]["train"][epoch], ranks[1]["train"][epoch]]
        assert len(train[0]) == len(train[1]) == 512  # 16 batches of 64, each split in two halves
        expected = epoch_order(1024, 123, int(epoch))  # the loaders' default seed
        assert sorted(train[0] + train[1]) == list(range(1024))
        assert set(train[0]) == set(expected.reshape(16, 64)[:, 0::2].flatten().tolist())  # rank 0's halves
        valid = ranks[0]["valid"][epoch] + ranks[1]["valid"][epoch]
        assert sorted(valid) == list(range(1024, 1326))  # every image once, none twice
    assert ranks[0]["train"]["0"] != ranks[0]["train"]["1"]  # reshuffled
