"""dataset.py on CSVs nobody here has seen: every bad row named, nothing read outside img_dir."""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import dataset as dataset_module
from conftest import ROOT, write_csv, write_png
from dataset import CsvImageDataset, DatasetError, ImageLoadError
from loaders import DecodedImages, get_dataloaders, get_dataloaders_from_split_csv, make_datasets, make_loader


def good_csv(tmp_path, rows="a.png,0\nb.png,1\nc.png,2\nd.png,0\ne.png,1\nf.png,2\n"):
    return write_csv(tmp_path / "labels.csv", "File Name,Class Label\n" + rows)


def error_of(tmp_path, csv_text, **kwargs) -> str:
    csv = write_csv(tmp_path / "labels.csv", csv_text)
    with pytest.raises(DatasetError) as info:
        CsvImageDataset(csv, tmp_path / "img", **kwargs)
    return str(info.value)


def test_missing_csv(small_folder):
    with pytest.raises(DatasetError, match="CSV file not found: .*nope.csv"):
        CsvImageDataset(small_folder / "nope.csv", small_folder / "img")


def test_missing_image_folder(small_folder):
    with pytest.raises(DatasetError, match="image folder not found"):
        CsvImageDataset(good_csv(small_folder), small_folder / "imgs")


def test_empty_csv_and_csv_without_rows(small_folder):
    assert "empty" in error_of(small_folder, "")
    assert "no data rows" in error_of(small_folder, "File Name,Class Label\n\n")


def test_missing_column_lists_the_columns_that_exist(small_folder):
    message = error_of(small_folder, "file,label\na.png,1\n")
    assert "'File Name'" in message and "['file', 'label']" in message


@pytest.mark.parametrize("rows, line, what", [
    ("a.png,1\nb.png,\n", 3, "empty label"),
    ("a.png,1\nb.png,-1\n", 3, "negative"),
    ("a.png,1\nb.png,99999999999999999999\n", 3, "label 99999999999999999999 is too large"),
    ("a.png,1\nb.png,2147483648\n", 3, "too large (expected a class index below 2**31)"),
    ("a.png,1\nzzz.png,1\n", 3, "file not found"),
    ("a.png,1\n,1\n", 3, "empty file name"),
    ("a.png,1\n/etc/passwd,1\n", 3, "absolute path"),
    ("a.png,1\n../img/a.png,1\n", 3, "contains '..'"),
    ("a.png,1\nsub/../../img/a.png,1\n", 3, "contains '..'"),
    ("a.png,1\n.,1\n", 3, "not a regular file"),
])
def test_each_bad_row_is_named_with_its_line_and_file(small_folder, rows, line, what):
    message = error_of(small_folder, "File Name,Class Label\n" + rows)
    assert f"line {line}:" in message and what in message
    assert "labels.csv" in message and "1 bad row(s)" in message


@pytest.mark.parametrize("other", ["2.5", "two", "inf"])
def test_a_text_label_that_is_not_a_whole_number_makes_the_column_class_names(small_folder, other):
    """Issue 30 reversed the cases `2.5`, `two` and `inf` among integers above (they were refused as
    'not a whole number'): such a column holds class names, all of them, sorted as text."""
    ds = CsvImageDataset(write_csv(small_folder / "labels.csv", f"File Name,Class Label\na.png,1\nb.png,{other}\n"),
                         small_folder / "img")
    assert ds.classes == ["1", other] and ds.targets == [0, 1]  # "1" sorts first as text


def test_labels_at_or_above_num_classes(small_folder):
    message = error_of(small_folder, "File Name,Class Label\na.png,1\nb.png,3\n", num_classes=3)
    assert "line 3:" in message and "out of range: expected 0 to 2" in message


def test_whole_floats_count_as_indices(small_folder):
    ds = CsvImageDataset(good_csv(small_folder, "a.png,3.0\nb.png,1\n"), small_folder / "img")
    assert ds.targets == [3, 1]


def test_symlink_out_of_img_dir_is_refused(small_folder, tmp_path):
    secret = write_png(tmp_path / "outside" / "secret.png", np.zeros((8, 8), dtype=np.uint8))
    os.symlink(secret, small_folder / "img" / "link.png")
    os.symlink(tmp_path / "outside", small_folder / "img" / "linkdir")
    message = error_of(small_folder, "File Name,Class Label\na.png,1\nlink.png,1\nlinkdir/secret.png,0\n")
    assert "line 3: 'link.png': resolves outside img_dir" in message
    assert "line 4: 'linkdir/secret.png': resolves outside img_dir" in message


def test_every_problem_in_one_error_and_a_long_list_is_summarised(small_folder):
    rows = "".join(f"missing{i}.png,1\n" for i in range(30))
    message = error_of(small_folder, "File Name,Class Label\n" + rows)
    assert "30 bad row(s) out of 30" in message
    assert "line 2:" in message and "line 21:" in message and "line 22:" not in message
    assert "and 10 more" in message


def test_blank_lines_keep_the_line_numbers_right(small_folder):
    message = error_of(small_folder, "File Name,Class Label\na.png,1\n\n\nzzz.png,1\n")
    assert "line 5: 'zzz.png'" in message


@pytest.mark.parametrize("above", ["\n", "\r\n \r\n", "\ufeff\n\n", "\r\r"])
def test_blank_lines_above_a_semicolon_header_are_skipped_and_lines_stay_the_files(small_folder, above, capsys):
    end = "\r" if above == "\r\r" else "\n"  # "\r\r": an old Mac export, lines ended by "\r" alone
    rows = end.join(["File Name;Class Label", "a.png;1", "", "zzz.png;1", ""])
    csv = write_csv(small_folder / "labels.csv", above + rows)
    header = above.count(end) + 1  # the header's 1-based line
    assert dataset_module.csv_separator(csv) == ";" and dataset_module.csv_columns(csv) == ["File Name", "Class Label"]
    with pytest.raises(DatasetError, match=rf"1 bad row\(s\) out of 2:\n  line {header + 3}: 'zzz.png'"):
        CsvImageDataset(csv, small_folder / "img")
    with pytest.warns(UserWarning, match="1 bad row"):
        assert [s.line for s in CsvImageDataset(csv, small_folder / "img", skip_bad_rows=True).rows] == [header + 1]
    assert dataset_module.main([str(csv), str(small_folder / "img")]) == 1
    assert f"line {header + 3}: 'zzz.png': file not found" in capsys.readouterr().out
    write_csv(csv, ";;\n" + rows)  # a spreadsheet's empty first row: cells, which pandas reads as a header
    with pytest.raises(DatasetError, match=r"the columns are \['Unnamed: 0', .*\] \(a row of empty cells above the header"):
        CsvImageDataset(csv, small_folder / "img")


def test_skip_bad_rows_warns_with_a_count_and_keeps_the_rest(small_folder):
    csv = good_csv(small_folder, "a.png,1\nzzz.png,1\nb.png,-3\nc.png,2\n")
    with pytest.warns(UserWarning, match="2 bad row"):
        ds = CsvImageDataset(csv, small_folder / "img", skip_bad_rows=True)
    assert [(s.file, s.line, s.label) for s in ds.rows] == [("a.png", 2, 1), ("c.png", 5, 2)]
    assert ds.targets == [1, 2]


def test_class_names_map_to_sorted_indices_and_other_columns_work(small_folder):
    csv = write_csv(small_folder / "pets.csv", "label,path\ndog,a.png\ncat,b.png\nemu,c.png\ncat,d.png\n")
    ds = CsvImageDataset(csv, small_folder / "img", file_column="path", label_column="label")
    assert ds.classes == ["cat", "dog", "emu"] and ds.class_to_idx == {"cat": 0, "dog": 1, "emu": 2}
    assert ds.targets == [1, 0, 2, 0]
    with pytest.raises(DatasetError, match="line 3: 'b.png': label 'cat' is not one of the classes"):
        CsvImageDataset(csv, small_folder / "img", file_column="path", label_column="label", classes=["dog", "emu"])


def test_rgb_mode_and_subfolders(tmp_path):
    write_png(tmp_path / "img" / "cats" / "1.png", np.full((5, 4, 3), 9, dtype=np.uint8))
    write_png(tmp_path / "img" / "dogs" / "2.png", np.full((5, 4), 200, dtype=np.uint8))  # gray, converted
    csv = write_csv(tmp_path / "x.csv", "File Name,Class Label\ncats/1.png,cat\ndogs/2.png,dog\n")
    ds = CsvImageDataset(csv, tmp_path / "img", mode="RGB", pixels="uint8")
    images, labels = ds[[0, 1]]
    assert images.shape == (2, 3, 5, 4) and labels.tolist() == [0, 1]
    assert images[0].unique().tolist() == [9] and images[1].unique().tolist() == [200]


def test_one_csv_with_a_split_column(tmp_path):
    for i in range(12):
        write_png(tmp_path / "img" / f"{i}.png", np.full((6, 6), i, dtype=np.uint8))
    rows = "".join(f"{i}.png,{'cat' if i % 2 else 'dog'},{['train', 'valid', 'test'][i % 3]}\n" for i in range(12))
    csv = write_csv(tmp_path / "all.csv", "File Name,Class Label,split\n" + rows)
    train, valid, test = get_dataloaders_from_split_csv(csv, tmp_path / "img", batch_size=2, seed=1)
    assert [len(loader.dataset) for loader in (train, valid, test)] == [4, 4, 4]
    assert [s.line for s in train.dataset.rows] == [2, 5, 8, 11]  # lines of the whole CSV
    assert valid.dataset.classes == ["cat", "dog"]
    values = sorted(int(images[j, 0, 0, 0] * 255 + 0.5) for images, _ in train for j in range(len(images)))
    assert values == [0, 3, 6, 9]
    with pytest.raises(DatasetError, match="no rows with split == 'tset'"):
        CsvImageDataset(csv, tmp_path / "img", split=("split", "tset"))


def make_broken(tmp_path, damage: str):
    """8 good 8x8 images plus one damaged one at CSV line 7 ('bad.png')."""
    for i in range(8):
        write_png(tmp_path / "img" / f"{i}.png", np.full((8, 8), i, dtype=np.uint8))
    bad = tmp_path / "img" / "bad.png"
    if damage == "size":
        write_png(bad, np.zeros((9, 8), dtype=np.uint8))
    else:
        write_png(bad, np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8))
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:20] + b"\0" * (len(data) - 20))
    rows = [f"{i}.png,{i % 2}" for i in range(8)]
    rows.insert(5, "bad.png,1")
    return write_csv(tmp_path / "x.csv", "File Name,Class Label\n" + "\n".join(rows) + "\n")


def test_a_corrupt_header_is_named_at_the_row_check_before_anything_is_decoded(tmp_path):
    """Issue 30 moved this case of the test below (then found when the cache was filled) to the row check."""
    csv = make_broken(tmp_path, "corrupt")
    with pytest.raises(DatasetError, match=r"x.csv: 1 bad row\(s\) out of 9:\n  line 7: 'bad.png': cannot read the "
                                           r"image's header"):
        CsvImageDataset(csv, tmp_path / "img")


@pytest.mark.parametrize("damage", ["truncated", "size"])  # corrupt: named at the row check (issue 30)
def test_bad_image_is_named_when_the_cache_is_filled(tmp_path, damage):
    csv = make_broken(tmp_path, damage)
    ds = DecodedImages(CsvImageDataset(csv, tmp_path / "img"))
    with pytest.raises(ImageLoadError, match=r"(?s)x.csv.*line 7: 'bad.png'"):
        ds.preload()


@pytest.mark.parametrize("damage", ["truncated", "size"])
def test_bad_image_is_named_from_a_worker_process(tmp_path, damage):
    csv = make_broken(tmp_path, damage)
    ds = DecodedImages(CsvImageDataset(csv, tmp_path / "img"), cache_mb=0)
    loader = make_loader(ds, 3, shuffle=False, drop_last=False, seed=0, loader_kwargs={"num_workers": 2})
    batches = iter(loader)
    try:
        with pytest.raises(ImageLoadError, match=r"(?s)x.csv.*line 7: 'bad.png'"):
            for _ in batches:
                pass
    finally:  # now: left to the garbage collector, the stopped iterator's workers take 5 s each to join
        batches._shutdown_workers()


def test_check_command_clean_dataset(tiny_data, capsys):
    assert dataset_module.main([str(tiny_data / "mnist_train.csv"), str(tiny_data / "mnist_train")]) == 0
    out = capsys.readouterr().out
    assert "40 rows, 10 classes" in out and "28x28: 40" in out and "L: 40" in out and "OK: no problems" in out


def test_check_command_lists_every_problem_and_fails(tmp_path, capsys):
    csv = make_broken(tmp_path, "truncated")
    with open(csv, "a") as f:
        f.write("ghost.png,1\n" + "".join(f"g{i}.png,1\n" for i in range(25)))
    assert dataset_module.main([str(csv), str(tmp_path / "img"), "--all"]) == 1
    out = capsys.readouterr().out
    assert "line 7: 'bad.png': cannot decode the image" in out
    assert "line 11: 'ghost.png': file not found" in out and "line 36: 'g24.png'" in out
    assert "27 bad row(s)" in out


def test_check_command_missing_column_exits_non_zero(small_folder, capsys):
    csv = write_csv(small_folder / "x.csv", "name,label\na.png,1\n")
    assert dataset_module.main([str(csv), str(small_folder / "img")]) == 1
    assert "the columns are ['name', 'label']" in capsys.readouterr().err


def test_workers_with_spawn_start_method(tiny_data):
    ctx = multiprocessing.get_context("spawn")
    spawned, _, _ = get_dataloaders(batch_size=8, data_dir=tiny_data, seed=4, num_workers=1,
                                    cache_mb=0, loader_kwargs={"multiprocessing_context": ctx})
    plain, _, _ = get_dataloaders(batch_size=8, data_dir=tiny_data, seed=4)
    assert torch.equal(torch.cat([x for x, _ in spawned]), torch.cat([x for x, _ in plain]))


def test_workers_under_a_low_open_file_limit(tiny_data):
    script = textwrap.dedent(f"""
        import sys, warnings
        warnings.simplefilter("error", ResourceWarning)
        sys.path.insert(0, {str(ROOT)!r})
        from loaders import get_dataloaders
        for workers in (2, 4):
            for cache_mb in (0, 1024):
                train, valid, _ = get_dataloaders(8, {str(tiny_data)!r}, num_workers=workers,
                                                  cache_mb=cache_mb,
                                                  loader_kwargs={{"persistent_workers": cache_mb > 0}})
                for epoch in range(3):
                    n = sum(len(y) for _, y in train) + sum(len(y) for _, y in valid)
                    assert n == 40 + 20, n
        print("ok")
    """)
    result = subprocess.run(["bash", "-c", f"ulimit -n 256 && {sys.executable} -W error::ResourceWarning -"],
                            input=script, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
    assert "Too many open files" not in result.stderr


def test_valid_and_test_share_the_training_classes_with_integer_labels(tmp_path):
    for i in range(5):
        write_png(tmp_path / "img" / f"{i}.png", np.full((4, 4), i, dtype=np.uint8))
    rows = "0.png,0,train\n1.png,1,train\n2.png,2,train\n3.png,1,valid\n4.png,0,test\n"  # alone: 0-1, 0
    csv = write_csv(tmp_path / "all.csv", "File Name,Class Label,split\n" + rows)
    loaders = get_dataloaders_from_split_csv(csv, tmp_path / "img", batch_size=1)
    assert [loader.dataset.classes for loader in loaders] == [["0", "1", "2"]] * 3


@pytest.mark.parametrize("cache_mb", [1024, 0, None])
def test_batch_index_out_of_range_is_an_index_error(small_folder, cache_mb):
    ds = CsvImageDataset(good_csv(small_folder), small_folder / "img")  # None: the dataset, decoding each item
    ds = ds if cache_mb is None else DecodedImages(ds, cache_mb=cache_mb)
    for bad in ([0, 6], [-1], [[0, 1]]):
        with pytest.raises(IndexError, match=r"flat list of ints in \[0, 6\)"):
            ds[bad]
    images, labels = ds[np.array([5, 0])]
    assert images.shape == (2, 1, 8, 8) and labels.tolist() == [2, 0]


def test_check_command_groups_the_reasons_with_counts_and_gives_each_hint_once(tmp_path, capsys):
    rows = ["File Name,Class Label"]
    for i in range(30):
        write_png(tmp_path / "img" / f"{i}.png", np.zeros((8 + (i % 3 == 0), 8), dtype=np.uint8))
        rows.append(f"{i}.png,{i % 2}")
    csv = write_csv(tmp_path / "mixed.csv", "\n".join(rows + ["missing.png,1"]) + "\n")
    assert dataset_module.main([str(csv), str(tmp_path / "img")]) == 1
    out = capsys.readouterr().out
    assert "11 bad row(s) out of 31, by reason:" in out
    assert "  10 row(s) (line 2, 5, 8, 11, 14, ...), such as: size 9x8 (HxW) differs from the commonest, 8x8 (20 of 30 images)" in out
    assert "  1 row(s) (line 32), such as: file not found: " in out
    assert out.count("pass image_size= (--image-size)") == 1  # the hint once, not once per row
    assert "the rows:\n  line 2: '0.png': size 9x8 (HxW) differs from the commonest, 8x8 (20 of 30 images)\n" in out


def test_check_command_with_the_wrong_folder_says_why_every_row_is_bad(tiny_data, tmp_path, capsys):
    assert dataset_module.main([str(tiny_data / "mnist_train.csv"), str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "40 bad row(s) out of 40, by reason:\n  40 row(s) (line 2, 3, 4, 5, 6, ...), such as: file not found: " in out
    assert f"hint: no file was found: the CSV's names are looked up below {tmp_path}" in out
    assert "classes" not in out  # no summary of images that were not read


def test_sparse_integer_labels_get_a_true_message_in_the_check_and_in_training(small_folder, tmp_path, capsys):
    csv = write_csv(small_folder / "sparse.csv", "File Name,Class Label\n" + "".join(
        f"{n}.png,{3 if i % 2 else 7}\n" for i, n in enumerate("abcdef")))
    assert dataset_module.main([str(csv), str(small_folder / "img")]) == 0
    message = "6 of the 8 classes have no image: 0, 1, 2, 4, 5, 6. Integer labels are class indices (0 to 7 here)"
    assert message in capsys.readouterr().out
    splits = [write_csv(small_folder / f"{name}.csv", f"File Name,Class Label\n{a}.png,3\n{b}.png,7\n")
              for name, (a, b) in zip(("train", "valid", "test"), ("ab", "cd", "ef"))]
    with pytest.warns(UserWarning, match=re.escape(message)) as caught:
        make_datasets([(split, small_folder / "img", None) for split in splits])
    assert not any("are in valid or test" in str(w.message) for w in caught)
