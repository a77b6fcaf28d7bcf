"""Your own images: any CSV layout, sizes and formats, exact augmentation, no silently wrong data."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import dataset as dataset_module
import train
from conftest import ROOT, write_csv, write_png
from dataset import CsvImageDataset, DatasetError, ImageLoadError, decode_image
from loaders import DecodedImages, get_dataloaders, get_dataloaders_from_split_csv, make_datasets, split_csv
from make_shapes import make_shapes


def images_of(loader) -> torch.Tensor:
    return torch.cat([x for x, _ in loader])


# ---- pixels read right -------------------------------------------------------------------------------

def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # Pillow's 16-bit gray mode
    assert decode_image(str(tmp_path / "deep.png"), "L").tolist() == [[[0, 1, 128, 255]]]
    assert decode_image(str(tmp_path / "deep.png"), "RGB")[:, 0, 2].tolist() == [128, 128, 128]


def test_float_and_32_bit_integer_images_are_scaled_by_their_range_or_refused_by_name(tmp_path, capsys):
    """Float 0..1 is scaled by 255, float or 32-bit integer 0..255 taken as it is (Pillow's own
    reading), each to within half a grey level; NaN, infinity or another range (a resize's
    overshoot too) are refused with the file and its CSV line."""
    images = {"unit.tif": np.array([[0, 0.25, 0.5, 1]], dtype=np.float32),
              "levels.tif": np.array([[0, 1.5, 100.4, 255]], dtype=np.float32),
              "flat.tif": np.full((1, 4), 0.5, dtype=np.float32),
              "int.tif": np.array([[0, 1, 100, 255]], dtype=np.int32),
              "noise.tif": np.array([[-1e-7, 0.5, 1.0000001, 1]], dtype=np.float32),
              "nan.tif": np.array([[0, np.nan, 0.5, 1]], dtype=np.float32),
              "wide.tif": np.array([[-1, 0, 300, 2]], dtype=np.float32),
              "deep.tif": np.array([[0, 1, 4095, 2]], dtype=np.int32),
              "overshoot.tif": np.array([[0, 0.5, 1.2, 1]], dtype=np.float32)}
    for name, values in images.items():
        Image.fromarray(values).save(tmp_path / name)
    for name, mode in (("unit.tif", "F"), ("int.tif", "I")):
        with Image.open(tmp_path / name) as im:
            assert im.mode == mode
    pixels = {name: decode_image(str(tmp_path / name), "L")[0, 0].tolist() for name in list(images)[:5]}
    assert pixels == {"unit.tif": [0, 64, 128, 255], "levels.tif": [0, 2, 100, 255],
                      "flat.tif": [128] * 4, "int.tif": [0, 1, 100, 255], "noise.tif": [0, 128, 255, 255]}
    csv = write_csv(tmp_path / "x.csv", "File Name,Class Label\n" + "".join(f"{n},0\n" for n in images))
    assert dataset_module.main([str(csv), str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "line 7: 'nan.tif': cannot decode the image: float pixels include NaN or infinity" in out
    assert "line 8: 'wide.tif': cannot decode the image: float pixels from -1 to 300;" in out
    assert "line 9: 'deep.tif': cannot decode the image: integer pixels from 0 to 4095;" in out
    assert "line 10: 'overshoot.tif': cannot decode the image: float pixels from 0 to 1.2; expected" in out
    assert "4 bad row(s) out of 9" in out and "OK" not in out


def test_16_bit_gray_as_pillow_opens_it_keeps_its_scaling(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    for name in ("deep.pgm", "deep.tif"):  # Pillow opens 16-bit PGM as "I", 16-bit TIFF as "I;16"
        Image.fromarray(values).save(tmp_path / name)
        assert decode_image(str(tmp_path / name), "L").tolist() == [[[0, 1, 128, 255]]]


def test_a_cielab_tiff_is_refused_not_read_in_other_colours(tmp_path):
    Image.new("LAB", (2, 1), (50, 0, 0)).save(tmp_path / "lab.tif")  # mid gray, which Pillow makes blue
    with pytest.raises(ValueError, match=r"CIELab colours \(Pillow mode LAB\) are not read: save it as RGB"):
        decode_image(str(tmp_path / "lab.tif"), "RGB")


def test_a_16_bit_png_with_a_transparent_gray_is_laid_over_the_background(tmp_path):
    Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)).save(tmp_path / "t.png", transparency=257)
    with Image.open(tmp_path / "t.png") as im:
        assert im.mode == "I;16" and im.info["transparency"] == 257
    assert decode_image(str(tmp_path / "t.png"), "L").tolist() == [[[0, 255, 128, 255]]]  # white
    black = decode_image(str(tmp_path / "t.png"), "RGB", background=(0, 0, 0))
    assert black[:, 0, 1].tolist() == [0, 0, 0] and black[:, 0, 2].tolist() == [128, 128, 128]


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white: landscape as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view", as phones write it
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = decode_image(str(tmp_path / "phone.jpg"), "L")
    assert upright.shape == (1, 40, 20)  # portrait, as every viewer shows it
    assert upright[0, :18].mean() > 200 and upright[0, 22:].mean() < 50  # white now on top
    write_csv(tmp_path / "x.csv", "File Name,Class Label\nphone.jpg,0\n")
    assert CsvImageDataset(tmp_path / "x.csv", tmp_path, pixels="uint8").image_size == (40, 20)


def test_image_size_resizes_mixed_sizes_before_the_cache(tmp_path):
    csv = make_shapes(tmp_path, per_class=4)
    ds = DecodedImages(CsvImageDataset(csv, tmp_path, file_column="path", label_column="label", mode="RGB",
                                       image_size=(12, 16), pixels="uint8"))
    assert ds.classes == ["circle", "square", "triangle"]
    assert "12 x 3x12x16 uint8" in ds.cache_decision and ds.preload().shape == (12, 3, 12, 16)
    images, labels = ds[np.arange(12)]
    assert images.shape == (12, 3, 12, 16) and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    with Image.open(ds.rows[0].path) as im:  # antialiased bilinear, as Pillow resizes
        expected = np.array(im.convert("RGB").resize((16, 12), Image.Resampling.BILINEAR))
    assert torch.equal(images[0], torch.from_numpy(expected).permute(2, 0, 1))


def test_without_image_size_mixed_sizes_are_an_error_that_says_how_to_fix_it(tmp_path):
    csv = make_shapes(tmp_path, per_class=2)
    ds = DecodedImages(CsvImageDataset(csv, tmp_path, file_column="path", label_column="label"))
    with pytest.raises(ImageLoadError, match=r"line 3: 'images/circle/001.jpg'.*image_size="):
        ds.preload()


# ---- labels and rows read right -------------------------------------------------------------------------

def test_text_labels_with_surrounding_spaces_are_one_class(small_folder):
    csv = write_csv(small_folder / "x.csv", "File Name,Class Label\na.png,cat\nb.png, cat\nc.png,cat \nd.png,dog\n")
    ds = CsvImageDataset(csv, small_folder / "img")
    assert ds.classes == ["cat", "dog"] and ds.targets == [0, 0, 0, 1]


@pytest.mark.parametrize("typo", ["1000000", "99999999999"])
def test_an_integer_label_far_above_the_rest_is_an_error_unless_num_classes_allows_it(small_folder, typo):
    rows = f"a.png,0\nb.png,1\nc.png,2\nd.png,{typo}\ne.png,1\n"
    csv = write_csv(small_folder / "x.csv", "File Name,Class Label\n" + rows)
    what = "is far above the others" if int(typo) < 2**31 else r"is too large \(expected a class index below 2\*\*31"
    with pytest.raises(DatasetError, match=rf"line 5: 'd.png': label {typo} {what}"):
        CsvImageDataset(csv, small_folder / "img")
    if typo == "1000000":
        assert len(CsvImageDataset(csv, small_folder / "img", num_classes=1000001).classes) == 1000001
    few = write_csv(small_folder / "y.csv", "File Name,Class Label\na.png,0\nb.png,7\n")
    assert CsvImageDataset(few, small_folder / "img").classes == [str(i) for i in range(8)]  # 7 < 10


def test_the_same_file_twice_is_an_error_with_two_labels_and_a_warning_with_one(small_folder):
    csv = write_csv(small_folder / "x.csv", "File Name,Class Label\na.png,0\nb.png,1\n./a.png,1\n")
    with pytest.raises(DatasetError, match=r"line 4: './a.png': the same file as line 2, with another label"):
        CsvImageDataset(csv, small_folder / "img")
    csv = write_csv(small_folder / "x.csv", "File Name,Class Label\na.png,0\nb.png,1\na.png,0\nb.png,1\n")
    with pytest.warns(UserWarning, match="2 row"):
        ds = CsvImageDataset(csv, small_folder / "img")
    assert [s.file for s in ds.rows] == ["a.png", "b.png"]


def test_the_same_file_in_two_splits_is_an_error(small_folder):
    rows = "a.png,0,train\nb.png,1,train\nc.png,0,valid\nd.png,1,test\n./a.png,0,test\n"
    csv = write_csv(small_folder / "all.csv", "File Name,Class Label,split\n" + rows)
    with pytest.raises(DatasetError, match=r"'./a.png': in train \(.*all.csv, line 2\) and in test \(.*line 6\)"):
        get_dataloaders_from_split_csv(csv, small_folder / "img", batch_size=1)
    for split, text in (("train", "a.png,0\nb.png,1\n"), ("valid", "c.png,0\n"), ("test", "d.png,1\na.png,0\n")):
        write_csv(small_folder / f"{split}.csv", "File Name,Class Label\n" + text)
    sources = [(small_folder / f"{s}.csv", small_folder / "img", None) for s in ("train", "valid", "test")]
    with pytest.raises(DatasetError, match=r"(?s)1 file\(s\) in two splits.*'a.png': in train \(.*train.csv, line 2\)"):
        make_datasets(sources)


def test_a_csv_that_is_not_utf8_says_which_encoding_to_pass_and_a_bom_still_works(small_folder):
    (small_folder / "latin.csv").write_bytes("File Name,Class Label\na.png,caf\xe9\nb.png,th\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin.csv: not utf-8 text .*--encoding latin-1"):
        CsvImageDataset(small_folder / "latin.csv", small_folder / "img")
    ds = CsvImageDataset(small_folder / "latin.csv", small_folder / "img", encoding="latin-1")
    assert ds.classes == ["café", "thé"]
    (small_folder / "bom.csv").write_bytes("\ufeffFile Name,Class Label\na.png,1\n".encode("utf-8"))
    assert CsvImageDataset(small_folder / "bom.csv", small_folder / "img").targets == [1]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_a_utf16_or_utf32_csv_is_read_by_its_byte_order_mark(small_folder, encoding, capsys):
    """Excel's "Unicode Text" export: UTF-16 LE with a byte order mark, tab-separated."""
    text = "\ufeffFile Name\tClass Label\na.png\tcaf\xe9\nb.png\tth\xe9\nzzz.png\tth\xe9\n"
    csv = small_folder / "unicode.txt"
    csv.write_bytes(text.encode(encoding))
    with pytest.warns(UserWarning, match="line 4: 'zzz.png'"):
        ds = CsvImageDataset(csv, small_folder / "img", skip_bad_rows=True)
    assert ds.classes == ["caf\xe9", "th\xe9"] and ds.targets == [0, 1] and ds.problems[0][0] == 4
    assert dataset_module.csv_separator(csv) == "\t"  # and --predict's header, as the dataset reads it:
    assert dataset_module.csv_columns(csv) == ["File Name", "Class Label"]
    assert dataset_module.main([str(csv), str(small_folder / "img")]) == 1
    assert "line 4: 'zzz.png': file not found" in capsys.readouterr().out
    write_csv(csv, "File Name,Class Label\na.png,1\n")  # UTF-8, said to be UTF-16: a sentence, no traceback
    with pytest.raises(DatasetError, match=r"unicode.txt: not utf-16 text \(UTF-16 stream does not start with BOM\)"):
        CsvImageDataset(csv, small_folder / "img", encoding="utf-16")
    csv.write_bytes(text[1:].encode("utf-16-le"))  # no mark: not guessed, but named
    with pytest.raises(DatasetError, match=r"\(a NUL byte beside each letter: UTF-16 without a byte order mark\? "
                                           r"Pass encoding='utf-16-le' \(--encoding utf-16-le\), or utf-16-be\)"):
        CsvImageDataset(csv, small_folder / "img")


@pytest.mark.parametrize("separator", [";", "\t"])
def test_semicolon_and_tab_separated_csvs_are_read_by_every_reader(small_folder, tmp_path, separator, capsys):
    """A European spreadsheet's export (';') or a TSV: the dataset, the check command, the split writer,
    train.py --csv and --predict read it; a comma inside a file name needs no quotes then."""
    os.replace(small_folder / "img" / "a.png", small_folder / "img" / "a,1.png")
    rows = [f"{name}{separator}{label}" for name, label in zip(["a,1.png", "b.png", "c.png", "d.png", "e.png",
                                                                 "f.png"], "xxxyyy")]
    csv = write_csv(small_folder / "x.csv", f"File Name{separator}Class Label\n" + "\n".join(rows) + "\n")
    ds = CsvImageDataset(csv, small_folder / "img")
    assert ds.rows[0].file == "a,1.png" and ds.classes == ["x", "y"] and ds.targets == [0, 0, 0, 1, 1, 1]
    assert dataset_module.main([str(csv), str(small_folder / "img")]) == 0
    split = split_csv(csv, tmp_path / "split.csv", valid_fraction=0.34, test_fraction=0.34)
    assert len(pd.read_csv(split)) == 6  # split.csv itself is comma-separated
    train.main(["--csv", str(csv), "--img-dir", str(small_folder / "img"), "--epochs", "1", "--batch-size", "2", "--valid-fraction", "0.34",
                "--test-fraction", "0.34", "--results-dir", str(tmp_path / "r"), "--no-disk-cache"])
    capsys.readouterr()
    train.main(["--predict", str(csv), "--img-dir", str(small_folder / "img"), "--results-dir", str(tmp_path / "p"),
                "--checkpoint", str(tmp_path / "r" / "checkpoint.pt")])
    assert "Predicted 6 images" in capsys.readouterr().out


def test_a_nul_byte_in_a_file_name_is_a_named_row_error(small_folder):
    csv = write_csv(small_folder / "x.csv", "File Name,Class Label\na.png,1\nb\0.png,1\n")
    with pytest.raises(DatasetError, match=r"line 3: .*NUL byte"):
        CsvImageDataset(csv, small_folder / "img")


def test_a_transform_with_a_plain_dataloader_names_an_image_of_another_size(tmp_path):
    for i, size in enumerate([(8, 8), (8, 8), (9, 8), (8, 8)]):
        write_png(tmp_path / "img" / f"{i}.png", np.full(size, i, dtype=np.uint8))
    csv = write_csv(tmp_path / "x.csv", "File Name,Class Label\n" + "".join(f"{i}.png,0\n" for i in range(4)))
    ds = CsvImageDataset(csv, tmp_path / "img", transform=lambda image: image.flip(-1))
    with pytest.raises(ImageLoadError, match=r"x.csv, line 4: '2.png': after the transform .*\(1, 9, 8\)"):
        list(torch.utils.data.DataLoader(ds, batch_size=4))


def test_check_command_reports_the_new_checks(tmp_path, capsys):
    csv = make_shapes(tmp_path, per_class=3)
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "images" / "deep.png")
    with open(csv, "a", encoding="utf-8") as f:
        f.write("images/deep.png,circle\nimages/circle/000.png,circle\n")
    args = [str(csv), str(tmp_path), "--file-column", "path", "--label-column", "label"]
    assert dataset_module.main(args + ["--image-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "1 image(s) 16-bit, scaled to 8 bits" in out and "resized to 16x16" in out
    assert "warning: " in out and "1 row(s) list a file already listed" in out and "OK: no problems" in out
    assert dataset_module.main(args) == 1
    assert "size 40x" not in out and "cannot be batched" in capsys.readouterr().out


# ---- augmentation that stays exact ----------------------------------------------------------------------

def affine():
    from torchvision.transforms import v2

    return v2.RandomAffine(degrees=10, translate=(0.1, 0.1))


def test_augmentation_is_the_same_for_any_worker_count_and_differs_between_epochs(tiny_data):
    plain, valid_plain, _ = get_dataloaders(8, tiny_data, seed=3)
    runs = [get_dataloaders(8, tiny_data, num_workers=workers, seed=3, train_transforms=affine(),
                            loader_kwargs={"persistent_workers": persistent} if workers else None)
            for workers, persistent in ((0, False), (2, False), (2, True))]
    epochs = [[images_of(train) for _ in range(2)] for train, _, _ in runs]
    for other in epochs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(epochs[0], other))
    assert not torch.equal(epochs[0][0], epochs[0][1])  # a new draw every epoch
    assert not torch.equal(epochs[0][0], images_of(plain))  # augmented ...
    train, valid, _ = runs[0]
    assert torch.equal(images_of(valid), images_of(valid_plain))  # ... but valid and test are not
    train.sampler.set_epoch(1)
    assert torch.equal(images_of(train), epochs[0][1])  # an epoch replays: what --resume relies on
    plain_ds = plain.dataset
    assert torch.equal(train.dataset.preload(), plain_ds.preload())  # the cache holds plain pixels


def test_augmentation_leaves_the_global_random_state_alone(tiny_data):
    train, _, _ = get_dataloaders(8, tiny_data, seed=3, train_transforms=affine())
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    images_of(train)
    assert torch.equal(torch.rand(3), expected)


# ---- one command: train.py --csv ------------------------------------------------------------------------

def own_run(csv, results, *extra, epochs=2):
    return train.main(["--csv", str(csv), "--file-column", "path", "--label-column", "label", "--mode", "RGB",
                       "--image-size", "16", "--epochs", str(epochs), "--batch-size", "8", "--seed", "4",
                       "--results-dir", str(results), *extra])


def test_one_command_trains_on_a_labels_csv_of_mixed_images(tmp_path, capsys):
    csv = make_shapes(tmp_path / "shapes", per_class=20)
    history = own_run(csv, tmp_path / "r", "--augment")
    out = capsys.readouterr().out
    assert "Data: 48 train, 6 valid, 6 test images from" in out and "3x16x16" in out
    split = (tmp_path / "r" / "split.csv").read_text(encoding="utf-8").splitlines()
    assert split[0] == "path,label,split" and len(split) == 61
    assert sum(line.endswith(",test") for line in split) == 6  # 2 of each class's 20
    checkpoint = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert checkpoint["classes"] == ["circle", "square", "triangle"]
    assert checkpoint["mode"] == "RGB" and checkpoint["image_size"] == [16, 16]
    assert history.test_acc is not None
    own_run(csv, tmp_path / "again", "--augment", "--seed", "9")  # another training seed ...
    assert (tmp_path / "again" / "split.csv").read_bytes() == (tmp_path / "r" / "split.csv").read_bytes()
    own_run(csv, tmp_path / "other", "--split-seed", "1")  # ... keeps the split; another split seed does not
    assert (tmp_path / "other" / "split.csv").read_bytes() != (tmp_path / "r" / "split.csv").read_bytes()


def test_augmented_runs_are_bit_identical_across_workers_and_resume(tmp_path):
    from test_reproducibility import assert_same_run

    csv = make_shapes(tmp_path / "shapes", per_class=8)
    own_run(csv, tmp_path / "full", "--augment", epochs=3)
    own_run(csv, tmp_path / "workers", "--augment", "--num-workers", "2", epochs=3)
    assert_same_run(tmp_path / "full", tmp_path / "workers")
    own_run(csv, tmp_path / "cut", "--augment", epochs=1)
    torch.manual_seed(99)
    own_run(csv, tmp_path / "cut", "--augment", "--resume", epochs=3)
    assert_same_run(tmp_path / "full", tmp_path / "cut")
    own_run(csv, tmp_path / "plain", epochs=3)  # a check that can fail: without --augment, other bits
    plain = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["history"]["minibatch_loss"]
    assert plain != torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["history"]["minibatch_loss"]


def test_split_column_img_dir_and_the_three_csv_folder_with_column_flags(tmp_path, tiny_data, capsys):
    csv = make_shapes(tmp_path / "shapes", per_class=6)
    text = csv.read_text(encoding="utf-8").splitlines()
    rows = [text[0] + ",part"] + [f"{row},{('train', 'train', 'valid', 'test')[i % 4]}" for i, row in enumerate(text[1:])]
    (tmp_path / "listed.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    own_run(tmp_path / "listed.csv", tmp_path / "r", "--split-column", "part", "--img-dir", str(tmp_path / "shapes"))
    assert not (tmp_path / "r" / "split.csv").exists()
    assert "Data: 10 train, 4 valid, 4 test images from" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train.parse_args(["--csv", str(csv), "--data-dir", str(tiny_data)])
    with pytest.raises(SystemExit):
        train.parse_args(["--split-column", "part"])
    renamed = shutil.copytree(tiny_data, tmp_path / "renamed")
    for split in ("train", "valid", "test"):
        path = renamed / f"mnist_{split}.csv"
        path.write_text(path.read_text().replace("File Name,Class Label", "file,digit"))
    history = train.main(["--data-dir", str(renamed), "--file-column", "file", "--label-column", "digit",
                          "--epochs", "1", "--batch-size", "8", "--results-dir", str(tmp_path / "m")])
    assert len(history.train_acc) == 1


def test_split_csv_keeps_every_row_and_refuses_bad_fractions(tmp_path):
    csv = make_shapes(tmp_path, per_class=10)
    umask = os.umask(0o022)
    try:
        out = split_csv(csv, tmp_path / "s.csv", label_column="label", valid_fraction=0.2, test_fraction=0.3, seed=2)
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644  # a normal file's mode, not mkstemp's 0600
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [line.rsplit(",", 1)[0] for line in lines] == ["path,label"] + csv.read_text().splitlines()[1:]
    assert [sum(line.endswith(s) for line in lines) for s in (",train", ",valid", ",test")] == [15, 6, 9]
    with pytest.raises(ValueError, match="sum below 1"):
        split_csv(csv, tmp_path / "t.csv", label_column="label", valid_fraction=0.5, test_fraction=0.5)
    assert not (tmp_path / "t.csv").exists()


def test_train_py_reports_a_data_error_as_one_sentence_without_a_traceback(tmp_path):
    import subprocess
    import sys

    csv = make_shapes(tmp_path / "shapes", per_class=2)
    run = subprocess.run([sys.executable, str(ROOT / "train.py"), "--csv", str(csv), "--results-dir",
                          str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith("train.py: error: ") and "(--file-column / --label-column / --split-column)" in run.stderr


@pytest.mark.filterwarnings("ignore:.*already listed above")  # expected: each split dedupes its own
def test_a_file_listed_twice_is_drawn_into_one_split_and_into_two_by_a_split_column_is_an_error(tmp_path):
    csv = make_shapes(tmp_path / "shapes", per_class=10)
    lines = csv.read_text(encoding="utf-8").splitlines()
    csv.write_text("\n".join(lines + lines[1:]) + "\n", encoding="utf-8")  # every file twice
    with pytest.warns(UserWarning, match="list a file already listed above"):  # issue 29: drawn once per file
        own_run(csv, tmp_path / "r", epochs=1)
    split = pd.read_csv(tmp_path / "r" / "split.csv")
    split.loc[len(lines) - 1:, "split"] = "test"  # the second listing of each file: all in test now
    split.to_csv(tmp_path / "shapes" / "split.csv", index=False)
    with pytest.raises(DatasetError, match=r"file\(s\) in two splits"):
        own_run(tmp_path / "shapes" / "split.csv", tmp_path / "r2", "--split-column", "split", epochs=1)


def test_check_command_counts_exif_rotated_images(tmp_path, capsys):
    image = Image.fromarray(np.zeros((6, 10, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = 8
    image.save(tmp_path / "turned.jpg", exif=exif)
    image.save(tmp_path / "plain.jpg")
    csv = write_csv(tmp_path / "x.csv", "File Name,Class Label\nturned.jpg,0\nplain.jpg,1\n")
    assert dataset_module.main([str(csv), str(tmp_path), "--image-size", "8"]) == 0
    assert "1 image(s) turned upright by their EXIF orientation" in capsys.readouterr().out


def test_train_takes_num_classes_for_sparse_integer_labels(tmp_path, capsys):
    """Labels 0, 5, ..., 45: far above the 10 distinct ones, so an error that names --num-classes,
    which train.py takes."""
    rows = ["File Name,Class Label"]
    for i in range(60):
        write_png(tmp_path / "img" / f"{i}.png", np.full((4, 4), i * 4, dtype=np.uint8))
        rows.append(f"{i}.png,{(i % 10) * 5}")
    csv = write_csv(tmp_path / "labels.csv", "\n".join(rows) + "\n")
    args = ["--csv", str(csv), "--img-dir", str(tmp_path / "img"), "--epochs", "1", "--batch-size", "8",
            "--no-disk-cache", "--results-dir", str(tmp_path / "r")]
    with pytest.raises(DatasetError, match=r"(?s)far above the others.*--num-classes"):
        train.main(args)
    with pytest.warns(UserWarning, match="36 of the 46 classes have no image"):
        history = train.main(args + ["--num-classes", "46", "--results-dir", str(tmp_path / "r2")])
    assert len(history.train_acc) == 1
    assert torch.load(tmp_path / "r2" / "checkpoint.pt", weights_only=True)["config"]["num_classes"] == 46


def test_split_values_in_any_case_and_the_usual_spellings_and_others_named_with_counts(tmp_path):
    rows = ["File Name,Class Label,split"]
    spellings = ["Train", "training", "TRAIN ", "Valid", "val", "VALIDATION", "dev", "Test", "testing", "train"]
    for i, split in enumerate(spellings * 2):
        write_png(tmp_path / "img" / f"{i}.png", np.full((4, 4), i, dtype=np.uint8))
        rows.append(f"{i}.png,{i % 2},{split}")
    csv = write_csv(tmp_path / "s.csv", "\n".join(rows) + "\n")
    train_loader, valid_loader, test_loader = get_dataloaders_from_split_csv(csv, tmp_path / "img", batch_size=2)
    assert [len(loader.dataset) for loader in (train_loader, valid_loader, test_loader)] == [8, 8, 4]  # every row
    write_csv(csv, "\n".join(rows + ["0b.png,0,holdout", "1b.png,1,holdout", "2b.png,0,Tst", "3b.png,0,"]) + "\n")
    with pytest.raises(DatasetError) as info:
        get_dataloaders_from_split_csv(csv, tmp_path / "img", batch_size=2)
    message = str(info.value)
    assert "s.csv: column 'split' has values that are not a split:" in message
    assert "'holdout' (2 rows, first on line 22), 'Tst' (1 row, first on line 24), '' (1 row, first on line 25)" in message
    assert "valid (val, validation, dev)" in message


# ---- sentences, not tracebacks (issue 18) -------------------------------------------------------

def test_odd_file_names_are_row_errors_or_fine(small_folder):
    long_name = "x" * 300 + ".png"
    write_png(small_folder / "img" / "a:b.png", np.zeros((8, 8), dtype=np.uint8))
    csv = write_csv(small_folder / "odd.csv", f"File Name,Class Label\na.png,0\n{long_name},1\na:b.png,1\n"
                                              "C:/windows/x.png,0\n")
    with pytest.raises(DatasetError) as info:
        CsvImageDataset(csv, small_folder / "img")
    message = str(info.value)
    assert "line 3:" in message and "cannot look at the file (File name too long)" in message
    assert "line 4:" not in message  # a:b.png is a file name on POSIX, not an absolute path
    assert "line 5: 'C:/windows/x.png': absolute path" in message


def test_a_latin1_byte_below_the_header_with_a_drawn_split_is_a_sentence(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_bytes(b"File Name,Class Label\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(10)).encode()
                    + "caf\xe9.png,1\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"l.csv: not utf-8 text .*--encoding latin-1"):
        split_csv(csv, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


def test_predict_with_a_label_outside_the_checkpoints_classes_names_the_row(tiny_data, tmp_path):
    train.main(["--epochs", "1", "--batch-size", "8", "--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "r")])
    first = (tiny_data / "mnist_test.csv").read_text().splitlines()[1].split(",")[0]
    csv = write_csv(tmp_path / "new.csv", f"File Name,Class Label\n{first},12\n")
    with pytest.raises(DatasetError, match=r"line 2: .*label 12 is not one of the classes: expected 0 to 9"):
        train.main(["--predict", str(csv), "--img-dir", str(tiny_data / "mnist_test"),
                    "--results-dir", str(tmp_path / "r")])


def test_resume_with_a_checkpoint_into_an_empty_folder_names_that_checkpoint(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--resume", "--checkpoint", str(tmp_path / "nowhere.pt"), "--results-dir", str(tmp_path / "e")])
    assert f"--resume: no checkpoint at {tmp_path / 'nowhere.pt'}" in capsys.readouterr().err


def test_two_first_runs_at_once_build_the_default_data_once(tmp_path):
    """The second waits for the first's make_subset.py instead of failing with FileExistsError."""
    import subprocess
    import sys

    script = ("import sys; sys.path.insert(0, {root!r}); import train; "
              "train.main(['--epochs', '1', '--results-dir', sys.argv[1], '--no-disk-cache'])").format(root=str(ROOT))
    runs = [subprocess.Popen([sys.executable, "-c", script, f"r{k}"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    outputs = [run.communicate(timeout=240) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-2000:]
    assert sum("Wrote 768 images" in out for out, _ in outputs) == 1
    assert (tmp_path / "r0" / "checkpoint.pt").is_file() and (tmp_path / "r1" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("how", ["symlink farm", "hard links"])
def test_the_same_images_in_train_and_test_under_other_names_are_refused(tmp_path, how):
    """The overlap check compares files (device, inode), not names: links used to pass it."""
    rows = ["File Name,Class Label,split"]
    for i in range(12):
        write_png(tmp_path / "img" / "real" / f"{i}.png", np.full((4, 4), i, dtype=np.uint8))
        rows.append(f"real/{i}.png,{i % 2},{'train' if i < 8 else 'valid'}")
    (tmp_path / "img" / "alias").mkdir()
    for i in range(4):  # train's first four, again, as test
        target, alias = tmp_path / "img" / "real" / f"{i}.png", tmp_path / "img" / "alias" / f"t{i}.png"
        (os.symlink if how == "symlink farm" else os.link)(target, alias)
        rows.append(f"alias/t{i}.png,{i % 2},test")
    csv = write_csv(tmp_path / "s.csv", "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"(?s)4 file\(s\) in two splits.*'alias/t0.png': in train \(.*line 2\) "
                                           r"and in test"):
        get_dataloaders_from_split_csv(csv, tmp_path / "img", batch_size=2)


# ---- --mode auto (issue 20) ----------------------------------------------------------------------

def test_mode_auto_is_gray_for_gray_images_and_the_default_run_is_unchanged(tiny_data, tmp_path, capsys):
    from test_reproducibility import assert_same_run, run
    run(tiny_data, tmp_path / "auto", epochs=1)
    assert "read as L (mode=auto: L, every image is gray)" in capsys.readouterr().out
    run(tiny_data, tmp_path / "L", "--mode", "L", epochs=1)
    assert_same_run(tmp_path / "auto", tmp_path / "L")


def test_mode_auto_is_rgb_when_any_split_has_a_colour_image(tmp_path, capsys):
    img = tmp_path / "img"
    img.mkdir()
    rows = ["File Name,Class Label"]
    for i in range(12):
        gray = Image.fromarray(np.full((8, 8), 20 * i, dtype=np.uint8))
        (gray.convert("P") if i % 3 == 0 else gray).save(img / f"g{i}.png")  # a palette of grays is gray
        rows.append(f"g{i}.png,{'ab'[i % 2]}")
    csv = write_csv(tmp_path / "gray.csv", "\n".join(rows) + "\n")
    ds = CsvImageDataset(csv, img, mode="auto")
    assert (ds.mode, ds.channels, ds.mode_decision) == ("L", 1, "mode=auto: L, every image is gray")
    write_png(img / "colour.png", np.dstack([np.full((8, 8), v, np.uint8) for v in (200, 10, 10)]))
    train_csv = write_csv(tmp_path / "train.csv", "\n".join(rows[:7]) + "\n")
    valid_csv = write_csv(tmp_path / "valid.csv", "\n".join([rows[0], *rows[7:10]]) + "\n")
    test_csv = write_csv(tmp_path / "test.csv", "\n".join([rows[0], *rows[10:], "colour.png,a"]) + "\n")
    datasets = make_datasets([(train_csv, img, None), (valid_csv, img, None), (test_csv, img, None)], {"mode": "auto"})
    assert [ds.channels for ds in datasets] == [3, 3, 3]  # the train split is gray, but not every image
    assert all(ds.mode_decision == "mode=auto: RGB, 'colour.png' is in colour (RGB)" for ds in datasets)
    assert dataset_module.main([str(test_csv), str(img)]) == 0
    assert "(converted to RGB: mode=auto: RGB, 'colour.png' is in colour (RGB))" in capsys.readouterr().out


# ---- JPEGs decoded at the size trained at (issue 21) ---------------------------------------------

def test_a_large_jpeg_is_decoded_at_reduced_scale_within_a_grey_level_of_a_full_decode(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:600, 0:800]
    photo = np.stack([x * 255 // 800, y * 255 // 600, (x + y) % 256], -1) + rng.normal(0, 8, (600, 800, 3))
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(path, quality=90)
    drafts = []
    draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda im, mode, size: (drafts.append(size), draft(im, mode, size))[1])
    ours = decode_image(str(path), "RGB", (32, 48))  # (H, W)
    assert drafts == [(48, 32)]  # asked for the smallest scale not below 48x32 (W, H)
    with Image.open(path) as im:
        full = np.asarray(im.convert("RGB").resize((48, 32), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert ours.shape == full.shape == (3, 32, 48)
    assert np.abs(ours.astype(int) - full.astype(int)).mean() < 1.0
    assert decode_image(str(path), "RGB").shape == (3, 600, 800) and len(drafts) == 1  # no size: no draft


def test_a_large_shrink_of_a_png_is_within_a_grey_level_of_the_exact_resize_and_a_small_one_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:600, 0:800]
    photo = np.stack([x * 255 // 800, y * 255 // 600, (x + y) % 256], -1) + rng.normal(0, 8, (600, 800, 3))
    path = tmp_path / "photo.png"
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(path)
    with Image.open(path) as im:
        im = im.convert("RGB")
        exact = {size: np.asarray(im.resize(size[::-1], Image.Resampling.BILINEAR)).transpose(2, 0, 1)
                 for size in ((32, 48), (300, 400))}
    ours = decode_image(str(path), "RGB", (32, 48))  # a 12.5x shrink: reduced by blocks first
    difference = np.abs(ours.astype(int) - exact[32, 48].astype(int))
    assert 0 < difference.mean() < 1.0  # within a grey level on average; 0 would mean the exact bytes
    assert np.array_equal(decode_image(str(path), "RGB", (300, 400)), exact[300, 400])  # 2x: exact


def test_class_names_that_look_like_typos_are_warned_of_in_training_and_in_the_check(tmp_path, capsys):
    rows = ["File Name,Class Label"]
    names = ["apple"] * 30 + ["banana"] * 30 + ["aple"] + ["Cherry"] * 25 + ["cherry"] * 25
    for i, label in enumerate(names):
        write_png(tmp_path / "img" / f"{i}.png", np.full((8, 8), i % 250, dtype=np.uint8))
        rows.append(f"{i}.png,{label}")
    csv = write_csv(tmp_path / "fruit.csv", "\n".join(rows) + "\n")
    assert dataset_module.main([str(csv), str(tmp_path / "img")]) == 0  # warnings, not errors
    out = capsys.readouterr().out
    assert "warning: class 'aple' has 1 image(s)" in out and "fruit.csv, line 62) where the median class has 25" in out
    assert "warning: classes 'Cherry', 'cherry' differ only in case" in out
    assert "'apple'" not in out.split("classes: ")[-1].split("\n", 1)[1]  # a class of 30 is not named
    with pytest.warns(UserWarning, match="class 'aple' has 1 image"), \
            pytest.warns(UserWarning, match="classes 'Cherry', 'cherry' differ only in case"):
        split_csv(csv, tmp_path / "split.csv", seed=0)
        get_dataloaders_from_split_csv(tmp_path / "split.csv", tmp_path / "img", batch_size=8)
    numbers = write_csv(tmp_path / "n.csv", "File Name,Class Label\n" + "".join(
        f"{i}.png,{0 if i < 60 else 1 if i < 61 else 2}\n" for i in range(111)))
    assert dataset_module.main([str(numbers), str(tmp_path / "img")]) == 0  # integer labels: indices, not typos
    assert "typo" not in capsys.readouterr().out


def test_the_training_errors_check_command_runs_as_printed_and_names_every_missing_column(tmp_path, capsys):
    import shlex
    csv = write_csv(tmp_path / "l.csv", "path;label\n" + "".join(f"m{i}.png;x\n" for i in range(30)))
    with pytest.raises(DatasetError) as error:
        train.main(["--csv", str(csv), "--file-column", "path", "--label-column", "label",
                    "--results-dir", str(tmp_path / "r")])
    command = str(error.value).split("more; `")[1].split("` lists them all")[0]
    words = shlex.split(command)
    assert words[:2] == ["python", "dataset.py"] and "--file-column" in words and words[-1] == "--all"
    assert dataset_module.main(words[2:]) == 1
    assert "30 row(s)" in capsys.readouterr().out  # every row of every split, not the first 20 of one
    with pytest.raises(DatasetError, match=r"no column\(s\) \['File Name', 'Class Label'\]"):
        train.main(["--csv", str(csv), "--results-dir", str(tmp_path / "s")])  # both named at once


# ---- issue 29: the drawn split, reused ---------------------------------------------------------------

def test_a_drawn_split_of_rows_listing_files_twice_is_usable_and_reusing_it_moves_nothing(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(40):
        write_png(tmp_path / "img" / f"{i}.png", rng.integers(0, 255, (8, 8), dtype=np.uint8))
        rows.append(f"img/{i}.png,{i % 2}")
    write_csv(tmp_path / "labels.csv", "\n".join(rows + rows[1:]) + "\n")  # every file listed twice
    split_csv(tmp_path / "labels.csv", tmp_path / "split.csv", label_column="label", file_column="path",
              valid_fraction=0.2, test_fraction=0.2)
    drawn = pd.read_csv(tmp_path / "split.csv")
    assert (drawn.groupby("path")["split"].nunique() == 1).all()  # a file's rows share one split
    assert drawn.drop_duplicates("path")["split"].value_counts().to_dict() == {"train": 24, "valid": 8, "test": 8}
    flags = ["--file-column", "path", "--label-column", "label", "--epochs", "1", "--batch-size", "8",
             "--results-dir", str(tmp_path / "r")]
    with pytest.warns(UserWarning, match="list a file already listed above"):
        train.main(["--csv", str(tmp_path / "labels.csv"), *flags])
    split = (tmp_path / "r" / "split.csv").read_bytes()
    with pytest.warns(UserWarning, match="list a file already listed above"):  # reused as docs/own-data.md shows
        train.main(["--csv", str(tmp_path / "r" / "split.csv"), "--split-column", "split", "--img-dir",
                    str(tmp_path), *flags])
    assert (tmp_path / "r" / "split.csv").read_bytes() == split  # read where it is, not moved to version_1
    assert not (tmp_path / "r" / "version_1" / "split.csv").exists()


def test_the_split_writer_reads_a_utf16_export_by_its_byte_order_mark_and_keeps_its_encoding(tmp_path):
    rows = ["path\tlabel"] + [f"{i}.png\t{'cat' if i % 2 else 'dog'}" for i in range(20)]
    (tmp_path / "labels.txt").write_text("\r\n".join(rows) + "\r\n", encoding="utf-16")  # Excel's "Unicode Text"
    out = split_csv(tmp_path / "labels.txt", tmp_path / "split.csv", label_column="label", file_column="path")
    drawn = pd.read_csv(out, encoding="utf-16")
    assert list(drawn.columns) == ["path", "label", "split"] and len(drawn) == 20
    assert drawn["split"].value_counts().to_dict() == {"train": 16, "valid": 2, "test": 2}


def test_a_run_refused_by_its_data_or_checkpoint_moves_no_earlier_results(tmp_path):
    csv = make_shapes(tmp_path / "shapes", per_class=10)
    own_run(csv, tmp_path / "r", epochs=1)
    before = sorted(p.name for p in (tmp_path / "r").iterdir())
    split = tmp_path / "r" / "split.csv"
    with pytest.raises(DatasetError, match=r"no column\(s\) \['File Name'\]"):  # a reused split, a column left out
        train.main(["--csv", str(split), "--split-column", "split", "--img-dir", str(tmp_path / "shapes"),
                    "--epochs", "1", "--results-dir", str(tmp_path / "r")])
    (tmp_path / "foreign.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="is damaged or not a checkpoint of train.py"):
        own_run(csv, tmp_path / "r", "--evaluate", "--checkpoint", str(tmp_path / "foreign.pt"), epochs=1)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before  # no version_1: nothing went aside


# ---- tables as they come (issue 30): names, absolute paths, DataFrames, positions, headers checked --

def tool_images(folder, names, *, ext=".png", size=(8, 8)) -> None:
    """One small gray image per name in folder: pixel value by position, so rows differ."""
    for k, name in enumerate(names):
        Image.fromarray(np.full(size, 10 * k % 250, dtype=np.uint8)).save(folder / f"{name}{ext}")


def kaggle_folder(tmp_path, n=12, ext=".jpg"):
    """Kaggle's layout: train.csv `id,label` (ids without an extension), train/<id>.jpg, test/,
    sample_submission.csv."""
    for sub in ("train", "test"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"img{k:03d}" for k in range(n)]
    tool_images(tmp_path / "train", ids, ext=ext)
    tool_images(tmp_path / "test", ["t0", "t1"], ext=ext)
    (tmp_path / "train.csv").write_text("id,label\n" + "".join(f"{i},{['cat', 'dog'][k % 2]}\n"
                                                                for k, i in enumerate(ids)))
    (tmp_path / "sample_submission.csv").write_text("id,label\nt0,cat\nt1,cat\n")
    return tmp_path / "train.csv"


def test_kaggle_ids_without_extension_are_read_with_file_suffix_and_the_error_names_the_flag(tmp_path):
    csv = kaggle_folder(tmp_path)
    ds = CsvImageDataset(csv, tmp_path / "train", file_column="id", label_column="label", file_suffix=".jpg")
    assert len(ds) == 12 and ds.classes == ["cat", "dog"]
    assert ds.rows[0].file == "img000" and ds.rows[0].path == str((tmp_path / "train" / "img000.jpg").resolve())
    assert ds.rows.file(3) == "img003"  # the id as the table has it, for predictions.csv
    with pytest.raises(DatasetError) as caught:  # without the flag: every row says which to pass
        CsvImageDataset(csv, tmp_path / "train", file_column="id", label_column="label")
    message = str(caught.value)
    assert "12 bad row(s)" in message and "line 2" in message
    assert "pass --file-suffix .jpg (file_suffix='.jpg')" in message
    with pytest.raises(DatasetError, match=r"train/img000\.jpg: pass --file-prefix train/ --file-suffix \.jpg "
                                           r"\(file_prefix='train/', file_suffix='\.jpg'\)"):
        CsvImageDataset(csv, file_column="id", label_column="label")  # the CSV's folder: train/ left out
    ds = CsvImageDataset(csv, file_column="id", label_column="label", file_prefix="train/", file_suffix=".jpg")
    assert ds.rows.file(0) == "img000" and ds.names_rule.endswith("read as train/<name>.jpg")


def test_a_name_hint_needs_exactly_one_image_of_that_stem(tmp_path):
    (tmp_path / "img").mkdir()
    tool_images(tmp_path / "img", ["a"], ext=".png")
    tool_images(tmp_path / "img", ["a"], ext=".jpg")  # two candidates: no guess
    tool_images(tmp_path / "img", ["b"], ext=".png")
    (tmp_path / "img" / "c.txt").write_text("not an image extension")
    csv = write_csv(tmp_path / "labels.csv", "File Name,Class Label\na,0\nb,1\nc,1\n")
    message = str(pytest.raises(DatasetError, CsvImageDataset, csv, tmp_path / "img").value)
    assert "img/b.png: pass --file-suffix .png" in message
    assert message.count("found ") == 1  # 'a' (two files) and 'c' (no image extension): not found, no hint


def test_a_keras_dataframe_of_absolute_paths_is_read_as_written_without_img_dir(tmp_path):
    (tmp_path / "photos").mkdir()
    tool_images(tmp_path / "photos", ["p0", "p1", "p2", "p3"])
    df = pd.DataFrame({"filename": [str(tmp_path / "photos" / f"p{k}.png") for k in range(4)],
                       "class": ["cat", "dog", "cat", "dog"]})  # flow_from_dataframe(directory=None)
    ds = CsvImageDataset(df, file_column="filename", label_column="class")
    assert len(ds) == 4 and ds.classes == ["cat", "dog"] and ds.targets == [0, 1, 0, 1]
    assert ds.rows[2].path == df["filename"][2] and ds.csv_path is None and ds.source == "DataFrame"
    assert ds.names_rule == "absolute paths read as written"
    with pytest.raises(DatasetError, match=r"(?s)DataFrame: 4 bad row\(s\).*leave img_dir out.*\n  row index 0: '[^']*p0.png': absolute"):
        CsvImageDataset(df, tmp_path / "photos", file_column="filename", label_column="class")  # would leave it


def test_a_dataframe_with_its_own_index_is_named_by_index_label_in_every_error(tmp_path):
    (tmp_path / "img").mkdir()
    tool_images(tmp_path / "img", [f"{k}" for k in range(6)])
    df = pd.DataFrame({"file": [f"{k}.png" for k in range(6)], "label": [0, 1, 0, 1, 0, 1],
                       "split": ["train", "train", "valid", "test", "train", "valid"]},
                      index=pd.Index(["a", "b", "c", "d", "e", "f"], name="key"))
    ds = CsvImageDataset(df, tmp_path / "img", file_column="file", label_column="label")
    assert ds.targets == [0, 1, 0, 1, 0, 1] and ds.where(1) == "DataFrame, row index 'b': '1.png'"
    bad = df.assign(file=df["file"].where(df.index != "e", "ghost.png"))
    with pytest.raises(DatasetError, match=r"DataFrame: 1 bad row\(s\) out of 6:\n  row index 'e': 'ghost.png': "
                                           r"file not found"):
        CsvImageDataset(bad, tmp_path / "img", file_column="file", label_column="label")
    kwargs = {"dataset_kwargs": {"file_column": "file", "label_column": "label"}, "cache_mb": 0}
    train_loader, valid_loader, test_loader = get_dataloaders_from_split_csv(df, tmp_path / "img", 2, **kwargs)
    assert len(valid_loader.dataset) == 2 and len(test_loader.dataset) == 1
    with pytest.raises(DatasetError, match=r"DataFrame: column 'split' has values that are not a split: "
                                           r"'tset' \(1 row, first on row index 'd'\)"):
        get_dataloaders_from_split_csv(df.assign(split=df["split"].replace("test", "tset")), tmp_path / "img", 2,
                                       **kwargs)
    twice = df.assign(file=df["file"].where(df.index != "c", "0.png"))  # 0.png in train (a) and valid (c)
    with pytest.raises(DatasetError, match=r"'0.png': in train \(DataFrame, row index 'a'\) and in valid "
                                           r"\(DataFrame, row index 'c'\)"):
        get_dataloaders_from_split_csv(twice, tmp_path / "img", 2, **kwargs)
    out = split_csv(df.drop(columns="split"), tmp_path / "split.csv", file_column="file", label_column="label",
                    valid_fraction=0.34, test_fraction=0.0)
    written = pd.read_csv(out)
    assert list(written.columns) == ["file", "label", "split"] and len(written) == 6  # the index not written


def test_a_fastai_csv_without_header_is_read_by_position(tmp_path):
    (tmp_path / "img").mkdir()
    names = [f"f{k}.png" for k in range(6)]
    tool_images(tmp_path / "img", [n.removesuffix(".png") for n in names])
    rows = "".join(f"{n},{['bird', 'cat'][k % 2]},{k >= 4}\n" for k, n in enumerate(names))
    headless = write_csv(tmp_path / "headless.csv", rows)  # fastai: fn_col=0, label_col=1, header=None
    ds = CsvImageDataset(headless, tmp_path / "img", file_column=0, label_column=1, header=False)
    assert len(ds) == 6 and ds.classes == ["bird", "cat"] and ds.rows[0].line == 1  # the file's own lines
    with pytest.raises(DatasetError, match=r"line 3: 'ghost.png': file not found"):
        CsvImageDataset(write_csv(tmp_path / "h2.csv", rows.replace("f2.png", "ghost.png")), tmp_path / "img",
                        file_column=0, label_column=1, header=False)
    with pytest.raises(DatasetError, match="without a header line .* by 0-based position"):
        CsvImageDataset(headless, tmp_path / "img", file_column="fname", label_column=1, header=False)
    with pytest.raises(DatasetError, match=r"no column at position 3 \(0-based\); the table has 3 column"):
        CsvImageDataset(headless, tmp_path / "img", file_column=0, label_column=3, header=False)
    fastai = write_csv(tmp_path / "labels.csv", "fname,labels,is_valid\n" + rows)  # with its header line
    by_position = CsvImageDataset(fastai, tmp_path / "img", file_column=0, label_column="1")
    assert by_position.targets == ds.targets and by_position.rows[0].line == 2
    # A header cell literally "0" is what the flag's "0" names; Python's int 0 is always position 0.
    odd = write_csv(tmp_path / "odd.csv", "label,0\n" + "".join(f"{k % 2},{n}\n" for k, n in enumerate(names)))
    assert CsvImageDataset(odd, tmp_path / "img", file_column="0", label_column=0).targets == [0, 1, 0, 1, 0, 1]
    split = split_csv(headless, tmp_path / "split.csv", file_column=0, label_column=1, header=False)
    assert split.read_text().splitlines()[0] == "0,1,2,split"  # its own header: the same positions
    assert len(CsvImageDataset(split, tmp_path / "img", file_column="0", label_column="1")) == 6


def test_a_label_column_with_one_name_that_looks_like_a_number_is_class_names(tmp_path):
    (tmp_path / "img").mkdir()
    tool_images(tmp_path / "img", [f"{k}" for k in range(6)])
    csv = write_csv(tmp_path / "labels.csv", "File Name,Class Label\n" + "".join(
        f"{k}.png,{['cat', 'dog', '2019'][k % 3]}\n" for k in range(6)))
    ds = CsvImageDataset(csv, tmp_path / "img")
    assert ds.classes == ["2019", "cat", "dog"] and ds.targets == [1, 2, 0, 1, 2, 0]
    mostly = write_csv(tmp_path / "mostly.csv", "File Name,Class Label\n" + "".join(
        f"{k}.png,{['0', '1', '2', 'x'][k % 4]}\n" for k in range(6)))
    with pytest.warns(UserWarning, match=r"3 distinct whole numbers and 1 other value\(s\) \('x'\)"):
        assert CsvImageDataset(mostly, tmp_path / "img").classes == ["0", "1", "2", "x"]
    for split in ("train", "valid"):  # valid holds only '2019': still a name, decided on the whole column
        splits = write_csv(tmp_path / "s.csv", "File Name,Class Label,split\n" + "".join(
            f"{k}.png,{['cat', 'dog', '2019'][k % 3]},{'valid' if k % 3 == 2 else 'train'}\n" for k in range(6)))
        assert set(CsvImageDataset(splits, tmp_path / "img", split=("split", split)).classes) <= {"2019", "cat", "dog"}


def test_a_listed_file_that_is_no_image_is_a_bad_row_before_anything_is_decoded(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    tool_images(tmp_path / "img", [f"{k}" for k in range(5)])
    (tmp_path / "img" / "notes.png").write_text("a text file named like an image")
    csv = write_csv(tmp_path / "labels.csv", "File Name,Class Label\n0.png,0\n1.png,1\nnotes.png,0\n2.png,1\n"
                                             "3.png,0\n4.png,1\n")
    decoded = []
    monkeypatch.setattr(dataset_module, "decode_image", lambda *a, **k: decoded.append(a) or None)
    with pytest.raises(DatasetError, match=r"line 4: 'notes.png': cannot read the image's header: cannot identify image file"):
        CsvImageDataset(csv, tmp_path / "img")
    with pytest.warns(UserWarning, match=r"skipping bad rows: .*1 bad row\(s\) out of 6"):
        ds = CsvImageDataset(csv, tmp_path / "img", skip_bad_rows=True, mode="auto")
    assert len(ds) == 5 and "notes.png" not in ds.rows.files() and decoded == []  # found by its header alone


def test_each_listed_files_header_is_read_once_at_the_row_check(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    tool_images(tmp_path / "img", [f"{k}" for k in range(7)])
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "img" / "red.png")
    Image.fromarray(np.zeros((9, 8), dtype=np.uint8)).save(tmp_path / "img" / "tall.png")
    csv = write_csv(tmp_path / "labels.csv", "File Name,Class Label\n" + "".join(
        f"{k}.png,{k % 2}\n" for k in range(7)) + "red.png,0\ntall.png,1\n")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    ds = CsvImageDataset(csv, tmp_path / "img", mode="auto")
    assert ds.mode == "RGB" and "'red.png' is in colour (RGB)" in ds.mode_decision and ds.image_size == (8, 8)
    assert sorted(opened) == sorted(sample.path for sample in ds.rows)  # auto mode and the size: no second read
    assert [p[1] for p in ds.size_problems()] == ["tall.png"] and len(opened) == 9


def test_the_check_command_takes_the_new_flags_and_says_where_names_are_looked_up(tmp_path, capsys):
    csv = kaggle_folder(tmp_path, ext=".png")
    flags = ["--file-column", "id", "--label-column", "label"]
    assert dataset_module.main([str(csv), *flags, "--file-prefix", "train/", "--file-suffix", ".png"]) == 0
    out = capsys.readouterr().out
    assert f"file names: relative to {tmp_path}, read as train/<name>.png\n" in out
    assert "12 rows, 2 classes" in out and "OK: no problems found" in out
    assert dataset_module.main([str(csv), str(tmp_path / "train"), *flags]) == 1  # the flag it needs, named
    out = capsys.readouterr().out
    assert "pass --file-suffix .png (file_suffix='.png')" in out
    headless = write_csv(tmp_path / "headless.csv", "".join(f"{tmp_path / 'train' / f'img{k:03d}.png'},{k % 2}\n"
                                                           for k in range(12)))
    assert dataset_module.check_command(  # what an error of a run with these flags tells you to paste
        csv, None, "0", "1", "utf-8", header=False, names=dataset_module.FileNames("train/", ".png")) == (
        f"python dataset.py {csv} --file-column 0 --label-column 1 --file-prefix train/ --file-suffix .png "
        "--no-header --all")
    assert dataset_module.main([str(headless), "--no-header", "--file-column", "0", "--label-column", "1"]) == 0
    assert "absolute paths read as written\n" in capsys.readouterr().out
    assert dataset_module.main([str(headless), str(tmp_path), "--no-header", "--file-column", "0",
                                "--label-column", "1"]) == 1  # an image folder given: they stay refused
    out = capsys.readouterr().out
    assert "12 row(s) (line 1, 2, 3, 4, 5, ...), such as: absolute path\n" in out and "leave img_dir out" in out


def test_train_reads_a_kaggle_table_with_file_suffix_for_two_epochs(tmp_path, capsys):
    csv = kaggle_folder(tmp_path, n=40, ext=".png")
    history = train.main(["--csv", str(csv), "--img-dir", str(tmp_path / "train"), "--file-column", "id",
                          "--label-column", "label", "--file-suffix", ".png", "--epochs", "2", "--batch-size", "8",
                          "--results-dir", str(tmp_path / "r")])
    assert len(history.train_acc) == 2 and "Data: 32 train, 4 valid, 4 test images" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "r" / "split.csv")["id"].tolist()[:2] == ["img000", "img001"]  # ids as written
    with pytest.raises(DatasetError, match="pass --file-suffix .png"):  # without the flag: the error names it
        train.main(["--csv", str(csv), "--img-dir", str(tmp_path / "train"), "--file-column", "0",
                    "--label-column", "1", "--epochs", "1", "--results-dir", str(tmp_path / "r2")])


def test_train_reads_a_headerless_table_of_absolute_paths_without_img_dir_and_refuses_them_with_it(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    (tmp_path / "list").mkdir()
    tool_images(tmp_path / "train", [f"{k}" for k in range(24)])
    csv = write_csv(tmp_path / "list" / "labels.csv", "".join(f"{tmp_path / 'train' / f'{k}.png'},{['a', 'b'][k % 2]}\n"
                                                              for k in range(24)))  # no header, absolute paths
    flags = ["--csv", str(csv), "--no-header", "--file-column", "0", "--label-column", "1", "--epochs", "1",
             "--batch-size", "4"]
    history = train.main([*flags, "--results-dir", str(tmp_path / "r")])
    assert len(history.train_acc) == 1 and "Data: 20 train, 2 valid, 2 test images" in capsys.readouterr().out
    assert (tmp_path / "r" / "split.csv").read_text().splitlines()[0] == "0,1,split"  # its own header: positions
    with pytest.raises(DatasetError, match=r"such as: absolute path\n.*leave img_dir out, --img-dir"):
        train.main([*flags, "--img-dir", str(tmp_path), "--results-dir", str(tmp_path / "r2")])
