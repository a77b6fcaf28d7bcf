"""Measure data loading and end-to-end training against the usual ways, side by side in one process.

    python bench.py                       # docs/performance.md's tables (about 35 minutes on 2 cores)
    python bench.py --size 5000 --batch-size 64 --repeats 3 --json bench.json
    python bench.py --smoke               # seconds; what the test suite runs
    python bench.py --sections rare       # issue 31: rare classes, with and without --balance
    python bench.py --sections pairs      # issue 31: several labels per image, pairs of digits
    python bench.py --sections rotate     # issue 31: regression, the angle digits are turned by

Loaders compared on the same PNG files and batch size, one process, no workers:
    lecture      pandas Dataset, PIL Image.open + ToTensor per item (the lecture's helper_dataset.py)
    ImageFolder  torchvision.datasets.ImageFolder + ToTensor
    Tensor       TensorDataset of decoded float images in memory, default DataLoader
    limit        whole batches out of one uint8 tensor in memory, no DataLoader: data[idx] as issue 5
                 measured it, and index_select (the practical ceiling here)
    ours         CsvImageDataset + loaders.make_loader, with the in-memory store (default) and without
    augment      v2.RandomAffine (train.py's --augment) after the cache: through our loaders, each
                 sample keyed by (seed, epoch, index), and the usual way, a plain DataLoader
Cold = building the dataset plus the first full pass; warm = a later pass. Each figure is the median
of --repeats runs, interleaved in one process. Memory is measured once per loader, each in a fresh
process. The TensorDataset and limit rows decode with DecodedImages, so only their warm figures
are theirs. Data comes from make_subset.py (bundled digits); sizes above 4,980 repeat them.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import datasets, transforms
from torchvision.transforms import v2

import make_subset
from dataset import CsvImageDataset
from loaders import DecodedImages, make_loader

ROOT = Path(__file__).resolve().parent
BUNDLED = 4980  # make_subset.py keeps 10 valid + 10 test digits aside, so 498 per class fit


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Start this process's peak RSS (VmHWM) afresh, so that a peak measured next is not the one
    reached earlier, e.g. while importing (Linux: writing 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


class LectureDataset(Dataset):
    """The lecture's dataset: decode and convert one image per item."""

    def __init__(self, csv_path, img_dir, transform=None):
        df = pd.read_csv(csv_path)
        self.img_dir, self.transform = img_dir, transform
        self.img_names, self.y = df["File Name"], df["Class Label"]

    def __getitem__(self, index):
        with Image.open(os.path.join(self.img_dir, self.img_names[index])) as img:
            img = self.transform(img) if self.transform else img
        return img, self.y[index]

    def __len__(self):
        return self.y.shape[0]


def make_data(folder: Path, size: int) -> tuple[Path, Path, Path]:
    """(csv, img_dir, imagefolder_root) with `size` rows; the bundled digits repeated past 4,980."""
    base = folder / "base"
    if not base.exists():
        make_subset.main(["--out-dir", str(base), "--train-size", str(BUNDLED), "--valid-size", "10",
                          "--test-size", "10"])
    rows = pd.read_csv(base / "mnist_train.csv")
    out = folder / f"n{size}"
    if out.exists():
        return out / "train.csv", out / "img", out / "classes"
    (out / "img").mkdir(parents=True)
    names, labels = [], []
    for i in range(size):
        src = rows.iloc[i % len(rows)]
        name = f"{i:06d}.png"
        os.link(base / "mnist_train" / src["File Name"], out / "img" / name)  # a copy per row, as on disk
        (out / "classes" / str(src["Class Label"])).mkdir(parents=True, exist_ok=True)
        os.link(base / "mnist_train" / src["File Name"], out / "classes" / str(src["Class Label"]) / name)
        names.append(name)
        labels.append(int(src["Class Label"]))
    pd.DataFrame({"File Name": names, "Class Label": labels}).to_csv(out / "train.csv", index=False)
    return out / "train.csv", out / "img", out / "classes"


def timed_passes(build, passes: int = 2) -> list[float]:
    """Seconds for build + pass 1 (cold), then for each later pass (warm)."""
    start = time.perf_counter()
    loader = build()
    times = []
    for _ in range(passes):
        for _ in loader:
            pass
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
    return times


def memory_in_fresh_process(build, passes: int = 3) -> dict:
    """Run in a process of its own (see measure_memory): RSS growth after each pass, and the peak."""
    reset_peak_rss()  # the peak of the imports is not the loader's
    before = rss_bytes()
    loader = build()
    after_pass = []
    for _ in range(passes):
        for _ in loader:
            pass
        after_pass.append((rss_bytes() - before) / 2**20)
    peak = peak_rss_bytes()
    return {"rss_after_pass_mib": after_pass, "peak_growth_mib": (peak - before) / 2**20}


def measure_memory(name: str, csv: Path, img_dir: Path, classes_dir: Path, batch_size: int) -> dict:
    """Memory of one loader, measured in a new Python process: in one shared process, memory freed
    by an earlier loader is reused by the next, so its peak would hide theirs."""
    result = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--memory-of", name, "--memory-data",
                             str(csv), str(img_dir), str(classes_dir), "--batch-size", str(batch_size)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def limit_loader(csv: Path, img_dir: Path, batch_size: int, gather: str):
    """Whole batches out of one uint8 tensor, no DataLoader: data[idx] (as issue 5 measured the
    limit) or data.index_select(0, idx) (what the store did before it gathered with NumPy's take)."""
    ds = DecodedImages(CsvImageDataset(csv, img_dir))
    data, targets = ds.preload(), torch.tensor(ds.targets)

    def batches():
        for idx in torch.randperm(len(data)).split(batch_size):
            if gather == "index_select":
                yield data.index_select(0, idx).float().div_(255), targets.index_select(0, idx)
            else:
                yield data[idx].float().div_(255), targets[idx]

    class Loader:
        def __iter__(self):
            return batches()
    return Loader()


def tensor_loader(csv: Path, img_dir: Path, batch_size: int):
    ds = DecodedImages(CsvImageDataset(csv, img_dir))
    return DataLoader(TensorDataset(ds.preload().float().div_(255), torch.tensor(ds.targets)),
                      batch_size=batch_size, shuffle=True)


def loaders_to_compare(csv: Path, img_dir: Path, classes_dir: Path, batch_size: int) -> dict:
    to_tensor = transforms.ToTensor()
    return {
        "lecture (PIL + ToTensor)": lambda: DataLoader(LectureDataset(csv, img_dir, to_tensor),
                                                       batch_size=batch_size, shuffle=True),
        "ImageFolder + ToTensor": lambda: DataLoader(datasets.ImageFolder(str(classes_dir), to_tensor),
                                                     batch_size=batch_size, shuffle=True),
        "TensorDataset in memory": lambda: tensor_loader(csv, img_dir, batch_size),
        "limit: data[idx], uint8 in memory": lambda: limit_loader(csv, img_dir, batch_size, "index"),
        "limit: index_select, uint8 in memory": lambda: limit_loader(csv, img_dir, batch_size, "index_select"),
        "ours (cache on)": lambda: make_loader(
            CsvImageDataset(csv, img_dir), batch_size,
            shuffle=True, drop_last=False, seed=0),
        "ours (cache off)": lambda: make_loader(
            DecodedImages(CsvImageDataset(csv, img_dir), cache_mb=0), batch_size,
            shuffle=True, drop_last=False, seed=0),
        # What exact augmentation costs: per-sample seeding against the usual global-RNG way.
        "augment, exact: ours, keyed by (seed, epoch, index)": lambda: make_loader(
            CsvImageDataset(csv, img_dir, affine()), batch_size, shuffle=True, drop_last=False, seed=0),
        "augment, usual: same dataset, plain DataLoader": lambda: DataLoader(
            DecodedImages(CsvImageDataset(csv, img_dir, affine())), batch_size=batch_size, shuffle=True),
    }


def affine():
    """train.py's --augment."""
    return v2.RandomAffine(degrees=10, translate=(0.1, 0.1))


def bench_loaders(folder: Path, size: int, batch_size: int, repeats: int, memory: str) -> dict:
    """Throughput of every loader; memory (each in a fresh process) for "all", "ours" or "none"."""
    csv, img_dir, classes_dir = make_data(folder, size)
    candidates = loaders_to_compare(csv, img_dir, classes_dir, batch_size)
    runs = {name: [] for name in candidates}
    for _ in range(repeats):  # interleaved, so that machine noise hits every loader alike
        for name, build in candidates.items():
            runs[name].append(timed_passes(build))
    results = {}
    for name, measured in runs.items():
        results[name] = {"cold_img_s": size / statistics.median(t[0] for t in measured),
                         "warm_img_s": size / statistics.median(t[1] for t in measured)}
        if memory == "all" or (memory == "ours" and name.startswith("ours")):
            results[name].update(measure_memory(name, csv, img_dir, classes_dir, batch_size))
    return results


def plain_ways(csv: Path, img_dir: Path, batch_size: int) -> dict:
    """Ways to read a CsvImageDataset's DecodedImages with torch's own DataLoader, and with ours
    (issue 17)."""
    def preloaded():
        store = DecodedImages(CsvImageDataset(csv, img_dir))
        store.preload()
        return store

    return {
        "plain DataLoader, 2 workers, not preloaded: each worker decodes its items, every epoch":
            lambda: DataLoader(DecodedImages(CsvImageDataset(csv, img_dir)), batch_size=batch_size,
                               shuffle=True, num_workers=2),
        "plain DataLoader, 0 workers: the first item decodes all, here, once":
            lambda: DataLoader(DecodedImages(CsvImageDataset(csv, img_dir)), batch_size=batch_size,
                               shuffle=True),
        "plain DataLoader, 2 workers, after store.preload(): they read the one copy":
            lambda: DataLoader(preloaded(), batch_size=batch_size, shuffle=True, num_workers=2),
        "ours: make_loader, 0 workers (whole batches by one gather)":
            lambda: make_loader(preloaded(), batch_size, shuffle=True, drop_last=True, seed=0),
    }


def bench_plain(folder: Path, size: int, batch_size: int, repeats: int, passes: int = 3) -> dict:
    """Build + first pass (cold), and the median of the later passes (warm), img/s; each way's
    figures the median of `repeats` runs, interleaved."""
    csv, img_dir, _ = make_data(folder, size)
    ways = plain_ways(csv, img_dir, batch_size)
    runs = {name: [] for name in ways}
    for _ in range(repeats):
        for name, build in ways.items():
            runs[name].append(timed_passes(build, passes))
    return {name: {"cold_img_s": size / statistics.median(t[0] for t in measured),
                   "warm_img_s": size / statistics.median(statistics.median(t[1:]) for t in measured)}
            for name, measured in runs.items()}


LECTURE_TRAIN = """
import sys, time, torch, pandas as pd
sys.path.insert(0, {root!r})
from torch.utils.data import DataLoader
from torchvision import transforms
from bench import LectureDataset
from model import MLP
torch.manual_seed(123)
d = {data!r}
tf = transforms.ToTensor()
train = DataLoader(LectureDataset(d + "/mnist_train.csv", d + "/mnist_train", tf), batch_size=64, shuffle=True, drop_last=True)
valid = DataLoader(LectureDataset(d + "/mnist_valid.csv", d + "/mnist_valid", tf), batch_size=64)
test = DataLoader(LectureDataset(d + "/mnist_test.csv", d + "/mnist_test", tf), batch_size=64)
model = MLP()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
def acc(loader):
    model.eval(); c = n = 0
    with torch.no_grad():
        for x, y in loader:
            c += (model(x).argmax(1) == y).sum().item(); n += len(y)
    return 100 * c / n
for epoch in range({epochs}):
    model.train()
    for x, y in train:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    print(f"Epoch {{epoch + 1}} | Train: {{acc(train):.2f}}% | Validation: {{acc(valid):.2f}}%")
print(f"Test accuracy: {{acc(test):.2f}}%")
"""


def bench_end_to_end(folder: Path, epochs: int, repeats: int) -> dict:
    """Whole-process wall time of train.py against the lecture's loop, same data and settings."""
    data = folder / "e2e-data"
    if not data.exists():
        make_subset.main(["--out-dir", str(data)])
    commands = {
        "train.py": [sys.executable, str(ROOT / "train.py"), "--epochs", str(epochs), "--seed", "123",
                     "--data-dir", str(data), "--results-dir", str(folder / "e2e-results")],
        "lecture loop": [sys.executable, "-c", LECTURE_TRAIN.format(root=str(ROOT), data=str(data), epochs=epochs)],
    }
    times = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# ---- issue 13: start-up, the decoding pass, the disk cache, big CSVs, workers' memory -------------

STARTUP = {  # whole-process wall times, run in turn; train.py's run is timed in bench_end_to_end
    "import torch": ["-c", "import torch"],
    "import torch, build an SGD optimizer": [
        "-c", "import torch; torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)"],
    "train.py --help": [str(ROOT / "train.py"), "--help"],
}


def bench_models(folder: Path, epochs: int, smoke: bool = False) -> dict:
    """Seconds per epoch of train.py's models on the default data (256 train images, batch 64,
    then accuracy on 768), in this process, cache warm; the median over epochs 2 to N. smoke:
    64 train images, to check that it runs."""
    import contextlib
    import io

    import train
    from model import build_model

    data = folder / ("models-data" if smoke else "e2e-data")
    if not data.exists():
        make_subset.main(["--out-dir", str(data)] + (["--train-size", "64", "--valid-size", "10",
                                                       "--test-size", "10"] if smoke else []))
    report = {}
    for name in ("mlp", "cnn", "resnet18"):
        with contextlib.redirect_stdout(io.StringIO()):
            history = train.main(["--model", name, "--epochs", str(epochs), "--seed", "123",
                                  "--data-dir", str(data), "--results-dir", str(folder / f"models-{name}")])
        seconds = history.epoch_seconds[1:] or history.epoch_seconds
        report[name] = {"epoch_s": statistics.median(seconds),
                        "parameters": sum(p.numel() for p in build_model(name, 1, (28, 28), 10).parameters())}
    return report


def bench_startup(folder: Path, epochs: int, repeats: int, warmup: int = 1) -> dict:
    """Median wall time of each STARTUP command and of `train.py --epochs E --seed 123` (default data
    present, its disk cache filled by an earlier run), interleaved, after `warmup` unmeasured rounds."""
    data = folder / "e2e-data"
    if not data.exists():
        make_subset.main(["--out-dir", str(data)])
    commands = {name: [sys.executable, *args] for name, args in STARTUP.items()}
    commands[f"train.py --epochs {epochs} --seed 123"] = [
        sys.executable, str(ROOT / "train.py"), "--epochs", str(epochs), "--seed", "123",
        "--data-dir", str(data), "--results-dir", str(folder / "startup-results")]
    times = {name: [] for name in commands}
    for _ in range(warmup + repeats):  # a warm-up round fills the disk cache and warms the files
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t[warmup:]) for name, t in times.items()}


def first_pass_in_fresh_process(csv: Path, img_dir: Path, workers: int, cache_dir: str) -> float:
    """Seconds for building the dataset and its first (decoding, or cache-reading) pass, measured
    in a new process: what a new run pays."""
    result = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--first-pass", str(csv), str(img_dir),
                             str(workers), cache_dir], capture_output=True, text=True, check=True)
    return float(result.stdout.splitlines()[-1])


def bench_decode(folder: Path, size: int, repeats: int) -> dict:
    """The first pass over `size` images: decoded by 0, 2 and (when there are more) all cores' worker
    processes; filling the disk cache; and reading it from a second process. Medians, interleaved."""
    csv, img_dir, _ = make_data(folder, size)
    cores = os.cpu_count() or 1
    variants = {"cold, 0 workers": (0, "none"), "cold, 2 workers": (2, "none")}
    if cores > 2:
        variants[f"cold, {cores} workers"] = (cores, "none")
    variants["fill the disk cache, 0 workers"] = (0, "fill")
    variants["read the disk cache (a second process)"] = (0, "read")
    times = {name: [] for name in variants}
    for r in range(repeats):
        cache = folder / f"decode-cache-{r}"
        for name, (workers, use) in variants.items():
            times[name].append(first_pass_in_fresh_process(csv, img_dir, workers, "" if use == "none" else str(cache)))
    pixels = DecodedImages(CsvImageDataset(csv, img_dir)).preload()  # the parallel decode and the cache: bit-exact
    exact = all(torch.equal(pixels, DecodedImages(CsvImageDataset(csv, img_dir), cache_dir=cache_dir).preload(
        num_workers=2))
                for cache_dir in (None, folder / "decode-cache-0"))
    return {"size": size, "seconds": {name: statistics.median(t) for name, t in times.items()}, "exact": exact,
            "repeats": repeats}


def make_photos(folder: Path, count: int, size: tuple[int, int], suffix: str = "jpg") -> tuple[Path, Path]:
    """(csv, root) of `count` photo-like JPEGs (smooth gradients and noise, quality 90) or PNGs of
    size (W, H) in 4 classes, laid out for ImageFolder too (root/c<k>/NNN.jpg). Generated here,
    not shipped."""
    root = folder / f"photos-{count}-{size[0]}x{size[1]}-{suffix}"
    csv = root / "labels.csv"
    if csv.exists():
        return csv, root
    rng = torch.Generator().manual_seed(0)
    w, h = size
    y = torch.linspace(0, 1, h).view(h, 1, 1)
    x = torch.linspace(0, 1, w).view(1, w, 1)
    rows = []
    for i in range(count):
        tint = torch.rand(3, generator=rng).view(1, 1, 3)
        base = (x * tint + y * (1 - tint)) * 200 + 20  # (H, W, 3)
        noise = torch.randint(-12, 13, (h // 8, w // 8, 3), generator=rng).float()
        noise = noise.repeat_interleave(8, 0).repeat_interleave(8, 1)[:h, :w]
        pixels = (base + noise).clamp(0, 255).to(torch.uint8).numpy()
        name = f"c{i % 4}/{i:03d}.{suffix}"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / name, quality=90)
        rows.append((name, f"c{i % 4}"))
    pd.DataFrame(rows, columns=["File Name", "Class Label"]).to_csv(csv, index=False)
    return csv, root


def bare_pillow_loop(paths: list[Path], mode: str, size: tuple[int, int] | None, draft: bool,
                     reducing_gap: float | None = None) -> None:
    """The decoder's own limit: open, (draft,) convert, resize, to an array; no dataset, no loader."""
    for path in paths:
        with Image.open(path) as im:
            if draft and size is not None and im.format == "JPEG":
                im.draft(im.mode, (size[1], size[0]))
            im = im.convert(mode)
            if size is not None:
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=reducing_gap)
            np_pixels = memoryview(im.tobytes())  # the bytes, as decode_image takes them
            del np_pixels


def bench_photos(folder: Path, count: int, repeats: int, digits: int) -> dict:
    """First pass to 64x64 over `count` generated multi-megapixel JPEGs: ours with 0 and 2
    workers, ImageFolder + v2.Resize(64) through a DataLoader, and bare Pillow loops with and
    without draft; over count / 4 such PNGs, ours against bare loops with and without reducing_gap;
    and the cold first pass over `digits` PNG digits, ours against the bare loop. Medians of `repeats`,
    interleaved."""
    csv, root = make_photos(folder, count, (3000, 2000))
    paths = sorted(root.glob("c*/*.jpg"))
    resize = v2.Compose([v2.Resize((64, 64)), v2.PILToTensor()])
    ways = {
        "ours, 0 workers": lambda: DecodedImages(CsvImageDataset(csv, root, mode="RGB", image_size=64)).preload(
            progress=False),
        "ours, 2 workers": lambda: DecodedImages(CsvImageDataset(csv, root, mode="RGB", image_size=64)).preload(
            num_workers=2, progress=False),
        "ImageFolder + v2.Resize(64), 0 workers": lambda: [b for b in DataLoader(
            datasets.ImageFolder(str(root), transform=resize), batch_size=16)],
        "bare Pillow loop with draft": lambda: bare_pillow_loop(paths, "RGB", (64, 64), draft=True),
        "bare Pillow loop, full decode": lambda: bare_pillow_loop(paths, "RGB", (64, 64), draft=False),
    }
    png_csv, png_root = make_photos(folder, max(count // 4, 1), (3000, 2000), "png")
    pngs = sorted(png_root.glob("c*/*.png"))
    ways["PNG photos: ours, 0 workers"] = lambda: DecodedImages(
        CsvImageDataset(png_csv, png_root, mode="RGB", image_size=64)).preload(progress=False)
    ways["PNG photos: bare Pillow loop, reducing_gap 3"] = lambda: bare_pillow_loop(pngs, "RGB", (64, 64), False, 3.0)
    ways["PNG photos: bare Pillow loop, exact resize"] = lambda: bare_pillow_loop(pngs, "RGB", (64, 64), False)
    digit_csv, digit_dir, _ = make_data(folder, digits)
    digit_paths = [digit_dir / name for name in pd.read_csv(digit_csv)["File Name"]]
    ways["PNG digits: ours, 0 workers"] = lambda: DecodedImages(CsvImageDataset(digit_csv, digit_dir)).preload(
        progress=False)
    ways["PNG digits: bare Pillow loop"] = lambda: bare_pillow_loop(digit_paths, "L", None, draft=False)
    times = {name: [] for name in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - start)
    return {"count": count, "pngs": len(pngs), "digits": digits, "repeats": repeats,
            "seconds": {name: statistics.median(t) for name, t in times.items()}}


def bench_busy(folder: Path, size: int, batch_size: int, passes: int = 5) -> dict:
    """A pass over `size` cached digits (our train loader, no workers), quiet and beside two busy
    processes that this function starts and stops itself; medians of `passes` passes each."""
    csv, img_dir, _ = make_data(folder, size)
    loader = make_loader(CsvImageDataset(csv, img_dir), batch_size, shuffle=True, drop_last=True, seed=0)
    loader.dataset.preload(progress=False)

    cache = loader.dataset.preload(progress=False)
    batches = [batch.indices for batch in loader.sampler]

    def one_pass() -> float:
        start = time.perf_counter()
        for images, labels in loader:
            pass
        return time.perf_counter() - start

    def torch_ops_pass() -> float:  # the same batches through torch's ops, as before issue 21
        start = time.perf_counter()
        for rows in batches:
            cache.index_select(0, torch.as_tensor(rows)).to(torch.float32).mul_(1.0 / 255)
        return time.perf_counter() - start

    one_pass(), torch_ops_pass()  # warm
    quiet = [statistics.median(f() for _ in range(passes)) for f in (one_pass, torch_ops_pass)]
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)  # let them take the cores
        busy = [statistics.median(f() for _ in range(passes)) for f in (one_pass, torch_ops_pass)]
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return {"size": size, "quiet_s": quiet[0], "busy_s": busy[0], "torch_ops_quiet_s": quiet[1],
            "torch_ops_busy_s": busy[1], "passes": passes, "torch_threads": torch.get_num_threads()}


def bench_cached_workers(folder: Path, epochs: int, size: int, repeats: int, warmup: int = 1) -> dict:
    """Wall time of a whole `train.py --epochs E` run (train.main in this process, so that the
    interpreter's start-up, the same for all, is left out) on `size` cached training digits, read
    from the disk cache that a warm-up round fills, with --num-workers 0 and 2, plain and with
    --augment (where workers have work to do); medians of `repeats`, interleaved."""
    import contextlib
    import io

    import train

    data = folder / f"workers-data-{size}"
    if not data.exists():
        make_subset.main(["--out-dir", str(data), "--train-size", str(size)])
    runs = {}
    for augment in ([], ["--augment"]):
        for workers in (0, 2):
            runs[f"--num-workers {workers}" + (" --augment" if augment else "")] = [
                "--epochs", str(epochs), "--seed", "123", "--data-dir", str(data),
                "--results-dir", str(folder / "workers-results"), "--num-workers", str(workers), *augment]
    times = {name: [] for name in runs}
    for round_ in range(warmup + repeats):  # warm-up rounds fill the disk cache and warm the files
        for name, argv in runs.items():
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                train.main(argv)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
            gc.collect()  # the run's loaders, and any workers they kept alive, end before the next run
    return {"size": size, "epochs": epochs, "repeats": repeats,
            "seconds": {name: statistics.median(t) for name, t in times.items()}}


def make_rows(folder: Path, size: int) -> tuple[Path, Path]:
    """A CSV of `size` rows naming `size` files (hard links to the bundled digits, 1,000 a folder)."""
    base = make_data(folder, BUNDLED)[1]
    names = sorted(os.listdir(base))
    out = folder / f"rows{size}"
    if not out.exists():
        (out / "img").mkdir(parents=True)
        rows = []
        for i in range(size):
            name = f"d{i // 1000:04d}/{i:07d}.png"
            if i % 1000 == 0:
                (out / "img" / name).parent.mkdir()
            os.link(base / names[i % len(names)], out / "img" / name)
            rows.append(f"{name},{i % 10}")
        (out / "train.csv").write_text("File Name,Class Label\n" + "\n".join(rows) + "\n")
    return out / "train.csv", out / "img"


def build_rows_in_fresh_process(csv: Path, img_dir: Path) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--build-rows", str(csv), str(img_dir)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def bench_rows(folder: Path, sizes: list[int], repeats: int) -> dict:
    """Building a dataset (every row checked, nothing decoded): microseconds a row and peak memory
    growth, each in a fresh process; the same cost a row at every size means linear."""
    results = {}
    for size in sizes:
        csv, img_dir = make_rows(folder, size)
        runs = [build_rows_in_fresh_process(csv, img_dir) for _ in range(repeats)]
        results[size] = {"us_per_row": statistics.median(r["us_per_row"] for r in runs),
                         "peak_growth_mib": statistics.median(r["peak_growth_mib"] for r in runs)}
    return results


def private_mib(pid: int) -> float:
    """Memory a process holds alone (private clean + dirty pages, from /proc/PID/smaps_rollup)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty")) / 1024


def worker_pids() -> list[int]:
    return sorted(p.pid for p in multiprocessing.active_children())  # DataLoader workers are these


def bench_worker_memory(folder: Path, size: int, batch_size: int) -> dict:
    """Private memory of each of 2 DataLoader workers over one epoch (cache off, so every item reads
    its row), ours against the lecture's dataset, whose file names are Python strings in a pandas
    column: a forked worker writes the reference count of each one it reads, and so copies its page."""
    csv, img_dir = make_rows(folder, size)
    to_tensor = transforms.ToTensor()
    loaders = {
        "ours (names in NumPy arrays)": lambda: make_loader(
            DecodedImages(CsvImageDataset(csv, img_dir), cache_mb=0), batch_size, shuffle=True, drop_last=False, seed=0,
            loader_kwargs={"num_workers": 2}),
        "lecture (names in a pandas column)": lambda: DataLoader(
            LectureDataset(csv, img_dir, to_tensor), batch_size=batch_size, shuffle=True, num_workers=2),
    }
    results = {}
    for name, build in loaders.items():
        loader = build()
        samples, start = [], time.perf_counter()
        for i, _ in enumerate(loader):
            if i in (0, len(loader) - 1):  # the workers exit when the epoch ends: measure the last batch
                samples.append([private_mib(pid) for pid in worker_pids()])
        results[name] = {"first_batch_mib": samples[0], "end_mib": samples[-1],
                         "seconds": time.perf_counter() - start}
    return results


# ---- issue 31: a rare class, with and without --balance ------------------------------------------

RARE_DIGITS = (4, 9)  # (common, rare): a pair the small conv net can confuse
RARE_COUNTS = {"train": (380, 20), "valid": (40, 40), "test": (60, 60)}  # (common, rare) images


def make_rare_table(folder: Path, counts: dict, pool: int) -> Path:
    """One CSV with a split column over the bundled digits RARE_DIGITS, labelled 0 (common) and 1
    (rare): train 95 / 5, valid and test even, so that each class's recall on test is measured on
    as many images (60 each)."""
    base = folder / "rare-base"
    if not base.exists():
        make_subset.main(["--out-dir", str(base), "--train-size", str(pool), "--valid-size", "10",
                          "--test-size", "10"])
    digits = pd.read_csv(base / "mnist_train.csv")
    rows = []
    for digit, k in zip(RARE_DIGITS, (0, 1)):
        files = digits[digits["Class Label"] == digit]["File Name"].tolist()
        start = 0
        for split, wanted in counts.items():
            rows += [(f"mnist_train/{f}", k, split) for f in files[start:start + wanted[k]]]  # 0: common
            start += wanted[k]
    table = base / "rare.csv"
    pd.DataFrame(rows, columns=["File Name", "Class Label", "split"]).to_csv(table, index=False)
    return table


def bench_rare(folder: Path, epochs: int, seeds: int, smoke: bool = False) -> dict:
    """--model cnn on a 95 / 5 train split of two digits: each way's last-epoch model on the even
    test split (its confusion_matrix.csv): the recall of each class, balanced accuracy, macro F1,
    and the accuracy a 95 / 5 test split would show (0.95 x common recall + 0.05 x rare recall);
    the mean over seeds 1 to `seeds`."""
    import contextlib
    import io

    import torch as _torch

    from evaluate import balanced_accuracy_of, macro_f1_of

    counts = {"train": (19, 1), "valid": (4, 4), "test": (4, 4)} if smoke else RARE_COUNTS
    table = make_rare_table(folder, counts, 400 if smoke else BUNDLED)
    ways = {"plain": [], "--balance sampler": ["--balance", "sampler"],
            "--balance loss": ["--balance", "loss"]}
    report = {"digits": list(RARE_DIGITS), "counts": counts, "epochs": epochs, "seeds": seeds, "ways": {}}
    for name, flags in ways.items():
        figures = []
        for seed in range(1, seeds + 1):
            results = folder / f"rare-{len(report['ways'])}-{seed}"
            with contextlib.redirect_stdout(io.StringIO()):
                train_main(["--csv", str(table), "--split-column", "split", "--model", "cnn", "--epochs", str(epochs),
                            "--seed", str(seed), "--batch-size", "20" if smoke else "64", "--no-disk-cache",
                            "--results-dir", str(results), *flags])
            cm = _torch.tensor(pd.read_csv(results / "confusion_matrix.csv", index_col=0).to_numpy())  # [true, pred]
            recall = (cm.diagonal() / cm.sum(dim=1)).tolist()
            figures.append({"common_recall": 100 * recall[0], "rare_recall": 100 * recall[1],
                            "accuracy": 100 * cm.diagonal().sum().item() / cm.sum().item(),
                            "balanced_accuracy": balanced_accuracy_of(cm), "macro_f1": macro_f1_of(cm),
                            "accuracy_at_95_5": 95 * recall[0] + 5 * recall[1]})
        report["ways"][name] = {key: statistics.mean(f[key] for f in figures) for key in figures[0]}
    return report


# ---- issue 31: several labels per image: two real digits side by side -----------------------------

PAIR_COUNTS = {"train": 4000, "valid": 500, "test": 1000}  # pair images per split
PAIR_POOLS = {"train": 4000, "valid": 500, "test": 500}  # of the 5,000 bundled digits, disjoint


def make_pairs_table(folder: Path, counts: dict) -> Path:
    """pairs/pairs.csv (file,tags,split) and 28x56 images: two real digits of one split's pool
    side by side, tagged with the digits present ("3 7", or "5" for two fives). The pools are
    disjoint, so that no test digit was seen in training; drawn with seed 0."""
    import numpy as np

    images, labels = make_subset.load_idx_pair(make_subset.BUNDLED_IMAGES, make_subset.BUNDLED_LABELS)
    order = np.random.default_rng(0).permutation(len(labels))  # the file is sorted by class
    out, rows, start = folder / "pairs", [], 0
    out.mkdir(parents=True, exist_ok=True)
    for split, n in counts.items():
        pool = order[start:start + PAIR_POOLS[split]]
        start += PAIR_POOLS[split]
        pick = np.random.default_rng(len(rows)).choice(pool, size=(n, 2))  # (n, 2) digit indices
        for j, (a, c) in enumerate(pick.tolist()):
            name = f"{split}_{j:05d}.png"
            Image.fromarray(np.concatenate([images[a], images[c]], axis=1)).save(out / name)
            rows.append((name, " ".join(sorted({str(labels[a]), str(labels[c])})), split))
    table = out / "pairs.csv"
    pd.DataFrame(rows, columns=["file", "tags", "split"]).to_csv(table, index=False)
    return table


def bench_pairs(folder: Path, epochs: int, smoke: bool = False) -> dict:
    """--model cnn --label-delim ' ' on pairs of digits: the last epoch's test mean average
    precision (as train.py prints it) and each tag's average precision (multi_label_report.csv)."""
    import contextlib
    import io

    counts = {"train": 64, "valid": 32, "test": 32} if smoke else PAIR_COUNTS
    table = make_pairs_table(folder, counts)
    results = folder / "pairs-run"
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        history = train_main(["--csv", str(table), "--split-column", "split", "--file-column", "file",
                              "--label-column", "tags", "--label-delim", " ", "--model", "cnn",
                              "--optimizer", "adam", "--epochs", str(epochs), "--batch-size", "32" if smoke else "64",
                              "--no-disk-cache", "--results-dir", str(results)])
    report = pd.read_csv(results / "multi_label_report.csv", dtype={"class": str})
    return {"counts": counts, "epochs": epochs, "test_map": history.test_acc,
            "valid_map": history.valid_acc, "seconds": time.perf_counter() - start,
            "ap": dict(zip(report["class"], report["average_precision"]))}


# ---- issue 31: regression: real digits turned by a known angle -------------------------------------

ROTATE_COUNTS = {"train": 4000, "valid": 500, "test": 500}  # digits per split, disjoint, of the 5,000
ROTATE_TURNS = {"train": 3, "valid": 1, "test": 1}  # images per digit, each turned by its own angle
ROTATE_DEGREES = 45.0  # each digit turned by an angle uniform in [-45, 45] degrees


def make_rotate_table(folder: Path, counts: dict, turns: dict = ROTATE_TURNS) -> Path:
    """rotate/rotate.csv (file,angle,split) and 28x28 images: each real digit of a split's pool turned
    counter-clockwise by an angle (PIL's rotate, bilinear, the corners filled black), the angle to
    four decimals as the target; each train digit `turns` times, by angles of its own (with 4,000
    digits once each, the conv net's test RMSE stays at 0.39 of the mean's). The pools are
    disjoint; drawn with seed 0."""
    import numpy as np

    images, _ = make_subset.load_idx_pair(make_subset.BUNDLED_IMAGES, make_subset.BUNDLED_LABELS)
    order = np.random.default_rng(0).permutation(len(images))  # the file is sorted by class
    out, rows, start = folder / "rotate", [], 0
    out.mkdir(parents=True, exist_ok=True)
    for k, (split, n) in enumerate(counts.items()):
        pool = np.repeat(order[start:start + n], turns[split])  # each digit turns[split] times
        start += n
        angles = np.random.default_rng([1, k]).uniform(-ROTATE_DEGREES, ROTATE_DEGREES, size=len(pool))
        for j, (i, angle) in enumerate(zip(pool.tolist(), angles.tolist())):
            name = f"{split}_{j:05d}.png"
            Image.fromarray(images[i]).rotate(angle, resample=Image.BILINEAR, fillcolor=0).save(out / name)
            rows.append((name, f"{angle:.4f}", split))
    table = out / "rotate.csv"
    pd.DataFrame(rows, columns=["file", "angle", "split"]).to_csv(table, index=False)
    return table


def bench_rotate(folder: Path, epochs: int, smoke: bool = False) -> dict:
    """--model cnn --task regression on turned digits, the angle as target: the last epoch's
    validation and test RMSE in degrees (as train.py prints them), the RMSE of predicting the
    train split's mean angle for every image, and their ratio (issue 31's aim: at most 0.35).
    A cosine schedule: with Adam's constant rate the conv net's validation RMSE jumps between
    epochs (BatchNorm), and the last epoch's figure is a draw."""
    import contextlib
    import io

    counts = {"train": 64, "valid": 32, "test": 32} if smoke else ROTATE_COUNTS
    table = make_rotate_table(folder, counts)
    results = folder / "rotate-run"
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        history = train_main(["--csv", str(table), "--split-column", "split", "--file-column", "file",
                              "--task", "regression", "--label-column", "angle", "--model", "cnn",
                              "--optimizer", "adam", "--lr-schedule", "cosine", "--epochs", str(epochs),
                              "--batch-size", "32" if smoke else "64", "--no-disk-cache", "--results-dir",
                              str(results)])
    seconds = time.perf_counter() - start
    rows = pd.read_csv(table)
    train_mean = rows[rows["split"] == "train"]["angle"].mean()
    valid = rows[rows["split"] == "valid"]["angle"]
    report = pd.read_csv(results / "regression_report.csv").iloc[0]
    return {"counts": counts, "turns": ROTATE_TURNS, "epochs": epochs, "seconds": seconds,
            "valid_rmse": history.valid_acc[-1], "test_rmse": history.test_acc,
            "valid_mean_rmse": float(((valid - train_mean) ** 2).mean() ** 0.5),
            "test_mean_rmse": float(report["rmse_of_train_mean"]), "test_mae": float(report["mae"]),
            "test_r2": float(report["r2"])}


def train_main(argv: list[str]):
    import train

    return train.main(argv)


SECTIONS = ("loaders,scaling,end_to_end,startup,decode,rows,workers,plain,models,photos,busy,cached_workers,"
            "rare,pairs,rotate")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description="Data loading and training benchmarks.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=int, default=5000, help="images in the main comparison")
    p.add_argument("--scaling", default="1000,5000,50000", help="sizes for the scaling rows (comma separated)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is shown")
    p.add_argument("--short-repeats", type=int, default=5,
                   help="runs per figure of the start-up and first-pass rows (a few seconds each, so noisier)")
    p.add_argument("--epochs", type=int, default=100, help="epochs for the end-to-end comparison")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat, 2 epochs: checks it runs")
    p.add_argument("--decode-size", type=int, default=40000, help="images in the first-pass and disk-cache rows")
    p.add_argument("--rows", default="30000,300000", help="CSV sizes for the row-checking rows (comma separated)")
    p.add_argument("--model-epochs", type=int, default=3, help="epochs per model in the models rows")
    p.add_argument("--photos", type=int, default=40, help="generated 3000x2000 JPEGs in the photos rows")
    p.add_argument("--rare-epochs", type=int, default=30, help="epochs of each run in the rare-class rows")
    p.add_argument("--rare-seeds", type=int, default=3, help="seeds averaged in the rare-class rows")
    p.add_argument("--pair-epochs", type=int, default=10, help="epochs of the digit-pairs run (several labels)")
    p.add_argument("--rotate-epochs", type=int, default=12, help="epochs of the turned-digits run (regression)")
    p.add_argument("--sections", default=SECTIONS,
                   help="which parts to run (comma separated)")
    p.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: measure one loader in this process
    p.add_argument("--memory-data", nargs=3, type=Path, help=argparse.SUPPRESS)
    p.add_argument("--first-pass", nargs=4, help=argparse.SUPPRESS)  # internal: csv img_dir workers cache_dir
    p.add_argument("--build-rows", nargs=2, type=Path, help=argparse.SUPPRESS)  # internal: csv img_dir
    args = p.parse_args(argv)
    if args.first_pass:
        csv, img_dir, workers, cache_dir = args.first_pass
        start = time.perf_counter()
        DecodedImages(CsvImageDataset(csv, img_dir), cache_dir=cache_dir or None).preload(num_workers=int(workers),
                                                                                          progress=False)
        print(time.perf_counter() - start)
        return {}
    if args.build_rows:
        reset_peak_rss()  # the peak of the imports is not the dataset's
        before = rss_bytes()
        start = time.perf_counter()
        ds = CsvImageDataset(*args.build_rows)  # the rows checked; nothing decoded
        seconds = time.perf_counter() - start
        peak = peak_rss_bytes()
        report = {"us_per_row": seconds / len(ds) * 1e6, "peak_growth_mib": (peak - before) / 2**20}
        print(json.dumps(report))
        return report
    if args.memory_of:
        warnings.filterwarnings("ignore")
        build = loaders_to_compare(*args.memory_data, args.batch_size)[args.memory_of]
        report = memory_in_fresh_process(build)
        print(json.dumps(report))
        return report
    if args.smoke:
        args.size, args.scaling, args.repeats, args.short_repeats, args.epochs = 200, "200", 1, 1, 2
        args.decode_size, args.rows, args.model_epochs, args.photos = 600, "2000", 1, 4
        args.rare_epochs, args.rare_seeds = 1, 1
    sections = set(args.sections.split(","))
    warnings.filterwarnings("ignore")  # ToTensor's deprecation notice, for the peers
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    folder = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        report = {"machine": f"{os.cpu_count()} cores, torch {torch.__version__}", "size": args.size, "epochs": args.epochs,
                  "batch_size": args.batch_size, "repeats": args.repeats,
                  "short_repeats": args.short_repeats}
        if "loaders" in sections:
            report["loaders"] = bench_loaders(folder, args.size, args.batch_size, args.repeats,
                                              memory="ours" if args.smoke else "all")
        if "scaling" in sections:
            scaling = {}
            for n in (int(s) for s in args.scaling.split(",")):
                rows = report["loaders"] if n == args.size and "loaders" in report else \
                    bench_loaders(folder, n, args.batch_size, args.repeats, memory="ours")
                scaling[n] = {k: v for k, v in rows.items() if k.startswith("ours (cache")}
            report["scaling"] = scaling
        if "end_to_end" in sections:
            report["end_to_end_s"] = bench_end_to_end(folder, args.epochs, args.repeats)
        if "startup" in sections:
            report["startup_s"] = bench_startup(folder, args.epochs, args.short_repeats, warmup=0 if args.smoke else 1)
        if "decode" in sections:
            report["decode"] = bench_decode(folder, args.decode_size, args.short_repeats)
        if "rows" in sections:
            report["rows"] = bench_rows(folder, [int(n) for n in args.rows.split(",")], args.repeats)
        if "workers" in sections:
            report["worker_memory"] = bench_worker_memory(folder, max(int(n) for n in args.rows.split(",")),
                                                          args.batch_size)
        if "plain" in sections:
            report["plain"] = bench_plain(folder, args.size, args.batch_size, args.repeats)
        if "models" in sections:
            report["models"] = bench_models(folder, args.model_epochs, smoke=args.smoke)
        if "busy" in sections:
            report["busy"] = bench_busy(folder, args.decode_size, args.batch_size)
        if "cached_workers" in sections:
            report["cached_workers"] = bench_cached_workers(folder, 2 if args.smoke else 20, 64 if args.smoke else 1056,
                                                            1 if args.smoke else args.short_repeats,
                                                            warmup=0 if args.smoke else 1)
        if "rare" in sections:
            report["rare"] = bench_rare(folder, args.rare_epochs, args.rare_seeds, smoke=args.smoke)
        if "pairs" in sections:
            report["pairs"] = bench_pairs(folder, 2 if args.smoke else args.pair_epochs, smoke=args.smoke)
        if "rotate" in sections:
            report["rotate"] = bench_rotate(folder, 2 if args.smoke else args.rotate_epochs, smoke=args.smoke)
        if "photos" in sections:
            report["photos"] = bench_photos(folder, args.photos, args.short_repeats if not args.smoke else 1,
                                            600 if args.smoke else 4000)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


def format_report(r: dict) -> str:
    lines = []
    if "loaders" in r:
        L = r["loaders"]
        ours = L["ours (cache on)"]
        lines += [f"{r['size']} MNIST PNGs, batch {r['batch_size']}, one process, median of {r['repeats']}; {r['machine']}",
                  "", "| loader | cold img/s | warm img/s | peak RSS growth MiB | ours (cache on) cold / this | warm / this |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, m in L.items():
            peak = f"{m['peak_growth_mib']:.1f}" if "peak_growth_mib" in m else "not measured"
            lines.append(f"| {name} | {m['cold_img_s']:,.0f} | {m['warm_img_s']:,.0f} | {peak} | "
                         f"{ours['cold_img_s'] / m['cold_img_s']:.2f}x | {ours['warm_img_s'] / m['warm_img_s']:.2f}x |")
    if "scaling" in r:
        lines += ["", "| images | decoded MiB | cache on: cold img/s | warm img/s | RSS growth after passes 1, 2, 3 MiB "
                  "| cache off: cold img/s | warm img/s | RSS growth after passes 1, 2, 3 MiB |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for n, rows in r["scaling"].items():
            on, off = rows["ours (cache on)"], rows["ours (cache off)"]
            label = f"{int(n):,}" + (" (bundled digits repeated)" if int(n) > BUNDLED else "")
            growth = [", ".join(f"{x:.1f}" for x in m["rss_after_pass_mib"]) for m in (on, off)]
            lines.append(f"| {label} | {int(n) * 28 * 28 / 2**20:.1f} | {on['cold_img_s']:,.0f} | {on['warm_img_s']:,.0f} "
                         f"| {growth[0]} | {off['cold_img_s']:,.0f} | {off['warm_img_s']:,.0f} | {growth[1]} |")
    if "end_to_end_s" in r:
        e = r["end_to_end_s"]
        lines += ["", f"End to end, whole processes, {r['epochs']} epochs on the default data: train.py {e['train.py']:.1f} s, "
                  f"lecture loop {e['lecture loop']:.1f} s, ratio {e['train.py'] / e['lecture loop']:.2f}x"]
    if "startup_s" in r:
        t = r["startup_s"]
        lines += ["", f"Start-up, whole processes, median of {r['short_repeats']} (after a warm-up round):", "",
                  "| command | seconds | / import torch |", "| --- | ---: | ---: |"]
        lines += [f"| `{name}` | {sec:.2f} | {sec / t['import torch']:.2f}x |" for name, sec in t.items()]
    if "decode" in r:
        d = r["decode"]
        base = d["seconds"]["cold, 0 workers"]
        lines += ["", f"First pass over {d['size']:,} PNGs (building the dataset + decoding, or reading the disk cache), "
                  f"each in a new process, median of {d['repeats']}; bit-identical to one process's decode: {d['exact']}", "",
                  "| first pass | seconds | img/s | time / cold, 0 workers |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {name} | {sec:.2f} | {d['size'] / sec:,.0f} | {sec / base:.2f}x |" for name, sec in d["seconds"].items()]
    if "rows" in r:
        lines += ["", "Building a dataset without decoding (every row checked: names, labels, one lstat and one header "
                  "read a file, repeats), "
                  f"each in a new process, median of {r['repeats']}:", "",
                  "| rows | microseconds a row | peak memory growth MiB |", "| ---: | ---: | ---: |"]
        lines += [f"| {int(n):,} | {m['us_per_row']:.1f} | {m['peak_growth_mib']:.0f} |" for n, m in r["rows"].items()]
    if "worker_memory" in r:
        lines += ["", "Private memory of each of 2 DataLoader workers over one epoch of the largest CSV above "
                  "(no cache, so every item reads its row):", "",
                  "| dataset | after the first batch MiB | at the end MiB | growth MiB | epoch s |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, m in r["worker_memory"].items():
            first, end = (", ".join(f"{x:.1f}" for x in m[k]) for k in ("first_batch_mib", "end_mib"))
            growth = ", ".join(f"{b - a:.1f}" for a, b in zip(m["first_batch_mib"], m["end_mib"]))
            lines.append(f"| {name} | {first} | {end} | {growth} | {m['seconds']:.1f} |")
    if "plain" in r:
        P = r["plain"]
        fastest = max(m["warm_img_s"] for m in P.values())
        lines += ["", f"A CsvImageDataset's DecodedImages through torch's own DataLoader, {r['size']} PNGs, batch {r['batch_size']}, "
                  f"3 passes, median of {r['repeats']}:", "",
                  "| way | cold img/s (build + pass 1) | warm img/s (passes 2-3) | fastest warm / this |",
                  "| --- | ---: | ---: | ---: |"]
        lines += [f"| {name} | {m['cold_img_s']:,.0f} | {m['warm_img_s']:,.0f} | {fastest / m['warm_img_s']:.2f}x |"
                  for name, m in P.items()]
    if "models" in r:
        M = r["models"]
        lines += ["", "train.py's models on the default data (256 train images, batch 64, then accuracy on 768), "
                  "seconds per epoch, median of epochs 2 on:", "",
                  "| --model | parameters | s per epoch | / mlp |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {name} | {m['parameters']:,} | {m['epoch_s']:.3f} | {m['epoch_s'] / M['mlp']['epoch_s']:.1f}x |"
                  for name, m in M.items()]
    if "busy" in r:
        B = r["busy"]
        lines += ["", f"A pass over {B['size']:,} cached digits (the train loader, batch {r['batch_size']}, no workers), "
                  f"median of {B['passes']}: quiet {B['quiet_s']:.3f} s; beside two busy processes {B['busy_s']:.3f} s; "
                  f"busy speed / quiet speed {B['quiet_s'] / B['busy_s']:.2f}x. The same batches through torch's ops "
                  f"(index_select, to float32, mul_; {B['torch_threads']} intra-op threads): quiet "
                  f"{B['torch_ops_quiet_s']:.3f} s, busy {B['torch_ops_busy_s']:.3f} s, "
                  f"{B['torch_ops_quiet_s'] / B['torch_ops_busy_s']:.2f}x"]
    if "cached_workers" in r:
        W = r["cached_workers"]
        t = W["seconds"]
        lines += ["", f"Whole `train.py --epochs {W['epochs']}` runs (train.main, in this process) on {W['size']:,} "
                  f"training digits, read from the disk cache, median of {W['repeats']}:", "",
                  "| flags | seconds | / the same run with --num-workers 0 |", "| --- | ---: | ---: |"]
        for name, sec in t.items():
            base = t[name.replace("--num-workers 2", "--num-workers 0")]
            lines.append(f"| `{name}` | {sec:.2f} | {sec / base:.2f}x |")
    if "photos" in r:
        P = r["photos"]
        t = P["seconds"]
        lines += ["", f"First pass to 64x64 over {P['count']} generated 3000x2000 JPEGs (quality 90) and "
                  f"{P['pngs']} such PNGs, and over {P['digits']:,} PNG digits at their size, median of {P['repeats']}:", "",
                  "| way | seconds | images/s | speed / ours, 0 workers |", "| --- | ---: | ---: | ---: |"]
        for name, sec in t.items():
            group = name.split(": ")[0] + ": " if ": " in name else ""
            n = {"PNG digits: ": P["digits"], "PNG photos: ": P["pngs"]}.get(group, P["count"])
            ours = t[group + "ours, 0 workers"]
            lines.append(f"| {name} | {sec:.2f} | {n / sec:,.0f} | {ours / sec:.2f}x |")
    if "rare" in r:
        R = r["rare"]
        (common, rare), train_counts = R["digits"], R["counts"]["train"]
        lines += ["", f"A rare class: digits {common} (common) and {rare} (rare), train {train_counts[0]} / "
                  f"{train_counts[1]}, test {' / '.join(map(str, R['counts']['test']))}; `train.py --model cnn "
                  f"--epochs {R['epochs']}`, the last epoch's model on test, mean of seeds 1 to {R['seeds']}:", "",
                  "| way | common recall % | rare recall % | balanced accuracy % | macro F1 | test accuracy % "
                  "| accuracy on a 95 / 5 test % |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {name} | {m['common_recall']:.1f} | {m['rare_recall']:.1f} | {m['balanced_accuracy']:.1f} | "
                  f"{m['macro_f1']:.3f} | {m['accuracy']:.1f} | {m['accuracy_at_95_5']:.1f} |"
                  for name, m in R["ways"].items()]
    if "pairs" in r:
        R = r["pairs"]
        lines += ["", f"Several labels per image: two real digits side by side, tagged with the digits present "
                  f"({R['counts']['train']} train, {R['counts']['test']} test pairs, disjoint digits); `train.py --model "
                  f"cnn --optimizer adam --label-delim ' ' --epochs {R['epochs']}`: test mean average precision "
                  f"{R['test_map']:.4f} ({R['seconds']:.0f} s); per tag: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in R["ap"].items())]
    if "rotate" in r:
        R = r["rotate"]
        lines += ["", f"Regression: real digits turned by an angle uniform in [-{ROTATE_DEGREES:g}, {ROTATE_DEGREES:g}] "
                  f"degrees, the angle as target ({R['counts']['train']} train digits turned "
                  f"{R['turns']['train']} ways each, {R['counts']['valid']} valid and {R['counts']['test']} test "
                  f"digits, disjoint); `train.py --model cnn --optimizer adam --task "
                  f"regression --label-column angle --lr-schedule cosine --epochs {R['epochs']}` ({R['seconds']:.0f} s), the last "
                  "epoch:",
                  "", "| split | RMSE (degrees) | RMSE of the train mean | ratio |", "| --- | ---: | ---: | ---: |",
                  f"| valid | {R['valid_rmse']:.2f} | {R['valid_mean_rmse']:.2f} | "
                  f"{R['valid_rmse'] / R['valid_mean_rmse']:.3f} |",
                  f"| test | {R['test_rmse']:.2f} | {R['test_mean_rmse']:.2f} | "
                  f"{R['test_rmse'] / R['test_mean_rmse']:.3f} |",
                  "", f"Test MAE {R['test_mae']:.2f} degrees, R² {R['test_r2']:.4f}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
