"""Splits as they come (issue 30, points 1 and 5): train + valid without test (fastai's is_valid,
Keras's train / valid), a Kaggle test set without labels in the table, --test-fraction 0, valid
drawn from a table of train rows; drawn splits that add up (largest remainder, a training image
kept per class, an empty split refused before any image is decoded)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dataset as dataset_module
import train
from conftest import write_csv, write_png
from dataset import DatasetError
from loaders import draw_counts, get_dataloaders_from_split_csv, split_csv


def images(folder, n: int, classes: int = 2, prefix: str = "img") -> list[tuple[str, int]]:
    """n 4x4 gray PNGs in folder/prefix/, class i % classes, dark or light by class; [(name, class)]."""
    rng = np.random.default_rng(n)
    out = []
    for i in range(n):
        label = i % classes
        pixels = (rng.integers(0, 40, (4, 4)) + 200 * label // max(classes - 1, 1)).astype(np.uint8)
        write_png(folder / prefix / f"{i}.png", pixels)
        out.append((f"{prefix}/{i}.png", label))
    return out


def fastai_table(folder, valid: tuple[str, str] = ("True", "False"), n: int = 20):
    """fastai's layout: fname,labels,is_valid with text labels; every 4th row valid."""
    rows = ["fname,labels,is_valid"] + [f"{name},{'cat' if c else 'dog'},{valid[0] if i % 4 == 0 else valid[1]}"
                                        for i, (name, c) in enumerate(images(folder, n))]
    return write_csv(folder / "labels.csv", "\n".join(rows) + "\n")


def kaggle_table(folder, n_train: int = 24, n_test: int = 5):
    """A Kaggle competition's rows in one table: id,label,split with the test rows' labels empty."""
    rows = ["id,label,split"] + [f"{name},{c},train" for name, c in images(folder, n_train, prefix="train")]
    rows += [f"{name},,test" for name, _ in images(folder, n_test, prefix="test")]
    return write_csv(folder / "table.csv", "\n".join(rows) + "\n")


FASTAI = ["--file-column", "fname", "--label-column", "labels", "--epochs", "2", "--batch-size", "4"]


# ---- train + valid, no test ---------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", [("True", "False"), ("1", "0"), ("yes", "no"), ("YES", "No")])
def test_fastai_is_valid_column_marks_valid_rows_the_rest_train_and_no_test(tmp_path, spelling):
    csv = fastai_table(tmp_path, spelling)
    train_loader, valid_loader, test_loader = get_dataloaders_from_split_csv(
        csv, tmp_path, batch_size=2, valid_column="is_valid",
        dataset_kwargs={"file_column": "fname", "label_column": "labels"})
    assert test_loader is None
    assert len(valid_loader.dataset) == 5 and len(train_loader.dataset) == 15
    assert [row.line for row in valid_loader.dataset.rows] == [2, 6, 10, 14, 18]  # every 4th row
    assert valid_loader.dataset.classes == ["cat", "dog"]


def test_a_valid_column_value_that_is_not_true_or_false_is_named_with_count_and_first_line(tmp_path):
    csv = fastai_table(tmp_path)
    text = csv.read_text().splitlines()
    for line, value in ((4, "maybe"), (6, "maybe"), (8, "")):
        text[line - 1] = text[line - 1].rsplit(",", 1)[0] + "," + value
    write_csv(csv, "\n".join(text) + "\n")
    with pytest.raises(DatasetError, match=r"column 'is_valid' has values that are not True / False: 'maybe' "
                                           r"\(2 rows, first on line 4\), '' \(1 row, first on line 8\)"):
        get_dataloaders_from_split_csv(csv, tmp_path, batch_size=2, valid_column="is_valid",
                                       dataset_kwargs={"file_column": "fname", "label_column": "labels"})
    with pytest.raises(DatasetError, match="marks no row valid"):
        get_dataloaders_from_split_csv(fastai_table(tmp_path / "f", ("False", "False")), tmp_path / "f",
                                       batch_size=2, valid_column="is_valid",
                                       dataset_kwargs={"file_column": "fname", "label_column": "labels"})


def test_keras_train_and_valid_split_column_gives_no_test_loader(tmp_path):
    rows = ["File Name,Class Label,split"] + [f"{name},{c},{'validation' if i % 5 == 0 else 'training'}"
                                              for i, (name, c) in enumerate(images(tmp_path, 20))]
    csv = write_csv(tmp_path / "all.csv", "\n".join(rows) + "\n")
    train_loader, valid_loader, test_loader = get_dataloaders_from_split_csv(csv, tmp_path, batch_size=2)
    assert test_loader is None and len(valid_loader.dataset) == 4 and len(train_loader.dataset) == 16


def test_kaggle_test_rows_without_labels_are_not_trained_on_and_not_an_error(tmp_path):
    csv = kaggle_table(tmp_path)
    split_csv(csv, tmp_path / "drawn.csv", label_column="label", file_column="id", split_column="split",
              valid_fraction=0.25)
    drawn = pd.read_csv(tmp_path / "drawn.csv", keep_default_na=False)
    assert drawn["split"].value_counts().to_dict() == {"train": 18, "valid": 6, "test": 5}
    assert (drawn[drawn["split"] == "test"]["id"].str.startswith("test/")).all()  # kept as they were
    train_loader, valid_loader, test_loader = get_dataloaders_from_split_csv(
        tmp_path / "drawn.csv", tmp_path, batch_size=2, dataset_kwargs={"file_column": "id", "label_column": "label"})
    assert test_loader is None and len(train_loader.dataset) == 18
    assert not any(row.file.startswith("test/") for row in train_loader.dataset.rows)
    mixed = drawn.copy()
    mixed.loc[drawn.index[-1], "label"] = "1"  # one test row labelled: the others' empty labels are errors again
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(DatasetError, match="empty label"):
        get_dataloaders_from_split_csv(tmp_path / "mixed.csv", tmp_path, batch_size=2,
                                       dataset_kwargs={"file_column": "id", "label_column": "label"})


def test_train_py_without_test_reports_on_valid_and_says_so_in_one_line(tmp_path, capsys):
    csv = fastai_table(tmp_path, n=24)
    history = train.main(["--csv", str(csv), "--valid-column", "is_valid", *FASTAI,
                          "--results-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert "Data: 18 train, 6 valid, no test images" in out
    assert out.count(train.NO_TEST_SPLIT) == 1 and "optimistic" in train.NO_TEST_SPLIT
    assert history.test_acc == history.valid_acc[-1]  # the valid split's, where test's would be
    assert f"Test accuracy: {history.valid_acc[-1]:.2f}%" in out
    results = tmp_path / "r"
    for name in ("confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "mistakes.png", "examples.png",
                 "best.pt", "split.csv"):
        assert (results / name).stat().st_size > 0, name
    per_class = pd.read_csv(results / "per_class.csv")
    assert per_class["support"].sum() == 6  # the valid rows
    split = pd.read_csv(results / "split.csv")
    assert split["split"].value_counts().to_dict() == {"train": 18, "valid": 6}  # from is_valid, no test drawn


def test_train_py_test_fraction_0_draws_no_test_rows_and_trains(tmp_path, capsys):
    rows = ["File Name,Class Label"] + [f"{name},{c}" for name, c in images(tmp_path, 20)]
    csv = write_csv(tmp_path / "labels.csv", "\n".join(rows) + "\n")
    history = train.main(["--csv", str(csv), "--test-fraction", "0", "--valid-fraction", "0.2", "--epochs", "2",
                          "--batch-size", "4", "--results-dir", str(tmp_path / "r")])
    assert "Data: 16 train, 4 valid, no test images" in capsys.readouterr().out
    assert history.test_acc == history.valid_acc[-1] and (tmp_path / "r" / "per_class.csv").is_file()
    assert "test" not in set(pd.read_csv(tmp_path / "r" / "split.csv")["split"])
    with pytest.raises(SystemExit):
        train.parse_args(["--csv", str(csv), "--valid-fraction", "0"])  # a run needs valid rows


def test_train_py_draws_valid_and_test_from_a_table_of_train_rows_when_the_fractions_are_given(tmp_path, capsys):
    rows = ["File Name,Class Label,split"] + [f"{name},{c},Train" for name, c in images(tmp_path, 20)]
    csv = write_csv(tmp_path / "only_train.csv", "\n".join(rows) + "\n")
    flags = ["--csv", str(csv), "--split-column", "split", "--epochs", "1", "--batch-size", "4"]
    with pytest.raises(DatasetError, match=r"no rows with split == 'valid' \(values found: \['Train'\]\).*"
                                           r"--valid-fraction"):
        train.main([*flags, "--results-dir", str(tmp_path / "none")])
    train.main([*flags, "--valid-fraction", "0.2", "--results-dir", str(tmp_path / "v")])
    assert "Data: 16 train, 4 valid, no test images" in capsys.readouterr().out  # no --test-fraction: no test
    train.main([*flags, "--valid-fraction", "0.2", "--test-fraction", "0.1", "--results-dir", str(tmp_path / "vt")])
    assert "Data: 14 train, 4 valid, 2 test images" in capsys.readouterr().out
    both = write_csv(tmp_path / "both.csv", csv.read_text().replace(",Train\n", ",valid\n", 2))
    with pytest.raises(DatasetError, match="has valid rows already: leave valid_fraction"):
        train.main(["--csv", str(both), "--split-column", "split", "--valid-fraction", "0.2", "--epochs", "1",
                    "--results-dir", str(tmp_path / "b")])


def test_train_py_predicts_the_unlabelled_test_rows_of_a_kaggle_table(tmp_path, capsys):
    csv = kaggle_table(tmp_path)
    history = train.main(["--csv", str(csv), "--file-column", "id", "--label-column", "label", "--split-column",
                          "split", "--valid-fraction", "0.25", "--epochs", "2", "--batch-size", "4",
                          "--results-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert "Data: 18 train, 6 valid, no test images" in out and train.NO_TEST_SPLIT in out
    assert f"The 5 test rows of {csv} have no labels: not trained on or scored" in out
    predictions = pd.read_csv(tmp_path / "r" / "predictions.csv", dtype=str, keep_default_na=False)
    files, classes = predictions.iloc[:, 0], predictions.iloc[:, 1]  # --predict's columns, whatever their names
    assert files.tolist() == [f"test/{i}.png" for i in range(5)]  # the test rows alone, named as the table has them
    assert set(classes) <= {"0", "1"}
    assert history.test_acc == history.valid_acc[-1]


# ---- drawn splits that add up ------------------------------------------------------------------------

def test_eight_classes_of_three_images_get_valid_and_test_rows_and_each_keeps_a_training_image(tmp_path):
    rows = ["File Name,Class Label"] + [f"{name},c{c}" for name, c in images(tmp_path, 24, classes=8)]
    csv = write_csv(tmp_path / "labels.csv", "\n".join(rows) + "\n")
    drawn = pd.read_csv(split_csv(csv, tmp_path / "split.csv"))  # default fractions, 0.1 each
    counts = drawn["split"].value_counts().to_dict()
    assert counts == {"train": 20, "valid": 2, "test": 2}  # round(24 * 0.1) each
    assert (drawn[drawn["split"] == "train"].groupby("Class Label").size() >= 1).all()
    assert drawn[drawn["split"] == "train"]["Class Label"].nunique() == 8
    again = split_csv(csv, tmp_path / "again.csv").read_bytes()
    assert again == (tmp_path / "split.csv").read_bytes()  # the same arguments, the same bytes
    assert split_csv(csv, tmp_path / "other.csv", seed=1).read_bytes() != again


@pytest.mark.parametrize("sizes, fraction", [([3] * 8, 0.1), ([50, 30, 7, 2, 1], 0.1), ([10, 10, 10], 0.3),
                                             ([1000, 1, 1, 1], 0.05), ([17, 23, 5, 9, 41, 3, 3], 0.15),
                                             ([300] * 7 + [299], 0.2)])
def test_largest_remainder_shares_add_up_to_the_rounded_whole(sizes, fraction):
    sizes = np.array(sizes)
    n = sizes.sum()
    test, valid = draw_counts(sizes, fraction, fraction)
    for counts in (test, valid):
        assert counts.sum() == int(n * fraction + 0.5)  # of the whole table, not class by class
    share = n * fraction * sizes / n
    big = sizes >= 3  # where no class is held back by what it must keep: floor or ceiling of its share
    assert (np.abs(test[big] - share[big]) < 1).all()
    assert (sizes - test - valid >= 1).all()  # every class keeps a training image


def test_an_empty_split_is_an_error_before_any_image_is_decoded(tmp_path, monkeypatch):
    rows = ["File Name,Class Label"] + [f"{name},{c}" for name, c in images(tmp_path, 4)]
    csv = write_csv(tmp_path / "labels.csv", "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"the valid split would be empty: valid_fraction 0.1 of the 4 rows to "
                                           r"draw from gives no valid row \(0.1 x 4 rounds to 0; pass a larger "
                                           r"--valid-fraction \(valid_fraction\), at least 0.125"):
        split_csv(csv, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(dataset_module, "decode_image", no_decoding)
    with pytest.raises(DatasetError, match="the test split would be empty"):
        train.main(["--csv", str(csv), "--valid-fraction", "0.5", "--epochs", "1", "--results-dir",
                    str(tmp_path / "r")])
    ones = write_csv(tmp_path / "ones.csv", "File Name,Class Label\n" + "".join(f"img/{i}.png,{i}\n" for i in range(4)))
    with pytest.raises(DatasetError, match="every class keeps one image for training"):  # 4 classes of one image
        split_csv(ones, tmp_path / "s.csv", valid_fraction=0.5, test_fraction=0)


def test_a_file_listed_twice_among_the_train_rows_is_drawn_once(tmp_path):
    named = images(tmp_path, 20)
    rows = ["File Name,Class Label,split"] + [f"{name},{c},train" for name, c in named + named]
    csv = write_csv(tmp_path / "twice.csv", "\n".join(rows) + "\n")
    drawn = pd.read_csv(split_csv(csv, tmp_path / "s.csv", split_column="split", file_column="File Name",
                                  valid_fraction=0.2, test_fraction=0.2))
    assert (drawn.groupby("File Name")["split"].nunique() == 1).all()
    assert drawn.drop_duplicates("File Name")["split"].value_counts().to_dict() == {"train": 12, "valid": 4, "test": 4}


def test_the_check_command_checks_a_valid_column(tmp_path, capsys):
    """python dataset.py CSV DIR --valid-column is_valid: counts, or each value that is not True / False."""

    root = tmp_path / "fastai"
    rows = []
    for i in range(6):
        write_png(root / f"{i}.png", np.full((4, 4), 40 * i, dtype=np.uint8))
        rows.append(f"{i}.png,{'ab'[i % 2]},{'True' if i < 2 else 'false'}")
    table = write_csv(root / "labels.csv", "fname,labels,is_valid\n" + "\n".join(rows) + "\n")
    argv = [str(table), str(root), "--file-column", "fname", "--label-column", "labels", "--valid-column", "is_valid"]
    assert dataset_module.main(argv) == 0
    assert "valid column 'is_valid': 2 valid, 4 train rows" in capsys.readouterr().out
    table.write_text(table.read_text().replace("5.png,b,false", "5.png,b,maybe"))
    assert dataset_module.main(argv) == 1
    assert "valid column 'is_valid': values that are not True / False: 'maybe' (1 row, first on line 7)" \
        in capsys.readouterr().out
