"""Shapes as they come: --resize squish / crop / pad with --image-size, and --mode RGBA."""

from __future__ import annotations

import csv as csv_module

import numpy as np
import pytest
import torch
from PIL import Image

import dataset as dataset_module
import train
from conftest import write_csv
from dataset import CsvImageDataset, decode_image
from evaluate import model_from_checkpoint, to_input
from loaders import DecodedImages
from make_shapes import make_shapes
from test_reproducibility import assert_same_run


def halves(path, height: int = 4, width: int = 8):
    """A gray image, left half 100 and right half 200 (a wide one by default)."""
    pixels = np.full((height, width), 100, dtype=np.uint8)
    pixels[:, width // 2:] = 200
    Image.fromarray(pixels).save(path)
    return str(path)


# ---- pixels: squish, crop and pad ----------------------------------------------------------------------

def test_a_wide_image_squished_cropped_and_padded_to_exact_pixels(tmp_path):
    wide = halves(tmp_path / "wide.png")  # 4 high, 8 wide
    with Image.open(wide) as im:
        stretched = np.asarray(im.resize((4, 4), Image.Resampling.BILINEAR))
    assert np.array_equal(decode_image(wide, "L", (4, 4)), stretched[None])  # the default: as before
    assert np.array_equal(decode_image(wide, "L", (4, 4), resize="squish"), stretched[None])
    # crop: the short side fits (no scaling here), the centre 4 of the 8 columns are kept
    assert decode_image(wide, "L", (4, 4), resize="crop").tolist() == [[[100, 100, 200, 200]] * 4]
    # pad: the whole image fits 8 wide, centred in 8 high: 2 black rows above and below
    padded = decode_image(wide, "L", (8, 8), resize="pad")[0]
    assert padded[:2].tolist() == [[0] * 8] * 2 and padded[6:].tolist() == [[0] * 8] * 2
    assert padded[2:6].tolist() == [[100] * 4 + [200] * 4] * 4
    tall = halves(tmp_path / "tall.png", height=8, width=4)  # columns 0-1: 100, 2-3: 200
    assert decode_image(tall, "L", (2, 4), resize="crop").tolist() == [[[100, 100, 200, 200]] * 2]
    rgb_pad = decode_image(tall, "RGB", (8, 6), resize="pad")  # 1 black column each side
    assert rgb_pad.shape == (3, 8, 6)
    assert rgb_pad[:, :, 0].max() == rgb_pad[:, :, 5].max() == 0
    assert rgb_pad[0, 0].tolist() == [0, 100, 100, 200, 200, 0]


def test_crop_and_pad_scale_keeping_the_shape(tmp_path):
    wide = halves(tmp_path / "wide.png", height=8, width=16)
    with Image.open(wide) as im:  # Pillow's antialiased shrinks, of the part kept / the whole
        centre = np.asarray(im.crop((4, 0, 12, 8)).resize((4, 4), Image.Resampling.BILINEAR))
        whole = np.asarray(im.resize((4, 2), Image.Resampling.BILINEAR))
    # crop to 4x4: the centre 8 of 16 columns (4 of each half), scaled by 1/2
    cropped = decode_image(wide, "L", (4, 4), resize="crop")[0]
    assert np.array_equal(cropped, centre) and cropped[:, 0].tolist() == [100] * 4
    # pad to 4x4: scaled by 1/4 to 2x4 (H x W), one black row above and one below
    padded = decode_image(wide, "L", (4, 4), resize="pad")[0]
    assert padded[0].tolist() == padded[3].tolist() == [0, 0, 0, 0]
    assert np.array_equal(padded[1:3], whole)
    assert dataset_module.scaled_size((16, 8), (4, 4), "crop") == (8, 4)  # (W, H): covers 4x4
    assert dataset_module.scaled_size((16, 8), (4, 4), "pad") == (4, 2)  # fits inside
    assert dataset_module.scaled_size((1000, 1), (4, 4), "pad") == (4, 1)  # never 0 pixels


def test_crop_and_pad_give_the_size_asked_for_from_any_shape(tmp_path):
    """The kept box is computed without a float's overshoot: odd shapes never fail or miss."""
    for width, height in [(80, 60), (61, 75), (24, 80), (7, 3), (1, 9), (33, 33)]:
        path = tmp_path / f"{width}x{height}.png"
        Image.new("RGB", (width, height), (9, 99, 199)).save(path)
        for size in [(16, 16), (16, 24), (3, 7), (5, 1)]:
            for resize in ("crop", "pad"):
                pixels = decode_image(str(path), "RGB", size, resize=resize)
                assert pixels.shape == (3, *size), (width, height, size, resize)
                if resize == "crop":  # a plain colour stays that colour: no black edge
                    assert pixels[:, size[0] // 2, size[1] // 2].tolist() == [9, 99, 199]
                    assert np.abs(pixels.astype(int) - [[[9]], [[99]], [[199]]]).max() <= 1


def test_a_photo_of_another_shape_in_a_jpeg_is_cropped_after_its_draft(tmp_path):
    """JPEG's draft decodes at a reduced scale: for crop, never below the scaled whole image."""
    photo = np.zeros((400, 800, 3), dtype=np.uint8)
    photo[:, 400:] = 255
    Image.fromarray(photo).save(tmp_path / "p.jpg", quality=95)
    cropped = decode_image(str(tmp_path / "p.jpg"), "RGB", (16, 16), resize="crop")
    assert cropped.shape == (3, 16, 16)
    assert cropped[:, :, :7].max() < 20 and cropped[:, :, 9:].min() > 235  # centre: half and half


# ---- the dataset's keyword, the cache, the check command --------------------------------------------------

def keras_table(root, n: int = 12):
    """Keras's flow_from_dataframe layout: columns filename,class; images of mixed shapes (wide and
    tall, as photos come) in one directory."""
    rows = ["filename,class"]
    rng = np.random.default_rng(0)
    for i in range(n):
        label = ("cat", "dog")[i % 2]
        height, width = ((12, 20), (20, 12), (10, 10))[i % 3]
        pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        pixels[height // 4: 3 * height // 4, width // 4: 3 * width // 4, i % 2] = 250
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / f"{i:03d}.png")
        rows.append(f"{i:03d}.png,{label}")
    return write_csv(root / "train.csv", "\n".join(rows) + "\n")


def test_dataset_resize_keyword_and_its_refusals(tmp_path):
    table = keras_table(tmp_path)
    columns = {"file_column": "filename", "label_column": "class"}
    for resize in ("squish", "crop", "pad"):
        ds = CsvImageDataset(table, tmp_path / "images", mode="RGB", image_size=8, resize=resize,
                             pixels="uint8", **columns)
        assert ds.resize == resize and ds.image_size == (8, 8)
        expected = decode_image(ds.rows[0].path, "RGB", (8, 8), resize=resize)
        assert torch.equal(ds[0][0], torch.from_numpy(expected.copy()))
    with pytest.raises(ValueError, match="resize must be one of"):
        CsvImageDataset(table, tmp_path / "images", image_size=8, resize="fit", **columns)
    with pytest.raises(ValueError, match="goes with image_size"):
        CsvImageDataset(table, tmp_path / "images", resize="crop", **columns)


def test_disk_cache_of_squish_is_not_read_for_crop(tmp_path):
    table = keras_table(tmp_path)
    stores = {}
    for resize in ("squish", "crop", "squish"):
        ds = CsvImageDataset(table, tmp_path / "images", mode="RGB", image_size=8, resize=resize,
                             file_column="filename", label_column="class")
        store = DecodedImages(ds, cache_dir=tmp_path / "cache")
        pixels = store.preload(progress=False)
        expected = np.stack([decode_image(s.path, "RGB", (8, 8), resize=resize) for s in ds.rows])
        assert np.array_equal(pixels.numpy(), expected)  # never the other's pixels
        stores.setdefault(resize, []).append(store)
    squish, again = stores["squish"]
    crop, = stores["crop"]
    assert crop.cache_file != squish.cache_file and again.cache_file == squish.cache_file
    assert crop.cache_decision.endswith("decoded into the disk cache")
    assert again.cache_decision.endswith("read from the disk cache")


def test_check_command_reads_with_resize(tmp_path, capsys):
    table = keras_table(tmp_path)
    argv = [str(table), str(tmp_path / "images"), "--file-column", "filename", "--label-column",
            "class", "--image-size", "8"]
    assert dataset_module.main(argv + ["--resize", "pad"]) == 0
    assert "resized to 8x8 (HxW) by pad" in capsys.readouterr().out
    assert dataset_module.main(argv) == 0
    assert "resized to 8x8 (HxW)\n" in capsys.readouterr().out  # squish: the line as before
    with pytest.raises(SystemExit):
        dataset_module.main(argv[:-2] + ["--resize", "crop"])
    assert "--resize crop goes with --image-size" in capsys.readouterr().err


# ---- RGBA: transparency kept as a 4th channel ------------------------------------------------------------

def test_rgba_keeps_alpha_from_every_source_mode(tmp_path):
    gray = np.array([[0, 100, 200, 255]], dtype=np.uint8)
    rgb = np.zeros((1, 4, 3), dtype=np.uint8)
    rgb[0, 1] = (10, 20, 30)
    alpha = np.array([[255, 0, 128, 255]], dtype=np.uint8)
    deep = np.array([[0, 1000, 65535, 30000]], dtype=np.uint16)
    palette = Image.fromarray(np.array([[0, 1, 2, 3]], dtype=np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    files = {  # name: (image, save options, the alpha expected)
        "L": (Image.fromarray(gray), {}, [255] * 4),
        "L-trns": (Image.fromarray(gray), {"transparency": 100}, [255, 0, 255, 255]),
        "LA": (Image.fromarray(np.dstack([gray, alpha]), "LA"), {}, [255, 0, 128, 255]),
        "P-trns": (palette, {"transparency": 1}, [255, 0, 255, 255]),
        "P-trns-table": (palette, {"transparency": bytes([255, 0, 128, 255])}, [255, 0, 128, 255]),
        "RGB": (Image.fromarray(rgb), {}, [255] * 4),
        "RGB-trns": (Image.fromarray(rgb), {"transparency": (10, 20, 30)}, [255, 0, 255, 255]),
        "RGBA": (Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), {}, [255, 0, 128, 255]),
        "I16": (Image.fromarray(deep), {}, [255] * 4),
        "I16-trns": (Image.fromarray(deep), {"transparency": 1000}, [255, 0, 255, 255]),
        "1": (Image.fromarray(np.array([[0, 1, 0, 1]], dtype=bool)), {}, [255] * 4),
    }
    for name, (image, options, expected) in files.items():
        image.save(tmp_path / f"{name}.png", **options)
        pixels = decode_image(str(tmp_path / f"{name}.png"), "RGBA")
        assert pixels.shape == (4, 1, 4), name
        assert pixels[3, 0].tolist() == expected, name
    assert decode_image(str(tmp_path / "RGBA.png"), "RGBA")[:3, 0, 1].tolist() == [10, 20, 30]
    assert decode_image(str(tmp_path / "I16.png"), "RGBA")[:3, 0, 2].tolist() == [255] * 3  # scaled
    assert decode_image(str(tmp_path / "LA.png"), "RGBA")[0, 0].tolist() == [0, 100, 200, 255]
    assert decode_image(str(tmp_path / "RGBA.png"), "RGB")[:, 0, 1].tolist() == [255] * 3  # over white


def test_rgba_dataset_has_four_channels_and_auto_never_picks_it(tmp_path, capsys):
    rows = ["path,label"]
    for i in range(4):
        pixels = np.zeros((2, 6, 4), dtype=np.uint8)
        pixels[..., 0], pixels[:, :3, 3] = 50 * i, 255  # left half opaque, right half transparent
        Image.fromarray(pixels, "RGBA").save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{i % 2}")
    table = write_csv(tmp_path / "labels.csv", "\n".join(rows) + "\n")
    ds = CsvImageDataset(table, tmp_path, file_column="path", label_column="label", mode="RGBA",
                         pixels="uint8", image_size=(2, 2), resize="crop")
    assert ds.channels == 4 and ds[3][0].shape == (4, 2, 2)
    assert ds[3][0][3].tolist() == [[255, 0], [255, 0]]  # alpha of the centre crop, kept
    assert ds[3][0][0, :, 0].tolist() == [150, 150]
    padded = CsvImageDataset(table, tmp_path, file_column="path", label_column="label",
                             mode="RGBA", pixels="uint8", image_size=(6, 6), resize="pad")
    assert padded[3][0][:, 0].tolist() == [[0] * 6] * 4  # the pad is transparent black
    auto = CsvImageDataset(table, tmp_path, file_column="path", label_column="label", mode="auto")
    assert auto.mode == "RGB" and auto.channels == 3
    argv = [str(table), str(tmp_path), "--file-column", "path", "--label-column", "label"]
    assert dataset_module.main(argv + ["--mode", "RGBA"]) == 0
    assert "4 image(s) with transparency, kept (RGBA)" in capsys.readouterr().out
    assert dataset_module.main(argv) == 0
    assert "4 image(s) with transparency, laid over white" in capsys.readouterr().out


# ---- train.py: the flag, the checkpoint, --predict, --resume, --evaluate -----------------------------------

def keras_run(table, results, *extra, epochs=1):
    return train.main(["--csv", str(table), "--img-dir", str(table.parent / "images"),
                       "--file-column", "filename", "--label-column", "class", "--mode", "RGB",
                       "--image-size", "8", "--epochs", str(epochs), "--batch-size", "4",
                       "--model", "cnn", "--valid-fraction", "0.2", "--test-fraction", "0.2",
                       "--results-dir", str(results), *extra])


def probabilities(checkpoint_path, table, resize: str) -> list[str]:
    """The top class's probability of each image, read as `resize` and predicted by hand."""
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    ds = CsvImageDataset(table, table.parent / "images", file_column="filename", label_column=None,
                         mode="RGB", image_size=8, resize=resize, pixels="uint8")
    model = model_from_checkpoint(checkpoint, checkpoint_path, torch.device("cpu")).eval()
    with torch.no_grad():
        probs = torch.softmax(model(to_input(ds.load_images(range(len(ds))), "cpu")), dim=1)
    return [f"{p:.4f}" for p in probs.max(dim=1).values.tolist()]


def test_checkpoint_records_resize_and_predict_reads_with_it(tmp_path, capsys):
    table = keras_table(tmp_path / "keras")
    keras_run(table, tmp_path / "r", "--resize", "crop")
    assert "resized to 8x8 (HxW) by crop" in capsys.readouterr().out
    path = tmp_path / "r" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["resize"] == checkpoint["config"]["resize"] == "crop"
    out = train.main(["--predict", str(table), "--checkpoint", str(path), "--img-dir",
                      str(table.parent / "images"), "--file-column", "filename",
                      "--label-column", "class", "--results-dir", str(tmp_path / "p")])
    with open(out, newline="", encoding="utf-8") as f:
        predicted = [row["probability"] for row in csv_module.DictReader(f)]
    assert predicted == probabilities(path, table, "crop")
    assert predicted != probabilities(path, table, "squish")  # a check that can fail
    with pytest.raises(SystemExit, match="trained on images read with --resize crop, not pad"):
        train.main(["--predict", str(table), "--checkpoint", str(path), "--img-dir",
                    str(table.parent / "images"), "--file-column", "filename",
                    "--results-dir", str(tmp_path / "p2"), "--resize", "pad"])


def test_a_checkpoint_without_resize_reads_as_squish(tmp_path):
    table = keras_table(tmp_path / "keras")
    keras_run(table, tmp_path / "r")  # squish, the default
    path = tmp_path / "r" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["resize"] == "squish"
    del checkpoint["resize"], checkpoint["config"]["resize"]  # as an earlier version wrote it
    torch.save(checkpoint, path)
    assert train.RunConfig.from_checkpoint(checkpoint["config"], path).resize == "squish"
    out = train.main(["--predict", str(table), "--checkpoint", str(path), "--img-dir",
                      str(table.parent / "images"), "--file-column", "filename",
                      "--results-dir", str(tmp_path / "p")])
    with open(out, newline="", encoding="utf-8") as f:
        predicted = [row["probability"] for row in csv_module.DictReader(f)]
    assert predicted == probabilities(path, table, "squish")


def test_resume_refuses_another_resize_and_evaluate_takes_the_checkpoints(tmp_path, capsys):
    table = keras_table(tmp_path / "keras")
    keras_run(table, tmp_path / "r", "--resize", "pad")
    with pytest.raises(SystemExit, match="trained on images read with --resize pad, not crop"):
        keras_run(table, tmp_path / "r", "--resize", "crop", "--resume", epochs=2)
    with pytest.raises(SystemExit, match="trained on images read with --resize pad, not squish"):
        keras_run(table, tmp_path / "r", "--resize", "squish", "--evaluate")
    capsys.readouterr()
    keras_run(table, tmp_path / "r", "--evaluate")  # no --resize: the checkpoint's
    assert "resized to 8x8 (HxW) by pad" in capsys.readouterr().out
    keras_run(table, tmp_path / "r", "--resume", epochs=2)  # the same: resumed
    assert torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_resize_and_rgba_flag_refusals(tmp_path, capsys):
    table = keras_table(tmp_path / "keras")
    with pytest.raises(SystemExit):
        train.parse_args(["--csv", str(table), "--resize", "crop"])
    assert "--resize crop goes with --image-size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--csv", str(table), "--mode", "RGBA", "--model", "resnet18",
                          "--pretrained"])
    assert "the ImageNet weights take 3 colour channels, not 4" in capsys.readouterr().err


def test_rgba_run_trains_a_four_channel_model(tmp_path):
    table = keras_table(tmp_path / "keras")
    for name in table.parent.joinpath("images").iterdir():  # give every image an alpha channel
        with Image.open(name) as im:
            im.putalpha(200)
            im.save(name)
    keras_run(table, tmp_path / "r", "--mode", "RGBA", "--resize", "pad")
    checkpoint = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert checkpoint["mode"] == "RGBA" and checkpoint["config"]["channels"] == 4
    assert checkpoint["model"]["features.0.0.weight"].shape[1] == 4  # the first conv takes 4


# ---- --augment under crop: a random crop, exact for any --num-workers and after --resume -----------------

def test_random_crop_under_augment_is_exact_across_workers_and_resume(tmp_path):
    csv = make_shapes(tmp_path / "shapes", per_class=8)  # 24 photos, 20 x 24 to 80 x 80 pixels
    run = ["--csv", str(csv), "--file-column", "path", "--label-column", "label", "--mode", "RGB",
           "--image-size", "16", "--resize", "crop", "--augment", "--batch-size", "8",
           "--seed", "4", "--no-disk-cache"]  # 18 to 20 train images (as drawn): 2 batches an epoch

    def crop_run(results, *extra, epochs=2):
        return train.main([*run, "--epochs", str(epochs), "--results-dir", str(tmp_path / results),
                           *extra])

    crop_run("full")
    crop_run("workers", "--num-workers", "2")
    assert_same_run(tmp_path / "full", tmp_path / "workers")
    crop_run("cut", epochs=1)
    torch.manual_seed(99)
    crop_run("cut", "--resume")
    assert_same_run(tmp_path / "full", tmp_path / "cut")
    loss = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["history"]
    crop_run("plain", "--resize", "squish")  # a check that can fail: another resize, other bits
    other = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["history"]
    assert loss["minibatch_loss"] != other["minibatch_loss"]


def test_augmentation_under_crop_crops_at_random_and_keeps_the_size():
    image = torch.arange(3 * 16 * 16, dtype=torch.int64).remainder(251).to(torch.uint8)
    image = image.reshape(3, 16, 16)
    crop = train.augmentation("crop", (16, 16))
    outs = []
    for seed in range(4):
        torch.manual_seed(seed)
        outs.append(crop(image))
    assert all(out.shape == (3, 16, 16) and out.dtype == torch.uint8 for out in outs)
    assert len({tuple(out.flatten().tolist()) for out in outs}) == 4
    torch.manual_seed(0)
    assert torch.equal(crop(image), outs[0])  # the same seed, the same crop
    torch.manual_seed(0)
    assert not torch.equal(train.augmentation("squish", (16, 16))(image), outs[0])


def test_evaluate_reads_images_at_the_checkpoints_size_when_image_size_is_left_out(tmp_path, capsys):
    """Photos of mixed sizes trained at --image-size 8: --evaluate without it reads them at 8x8, the size
    the model takes (the checkpoint says it), instead of refusing every image not of the commonest size."""
    table = keras_table(tmp_path / "keras")
    keras_run(table, tmp_path / "r")
    trained = capsys.readouterr().out
    history = train.main(["--csv", str(table), "--img-dir", str(table.parent / "images"), "--file-column",
                          "filename", "--label-column", "class", "--mode", "RGB", "--valid-fraction", "0.2",
                          "--test-fraction", "0.2", "--results-dir", str(tmp_path / "r"), "--evaluate"])
    said = capsys.readouterr().out
    assert f"Test accuracy: {history.test_acc:.2f}%" in said
    assert f"Test accuracy: {history.test_acc:.2f}%" in trained  # the model as trained, on the same images
    assert (tmp_path / "r" / "per_class.csv").is_file()
