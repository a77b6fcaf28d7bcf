"""Cost that stays flat (issue 13): the first pass decoded on several cores, the disk cache of
decoded pixels (exact, invalidated by any change, atomic, shared by concurrent runs, optional),
and per-row data in NumPy arrays."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import dataset as dataset_module
import loaders as loaders_module
import train
from conftest import ROOT, tmpfs, write_csv, write_png
from dataset import CsvImageDataset, ImageLoadError
from loaders import DecodedImages, DecodeProgress, get_dataloaders


@pytest.fixture
def photos(tmp_path):
    """img/ with 24 RGB PNGs of three sizes and labels.csv (path,label); images are resized to 12x10."""
    rng = np.random.default_rng(1)
    rows = ["path,label"]
    for i in range(24):
        height, width = (10 + i % 3 * 7, 12 + i % 4 * 5)
        write_png(tmp_path / "img" / f"p{i:02d}.png", rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        rows.append(f"p{i:02d}.png,{i % 3}")
    write_csv(tmp_path / "labels.csv", "\n".join(rows) + "\n")
    return tmp_path


def build(folder, **store_kwargs) -> DecodedImages:
    """The photos' decoded-image store; store_kwargs: cache_mb, cache_dir."""
    return DecodedImages(CsvImageDataset(folder / "labels.csv", folder / "img", file_column="path",
                                         label_column="label", mode="RGB", image_size=(12, 10)), **store_kwargs)


def truncate(path) -> None:
    """Cut an image file in half: its header still reads (the row check passes it), its pixels do
    not, so it is found where it is decoded (a file that is no image at all is a bad row)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def cache_files(folder) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(loaders_module, "DECODE_CHUNK", 5)  # 24 images: 5 chunks, the last one short


def test_workers_decode_bit_for_bit_what_one_process_decodes(photos, small_chunks):
    one = build(photos).preload(num_workers=0)
    for workers in (1, 2):
        assert torch.equal(build(photos).preload(num_workers=workers), one)
    assert one.shape == (24, 3, 12, 10)
    first = dataset_module.decode_image(str(photos / "img" / "p00.png"), "RGB", (12, 10))
    assert torch.equal(one[0], torch.from_numpy(first.copy()))  # and it is what the decoder gives


def test_a_bad_image_in_a_worker_is_named_as_in_one_process(photos, small_chunks, monkeypatch):
    truncate(photos / "img" / "p17.png")
    truncate(photos / "img" / "p22.png")
    decode = dataset_module.decode_image

    def slow_p15(path, *args):  # chunk 3 (p15-p19) finishes after chunk 4 (p20-p23)
        time.sleep(0.5 if path.endswith("p15.png") else 0)
        return decode(path, *args)

    monkeypatch.setattr(dataset_module, "decode_image", slow_p15)  # forked workers inherit it
    for workers in (0, 2):  # chunks arrive as they are done; the error is the first bad row's
        with pytest.raises(ImageLoadError, match=r"labels.csv, line 19: 'p17.png': cannot decode") as caught:
            build(photos).preload(num_workers=workers)
        assert "Traceback" not in str(caught.value)  # the error itself, not a worker's report of it


def test_progress_is_reported_per_chunk_and_shown_only_for_a_long_decode(photos, small_chunks):
    seen = []
    build(photos).preload(progress=lambda done, total: seen.append((done, total)))
    assert seen == [(5, 24), (10, 24), (15, 24), (20, 24), (24, 24)]
    seen.clear()
    build(photos).preload(num_workers=2, progress=lambda done, total: seen.append((done, total)))
    assert len(seen) == 5 and seen[-1] == (24, 24) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    out = io.StringIO()
    show = DecodeProgress("Decoding labels.csv", stream=out, after=0)
    show(10, 40)
    show(20, 40)  # not a terminal: the next line comes 10 s later, or at the end
    show(40, 40)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Decoding labels.csv: 10 of 40 images, ") and lines[0].endswith(" s left")
    assert lines[1].startswith("Decoding labels.csv: 40 of 40 images, ") and " done in " in lines[1]
    quiet = io.StringIO()
    short = DecodeProgress("Decoding", stream=quiet)  # the default: silent for the first 2 s
    short(40, 40)
    assert quiet.getvalue() == ""


def test_a_second_dataset_reads_the_disk_cache_instead_of_decoding(photos, monkeypatch):
    cache = photos / "cache"
    plain = build(photos).preload()
    first = build(photos, cache_dir=cache)
    assert torch.equal(first.preload(), plain) and "decoded into the disk cache" in first.cache_decision
    assert [f for f in cache_files(cache) if f.endswith(".npy")] == [f for f in cache_files(cache)]
    assert len(cache_files(cache)) == 1 and cache_files(cache)[0].startswith("labels-")
    assert first.cache_file == cache / cache_files(cache)[0]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the disk cache holds the pixels")
    monkeypatch.setattr(dataset_module, "decode_image", no_decoding)
    second = build(photos, cache_dir=cache)
    assert torch.equal(second.preload(), plain) and "read from the disk cache" in second.cache_decision
    assert second[3][0].shape == (3, 12, 10)


def test_a_changed_file_is_decoded_again_even_with_the_same_size_and_time(photos):
    cache = photos / "cache"
    before = build(photos, cache_dir=cache).preload().clone()
    old_name = cache_files(cache)[0]
    path = photos / "img" / "p05.png"
    stat = path.stat()
    new_pixels = np.full((17, 32, 3), 7, dtype=np.uint8)  # p05 is 17x32: a new image of the same size
    write_png(path, new_pixels)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the old modification time, as a copy -p keeps it
    after = build(photos, cache_dir=cache).preload()
    assert torch.equal(after[5], torch.full((3, 12, 10), 7, dtype=torch.uint8))  # the new pixels, not stale ones
    assert torch.equal(after[:5], before[:5]) and torch.equal(after[6:], before[6:])
    assert len(cache_files(cache)) == 1 and cache_files(cache)[0] != old_name  # the stale file is gone


def test_other_rows_mode_or_size_get_their_own_cache_files(photos):
    cache = photos / "cache"
    build(photos, cache_dir=cache).preload()
    gray = DecodedImages(CsvImageDataset(photos / "labels.csv", photos / "img", file_column="path",
                                         label_column="label", mode="L", image_size=(12, 10)), cache_dir=cache)
    assert gray.preload().shape == (24, 1, 12, 10)
    small = DecodedImages(CsvImageDataset(photos / "labels.csv", photos / "img", file_column="path",
                                          label_column="label", mode="RGB", image_size=6), cache_dir=cache)
    assert small.preload().shape == (24, 3, 6, 6)
    text = (photos / "labels.csv").read_text().splitlines()
    write_csv(photos / "labels.csv", "\n".join(text[:1] + text[2:]) + "\n")  # one row fewer
    fewer = build(photos, cache_dir=cache)
    assert fewer.preload().shape == (23, 3, 12, 10) and "decoded into the disk cache" in fewer.cache_decision
    assert len(cache_files(cache)) == 3  # RGB 12x10 (the 23 rows replaced the 24), L 12x10, RGB 6x6
    # One CSV, three splits: each split is its own file; none replaces another.
    split = photos / "split.csv"
    write_csv(split, "path,label,split\n" + "".join(
        f"p{i:02d}.png,{i % 3},{('train', 'valid', 'test')[i % 3]}\n" for i in range(24)))
    for name in ("train", "valid", "test"):
        DecodedImages(CsvImageDataset(split, photos / "img", file_column="path", label_column="label", mode="RGB",
                                      image_size=(12, 10), split=("split", name)), cache_dir=photos / "c2").preload()
    assert [f.split("-")[:2] for f in cache_files(photos / "c2")] == [["split", n] for n in ("test", "train", "valid")]
    # The same rows from a copy of the CSV elsewhere (train.py's RESULTS/split.csv): the same file.
    (photos / "copy").mkdir()
    (photos / "copy" / "split.csv").write_bytes(split.read_bytes())
    again = DecodedImages(CsvImageDataset(photos / "copy" / "split.csv", photos / "img", file_column="path",
                                          label_column="label", mode="RGB", image_size=(12, 10),
                                          split=("split", "train")), cache_dir=photos / "c2")
    again.preload()
    assert "read from the disk cache" in again.cache_decision and len(cache_files(photos / "c2")) == 3


def test_cache_files_get_a_normal_files_mode_and_old_unrenamed_temporaries_go(photos):
    cache = photos / "cache"
    cache.mkdir()
    stale, fresh = cache / ".labels-x.npy.csvimg-cache-new-killed", cache / ".labels-y.npy.csvimg-cache-new-someone"
    for path in (stale, fresh):
        path.write_bytes(b"")
    os.utime(stale, (time.time() - 3600,) * 2)  # killed between mkstemp and its rename, an hour ago
    old = os.umask(0o022)
    try:
        build(photos, cache_dir=cache).preload()
    finally:
        os.umask(old)
    (npy,) = [f for f in cache_files(cache) if f.endswith(".npy")]
    assert oct((cache / npy).stat().st_mode & 0o777) == oct(0o644)  # others sharing the data can read it
    assert not stale.exists() and fresh.exists()  # a fresh one may be another run's, about to be renamed


def test_a_failed_fill_leaves_no_cache_file_and_a_killed_ones_leftover_is_removed(photos, small_chunks):
    cache = photos / "cache"
    good = (photos / "img" / "p20.png").read_bytes()
    truncate(photos / "img" / "p20.png")
    with pytest.raises(ImageLoadError):
        build(photos, cache_dir=cache).preload()
    assert cache_files(cache) == []  # nothing half-written that a later run could load
    (photos / "img" / "p20.png").write_bytes(good)
    # A run killed while filling: its temporary file, locked while it was written, is left.
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        import dataset, loaders
        loaders.DECODE_CHUNK = 5
        real = dataset.decode_image
        calls = []
        def slow(*args, **kwargs):
            calls.append(1)
            if len(calls) == 12:
                print("filling", flush=True)
                time.sleep(600)
            return real(*args, **kwargs)
        dataset.decode_image = slow
        loaders.DecodedImages(dataset.CsvImageDataset({str(photos / 'labels.csv')!r}, {str(photos / 'img')!r},
                                                      file_column="path", label_column="label", mode="RGB",
                                                      image_size=(12, 10)), cache_dir={str(cache)!r}).preload()
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout.readline().strip() == "filling"
        left = cache_files(cache)
        assert len(left) == 1 and ".csvimg-cache-tmp-" in left[0]
        with pytest.raises(ImageLoadError):  # a live writer's file is never taken for a cache
            truncate(photos / "img" / "p20.png")
            build(photos, cache_dir=cache).preload()
        assert left[0] in cache_files(cache)  # ... nor removed while it is written
        (photos / "img" / "p20.png").write_bytes(good)
        child.send_signal(signal.SIGKILL)
    pixels = build(photos, cache_dir=cache).preload()
    assert torch.equal(pixels, build(photos).preload())
    assert len(cache_files(cache)) == 1 and cache_files(cache)[0].endswith(".npy")  # the leftover removed


def test_two_processes_filling_one_cache_at_once_both_get_the_right_pixels(photos):
    cache = photos / "cache"
    script = textwrap.dedent(f"""
        import sys, hashlib
        sys.path.insert(0, {str(ROOT)!r})
        import dataset, loaders
        ds = loaders.DecodedImages(dataset.CsvImageDataset({str(photos / 'labels.csv')!r}, {str(photos / 'img')!r},
                                                           file_column="path", label_column="label", mode="RGB",
                                                           image_size=(12, 10)), cache_dir={str(cache)!r})
        print(hashlib.sha256(ds.preload().numpy().tobytes()).hexdigest())
    """)
    children = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
                for _ in range(3)]
    digests = [child.communicate(timeout=120)[0].strip() for child in children]
    import hashlib
    expected = hashlib.sha256(build(photos).preload().numpy().tobytes()).hexdigest()
    assert digests == [expected] * 3
    assert len(cache_files(cache)) == 1 and cache_files(cache)[0].endswith(".npy")


def test_a_cache_folder_that_cannot_be_written_means_one_warning_and_memory_only(photos):
    blocked = photos / "a-file"
    blocked.write_text("not a folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build(photos, cache_dir=blocked / "cache")
        pixels = ds.preload()
    assert torch.equal(pixels, build(photos).preload())
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and messages[0].startswith(f"no disk cache of decoded images: cannot write in {blocked}")


@pytest.mark.parametrize("full", ["free space", "allocation"])
def test_a_full_disk_means_one_warning_memory_only_and_no_file_left(photos, monkeypatch, full):
    """A split under the memory budget used to be written through a memory map with no check: on a
    full disk the process died of SIGBUS (exit 135), leaving its temporary file."""
    import errno

    if full == "free space":  # the check before any file is written
        usage = type(shutil.disk_usage(photos))
        monkeypatch.setattr(loaders_module.shutil, "disk_usage", lambda path: usage(2 * 2**20, 2**20, 2**20))
    else:  # the disk filled after that check: the blocks are claimed before decoding writes to them
        if not hasattr(os, "posix_fallocate"):
            pytest.skip("no posix_fallocate here")

        def no_space(fd, offset, length):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(loaders_module.os, "posix_fallocate", no_space)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build(photos, cache_dir=photos / "cache")
        pixels = ds.preload()
    assert torch.equal(pixels, build(photos).preload()) and "keeping decoded images in memory" in ds.cache_decision
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "no disk cache of decoded images: cannot write in" in messages[0]
    assert ("MiB needed, 1.0 MiB free" if full == "free space" else "No space left") in messages[0]
    assert cache_files(photos / "cache") == []  # no temporary file left filling the disk


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounts a small tmpfs: needs root")
def test_a_real_full_disk_ends_in_memory_not_in_a_bus_error(photos, tmp_path):
    with tmpfs(tmp_path / "tiny-disk", "64k") as disk:
        (disk / "filler").write_bytes(b"x" * 60_000)  # one 4 KiB page left: the 8,640-byte split does not fit
        script = textwrap.dedent(f"""
            import sys, warnings; sys.path.insert(0, {str(ROOT)!r})
            from dataset import CsvImageDataset
            from loaders import DecodedImages
            ds = DecodedImages(CsvImageDataset({str(photos / "labels.csv")!r}, {str(photos / "img")!r},
                                               file_column="path", label_column="label", mode="RGB",
                                               image_size=(12, 10)), cache_dir={str(disk)!r})
            print(ds.preload().shape)""")
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and "torch.Size([24, 3, 12, 10])" in run.stdout, run.stderr
        assert "no disk cache of decoded images" in run.stderr and os.listdir(disk) == ["filler"]


def test_over_the_memory_budget_the_disk_cache_still_holds_them_when_the_disk_can_spare_it(photos, monkeypatch):
    plain = build(photos).preload()  # 24 x 3x12x10 uint8 = 8,640 bytes; budgets below are smaller
    rows = [3, 0, 17]
    usage = type(shutil.disk_usage(photos))
    monkeypatch.setattr(loaders_module.shutil, "disk_usage", lambda path: usage(100 * 2**30, 10 * 2**30, 90 * 2**30))
    mapped = build(photos, cache_mb=0.005, cache_dir=photos / "cache")
    assert "in a memory-mapped file, over the memory budget" in mapped.cache_decision
    assert torch.equal(mapped.preload(), plain) and "decoded into the disk cache" in mapped.cache_decision
    again = build(photos, cache_mb=0.005, cache_dir=photos / "cache")
    assert torch.equal(again[rows][0], build(photos)[rows][0]) and "read from the disk cache" in again.cache_decision
    assert build(photos, cache_mb=0, cache_dir=photos / "cache").preload() is None  # 0: never cache
    # A disk that cannot spare the bytes: no cache; batches decoded as they are read.
    monkeypatch.setattr(loaders_module.shutil, "disk_usage", lambda path: usage(100 * 2**30, 99 * 2**30, 2**30))
    tight = build(photos, cache_mb=0.005, cache_dir=photos / "other")
    assert "cannot spare" in tight.cache_decision and tight.preload() is None
    assert torch.equal(tight[rows][0], build(photos)[rows][0]) and not (photos / "other").exists()
    monkeypatch.setattr(loaders_module.shutil, "disk_usage", lambda path: usage(100 * 2**30, 10 * 2**30, 90 * 2**30))
    # Over budget and not writable: one warning, and batches decoded as they are read.
    (photos / "a-file").write_text("not a folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        blocked = build(photos, cache_mb=0.005, cache_dir=photos / "a-file" / "cache")
        images = blocked[rows][0]
    assert [str(w.message).endswith("so images are decoded as batches are read") for w in caught] == [True]
    assert torch.equal(images, build(photos)[rows][0]) and blocked.preload() is None


def test_per_row_data_lives_in_arrays_not_python_lists(photos):
    ds = build(photos)
    for value in [*vars(ds).values(), *vars(ds.dataset).values()]:  # nothing per row as Python objects, which
        assert not (isinstance(value, (list, tuple, dict)) and len(value) >= len(ds))  # forked workers would copy
    samples = ds.rows
    assert samples.names.dtype == np.uint8 and samples.labels.dtype == np.int64 and samples.lines.dtype == np.int64
    assert samples[3].file == "p03.png" and samples[3].line == 5 and samples[3].label == 0
    assert samples[-1].file == "p23.png" and samples.files()[:2] == ["p00.png", "p01.png"]
    assert samples[3].path == os.path.join(str((photos / "img").resolve()), "p03.png")
    with pytest.raises(IndexError):
        samples[24]


def test_train_py_fills_the_disk_cache_once_and_gets_the_same_results_without_it(tiny_data, tmp_path, capsys):
    args = ["--epochs", "2", "--seed", "4", "--batch-size", "8", "--data-dir", str(tiny_data)]
    train.main([*args, "--results-dir", str(tmp_path / "a")])
    out = capsys.readouterr().out
    assert f"Disk cache of decoded images: {tiny_data / '.cache'}" in out and "decoded into the disk cache" in out
    assert len(cache_files(tiny_data / ".cache")) == 3  # train, valid, test
    train.main([*args, "--results-dir", str(tmp_path / "b")])
    assert "read from the disk cache" in capsys.readouterr().out
    train.main([*args, "--results-dir", str(tmp_path / "c"), "--no-disk-cache", "--num-workers", "2"])
    out = capsys.readouterr().out
    assert "Disk cache" not in out and "disk cache" not in out
    runs = [torch.load(tmp_path / r / "checkpoint.pt", weights_only=True) for r in "abc"]
    for other in runs[1:]:
        assert all(torch.equal(runs[0]["model"][k], other["model"][k]) for k in runs[0]["model"])
        assert runs[0]["history"]["minibatch_loss"] == other["history"]["minibatch_loss"]
        assert runs[0]["history"]["valid_acc"] == other["history"]["valid_acc"]
    train.main([*args, "--results-dir", str(tmp_path / "d"), "--cache-dir", str(tmp_path / "mine")])
    assert len(cache_files(tmp_path / "mine")) == 3


def test_a_bad_image_read_by_a_loader_worker_is_reported_as_one_sentence(photos):
    from loaders import make_loader

    truncate(photos / "img" / "p05.png")
    messages = []
    for workers in (0, 2):  # cache_mb=0: images are decoded as batches are read, in the workers
        loader = make_loader(build(photos, cache_mb=0), 8, shuffle=False, drop_last=False, seed=0,
                             loader_kwargs={"num_workers": workers})
        batches = iter(loader)
        with pytest.raises(ImageLoadError) as caught:
            list(batches)
        if workers:  # now: left to the garbage collector, its workers take 5 s each to join
            batches._shutdown_workers()
        messages.append(train.error_message(caught.value))
    assert "Traceback" in str(caught.value)  # torch's report of the worker's error ...
    assert messages[1] == messages[0] and messages[0].endswith("line 7: 'p05.png': cannot decode the image: "
                                                               "image file is truncated")
    assert "line 7: 'p05.png'" in messages[0]  # ... and the sentence train.py prints instead


def test_a_file_replaced_under_a_run_that_decodes_as_it_reads_stops_it_with_a_sentence(photos):
    """make_subset.py --force while a --cache-mb 0 run read the data: it trained on the swapped images."""
    ds = build(photos, cache_mb=0)
    first = ds[[0, 1]][0]
    assert torch.equal(ds[[0, 1]][0], first)  # nothing changed: read again, the same
    time.sleep(0.01)
    write_png(photos / "img" / "p01.png", np.zeros((10, 12, 3), dtype=np.uint8))  # swapped under it
    with pytest.raises(ImageLoadError, match=r"line 3: 'p01.png': the file changed after the rows were checked"):
        ds[[0, 1]]
    assert torch.equal(build(photos, cache_mb=0)[[0]][0], first[:1])  # a new dataset reads the new files


# ---- issue 28: the cache left the dataset for loaders.DecodedImages -------------------------------------

def test_the_datasets_old_cache_keywords_and_preload_name_the_store_that_took_them(photos, tiny_data):
    columns = {"file_column": "path", "label_column": "label", "mode": "RGB", "image_size": (12, 10)}
    moved = (r"CsvImageDataset no longer caches: wrap it, store = DecodedImages\(ds, cache_mb=\.\.\., "
             r"cache_dir=\.\.\.\) in loaders.py")
    for old in ({"cache_mb": 0}, {"cache_dir": photos / "cache"}):
        with pytest.raises(TypeError, match=moved + rf"; {next(iter(old))}= goes there"):
            CsvImageDataset(photos / "labels.csv", photos / "img", **columns, **old)
    ds = CsvImageDataset(photos / "labels.csv", photos / "img", **columns)
    for name in ("preload", "cache_decision", "in_memory", "cache_file"):
        with pytest.raises(AttributeError, match=moved + rf", then store\.{name}"):
            getattr(ds, name)
    assert not hasattr(ds, "preload") and not (photos / "cache").exists()
    with pytest.raises(TypeError, match=r"for no cache \(cache_mb=0\), leave it out"):  # what the old 0 meant
        CsvImageDataset(photos / "labels.csv", photos / "img", **columns, cache_mb=0)
    with pytest.raises(AttributeError, match=r"then store\.preload\(num_workers=\.\.\.\)$"):
        ds.preload(num_workers=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'imagesize'"):  # any other: Python's own
        CsvImageDataset(photos / "labels.csv", photos / "img", imagesize=8)
    with pytest.raises(AttributeError, match="has no attribute 'nonsense'"):
        ds.nonsense
    for old in ({"cache_mb": 0}, {"cache_dir": photos / "cache"}):  # the loaders' dataset_kwargs go to the dataset
        with pytest.raises(TypeError, match=moved + rf"; {next(iter(old))}= goes there \(or to get_dataloaders\)"):
            get_dataloaders(8, tiny_data, dataset_kwargs=old)


def test_the_documented_fast_path_through_a_plain_dataloader_decodes_each_image_once(photos, monkeypatch):
    """store = DecodedImages(ds, ...); store.preload(num_workers=2); DataLoader(store, ...), as loaders.py's
    docstring and docs/large-datasets.md give it: the batches are the dataset's, decoded by no worker."""
    ds = CsvImageDataset(photos / "labels.csv", photos / "img", file_column="path", label_column="label", mode="RGB",
                         image_size=(12, 10))
    expected = torch.stack([ds[i][0] for i in range(len(ds))])  # (24, 3, 12, 10) float32, each decoded now
    store = DecodedImages(ds, cache_mb=1024, cache_dir=photos / "cache")
    assert store.preload(num_workers=2).shape == (24, 3, 12, 10)
    assert "decoded into the disk cache" in store.cache_decision
    assert (store.classes, store.targets, store.image_size, store.rows) == (ds.classes, ds.targets, (12, 10), ds.rows)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the store holds the pixels")
    monkeypatch.setattr(dataset_module, "decode_image", no_decoding)  # forked workers inherit it
    for workers in (0, 2):
        batches = list(DataLoader(store, batch_size=8, shuffle=False, num_workers=workers))
        assert torch.equal(torch.cat([images for images, _ in batches]), expected)
        assert torch.cat([labels for _, labels in batches]).tolist() == ds.targets
    shuffled = DataLoader(store, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert sorted(torch.cat([labels for _, labels in shuffled]).tolist()) == sorted(ds.targets)
    with pytest.raises(AttributeError):
        store.classes = ["read", "only"]  # the dataset's facts are read through, not copied



def test_loaders_of_one_dataset_share_its_decoded_images_across_calls(tiny_data, monkeypatch):
    """Two loader calls on one bare CsvImageDataset decode it once and hold one copy, as when the cache
    was the dataset's (a red team counted 2,300 decodes where there had been 1,300)."""
    import dataset as dataset_module
    from loaders import loaders_from_datasets, make_loader
    calls = []
    real = dataset_module.decode_image
    monkeypatch.setattr(dataset_module, "decode_image", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    ds = CsvImageDataset(tiny_data / "mnist_train.csv", tiny_data / "mnist_train")
    first = make_loader(ds, 8, shuffle=False, drop_last=False, seed=0)
    second = loaders_from_datasets(ds, ds, ds, batch_size=8)[0]
    for loader in (first, second):
        for _ in loader:
            pass
    assert len(calls) == len(ds) == 40 and first.dataset is second.dataset
    assert first.dataset.class_to_idx == ds.class_to_idx and first.dataset.samples[0] == ds.samples[0]
    first.dataset.transform = None  # read through, and set through, as on the dataset
    assert ds.transform is None


# ---- issue 29: a disk cache file's pixels carry a checksum per chunk, checked when it is mapped ---------

def damage(path, how: str) -> None:
    """Damage a filled cache file as a disk or a copy could: flip bytes (its size kept), or cut it."""
    data = bytearray(path.read_bytes())
    start = np.load(path, mmap_mode="r").offset  # the pixels follow the .npy header
    end = start + 24 * 3 * 12 * 10  # photos: 24 x 3x12x10 uint8
    at = {"a pixel": start + 1000, "the last chunk's pixels": end - 50, "the header": 20,
          "the bytes after the pixels": end + 2}.get(how)
    if at is not None:
        data[at:at + 3] = bytes(b ^ 0x5A for b in data[at:at + 3])
    elif how == "cut short after the pixels":
        del data[end:]
    else:  # cut short inside the pixels
        del data[end - 7:]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["a pixel", "the last chunk's pixels", "the header", "the bytes after the pixels",
                                 "cut short after the pixels", "cut short inside the pixels"])
def test_a_damaged_cache_file_is_named_in_one_warning_decoded_again_and_rewritten(photos, small_chunks, how):
    """Red team, issue 29: bytes flipped in a cache file of the right size were read as pixels (40 of 40 rows
    wrong). 24 images in chunks of 5: the last chunk (20-23) is short."""
    cache = photos / "cache"
    plain = build(photos).preload()
    build(photos, cache_dir=cache).preload()
    (name,) = cache_files(cache)
    damage(cache / name, how)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = build(photos, cache_dir=cache)
        pixels = again.preload()
    assert torch.equal(pixels, plain) and "decoded into the disk cache" in again.cache_decision  # never the bad bytes
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and str(cache / name) in messages[0] and "damaged" in messages[0], messages
    if how == "the last chunk's pixels":
        assert "images 20 to 23 " in messages[0]  # the chunk that failed, named by its rows
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: the next run reads it without a word
        later = build(photos, cache_dir=cache)
        assert torch.equal(later.preload(), plain) and "read from the disk cache" in later.cache_decision
    assert cache_files(cache) == [name]


def test_the_checksums_chunk_size_is_the_files_own(photos, small_chunks, monkeypatch):
    """A file filled in chunks of 5 is checked in chunks of 5 by a run whose DECODE_CHUNK differs."""
    cache = photos / "cache"
    build(photos, cache_dir=cache).preload()
    monkeypatch.setattr(loaders_module, "DECODE_CHUNK", 256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = build(photos, cache_dir=cache)
        assert torch.equal(again.preload(), build(photos).preload()) and "read from the disk cache" in again.cache_decision


def test_a_loader_worker_that_maps_a_damaged_file_decodes_its_items_instead(photos, small_chunks):
    cache = photos / "cache"
    build(photos, cache_dir=cache).preload()
    damage(cache / cache_files(cache)[0], "the last chunk's pixels")
    store = build(photos, cache_dir=cache)  # not preloaded: each worker maps the file itself
    images = torch.cat([batch[0] for batch in DataLoader(store, batch_size=8, num_workers=2)])
    assert torch.equal(images, build(photos)[list(range(24))][0])


# ---- issue 29, from the red team: what is planted where a cache file goes ---------------------------------

@pytest.mark.parametrize("planted", ["fifo", "folder"])
def test_a_fifo_or_folder_at_a_cache_files_name_is_left_alone_and_the_images_decoded_in_memory(photos, planted):
    expected = build(photos, cache_mb=100).preload()
    store = build(photos, cache_dir=photos / "cache")
    path = photos / "cache" / store._cache_file_name()
    path.parent.mkdir()
    os.mkfifo(path) if planted == "fifo" else path.mkdir()

    def hung(signum, frame):
        raise TimeoutError("the store waited on the planted file")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.warns(UserWarning, match=r"no disk cache of decoded images: cannot write in .*cache \(.*\.npy "
                                             r"there is not a regular file but a FIFO, folder or device\)"):
            pixels = store.preload()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert torch.equal(pixels, expected)
    assert (path.is_fifo() if planted == "fifo" else path.is_dir()) and len(list(path.parent.iterdir())) == 1
