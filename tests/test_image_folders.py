"""Folders as they come: class folders (torchvision's ImageFolder, Keras's image_dataset_from_directory,
fastai's from_folder), split folders above them, and Hugging Face's imagefolder with metadata.csv, read into
the table a CSV gives, checked by `python dataset.py DIR` and trained on by `train.py --image-folder DIR`."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dataset as dataset_module
import evaluate
import train
from conftest import write_csv, write_png
from dataset import CsvImageDataset, DatasetError, list_image_folder, scan_image_folder


def image(path: Path, value: int = 100) -> Path:
    """A 4x4 gray PNG of one value, so that labels can be told apart by their pixels."""
    return write_png(path, np.full((4, 4), value, dtype=np.uint8))


def image_folder_tree(root: Path, per_class: int = 3) -> Path:
    """torchvision's ImageFolder: root/<class>/<file>."""
    for k, name in enumerate(["cat", "dog"]):
        for i in range(per_class):
            image(root / name / f"{i}.png", 40 + 150 * k)
    return root


def split_tree(root: Path, valid_name: str = "val") -> Path:
    """root/train/<class>/..., root/<valid_name>/<class>/..., root/test/<class>/... (Keras, Kaggle, HF)."""
    for split, n in (("train", 3), (valid_name, 1), ("test", 1)):
        for k, name in enumerate(["cat", "dog"]):
            for i in range(n):
                image(root / split / name / f"{split}{i}.png", 40 + 150 * k)
    return root


def hugging_face_tree(root: Path) -> Path:
    """Hugging Face imagefolder: root/<split>/metadata.csv (file_name, label), images beside it."""
    for split, n in (("train", 3), ("validation", 1), ("test", 1)):
        rows = []
        for k, name in enumerate(["cat", "dog"]):
            for i in range(n):
                image(root / split / f"{name}{i}.png", 40 + 150 * k)
                rows.append(f"{name}{i}.png,{name}")
        write_csv(root / split / "metadata.csv", "file_name,label\n" + "\n".join(rows) + "\n")
    return root


# ---- the listing -------------------------------------------------------------------------------------

def test_an_image_folder_tree_is_the_table_a_csv_gives_by_class_then_file(tmp_path):
    root = image_folder_tree(tmp_path / "pets")
    image(root / "cat" / "more" / "10.png")  # deeper folders belong to their class, as in ImageFolder
    table = list_image_folder(root)
    assert list(table.columns) == ["file", "label"]
    assert table["file"].tolist() == ["cat/0.png", "cat/1.png", "cat/2.png", "cat/more/10.png",
                                      "dog/0.png", "dog/1.png", "dog/2.png"]
    assert table["label"].tolist() == ["cat"] * 4 + ["dog"] * 3
    table.to_csv(tmp_path / "listing.csv", index=False)
    ds = CsvImageDataset(tmp_path / "listing.csv", root, file_column="file", label_column="label")
    assert ds.classes == ["cat", "dog"] and ds.targets == [0, 0, 0, 0, 1, 1, 1]
    assert int(ds[4][0].mul(255).round()[0, 0, 0]) == 190  # dog/0.png's pixels, with dog's label
    assert ds[4][1] == 1


def test_the_listing_is_torchvisions_imagefolder_order_on_its_own_layout(tmp_path):
    datasets = pytest.importorskip("torchvision.datasets")
    root = image_folder_tree(tmp_path / "pets")
    image(root / "cat" / "B" / "x.png")  # upper case sorts first; a deeper folder
    image(root / "Cow" / "a.jpg")
    torchvision_tree = datasets.ImageFolder(str(root))
    table = list_image_folder(root)
    assert [os.path.relpath(path, root) for path, _ in torchvision_tree.samples] == table["file"].tolist()
    assert [torchvision_tree.classes[k] for _, k in torchvision_tree.samples] == table["label"].tolist()


@pytest.mark.parametrize("valid_name", ["val", "valid", "validation"])
def test_train_val_test_folders_become_the_split_column(tmp_path, valid_name):
    root = split_tree(tmp_path / "data", valid_name)
    listing = scan_image_folder(root)
    table = listing.table
    assert table["split"].tolist() == ["train"] * 6 + ["valid"] * 2 + ["test"] * 2  # train, valid, test
    assert table["file"].tolist()[6:8] == [f"{valid_name}/cat/{valid_name}0.png", f"{valid_name}/dog/{valid_name}0.png"]
    assert listing.layout == f"train/: 2 class folders; {valid_name}/: 2 class folders; test/: 2 class folders"
    table.to_csv(tmp_path / "listing.csv", index=False)
    train_ds = CsvImageDataset(tmp_path / "listing.csv", root, file_column="file", label_column="label",
                               split=("split", "train"))
    valid_ds = CsvImageDataset(tmp_path / "listing.csv", root, file_column="file", label_column="label",
                               split=("split", "valid"))
    assert (len(train_ds), len(valid_ds)) == (6, 2) and valid_ds.targets == [0, 1]


def test_hugging_face_metadata_csv_in_split_folders_gives_labels_from_its_column_or_the_folders(tmp_path):
    root = hugging_face_tree(tmp_path / "hf")
    listing = scan_image_folder(root)
    assert listing.table["split"].tolist() == ["train"] * 6 + ["valid"] * 2 + ["test"] * 2
    assert listing.table["file"].tolist()[:2] == ["train/cat0.png", "train/cat1.png"]
    assert listing.table["label"].tolist()[6:] == ["cat", "dog", "cat", "dog"]
    assert "metadata.csv (6 rows, labels from column 'label')" in listing.layout
    # another label column by name; without one, the class folders the files are in (as Hugging Face)
    write_csv(root / "train" / "metadata.csv", "file_name,species\ncat0.png,felis\n")
    with pytest.raises(DatasetError, match=r"validation/metadata.csv: no column 'species'; the columns are "
                                           r"\['file_name', 'label'\]"):
        list_image_folder(root, label_column="species")
    table = list_image_folder(root / "train", label_column="species")  # metadata.csv at the top
    assert table.to_dict("records") == [{"file": "cat0.png", "label": "felis"}]
    write_csv(root / "test" / "metadata.csv", "file_name\ncat0.png\ndog0.png\n")  # a competition's test set
    write_csv(root / "train" / "metadata.csv", "file_name,label\ncat0.png,cat\ndog0.png,dog\n")
    table = list_image_folder(root, label_column="label")
    assert table[table["split"] == "test"]["label"].isna().all() and table["label"].notna().sum() == 4
    image(tmp_path / "top" / "train" / "cat" / "a.png")
    write_csv(tmp_path / "top" / "metadata.csv", "file_name,size\ntrain/cat/a.png,4\n")
    table = list_image_folder(tmp_path / "top")  # one metadata.csv at the top: the split from the path
    assert table.to_dict("records") == [{"file": "train/cat/a.png", "label": "cat", "split": "train"}]


def test_a_test_folder_without_class_folders_is_unlabelled(tmp_path):
    root = split_tree(tmp_path / "kaggle")
    for name in os.listdir(root / "test"):
        for file in os.listdir(root / "test" / name):
            os.replace(root / "test" / name / file, root / "test" / f"{name}-{file}")
        os.rmdir(root / "test" / name)
    listing = scan_image_folder(root)
    test = listing.table[listing.table["split"] == "test"]
    assert test["file"].tolist() == ["test/cat-test0.png", "test/dog-test0.png"]
    assert test["label"].isna().all() and listing.table["label"].notna().sum() == 8
    assert "test/: 2 image(s) without class folders (unlabelled)" in listing.layout


def test_non_images_hidden_files_and_files_beside_the_class_folders_are_counted_in_one_warning(tmp_path):
    root = image_folder_tree(tmp_path / "pets")
    write_csv(root / "cat" / "notes.txt", "x")
    write_csv(root / "dog" / "labels.json", "{}")
    write_csv(root / "README.md", "x")
    write_csv(root / ".DS_Store", "x")
    image(root / "dog" / ".hidden.png")
    image(root / ".thumbnails" / "cat" / "0.png")
    (root / ".cache").mkdir()  # the disk cache's own folder: not the user's, not named
    with pytest.warns(UserWarning) as caught:
        table = list_image_folder(root)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"{root}: skipped 2 file(s) not images by their extension (such as 'cat/notes.txt'); 3 hidden file(s) "
        "or folder(s) (such as '.DS_Store'); 1 file(s) beside the class or split folders (such as 'README.md')")
    assert len(table) == 6 and table["label"].tolist() == ["cat"] * 3 + ["dog"] * 3


def test_a_loop_of_links_ends_and_a_linked_duplicate_folder_is_named_once_not_listed_twice(tmp_path):
    root = image_folder_tree(tmp_path / "pets")
    os.symlink("..", root / "cat" / "loop")  # cat/loop/cat/loop/... would never end
    os.symlink(root / "dog", root / "cat" / "dogs")  # the same images under another class
    os.symlink("dog", root / "alias")  # a class folder that is another one's link
    image(tmp_path / "outside" / "x.png")
    os.symlink(tmp_path / "outside", root / "dog" / "out")
    image(root / "bird" / "0.png")
    os.symlink("0.png", root / "bird" / "link.png")  # a linked file is listed: the check reads it
    with pytest.warns(UserWarning) as caught:
        table = list_image_folder(root)
    message = str(caught[0].message)
    assert len(caught) == 1 and message.count("linked folder") == 4
    assert "linked folder 'cat/loop' (a link to '.', listed already)" in message
    assert "linked folder 'cat/dogs' (a link to 'dog', listed already)" in message
    assert "linked folder 'alias' (a link to 'dog', listed already)" in message
    assert f"linked folder 'dog/out' (a link to {tmp_path / 'outside'}, outside {root})" in message
    assert table["file"].tolist() == ["bird/0.png", "bird/link.png", "cat/0.png", "cat/1.png", "cat/2.png",
                                      "dog/0.png", "dog/1.png", "dog/2.png"]
    os.symlink(root / "bird", tmp_path / "linked_bird")
    (root / "bird" / "link.png").unlink()
    os.replace(root / "bird", tmp_path / "real_bird")
    os.symlink(tmp_path / "real_bird", root / "bird")
    with pytest.warns(UserWarning, match="bird"):  # a class that is only a link out: skipped, named
        assert "bird" not in set(list_image_folder(root)["label"])


@pytest.mark.parametrize("make, match", [
    (lambda root: None, r"pets: empty \(no files, no folders\); expected class folders \(DIR/cat/1.png"),
    (lambda root: image(root / "a.png"), r"pets: no class folders \(1 file\(s\) directly in it\); expected class"),
    (lambda root: (image(root / "cat" / "a.png"), (root / "dog").mkdir(), write_csv(root / "dog" / "x.txt", "")),
     r"pets/dog: a class folder with no images \(files ending in .png, .jpg, ... or another image extension\)"),
    (lambda root: (image(root / "train" / "cat" / "a.png"), image(root / "dog" / "a.png")),
     r"split folders \(train\) beside other folders \(dog\); expected class folders"),
    (lambda root: (image(root / "val" / "cat" / "a.png"), image(root / "valid" / "cat" / "a.png")),
     r"two folders of the valid split, 'val' and 'valid'; keep one"),
    (lambda root: image(root / "train" / "a.png"), r"pets/train: no class folders \(1 file\(s\) directly in it\)"),
])
def test_folders_without_the_layout_are_errors_that_say_what_was_expected(tmp_path, make, match):
    root = tmp_path / "pets"
    root.mkdir()
    make(root)
    with pytest.raises(DatasetError, match=match):
        list_image_folder(root)
    images_alone = (root / "a.png").exists()  # the check command reads those as --predict does
    assert dataset_module.main([str(root)]) == (0 if images_alone else 1)


def test_the_extensions_are_those_predict_reads(tmp_path):
    assert dataset_module.image_extensions() == evaluate.image_extensions()


# ---- the check command -------------------------------------------------------------------------------

def test_the_check_command_lists_and_checks_a_folder_alone(tmp_path, capsys):
    root = split_tree(tmp_path / "data")
    write_csv(root / "train" / "notes.txt", "x")
    (root / "train" / "dog" / "train2.png").write_bytes(b"not a png")
    assert dataset_module.main([str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [f"{root}: train/: 2 class folders; val/: 2 class folders; test/: 2 class folders",
                       f"warning: {root}: skipped 1 file(s) beside the class or split folders (such as 'train/notes.txt')",
                       f"{root}: 10 rows, 2 classes", "classes: cat: 5, dog: 4"]  # the bad row left out
    assert out[-1].startswith("  line 7: 'train/dog/train2.png': cannot read the image's header")  # split.csv's line
    (root / "train" / "dog" / "train2.png").unlink()
    assert dataset_module.main([str(root), "--split", "val"]) == 0
    assert capsys.readouterr().out.splitlines()[2:4] == [f"{root}: 2 rows, 2 classes", "classes: cat: 1, dog: 1"]
    assert dataset_module.main([str(tmp_path / "none.csv")]) == 1  # a CSV alone: names beside it
    assert f"CSV file not found: {tmp_path / 'none.csv'}" in capsys.readouterr().err


def test_the_check_command_reads_unlabelled_test_images_as_predict_does(tmp_path, capsys):
    root = image_folder_tree(tmp_path / "kaggle" / "train")
    image(tmp_path / "kaggle" / "test" / "a.png")
    image(tmp_path / "kaggle" / "test" / "b.png")
    assert dataset_module.main([str(tmp_path / "kaggle")]) == 0
    out = capsys.readouterr().out
    assert f"{root.parent}: 6 rows, 2 classes\n" in out and f"{root.parent}: 2 rows without labels (for --predict)\n" in out


# ---- train.py --image-folder -------------------------------------------------------------------------

def run(tmp_path: Path, folder: Path, *more: str) -> train.History:
    return train.main(["--image-folder", str(folder), "--epochs", "1", "--batch-size", "2", "--no-disk-cache",
                       "--results-dir", str(tmp_path / "r"), *more])


def test_train_on_class_folders_draws_the_split_into_split_csv_and_resume_reads_the_same(
        tmp_path, capsys, without_figures):
    root = image_folder_tree(tmp_path / "pets", per_class=5)
    run(tmp_path, root, "--valid-fraction", "0.2", "--test-fraction", "0.2")
    out = capsys.readouterr().out
    split = pd.read_csv(tmp_path / "r" / "split.csv")
    assert list(split.columns) == ["File Name", "Class Label", "split"]
    assert split["split"].value_counts().to_dict() == {"train": 6, "valid": 2, "test": 2}
    assert f"Image folder {root}: 2 class folders, no split folders: split drawn; listed into {tmp_path}/r/split.csv" in out
    assert (f"Image folder read as its listing, {tmp_path}/r/split.csv: the same data as --csv {tmp_path}/r/split.csv "
            f"--img-dir {root} --split-column split") in out
    written = (tmp_path / "r" / "split.csv").read_bytes()
    history = run(tmp_path, root, "--valid-fraction", "0.2", "--test-fraction", "0.2", "--epochs", "2", "--resume")
    assert len(history.valid_acc) == 2 and (tmp_path / "r" / "split.csv").read_bytes() == written
    # the CSV run of that listing is the same data: its fingerprint resumes it
    train.main(["--csv", str(tmp_path / "r" / "split.csv"), "--img-dir", str(root), "--split-column", "split",
                "--epochs", "3", "--batch-size", "2", "--no-disk-cache", "--results-dir", str(tmp_path / "r"), "--resume"])
    image(root / "cat" / "new.png")  # the folder changed: refused before anything is written
    with pytest.raises(SystemExit, match="the listing of --image-folder .* differs from .*split.csv, the one the "
                                         "checkpoint's run was trained on"):
        run(tmp_path, root, "--valid-fraction", "0.2", "--test-fraction", "0.2", "--epochs", "4", "--resume")
    assert (tmp_path / "r" / "split.csv").read_bytes() == written


def test_train_on_train_val_test_folders_keeps_their_split(tmp_path, capsys, without_figures):
    root = split_tree(tmp_path / "data")
    history = run(tmp_path, root)
    split = pd.read_csv(tmp_path / "r" / "split.csv")
    assert split["split"].tolist() == ["train"] * 6 + ["valid"] * 2 + ["test"] * 2
    assert "Data: 6 train, 2 valid, 2 test images from" in capsys.readouterr().out
    assert history.test_acc is not None


def test_train_on_a_hugging_face_imagefolder_with_metadata_csv(tmp_path, capsys, without_figures):
    root = hugging_face_tree(tmp_path / "hf")
    run(tmp_path, root, "--label-column", "label")
    split = pd.read_csv(tmp_path / "r" / "split.csv")
    assert list(split.columns) == ["File Name", "label", "split"]  # the label column keeps its name
    assert split["split"].value_counts().to_dict() == {"train": 6, "valid": 2, "test": 2}
    out = capsys.readouterr().out
    assert "--split-column split --label-column label" in out


def test_image_folder_flag_errors(tmp_path, capsys):
    root = image_folder_tree(tmp_path / "pets")
    csv = write_csv(tmp_path / "x.csv", "File Name,Class Label\ncat/0.png,cat\n")
    for argv, message in (
            (["--image-folder", str(root), "--csv", str(csv)], "--image-folder, --csv and --data-dir: choose one"),
            (["--image-folder", str(tmp_path / "none")], f"--image-folder {tmp_path / 'none'}: no such folder"),
            (["--image-folder", str(root), "--split-column", "s"], "--split-column goes with --csv"),
            (["--image-folder", str(root), "--predict", str(root)], "--predict PATH reads its own folder or CSV")):
        with pytest.raises(SystemExit):
            train.main(argv)
        assert message in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean folder lists without a warning
        assert len(list_image_folder(root)) == 6


def test_train_on_train_and_valid_folders_without_test_reports_on_valid(tmp_path, capsys, without_figures):
    """Keras's image_dataset_from_directory(validation_split) export and most downloads: train/ and val/ only."""
    root = split_tree(tmp_path / "data")
    for f in (root / "test").rglob("*.png"):
        f.unlink()
    for d in sorted((root / "test").rglob("*"), reverse=True) + [root / "test"]:
        d.rmdir()
    history = run(tmp_path, root)
    out = capsys.readouterr().out
    assert "Data: 6 train, 2 valid, no test images from" in out
    assert out.count("No test split: the test accuracy and reports below are of the validation split") == 1
    assert len(history.valid_acc) == 1


def test_a_kaggle_folder_with_an_unlabelled_test_folder_trains_and_predicts_the_test_images(
        tmp_path, capsys, without_figures):
    """Kaggle's train/<class>/ with test/ holding images alone: trained on train (valid drawn from it when
    --valid-fraction is given), the test images predicted into predictions.csv, not trained on."""
    root = tmp_path / "kaggle"
    for k, name in enumerate(["cat", "dog"]):
        for i in range(5):
            image(root / "train" / name / f"{name}{i}.png", 40 + 150 * k)
    for i in range(3):
        image(root / "test" / f"t{i}.png", 40 + 150 * (i % 2))
    run(tmp_path, root, "--valid-fraction", "0.2")
    out = capsys.readouterr().out
    split = pd.read_csv(tmp_path / "r" / "split.csv", keep_default_na=False)
    assert split["split"].value_counts().to_dict() == {"train": 8, "valid": 2, "test": 3}
    assert (split.loc[split["split"] == "test", "Class Label"] == "").all()  # unlabelled, as listed
    assert "the splits it lacks drawn from train" in out
    assert "Data: 8 train, 2 valid, no test images from" in out
    predictions = pd.read_csv(tmp_path / "r" / "predictions.csv")
    assert predictions.iloc[:, 0].tolist() == ["test/t0.png", "test/t1.png", "test/t2.png"]
    assert set(predictions.iloc[:, 1]) <= {"cat", "dog"}
    # without --valid-fraction the run says what to pass
    with pytest.raises(DatasetError, match="no rows with split == 'valid' .* Draw them from the train rows "
                                           "with --valid-fraction F"):
        run(tmp_path / "again", root)


def test_the_disk_cache_of_an_image_folder_run_stays_out_of_the_folder(tmp_path, capsys, without_figures):
    """A .cache folder inside DIR would be one more class to torchvision's ImageFolder (and Keras) reading the
    same folder afterwards: the cache goes beside split.csv, and the folder is left as it was."""
    datasets = pytest.importorskip("torchvision.datasets")
    root = image_folder_tree(tmp_path / "pets", per_class=5)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    train.main(["--image-folder", str(root), "--epochs", "1", "--batch-size", "2",
                "--results-dir", str(tmp_path / "r")])
    assert f"Disk cache of decoded images: {tmp_path / 'r' / '.cache'}" in capsys.readouterr().out
    assert any((tmp_path / "r" / ".cache").iterdir())
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert datasets.ImageFolder(str(root)).classes == ["cat", "dog"]


def test_the_check_command_checks_a_folder_of_images_alone_as_predict_reads_them(tmp_path, capsys):
    """Kaggle's test/ folder on its own: `python dataset.py test/` checks its images as --predict reads them;
    train.py --image-folder still needs class folders (there is nothing to learn from)."""
    for i in range(3):
        image(tmp_path / "test" / f"t{i}.png", 40 * i)
    (tmp_path / "test" / "t2.png").write_bytes(b"not a png")
    assert dataset_module.main([str(tmp_path / "test")]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'test'}: 3 image(s) without class folders (unlabelled)\n")
    assert f"{tmp_path / 'test'}: 3 rows without labels (for --predict)" in out
    assert "'t2.png': cannot read the image's header" in out
    with pytest.raises(DatasetError, match="no class folders"):
        list_image_folder(tmp_path / "test")
