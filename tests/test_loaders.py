"""Batches: shapes, dtypes, value range, drop_last, and an order fixed by (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dataset import CsvImageDataset
from loaders import DecodedImages, EpochBatchSampler, folder_layout, get_dataloaders
from model import MLP


def epoch_images(loader) -> torch.Tensor:
    return torch.cat([images for images, _ in loader])


def test_batch_shapes_and_dtypes(tiny_data):
    train, valid, test = get_dataloaders(batch_size=8, data_dir=tiny_data, seed=1)
    images, labels = next(iter(train))
    assert images.shape == (8, 1, 28, 28)
    assert images.dtype == torch.float32
    assert labels.shape == (8,) and labels.dtype == torch.int64
    assert MLP().layers[0](images).shape == (8, 784)  # after the model's flatten
    assert MLP()(images).shape == (8, 10)


def test_values_are_scaled_to_unit_range_matching_the_png(tiny_data):
    train, _, _ = get_dataloaders(batch_size=40, data_dir=tiny_data, seed=1)
    ds = train.dataset
    images, _ = ds[np.arange(40)]  # what the loader fetches for a batch: sample i is row i of the CSV
    assert torch.equal(torch.sort(epoch_images(train).flatten())[0], torch.sort(images.flatten())[0])
    for i in range(3):
        with Image.open(ds.rows[i].path) as im:
            png = np.array(im)
        assert 0.0 <= images[i].min() and images[i].max() <= 1.0
        assert images[i].max().item() == pytest.approx(png.max() / 255, abs=1e-7)
        assert torch.equal(images[i, 0], torch.from_numpy(png).float() * (1 / 255))


def test_unscaled_option_gives_0_to_255(tiny_data):
    scaled, _, _ = get_dataloaders(batch_size=40, data_dir=tiny_data, seed=1)
    raw, _, _ = get_dataloaders(batch_size=40, data_dir=tiny_data, seed=1, dataset_kwargs={"pixels": "float255"})
    a, b = next(iter(scaled))[0], next(iter(raw))[0]
    assert b.dtype == torch.float32 and b.max() > 1.0 and b.max() <= 255.0
    assert torch.equal(b, b.round())  # whole pixel values, not scaled
    assert torch.allclose(a * 255, b, atol=1e-4)
    u8, _, _ = get_dataloaders(batch_size=40, data_dir=tiny_data, seed=1, dataset_kwargs={"pixels": "uint8"})
    assert next(iter(u8))[0].dtype == torch.uint8


def test_train_loader_drops_last_partial_batch_and_eval_loaders_keep_it(tiny_data):
    train, valid, test = get_dataloaders(batch_size=16, data_dir=tiny_data, seed=1)
    assert len(train) == 40 // 16 == 2
    assert [len(labels) for _, labels in train] == [16, 16]
    for loader in (valid, test):
        assert len(loader) == 2
        assert [len(labels) for _, labels in loader] == [16, 4]


def test_same_seed_same_order_different_seed_different_order(tiny_data):
    a, _, _ = get_dataloaders(batch_size=8, data_dir=tiny_data, seed=7)
    b, _, _ = get_dataloaders(batch_size=8, data_dir=tiny_data, seed=7)
    c, _, _ = get_dataloaders(batch_size=8, data_dir=tiny_data, seed=8)
    first_a, first_b, first_c = epoch_images(a), epoch_images(b), epoch_images(c)
    assert torch.equal(first_a, first_b)
    assert not torch.equal(first_a, first_c)


def test_consecutive_epochs_differ_and_set_epoch_replays_one(tiny_data):
    train, _, _ = get_dataloaders(batch_size=8, data_dir=tiny_data, seed=7)
    epoch0, epoch1 = epoch_images(train), epoch_images(train)
    assert not torch.equal(epoch0, epoch1)
    train.sampler.set_epoch(0)
    assert torch.equal(epoch_images(train), epoch0)


def test_same_order_with_0_and_2_workers(tiny_data):
    zero, _, _ = get_dataloaders(batch_size=8, data_dir=tiny_data, seed=3, num_workers=0)
    two, _, _ = get_dataloaders(batch_size=8, data_dir=tiny_data, seed=3, num_workers=2)
    for _ in range(2):  # two epochs each
        assert torch.equal(epoch_images(zero), epoch_images(two))


def test_iterating_valid_and_test_does_not_change_the_training_order(tiny_data):
    plain, _, _ = get_dataloaders(batch_size=8, data_dir=tiny_data, seed=5)
    busy, valid, test = get_dataloaders(batch_size=8, data_dir=tiny_data, seed=5)
    expected = [epoch_images(plain) for _ in range(2)]
    for e in range(2):
        epoch_images(valid)
        torch.rand(3)  # global RNG use must not matter either
        assert torch.equal(epoch_images(busy), expected[e])
        epoch_images(test)


def test_fast_path_pixels_equal_pillow_and_uncached_path(tiny_data):
    plain = CsvImageDataset(tiny_data / "mnist_train.csv", tiny_data / "mnist_train", pixels="uint8")
    cached, uncached = DecodedImages(plain), DecodedImages(plain, cache_mb=0)
    assert "keeping decoded" in cached.cache_decision and "not keeping" in uncached.cache_decision
    indices = list(range(len(cached)))
    a, b = cached[indices][0], uncached[indices][0]
    assert a.dtype == torch.uint8 and torch.equal(a, b) and torch.equal(plain[indices][0], a)
    for i in (0, 17, 39):
        with Image.open(cached.rows[i].path) as im:
            assert torch.equal(a[i, 0], torch.from_numpy(np.array(im)))
        for ds in (cached, uncached, plain):
            image, label = ds[i]
            assert torch.equal(image, a[i]) and label == ds.targets[i]


def test_sampler_splits_each_global_batch_between_ranks():
    shards = [[b.indices.tolist() for b in EpochBatchSampler(20, 8, shuffle=True, drop_last=True, seed=1,
                                                             rank=r, world_size=2)] for r in range(2)]
    whole = [b.indices.tolist() for b in EpochBatchSampler(20, 8, shuffle=True, drop_last=True, seed=1)]
    for batch, part0, part1 in zip(whole, *shards):
        assert sorted(part0 + part1) == sorted(batch) and not set(part0) & set(part1)
    with pytest.raises(ValueError, match="divisible"):
        EpochBatchSampler(20, 7, shuffle=True, drop_last=True, world_size=2)


def test_lecture_keywords_num_workers_and_batch_size_factor_eval(tiny_data):
    train, valid, test = get_dataloaders(batch_size=4, data_dir=tiny_data, num_workers=1, batch_size_factor_eval=3,
                                         cache_mb=0)  # decoding per batch: workers help
    assert train.num_workers == valid.num_workers == 1
    assert [len(y) for _, y in valid] == [12, 8] and [len(y) for _, y in train] == [4] * 10


def roll(image: torch.Tensor) -> torch.Tensor:
    """A random transform: shifts the image by 0 to 2 pixels, drawn from torch's global RNG."""
    return torch.roll(image, int(torch.randint(0, 3, ())), dims=-1)


@pytest.mark.parametrize("case", ["memory", "memory+transform", "memory+transform, not persistent", "decode per batch",
                                  "mapped over budget"])
def test_workers_only_where_they_have_work_and_the_same_batches(tiny_data, tmp_path, monkeypatch, case):
    import shutil

    import loaders as loaders_module
    usage = type(shutil.disk_usage(tmp_path))  # a disk that can spare a cache over the budget, whatever this one's
    monkeypatch.setattr(loaders_module.shutil, "disk_usage", lambda path: usage(100 * 2**30, 10 * 2**30, 90 * 2**30))
    options = {"memory": ({}, None), "memory+transform": ({}, roll),
               "memory+transform, not persistent": ({}, roll),
               "decode per batch": ({"cache_mb": 0}, None),
               "mapped over budget": ({"cache_mb": 0.001, "cache_dir": tmp_path / "c"}, None)}
    store_kwargs, transform = options[case]  # cache_mb, cache_dir: each split's DecodedImages
    asked = {"num_workers": 2, "persistent_workers": True, "prefetch_factor": 3}  # dropped with the workers
    if case.endswith("not persistent"):
        asked = {"num_workers": 2, "persistent_workers": False}
    loaders = get_dataloaders(8, tiny_data, seed=3, train_transforms=transform, **store_kwargs, loader_kwargs=asked)
    plain = get_dataloaders(8, tiny_data, seed=3, train_transforms=transform, **store_kwargs)
    train, valid = loaders[0], loaders[1]
    if case == "mapped over budget":
        assert "memory-mapped file, over the memory budget" in train.dataset.cache_decision
    if case == "memory":
        assert train.num_workers == valid.num_workers == 0 and not train.persistent_workers
        assert "gathered in this process" in train.workers_decision and "2 workers would only copy" in train.workers_decision
    elif case.startswith("memory+transform"):
        assert train.num_workers == 2 and train.persistent_workers == (case == "memory+transform")
        assert "2 workers run the transform" in train.workers_decision
        assert valid.num_workers == 0  # valid has no transform
    else:
        assert train.num_workers == valid.num_workers == 2
        assert ("decode each batch" if case == "decode per batch" else "from the memory-mapped disk cache") in \
            train.workers_decision
    for _ in range(2):  # two epochs: persistent workers are reused for the second
        for a, b in zip(loaders, plain):
            assert torch.equal(epoch_images(a), epoch_images(b))
    assert plain[0].workers_decision == "no workers: batches are made in this process"


def test_make_loader_decodes_with_its_workers_before_it_gathers_in_this_process(tiny_data, monkeypatch):
    from loaders import make_loader
    decodes = []
    real = DecodedImages._decode_into
    monkeypatch.setattr(DecodedImages, "_decode_into",
                        lambda self, out, num_workers, progress: decodes.append(num_workers) or
                        real(self, out, num_workers, progress))
    ds = CsvImageDataset(tiny_data / "mnist_train.csv", tiny_data / "mnist_train")  # wrapped in a DecodedImages
    loader = make_loader(ds, 8, shuffle=True, drop_last=True, seed=0, loader_kwargs={"num_workers": 2})
    assert decodes == [2] and loader.num_workers == 0  # decoded once, by the workers, when the loader was made
    assert sum(len(y) for _, y in loader) == 40 and decodes == [2]


def test_sampler_takes_rank_and_world_size_from_the_process_group(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                                         world_size=1)
    try:
        sampler = EpochBatchSampler(10, 4, shuffle=False, drop_last=True)
        assert (sampler.rank, sampler.world_size) == (0, 1)
    finally:
        torch.distributed.destroy_process_group()
    assert EpochBatchSampler(10, 4, shuffle=False, drop_last=True, rank=1, world_size=2).rank == 1


def test_folder_layout_is_what_make_subset_writes(tiny_data):
    import loaders
    import make_subset

    assert make_subset.SPLITS == loaders.SPLITS  # make_subset.py imports no sibling: a pinned copy
    assert make_subset.TEMP_TAG == loaders.TEMP_TAG  # the temporaries' tag that clean-ups look for
    import plot
    assert plot.TEMP_TAG == loaders.TEMP_TAG  # plot.py's figures too
    for csv, img_dir, split in folder_layout(tiny_data):
        assert csv.is_file() and img_dir.is_dir() and split is None
    assert sorted(p.name for p in tiny_data.iterdir() if not p.name.startswith(".")) == sorted(
        name for csv, img_dir, _ in folder_layout(tiny_data) for name in (csv.name, img_dir.name))


def test_a_transform_runs_on_one_intra_op_thread_and_the_callers_threads_come_back(tiny_data):
    seen = []

    def recording(image: torch.Tensor) -> torch.Tensor:  # --augment's small ops waited on each other across threads
        seen.append(torch.get_num_threads())
        return roll(image)

    def failing(image: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("a broken transform")

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train, _, _ = get_dataloaders(8, tiny_data, seed=3, train_transforms=recording)
        assert sum(len(y) for _, y in train) == 40 and train.dataset[0][0].shape == (1, 28, 28)
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
        broken = CsvImageDataset(tiny_data / "mnist_train.csv", tiny_data / "mnist_train", failing)
        with pytest.raises(RuntimeError, match="a broken transform"):
            broken[0]
        assert torch.get_num_threads() == 2  # given back after an error too
    finally:
        torch.set_num_threads(threads)


def _first_of_each(samples):  # a collate_fn of a user's: the loaders hand it (image, label) samples
    return torch.stack([image for image, _ in samples]), torch.tensor([label for _, label in samples])


def _no_op(worker_id: int) -> None:
    pass


def test_a_users_collate_fn_or_worker_init_fn_keeps_the_workers_and_worker_only_options_go_with_them(
        tiny_data, tmp_path, monkeypatch):
    import shutil

    import loaders as loaders_module
    from loaders import make_loader
    collated = get_dataloaders(8, tiny_data, seed=3, loader_kwargs={"num_workers": 2, "collate_fn": _first_of_each})
    assert collated[0].num_workers == 2 and "2 workers run your collate_fn" in collated[0].workers_decision
    initialised = get_dataloaders(8, tiny_data, seed=3, loader_kwargs={"num_workers": 2, "worker_init_fn": _no_op})
    assert initialised[0].num_workers == 2 and "your worker_init_fn" in initialised[0].workers_decision
    plain = get_dataloaders(8, tiny_data, seed=3)
    for a, b, c in zip(collated, initialised, plain):
        expected = epoch_images(c)  # each iteration plays the next epoch: one of each loader
        assert torch.equal(epoch_images(a), expected) and torch.equal(epoch_images(b), expected)
    timed = get_dataloaders(8, tiny_data, seed=3, loader_kwargs={"num_workers": 2, "timeout": 5})
    assert timed[0].num_workers == 0 and timed[0].timeout == 0  # torch refuses a timeout without workers
    assert torch.equal(epoch_images(timed[1]), epoch_images(plain[1]))
    # Over the memory budget, make_loader on its own fills the disk cache that its sentence names.
    usage = type(shutil.disk_usage(tmp_path))
    monkeypatch.setattr(loaders_module.shutil, "disk_usage", lambda path: usage(100 * 2**30, 10 * 2**30, 90 * 2**30))
    ds = DecodedImages(CsvImageDataset(tiny_data / "mnist_train.csv", tiny_data / "mnist_train"), cache_mb=0.001,
                       cache_dir=tmp_path / "c")
    loader = make_loader(ds, 8, shuffle=False, drop_last=False, seed=0, loader_kwargs={"num_workers": 2})
    assert "from the memory-mapped disk cache" in loader.workers_decision
    assert len(list((tmp_path / "c").glob("*.npy"))) == 1 and ds.cache_file is not None


def test_the_loaders_folder_lock_is_make_subsets_and_write_atomic_leaves_old_or_new(tmp_path):
    """train.py takes a results folder's lock from loaders.py; make_subset.py keeps its own copy (it is copied
    alone): the two behave alike, sentences and all."""
    import os

    import loaders
    import make_subset
    seen = []
    for module in (loaders, make_subset):
        folder = tmp_path / module.__name__
        folder.mkdir()
        fd, again = (module.open_lock(folder / ".lock", "pass another --results-dir") for _ in range(2))
        try:
            assert module.lock_or_holder(fd) is None  # taken, with this process's id written in
            assert module.lock_or_holder(again) == str(os.getpid())  # a second taker is told the holder
        finally:
            os.close(fd)
            os.close(again)
        os.symlink(folder / "elsewhere", folder / ".link")
        os.link(folder / ".lock", folder / ".hard")
        for planted in (".link", ".hard"):
            with pytest.raises(module.LockFileError) as caught:
                module.open_lock(folder / planted, "pass another --results-dir")
            seen.append(str(caught.value).replace(str(folder), "FOLDER"))
    assert seen[:2] == seen[2:] and "symbolic link" in seen[0] and "2 names (hard links)" in seen[1]
    target = tmp_path / "out" / "metrics.csv"
    target.parent.mkdir()
    loaders.write_atomic(target, b"old")
    with pytest.raises(TypeError):
        loaders.write_atomic(target, "not bytes")  # fails half-way: the old file stays, no temporary is left
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["metrics.csv"]
    loaders.write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(target.parent) == ["metrics.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # a new file's mode, not mkstemp's 0600
