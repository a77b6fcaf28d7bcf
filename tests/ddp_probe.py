"""Run under torchrun by test_distributed.py; uses the public API only.

    ddp_probe.py shards DATA_DIR OUT_DIR   each rank writes OUT_DIR/rank<r>.json: the training indices
                                           its loader's sampler gives in epochs 0 and 1
    ddp_probe.py train [train.py flags]    train.main, with rank 1 reading the --data-dir named by
                                           PROBE_RANK1_DATA_DIR (a damaged copy: one rank fails);
                                           with PROBE_RANK1_HANG set, rank 1 stops answering (sleeps)
                                           at its second batch; with PROBE_TEST_FIGURE set,
                                           rank 0 writes the returned test figure (repr) there
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch.distributed as dist  # noqa: E402

import train  # noqa: E402
from loaders import get_dataloaders  # noqa: E402

rank = int(os.environ["RANK"])
if sys.argv[1] == "shards":
    data_dir, out_dir = sys.argv[2:4]
    dist.init_process_group("gloo")
    train_loader, _, _ = get_dataloaders(batch_size=8, data_dir=data_dir, seed=5)
    seen = {epoch: [int(i) for batch in train_loader.sampler for i in batch.indices] for epoch in (0, 1)}
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()
else:
    argv = sys.argv[2:]
    if rank == 1 and "PROBE_RANK1_DATA_DIR" in os.environ:
        argv[argv.index("--data-dir") + 1] = os.environ["PROBE_RANK1_DATA_DIR"]
    if rank == 1 and "PROBE_RANK1_HANG" in os.environ:
        mean_loss, calls = train._mean_over_ranks, []

        def hang_at_second_batch(loss):
            calls.append(1)
            if len(calls) == 2:
                time.sleep(600)  # no answer to rank 0's exchange; torchrun ends this process
            return mean_loss(loss)

        train._mean_over_ranks = hang_at_second_batch
    history = train.main(argv)
    if rank == 0 and "PROBE_TEST_FIGURE" in os.environ:  # the exact figure, not the printed one
        Path(os.environ["PROBE_TEST_FIGURE"]).write_text(repr(history.test_acc))
