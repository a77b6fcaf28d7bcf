"""Our datasets and loaders with torch's own tools, as torchvision's datasets work with them: plain
DataLoaders with workers, random_split / Subset / ConcatDataset, samplers, collate_fn, ImageFolder's
attributes, a loader sent to a spawned process."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
import torch
from torch.utils.data import (ConcatDataset, DataLoader, DistributedSampler, Subset, WeightedRandomSampler,
                              default_collate, random_split)

import dataset
from conftest import write_csv, write_png
from dataset import CsvImageDataset
from loaders import DecodedImages, EpochBatchSampler, loaders_from_datasets, make_loader


@pytest.fixture
def numbered(tmp_path):
    """300 gray 4x4 PNGs whose pixel (0, 0) and (0, 1) spell their row number; labels i % 3."""
    rows = ["File Name,Class Label"]
    for i in range(300):
        pixels = np.zeros((4, 4), dtype=np.uint8)
        pixels[0, 0], pixels[0, 1] = i % 256, i // 256
        write_png(tmp_path / "img" / f"{i:03d}.png", pixels)
        rows.append(f"{i:03d}.png,{i % 3}")
    return write_csv(tmp_path / "labels.csv", "\n".join(rows) + "\n"), tmp_path / "img"


def row_numbers(images: torch.Tensor) -> list[int]:
    """(B, 1, 4, 4) float [0, 1] images of `numbered` -> their row numbers."""
    pixels = torch.round(images[:, 0, 0, :2] * 255).long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


def count_decodes(monkeypatch, tmp_path):
    """Make every decode, in this process or a forked worker, append a line to a file; returns
    a function that counts them."""
    log = tmp_path / "decodes.log"
    real = dataset.decode_image

    def counted(*args, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset, "decode_image", counted)
    return lambda: len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="counts decodes through fork")
def test_a_plain_dataloader_with_workers_decodes_each_item_once_not_the_dataset_per_worker(numbered, tmp_path,
                                                                                           monkeypatch):
    decodes = count_decodes(monkeypatch, tmp_path)
    plain = CsvImageDataset(*numbered)  # decodes each item it is asked for, in any process
    assert sorted(i for images, _ in DataLoader(plain, batch_size=32, num_workers=2) for i in row_numbers(images)) \
        == list(range(300)) and decodes() == 300
    ds = DecodedImages(plain)  # not preloaded: a worker decodes its items, it does not fill a cache of its own
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=2)
    for epoch in (1, 2):
        seen = [i for images, _ in loader for i in row_numbers(images)]
        assert sorted(seen) == list(range(300))
        assert decodes() == 300 + 300 * epoch  # each item once per epoch read (it was 300 per worker)
    assert ds._cache is None  # no worker's copy of the pixels came back, and none is held here
    ds.preload()  # the fastest way: decode once here, before the workers start; they share it
    assert decodes() == 1200
    assert sorted(i for images, _ in loader for i in row_numbers(images)) == list(range(300))
    assert decodes() == 1200


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="counts decodes through fork")
def test_workers_map_a_disk_cache_file_that_exists_instead_of_decoding(numbered, tmp_path, monkeypatch):
    DecodedImages(CsvImageDataset(*numbered), cache_dir=tmp_path / "cache").preload()  # an earlier run filled it
    decodes = count_decodes(monkeypatch, tmp_path)
    ds = DecodedImages(CsvImageDataset(*numbered), cache_dir=tmp_path / "cache")
    seen = [i for images, _ in DataLoader(ds, batch_size=50, num_workers=2) for i in row_numbers(images)]
    assert seen == list(range(300)) and decodes() == 0


def test_random_split_subsets_and_concat_go_through_the_loaders(numbered):
    ds = CsvImageDataset(*numbered)
    train, valid, test = random_split(ds, [0.8, 0.1, 0.1], generator=torch.Generator().manual_seed(0))
    loaders = loaders_from_datasets(train, valid, test, batch_size=16, eval_batch_size=7, seed=1)
    epoch = [i for images, _ in loaders[0] for i in row_numbers(images)]
    assert len(epoch) == 240 and set(epoch) <= set(train.indices)  # 240 // 16 full batches
    for subset, loader in zip((valid, test), loaders[1:]):
        got = [(i, int(label)) for images, labels in loader for i, label in zip(row_numbers(images), labels)]
        assert got == [(i, i % 3) for i in subset.indices]  # in order, every one, with its label
    nested = Subset(ConcatDataset([Subset(ds, [5, 6]), CsvImageDataset(*numbered)]), [1, 0, 300, 2])
    images, labels = next(iter(make_loader(nested, 4, shuffle=False, drop_last=False, seed=0)))
    assert row_numbers(images) == [6, 5, 298, 0] and labels.tolist() == [0, 2, 1, 0]


def test_a_dataset_the_loaders_cannot_fetch_from_is_one_sentence():
    class Other(torch.utils.data.Dataset):
        def __len__(self):
            return 3

    with pytest.raises(TypeError, match="Subset or ConcatDataset of them.*got Other.*torch's DataLoader"):
        make_loader(Other(), 2, shuffle=False, drop_last=False, seed=0)


def test_weighted_and_distributed_samplers_over_the_dataset(numbered):
    ds = CsvImageDataset(*numbered)
    weights = torch.tensor([1.0 if label == 0 else 0.0 for label in ds.targets])
    sampler = WeightedRandomSampler(weights, 64, generator=torch.Generator().manual_seed(0))
    labels = torch.cat([labels for _, labels in DataLoader(ds, batch_size=16, sampler=sampler)])
    assert len(labels) == 64 and set(labels.tolist()) == {0}
    shards = [[i for images, _ in DataLoader(ds, batch_size=16, sampler=DistributedSampler(
        ds, num_replicas=2, rank=r, shuffle=True, seed=3)) for i in row_numbers(images)] for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(300))


@pytest.mark.parametrize("option", ["shuffle", "sampler", "batch_size", "drop_last"])
def test_options_the_loaders_set_themselves_are_refused_with_a_sentence(numbered, option):
    ds = CsvImageDataset(*numbered)
    with pytest.raises(ValueError, match=rf"loader_kwargs \['{option}'\]: the loaders set these themselves.*"
                                         "WeightedRandomSampler"):
        loaders_from_datasets(ds, ds, ds, batch_size=8, loader_kwargs={option: True})


def test_collate_fn_gets_samples_as_in_a_plain_dataloader(numbered):
    ds = CsvImageDataset(*numbered)
    received = []

    def collate(samples):
        received.append(samples)
        return default_collate(samples)

    ours = make_loader(ds, 10, shuffle=False, drop_last=False, seed=0, loader_kwargs={"collate_fn": collate})
    plain = DataLoader(ds, batch_size=10, collate_fn=collate)
    for (a_images, a_labels), (b_images, b_labels) in zip(ours, plain):
        assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    image, label = received[0][3]
    assert len(received[0]) == 10 and image.shape == (1, 4, 4) and label == 0 and isinstance(label, int)


def test_samples_and_imgs_unpack_as_in_imagefolder(numbered):
    ds = CsvImageDataset(*numbered)
    path, label = ds.samples[4]
    assert path == os.path.join(str(numbered[1].resolve()), "004.png") and label == 1
    assert ds.imgs[4] == ds.samples[4] and len(ds.samples) == 300 and ds.samples[-1][1] == 299 % 3
    assert ds.rows[4].line == 6 and ds.rows[4].file == "004.png"  # the richer record


def test_the_sampler_is_a_distributed_sampler_that_finds_the_group_when_iterated(monkeypatch):
    import torch.distributed as dist

    sampler = EpochBatchSampler(20, 8, shuffle=True, drop_last=True, seed=1)  # made before the group
    whole = [b.indices.tolist() for b in sampler]
    assert isinstance(sampler, DistributedSampler)  # so that Lightning leaves it as it is
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(dist, "get_rank", lambda rank=rank: rank)
        sampler.set_epoch(0)
        shards.append([b.indices.tolist() for b in sampler])
    assert sampler.num_replicas == 2 and len(sampler) == 2
    for batch, part0, part1 in zip(whole, *shards):
        assert sorted(part0 + part1) == sorted(batch) and len(part0) == len(part1) == 4
    with pytest.raises(ValueError, match="divisible"):
        list(EpochBatchSampler(20, 7, shuffle=True, drop_last=True))


def test_a_loader_goes_to_a_spawned_process(numbered):
    """What Lightning's ddp_spawn does with the loaders: a torch.Generator would not pickle there."""
    ds = CsvImageDataset(*numbered)
    loader = make_loader(ds, 8, shuffle=True, drop_last=True, seed=0)
    process = multiprocessing.get_context("spawn").Process(target=len, args=(loader,))
    process.start()
    process.join(timeout=120)
    assert process.exitcode == 0
    state = loader.generator.get_state()
    import pickle
    assert torch.equal(pickle.loads(pickle.dumps(loader.generator)).get_state(), state)


def test_concat_of_datasets_whose_images_cannot_share_a_batch_is_one_sentence(numbered):
    ds = CsvImageDataset(*numbered)
    for other in (CsvImageDataset(*numbered, image_size=8), CsvImageDataset(*numbered, mode="RGB"),
                  CsvImageDataset(*numbered, pixels="uint8")):
        with pytest.raises(ValueError, match="different shapes or types.*pass the same mode=, image_size="):
            make_loader(ds + other, 8, shuffle=False, drop_last=False, seed=0)


def test_a_random_transform_on_ds_of_a_list_draws_anew_each_call_as_ds_of_i_does(numbered):
    from torchvision.transforms import v2

    plain = CsvImageDataset(*numbered, transform=v2.RandomAffine(degrees=30, translate=(0.3, 0.3)))
    for ds in (plain, DecodedImages(plain)):  # each image decoded now, or from the store: the same draws
        torch.manual_seed(0)
        a, b = ds[[1, 2, 3, 4]][0], ds[[1, 2, 3, 4]][0]
        assert not torch.equal(a, b)  # it was frozen: the same draws every call
        torch.manual_seed(0)
        assert torch.equal(ds[[1, 2, 3, 4]][0], a)  # from the global RNG, so seeded runs repeat
        torch.manual_seed(0)
        assert torch.equal(plain[[1, 2, 3, 4]][0], a)


def test_a_memory_mapped_cache_pickles_as_its_file_not_its_pixels(numbered, tmp_path):
    import pickle

    ds = DecodedImages(CsvImageDataset(*numbered), cache_dir=tmp_path / "cache")
    before = len(pickle.dumps(ds))
    pixels = ds.preload()
    assert pixels is not None and ds.cache_file is not None
    assert len(pickle.dumps(ds)) < before + pixels.numel() // 2  # the pixels went to every spawned worker
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy.preload(), pixels) and "read from the disk cache" in copy.cache_decision
    in_memory = DecodedImages(CsvImageDataset(*numbered))
    in_memory.preload()  # no file to map it from: the pixels themselves go
    assert torch.equal(pickle.loads(pickle.dumps(in_memory))._cache, pixels)
