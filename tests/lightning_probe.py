"""Run by test_lightning.py (needs `pip install lightning`): our loaders under Lightning's Trainer,
2 CPU processes, with Lightning's defaults. Each rank writes OUT/rank<r>.json: the row numbers of
the training and validation images it was given, per epoch.

    python lightning_probe.py DATA OUT ddp|ddp_spawn fit|datamodule NUM_WORKERS

DATA/labels.csv lists DATA/img/<i>.png with a split column; image i's pixels (0, 0) and (0, 1)
spell i. fit: the loaders are made here and passed to trainer.fit; datamodule: a DataModule makes
them in setup(), in every process, as the README shows.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from loaders import get_dataloaders_from_split_csv  # noqa: E402


def row_numbers(images: torch.Tensor) -> list[int]:
    pixels = torch.round(images[:, 0, 0, :2] * 255).long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


class Probe(L.LightningModule):
    def __init__(self, out: str) -> None:
        super().__init__()
        self.out, self.net = out, torch.nn.Linear(16, 3)
        self.seen = {"train": {}, "valid": {}}

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self.seen["train"].setdefault(self.current_epoch, []).extend(row_numbers(images))
        return torch.nn.functional.cross_entropy(self.net(images.flatten(1)), labels)

    def validation_step(self, batch, batch_idx):
        images, _ = batch
        if self.trainer.sanity_checking:  # Lightning's default look at 2 batches before training
            return
        self.seen["valid"].setdefault(self.current_epoch, []).extend(row_numbers(images))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_fit_end(self) -> None:
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))


class CsvImages(L.LightningDataModule):  # the README's DataModule, as it is there
    def __init__(self, csv, img_dir, batch_size=64, num_workers=2, **dataset_kwargs):
        super().__init__()  # dataset_kwargs: file_column=, label_column=, mode="RGB", image_size=, encoding=
        self.args, self.dataset_kwargs = (csv, img_dir, batch_size, num_workers), dataset_kwargs
    def setup(self, stage):
        self.loaders = get_dataloaders_from_split_csv(*self.args, dataset_kwargs=self.dataset_kwargs)
    def train_dataloader(self): return self.loaders[0]
    def val_dataloader(self): return self.loaders[1]
    def test_dataloader(self): return self.loaders[2]


if __name__ == "__main__":
    data, out, strategy, how, workers = sys.argv[1], os.path.abspath(sys.argv[2]), *sys.argv[3:5], int(sys.argv[5])
    trainer = L.Trainer(strategy=strategy, devices=2, accelerator="cpu", max_epochs=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    images = CsvImages(f"{data}/labels.csv", f"{data}/img", 64, workers, file_column="file",
                       label_column="label")
    if how == "datamodule":
        trainer.fit(Probe(out), datamodule=images)
    else:
        images.setup("fit")
        trainer.fit(Probe(out), images.loaders[0], images.loaders[1])
