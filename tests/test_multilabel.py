"""Several labels per image (issue 31 point 1): fastai's Planet layout, a CSV `image_name,tags`
with space-separated tags and the images in train-jpg/<image_name>.jpg."""
import numpy as np
import pytest
import torch
from PIL import Image

from dataset import CsvImageDataset
from dataset import main as check_main

TAGS = ["clear", "haze", "road", "water"]  # each lights one 4x4 quadrant of an 8x8 image


def planet(tmp_path, n=40, seed=0, empty_row=True):
    """train_v2.csv (image_name,tags) and train-jpg/; row i's tags drawn at random (seeded), its
    image bright where its tags are. Row 1's cell is empty: an image with no tags."""
    rng = np.random.default_rng(seed)
    (tmp_path / "train-jpg").mkdir()
    lines = ["image_name,tags"]
    for i in range(n):
        tags = [t for t in TAGS if rng.random() < 0.5]
        if i == 1 and empty_row:
            tags = []
        pixels = np.zeros((8, 8), dtype=np.uint8)
        for t in tags:
            k = TAGS.index(t)
            pixels[4 * (k // 2):4 * (k // 2) + 4, 4 * (k % 2):4 * (k % 2) + 4] = 255
        Image.fromarray(pixels).save(tmp_path / "train-jpg" / f"train_{i}.jpg", quality=95)
        lines.append(f"train_{i},{' '.join(tags)}")
    (tmp_path / "train_v2.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "train_v2.csv"


def test_multi_hot_targets_and_classes(tmp_path):
    csv = tmp_path / "t.csv"
    for name in "abc":
        Image.new("L", (2, 2)).save(tmp_path / f"{name}.png")
    csv.write_text("file,tags\na.png, cat | outdoor \nb.png,dog|cat\nc.png,\n")
    ds = CsvImageDataset(csv, file_column="file", label_column="tags", label_delim="|")
    assert ds.classes == ["cat", "dog", "outdoor"]
    image, target = ds[0]
    assert target.dtype == torch.float32 and target.tolist() == [1.0, 0.0, 1.0]
    assert ds[1][1].tolist() == [1.0, 1.0, 0.0]
    assert ds[2][1].tolist() == [0.0, 0.0, 0.0]  # an empty cell: no tags, not an error
    images, targets = ds[[0, 1, 2]]
    assert targets.shape == (3, 3) and targets.dtype == torch.float32
    assert targets[1].tolist() == [1.0, 1.0, 0.0]


def test_planet_layout(tmp_path):
    csv = planet(tmp_path)
    ds = CsvImageDataset(csv, tmp_path / "train-jpg", file_column="image_name",
                         label_column="tags", file_suffix=".jpg", label_delim=" ")
    assert ds.classes == TAGS
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    for i, (_, tags) in enumerate(rows):
        assert ds[i][1].tolist() == [float(t in tags.split()) for t in TAGS]
    assert ds[1][1].sum() == 0
    loader = torch.utils.data.DataLoader(ds, batch_size=16)
    images, targets = next(iter(loader))
    assert images.shape == (16, 1, 8, 8) and targets.shape == (16, 4)


def test_unknown_tag_with_classes_given_is_a_bad_row(tmp_path):
    for name in "ab":
        Image.new("L", (2, 2)).save(tmp_path / f"{name}.png")
    csv = tmp_path / "t.csv"
    csv.write_text("file,tags\na.png,cat\nb.png,cat bird\n")
    with pytest.warns(UserWarning, match="not among the classes"):
        ds = CsvImageDataset(csv, file_column="file", label_column="tags", label_delim=" ",
                             classes=["cat", "dog"], skip_bad_rows=True)
    assert len(ds) == 1 and ds.problems[0][0] == 3 and "'bird'" in ds.problems[0][2]


def test_check_command_prints_tags_per_class(tmp_path, capsys):
    csv = planet(tmp_path)
    status = check_main([str(csv), str(tmp_path / "train-jpg"), "--file-column", "image_name",
                         "--label-column", "tags", "--file-suffix", ".jpg", "--label-delim", " "])
    out = capsys.readouterr().out
    assert status == 0, out
    ds = CsvImageDataset(csv, tmp_path / "train-jpg", file_column="image_name",
                         label_column="tags", file_suffix=".jpg", label_delim=" ")
    counts = ds.rows.multi_hot.sum(0).tolist()
    assert "4 classes" in out
    assert "tags per class: " + ", ".join(f"{t}: {n}" for t, n in zip(TAGS, counts)) in out
