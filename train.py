"""Train the lecture's MLP on images listed in CSV files, with per-epoch accuracy, checkpoints and plots.

    python train.py --epochs 100 --seed 123                 # builds data/ first if it is missing
    python train.py --epochs 100 --seed 123 --resume        # continue from results/checkpoint.pt
    torchrun --standalone --nproc_per_node=2 train.py --epochs 3 --seed 123

Writes into --results-dir: metrics.csv (one row per epoch), checkpoint.pt (model, optimizer, history
and every RNG state, after each epoch, atomically), loss.png, accuracy.png and examples.png.
Same seed, same data, same machine and library versions: bit-identical weights, whatever
--num-workers, and after any number of interruptions and --resume.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import random
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torchvision.transforms.v2 import functional as TF

from loaders import get_dataloaders, make_loader
from model import MLP
from plot import plot_accuracy, plot_training_loss, show_examples

DEFAULT_DATA_DIR = "data"
CSV_NAMES = ("mnist_train.csv", "mnist_valid.csv", "mnist_test.csv")
CHECKED_CONFIG = ("data", "num_features", "hidden", "num_classes", "batch_size", "seed", "lr")


def set_all_seeds(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and every GPU) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def set_deterministic() -> None:
    """Make PyTorch pick deterministic kernels, and fail loudly where none exists."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch to the device; uint8 batches are scaled to float32 [0, 1] there, as the loaders would."""
    images = images.to(device, non_blocking=True)
    if not images.is_floating_point():
        images = TF.to_dtype(images, torch.float32, scale=True)
    return images


@contextlib.contextmanager
def ctrl_c_deferred():
    """Hold a Ctrl-C (SIGINT) back while the block runs, then raise KeyboardInterrupt after it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


@torch.no_grad()
def compute_accuracy(model: torch.nn.Module, data_loader, device: torch.device) -> float:
    """Accuracy in % over every batch of data_loader (over all ranks' shares under torchrun)."""
    model.eval()
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # correct, total
    for images, labels in data_loader:
        labels = labels.to(device, non_blocking=True)
        predictions = model(to_input(images, device)).argmax(dim=1)
        counts[0] += (predictions == labels).sum()
        counts[1] += labels.numel()
    correct, total = _sum_over_ranks(counts).tolist()
    return 100.0 * correct / total


def train_model(model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_loader, valid_loader, *,
                num_epochs: int, device: torch.device, train_eval_loader=None, start_epoch: int = 0,
                history: dict | None = None, logging_interval: int = 50,
                on_epoch_end: Callable[[int, dict], None] | None = None,
                log: Callable[[str], None] = print) -> dict:
    """Run epochs start_epoch+1 .. num_epochs; returns the history with what this call added.

    history: {"minibatch_loss": [...], "train_acc": [...], "valid_acc": [...], "epoch_seconds": [...]},
    accuracies in %. Epoch e's training order is set with train_loader.sampler.set_epoch(e), so it
    does not depend on how the loaders were used before. train_eval_loader (default: train_loader)
    is what train accuracy is measured on. on_epoch_end(epochs_done, history) runs after each epoch.
    """
    history = history or {"minibatch_loss": [], "train_acc": [], "valid_acc": [], "epoch_seconds": []}
    world_size = dist.get_world_size() if _distributed() else 1
    for epoch in range(start_epoch, num_epochs):
        start = time.perf_counter()
        model.train()
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        for batch_idx, (images, labels) in enumerate(train_loader):
            images, labels = to_input(images, device), labels.to(device, non_blocking=True)
            logits = model(images)  # (B, num_classes)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_value = _sum_over_ranks(loss.detach().clone()).item() / world_size  # mean over equal shares
            history["minibatch_loss"].append(loss_value)
            if batch_idx % logging_interval == 0:
                log(f"Epoch: {epoch + 1:03d}/{num_epochs:03d} | Batch {batch_idx:04d}/{len(train_loader):04d} "
                    f"| Loss: {loss_value:.4f}")
        with ctrl_c_deferred():  # the epoch's weights are final: a Ctrl-C now waits until it is recorded
            history["train_acc"].append(compute_accuracy(model, train_eval_loader or train_loader, device))
            history["valid_acc"].append(compute_accuracy(model, valid_loader, device))
            history["epoch_seconds"].append(time.perf_counter() - start)
            log(f"Epoch: {epoch + 1:03d}/{num_epochs:03d} | Train: {history['train_acc'][-1]:.2f}% "
                f"| Validation: {history['valid_acc'][-1]:.2f}%")
            log(f"Time elapsed: {sum(history['epoch_seconds']) / 60:.2f} min")
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history)
    return history


# ---- checkpoints: atomic files that torch.load(weights_only=True) reads -------------------------------

def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: old or new, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_atomic(path, buffer.getvalue())


def rng_states() -> dict:
    """Every global RNG state, as tensors and plain Python values (no ndarray: weights_only loads it)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(mt_state), gauss_next],
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, mt_state, gauss_next = states["python"]
    random.setstate((version, tuple(mt_state), gauss_next))


def data_fingerprint(data_dir: Path) -> str:
    """sha256 of the three CSVs: a resumed run must see the same rows and labels."""
    digest = hashlib.sha256()
    for name in CSV_NAMES:
        digest.update(name.encode() + b"\0" + (data_dir / name).read_bytes() + b"\0")
    return digest.hexdigest()


def metrics_csv(history: dict) -> bytes:
    rows = ["epoch,train_acc,valid_acc,epoch_seconds"]
    for i, (tr, va, sec) in enumerate(zip(history["train_acc"], history["valid_acc"], history["epoch_seconds"])):
        rows.append(f"{i + 1},{tr!r},{va!r},{sec:.4f}")  # repr: exact floats, comparable across runs
    return ("\n".join(rows) + "\n").encode()


# ---- command line ---------------------------------------------------------------------------------------

def _at_least(minimum: float, kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value >= minimum or value != value:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _positive_float(text: str) -> float:
    value = _at_least(0.0, float)(text)
    if value == 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train an MLP on PNG images listed in CSV files.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=_at_least(1, int), default=100, help="number of epochs")
    p.add_argument("--seed", type=_at_least(0, int), default=123, help="seed for the weights and the data order")
    p.add_argument("--batch-size", type=_at_least(1, int), default=64,
                   help="minibatch size (under torchrun: the global batch, split between processes)")
    p.add_argument("--eval-batch-size", type=_at_least(1, int), default=256,
                   help="batch size for measuring accuracy (does not change the results)")
    p.add_argument("--lr", type=_positive_float, default=0.1, help="SGD learning rate")
    p.add_argument("--hidden", type=_at_least(1, int), default=100, help="hidden units of the MLP")
    p.add_argument("--num-workers", type=_at_least(0, int), default=0, help="DataLoader worker processes")
    p.add_argument("--persistent-workers", action="store_true", help="keep workers alive between epochs")
    p.add_argument("--cache-mb", type=_at_least(0.0, float), default=1024.0,
                   help="keep decoded images in memory up to this many MiB per split (0: decode every pass)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help="folder with mnist_{train,valid,test}.csv and image folders; "
                        f"'{DEFAULT_DATA_DIR}' is built with make_subset.py when missing")
    p.add_argument("--results-dir", default="results", help="where metrics, checkpoint and figures go")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, else cpu), or any torch device")
    p.add_argument("--resume", action="store_true", help="continue from RESULTS_DIR/checkpoint.pt")
    p.add_argument("--logging-interval", type=_at_least(1, int), default=50, help="print the loss every N batches")
    args = p.parse_args(argv)
    if args.data_dir != DEFAULT_DATA_DIR and not Path(args.data_dir).is_dir():
        p.error(f"--data-dir {args.data_dir}: no such folder (make one with: python make_subset.py --out-dir "
                f"{args.data_dir})")
    if args.resume and not (Path(args.results_dir) / "checkpoint.pt").is_file():
        p.error(f"--resume: no checkpoint at {Path(args.results_dir) / 'checkpoint.pt'}")
    try:
        torch.device("cpu" if args.device == "auto" else args.device)
    except RuntimeError as e:
        p.error(f"--device {args.device}: {e}")
    return args


def pick_device(name: str, local_rank: int) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def ensure_default_data(data_dir: Path, log: Callable[[str], None]) -> None:
    if all((data_dir / name).is_file() for name in CSV_NAMES):
        return
    import make_subset  # only needed the first time

    log(f"No dataset in {data_dir}/: building it with make_subset.py's defaults (bundled MNIST digits)")
    make_subset.main(["--out-dir", str(data_dir)])


def check_resume(checkpoint: dict, config: dict, path: Path) -> None:
    saved = checkpoint.get("config", {})
    differences = [f"{key}: checkpoint has {saved.get(key)!r}, this run has {config[key]!r}"
                   for key in CHECKED_CONFIG if saved.get(key) != config[key]]
    if differences:
        raise SystemExit(f"train.py: error: cannot --resume from {path}: it was made by a different run:\n  "
                         + "\n  ".join(differences)
                         + "\nUse the original flags and data, or start afresh without --resume.")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the resume hint
    # ---- torchrun: one process per device; nothing happens here under plain `python train.py` ----------
    ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, local_rank, world_size = 0, 0, 1
    if ddp:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(args.device, local_rank)
    if ddp:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    log = print if rank == 0 else (lambda message: None)
    # ------------------------------------------------------------------------------------------------------
    try:
        return _run(args, device, rank, world_size, log)
    finally:
        if ddp:
            dist.destroy_process_group()


def _run(args: argparse.Namespace, device: torch.device, rank: int, world_size: int,
         log: Callable[[str], None]) -> dict:
    data_dir, results_dir = Path(args.data_dir), Path(args.results_dir)
    if rank == 0 and args.data_dir == DEFAULT_DATA_DIR:
        ensure_default_data(data_dir, log)
    if world_size > 1:
        dist.barrier()  # the others wait for rank 0's data
    set_deterministic()
    set_all_seeds(args.seed)
    pixels = "uint8" if device.type == "cuda" else "float01"  # on a GPU, scale after the copy
    loader_kwargs = dict(num_workers=args.num_workers, persistent_workers=args.persistent_workers,
                         pin_memory=device.type == "cuda", rank=rank, world_size=world_size)
    train_loader, valid_loader, test_loader = get_dataloaders(
        args.batch_size, data_dir, seed=args.seed, eval_batch_size=args.eval_batch_size, pixels=pixels,
        cache_mb=args.cache_mb, **loader_kwargs)
    train_ds = train_loader.dataset
    log(f"Data: {len(train_ds)} train, {len(valid_loader.dataset)} valid, {len(test_loader.dataset)} test images "
        f"from {data_dir}/; {train_ds.cache_decision}; device {device}"
        + (f"; {world_size} processes" if world_size > 1 else ""))
    train_eval_loader = make_loader(train_ds, args.eval_batch_size, shuffle=False, drop_last=False,
                                    seed=args.seed, **loader_kwargs)
    num_features = train_ds.channels * train_ds.image_size[0] * train_ds.image_size[1]
    config = {"data": data_fingerprint(data_dir), "num_features": num_features, "hidden": args.hidden,
              "num_classes": len(train_ds.classes), "batch_size": args.batch_size, "seed": args.seed,
              "lr": args.lr}
    model = MLP(num_features=num_features, num_hidden=args.hidden, num_classes=config["num_classes"]).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    checkpoint_path = results_dir / "checkpoint.pt"
    start_epoch, history = 0, None
    if args.resume:
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
        check_resume(checkpoint, config, checkpoint_path)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, history = checkpoint["epoch"], checkpoint["history"]
        set_rng_states(checkpoint["rng"])
        log(f"Resuming from {checkpoint_path} after epoch {start_epoch}")
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world_size > 1 else model
    if rank == 0:
        results_dir.mkdir(parents=True, exist_ok=True)
    saved = {"epoch": start_epoch if args.resume else None}  # the epoch checkpoint.pt holds for this run

    def save(epochs_done: int, history: dict) -> None:
        if rank == 0:
            save_checkpoint(checkpoint_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epochs_done,
                "history": history, "config": config, "rng": rng_states(),
                "versions": {"torch": str(torch.__version__)}})
            write_atomic(results_dir / "metrics.csv", metrics_csv(history))
        saved["epoch"] = epochs_done

    start = time.perf_counter()
    try:
        history = train_model(net, optimizer, train_loader, valid_loader, num_epochs=args.epochs, device=device,
                              train_eval_loader=train_eval_loader, start_epoch=start_epoch, history=history,
                              logging_interval=args.logging_interval, on_epoch_end=save, log=log)
    except KeyboardInterrupt:
        if saved["epoch"] is None:
            log("\nInterrupted before the first epoch ended; nothing was saved.")
        else:
            command = shlex.join(["python", "train.py", *args.argv] + ([] if args.resume else ["--resume"]))
            log(f"\nInterrupted. The checkpoint of epoch {saved['epoch']} is in {checkpoint_path}.\n"
                f"Resume with: {command}")
        raise SystemExit(130) from None
    log(f"Total Training Time: {(time.perf_counter() - start) / 60:.2f} min")
    history["test_acc"] = compute_accuracy(net, test_loader, device)
    log(f"Test accuracy: {history['test_acc']:.2f}%")
    if rank == 0:  # metrics.csv and checkpoint.pt were written after the last epoch
        plot_training_loss(history["minibatch_loss"], args.epochs, results_dir / "loss.png")
        plot_accuracy(history["train_acc"], history["valid_acc"], results_dir / "accuracy.png")
        show_examples(model, test_loader, results_dir / "examples.png", device=device,
                      class_names=train_ds.classes)
    return history


if __name__ == "__main__":
    main()
