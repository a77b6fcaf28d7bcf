"""Run train.main under torchrun, recording which training indices each rank was given.

Used by test_distributed.py: PROBE_DIR gets one JSON file per rank; PROBE_FAIL_RANK makes that
rank raise on its first batch, to check that the whole job stops.
"""

import atexit
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import loaders  # noqa: E402
import train  # noqa: E402

rank = int(os.environ["RANK"])
seen: dict[int, list[int]] = {}
real_iter = loaders.EpochBatchSampler.__iter__


def spying_iter(self):
    epoch = self.epoch
    for batch in real_iter(self):
        if self.shuffle:  # the training loader
            if os.environ.get("PROBE_FAIL_RANK") == str(rank):
                raise RuntimeError(f"probe: rank {rank} fails on purpose")
            seen.setdefault(epoch, []).extend(batch.tolist())
        yield batch


loaders.EpochBatchSampler.__iter__ = spying_iter
atexit.register(lambda: (Path(os.environ["PROBE_DIR"]) / f"rank{rank}.json").write_text(json.dumps(seen)))
train.main()
