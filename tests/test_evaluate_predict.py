"""What the model gets wrong, and a checkpoint used again: reports, --evaluate, --predict."""

from __future__ import annotations

import csv
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import train
from conftest import write_csv, write_png
from dataset import DatasetError
from loaders import TEMP_TAG, get_dataloaders
from model import MLP


def run(data, results, *extra: str) -> train.History:
    return train.main(["--epochs", "3", "--seed", "2", "--batch-size", "8", "--data-dir", str(data),
                       "--results-dir", str(results), *extra])


def read_rows(path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture
def trained(tiny_data, tmp_path, capsys):
    history = run(tiny_data, tmp_path / "r")
    return tiny_data, tmp_path / "r", history, capsys.readouterr().out


def test_every_run_writes_the_confusion_matrix_per_class_figures_and_mistakes(trained):
    data, results, history, _ = trained
    for name in ("confusion_matrix.csv", "confusion_matrix.png", "per_class.csv", "mistakes.png"):
        assert (results / name).stat().st_size > 0
    rows = read_rows(results / "confusion_matrix.csv")
    assert rows[0] == ["true \\ predicted"] + [str(i) for i in range(10)]
    cm = torch.tensor([[int(v) for v in row[1:]] for row in rows[1:]])
    assert [row[0] for row in rows[1:]] == [str(i) for i in range(10)]
    _, _, test = get_dataloaders(8, data)
    labels = torch.cat([y for _, y in test])
    assert cm.sum(1).tolist() == torch.bincount(labels, minlength=10).tolist()  # rows: true classes
    assert 100.0 * cm.trace().item() / cm.sum().item() == history.test_acc  # diagonal: correct
    head, *body = read_rows(results / "per_class.csv")
    per_class = [dict(zip(head, row)) for row in body]
    assert [int(r["support"]) for r in per_class] == cm.sum(1).tolist()
    assert [int(r["correct"]) for r in per_class] == cm.diagonal().tolist()
    for r, predicted in zip(per_class, cm.sum(0).tolist()):
        assert r["recall"] == (f"{int(r['correct']) / int(r['support']):.4f}" if int(r["support"]) else "")
        assert r["precision"] == (f"{int(r['correct']) / predicted:.4f}" if predicted else "")


def test_compute_confusion_matrix_matches_the_predictions(tiny_data):
    _, valid, _ = get_dataloaders(6, tiny_data)
    model = MLP()
    cm = train.compute_confusion_matrix(model, valid, "cpu", 10)
    predictions = torch.cat([model(x).argmax(1) for x, _ in valid])
    labels = torch.cat([y for _, y in valid])
    assert cm.dtype == torch.int64 and cm.shape == (10, 10)
    expected = torch.zeros(10, 10, dtype=torch.int64)
    for t, p in zip(labels.tolist(), predictions.tolist()):
        expected[t, p] += 1
    assert torch.equal(cm, expected)


def test_evaluate_prints_the_training_runs_test_accuracy_and_touches_nothing_else(trained, capsys):
    data, results, history, out = trained
    kept = {name: (results / name).read_bytes() for name in ("checkpoint.pt", "metrics.csv")}
    (results / "confusion_matrix.csv").unlink()
    evaluated = train.main(["--evaluate", "--batch-size", "8", "--data-dir", str(data), "--results-dir",
                            str(results)])  # the training run's flags
    line = f"Test accuracy: {history.test_acc:.2f}%"
    assert line in out and line in capsys.readouterr().out and evaluated.test_acc == history.test_acc
    assert {name: (results / name).read_bytes() for name in kept} == kept
    assert (results / "confusion_matrix.csv").is_file()


def test_evaluate_refuses_a_checkpoint_of_other_data(trained, tmp_path):
    data, results, _, _ = trained
    csv_path = data / "mnist_test.csv"
    csv_path.write_text("\n".join(csv_path.read_text().splitlines()[:-1]) + "\n")  # one row fewer
    with pytest.raises(SystemExit, match="cannot --evaluate .*trained on other data") as info:
        train.main(["--evaluate", "--batch-size", "8", "--data-dir", str(data), "--results-dir", str(results)])
    said = str(info.value)  # in words: what it was trained on, and what it sees now
    assert f"the checkpoint's run read {data / 'mnist_train.csv'} (40 rows), {data / 'mnist_valid.csv'} " \
           f"(20 rows), {data / 'mnist_test.csv'} (20 rows); this one reads" in said
    assert f"{data / 'mnist_test.csv'} (19 rows), and the rows or labels differ" in said
    assert "sha256" not in said


def test_predict_on_the_labelled_test_csv_gives_the_test_accuracy(trained, capsys):
    data, results, history, _ = trained
    out = train.main(["--predict", str(data / "mnist_test.csv"), "--img-dir", str(data / "mnist_test"),
                      "--results-dir", str(results)])
    assert f"Accuracy: {history.test_acc:.2f}% " in capsys.readouterr().out
    rows = read_rows(out)
    assert rows[0] == ["file", "predicted", "probability", "top1", "top1_probability", "top2",
                       "top2_probability", "top3", "top3_probability", "true", "problem"]
    assert len(rows) == 21 and rows[1][0] == "00000.png" and rows[1][1] == rows[1][3]
    probabilities = [float(v) for v in rows[1][4:9:2]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0001


def test_predict_a_folder_of_other_sizes_and_modes_with_the_checkpoint_alone(trained, tmp_path):
    _, results, _, _ = trained
    folder = tmp_path / "new"
    write_png(folder / "b.png", np.full((40, 30, 3), 200, dtype=np.uint8))  # RGB, another size
    (folder / "sub").mkdir()
    Image.fromarray(np.full((10, 12), 1000, dtype=np.uint16)).save(folder / "sub" / "a.png")  # 16-bit
    Image.new("RGB", (50, 20), (9, 9, 9)).save(folder / "c.jpg")
    (folder / "notes.txt").write_text("not an image")
    out = train.main(["--predict", str(folder), "--results-dir", str(tmp_path / "p"),
                      "--checkpoint", str(results / "checkpoint.pt")])
    rows = read_rows(out)
    assert [row[0] for row in rows[1:]] == ["b.png", "c.jpg", "sub/a.png"]  # sorted by path
    assert "true" not in rows[0] and all(row[1] in [str(i) for i in range(10)] for row in rows[1:])


def test_predict_lists_a_bad_row_and_predicts_the_others(trained, tmp_path, capsys):
    _, results, _, _ = trained
    write_png(tmp_path / "img" / "a.png", np.zeros((28, 28), dtype=np.uint8))
    listing = write_csv(tmp_path / "new.csv", "File Name\na.png\nmissing.png\n")
    with pytest.warns(UserWarning, match=r"1 of 2 images could not be read(.|\n)*'missing.png': line 3: file not found"):
        out = train.main(["--predict", str(listing), "--img-dir", str(tmp_path / "img"),
                          "--results-dir", str(tmp_path / "p"), "--checkpoint", str(results / "checkpoint.pt")])
    rows = read_rows(out)
    assert [row[0] for row in rows[1:]] == ["a.png", "missing.png"]
    assert rows[1][1] != "" and rows[1][-1] == ""
    assert rows[2][1:-1] == [""] * (len(rows[0]) - 2) and rows[2][-1].startswith("line 3: file not found")
    assert "Predicted 1 image with" in capsys.readouterr().out


def test_predict_one_image_file(trained, tmp_path, capsys):
    _, results, _, _ = trained
    image = write_png(tmp_path / "photo.png", np.full((40, 30, 3), 200, dtype=np.uint8))
    out = train.main(["--predict", str(image), "--results-dir", str(tmp_path / "p"),
                      "--checkpoint", str(results / "checkpoint.pt")])
    rows = read_rows(out)
    assert len(rows) == 2 and rows[1][0] == "photo.png" and rows[1][1] in [str(i) for i in range(10)]
    assert f"photo.png: {rows[1][1]} ({rows[1][2]})" in capsys.readouterr().out  # said, not only written


def test_a_refused_predict_moves_no_earlier_predictions_and_problem_rows_keep_the_csvs_order(trained, tmp_path):
    _, results, _, _ = trained
    folder = tmp_path / "new"
    write_png(folder / "b.png", np.zeros((28, 28), dtype=np.uint8))
    args = ["--results-dir", str(tmp_path / "p"), "--checkpoint", str(results / "checkpoint.pt")]
    first = train.main(["--predict", str(folder), *args]).read_bytes()
    (folder / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="no image could be read"):
        train.main(["--predict", str(folder / "empty.png"), *args])
    assert (tmp_path / "p" / "predictions.csv").read_bytes() == first and not (tmp_path / "p" / "version_1").exists()
    listing = write_csv(tmp_path / "new.csv", "File Name\nmissing.png\nb.png\nempty.png\n")
    with pytest.warns(UserWarning, match="2 of 3 images could not be read"):
        out = train.main(["--predict", str(listing), "--img-dir", str(folder), *args])
    rows = read_rows(out)
    assert [row[0] for row in rows[1:]] == ["missing.png", "b.png", "empty.png"]  # the CSV's order
    assert rows[3][-1] == "line 4: empty file (0 bytes)"
    assert (tmp_path / "p" / "version_1" / "predictions.csv").read_bytes() == first  # moved once replaced


def test_predict_a_folder_with_broken_files_predicts_the_good_ones_and_names_the_rest(trained, tmp_path):
    _, results, _, _ = trained
    folder = tmp_path / "new"
    for name in ("a.png", "b.png"):
        write_png(folder / name, np.full((28, 28), 99, dtype=np.uint8))
    Image.new("RGB", (64, 48), (200, 10, 10)).save(folder / "c.jpg", quality=90)
    (folder / "truncated.jpg").write_bytes((folder / "c.jpg").read_bytes()[:200])
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # macOS AppleDouble metadata
    (folder / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        out = train.main(["--predict", str(folder), "--results-dir", str(tmp_path / "p"),
                          "--checkpoint", str(results / "checkpoint.pt")])
    message = str(caught[0].message)
    assert message.startswith("3 of 6 images could not be read")
    assert "images.csv" not in message and TEMP_TAG not in message  # no internal temporary file named
    rows = {row[0]: row for row in read_rows(out)[1:]}
    assert set(rows) == {"a.png", "b.png", "c.jpg", "truncated.jpg", "._a.png", "empty.png"}
    assert all(rows[n][1] != "" and rows[n][-1] == "" for n in ("a.png", "b.png", "c.jpg"))
    for name in ("truncated.jpg", "._a.png", "empty.png"):
        assert rows[name][1] == "" and rows[name][-1] != "" and "line" not in rows[name][-1], rows[name]
        assert f"'{name}'" in message


def test_predict_with_no_readable_image_is_an_error_and_writes_nothing(trained, tmp_path):
    _, results, _, _ = trained
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"no image could be read, so nothing was predicted:\n  'empty.png': "):
        train.main(["--predict", str(tmp_path / "new"), "--results-dir", str(tmp_path / "p"),
                    "--checkpoint", str(results / "checkpoint.pt")])
    assert not (tmp_path / "p" / "predictions.csv").exists()


# ---- a run never overwrites results it did not write (issue 18) ---------------------------------

def test_resume_from_another_folders_checkpoint_moves_this_folders_results_aside(tiny_data, tmp_path, capsys):
    run(tiny_data, tmp_path / "A")
    run(tiny_data, tmp_path / "B", "--hidden", "100")
    a_checkpoint, a_metrics = (tmp_path / "A" / "checkpoint.pt").read_bytes(), (tmp_path / "A" / "metrics.csv").read_bytes()
    train.main(["--epochs", "4", "--seed", "2", "--batch-size", "8", "--data-dir", str(tiny_data), "--resume",
                "--checkpoint", str(tmp_path / "B" / "checkpoint.pt"), "--results-dir", str(tmp_path / "A")])
    assert f"Earlier results in {tmp_path / 'A'} moved to {tmp_path / 'A' / 'version_1'}/" in capsys.readouterr().out
    assert (tmp_path / "A" / "version_1" / "checkpoint.pt").read_bytes() == a_checkpoint
    assert (tmp_path / "A" / "version_1" / "metrics.csv").read_bytes() == a_metrics
    assert torch.load(tmp_path / "A" / "checkpoint.pt", weights_only=True)["epoch"] == 4
    assert torch.load(tmp_path / "B" / "checkpoint.pt", weights_only=True)["epoch"] == 3  # B untouched


def test_evaluate_and_predict_with_another_folders_checkpoint_write_beside_it(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run(tiny_data, "results")
    run(tiny_data, "runB", "--seed", "3")
    ours = (tmp_path / "results" / "per_class.csv").read_bytes()
    capsys.readouterr()
    train.main(["--evaluate", "--checkpoint", "runB/checkpoint.pt", "--data-dir", str(tiny_data)])
    assert "Reports of runB/checkpoint.pt written to runB/" in capsys.readouterr().out
    assert (tmp_path / "results" / "per_class.csv").read_bytes() == ours  # results/ is run A's still
    out = train.main(["--predict", str(tiny_data / "mnist_test"), "--checkpoint", "runB/checkpoint.pt"])
    assert out == tmp_path / "runB" / "predictions.csv" or out == type(out)("runB/predictions.csv")
    assert not (tmp_path / "results" / "predictions.csv").exists()
    first = (tmp_path / "runB" / "predictions.csv").read_bytes()
    train.main(["--predict", str(tiny_data / "mnist_test"), "--checkpoint", "runB/checkpoint.pt"])
    assert (tmp_path / "runB" / "version_1" / "predictions.csv").read_bytes() == first  # kept, not overwritten
    # Into a folder of its own choosing, with reports there already: they are moved aside first.
    train.main(["--evaluate", "--checkpoint", "runB/checkpoint.pt", "--data-dir", str(tiny_data), "--results-dir", "results"])
    assert (tmp_path / "results" / "version_1" / "per_class.csv").read_bytes() == ours
    assert (tmp_path / "results" / "checkpoint.pt").is_file()  # run A's model stays where it was


def test_a_refused_resume_or_evaluate_leaves_the_split_the_model_was_trained_on(tmp_path):
    from make_shapes import make_shapes

    csv = make_shapes(tmp_path / "shapes", per_class=8)
    args = ["--csv", str(csv), "--file-column", "path", "--label-column", "label", "--mode", "RGB", "--epochs", "1",
            "--batch-size", "4", "--image-size", "16", "--results-dir", str(tmp_path / "r"), "--no-disk-cache"]
    train.main(args)
    split = (tmp_path / "r" / "split.csv").read_bytes()
    for refused in (["--resume", "--epochs", "2", "--split-seed", "1"], ["--evaluate", "--split-seed", "1"]):
        with pytest.raises(SystemExit) as info:
            train.main(args + refused)
        assert "the split drawn from" in str(info.value) and "differs from" in str(info.value)
        assert (tmp_path / "r" / "split.csv").read_bytes() == split
    lines = csv.read_text().splitlines()
    name, label = lines[1].rsplit(",", 1)
    other = next(row.rsplit(",", 1)[1] for row in lines[1:] if row.rsplit(",", 1)[1] != label)
    csv.write_text("\n".join([lines[0], f"{name},{other}", *lines[2:]]) + "\n")  # one label edited
    with pytest.raises(SystemExit, match="the split drawn from"):  # the CSV changed under the model
        train.main(args + ["--evaluate"])
    assert (tmp_path / "r" / "split.csv").read_bytes() == split


def test_predict_refuses_a_checkpoint_that_a_running_train_py_is_writing(tiny_data, tmp_path):
    import fcntl

    run(tiny_data, tmp_path / "r")
    with open(tmp_path / "r" / ".lock", "r+") as lock:  # what a train.py run in that folder holds
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("4242\n")
        lock.flush()
        for flags in (["--predict", str(tiny_data / "mnist_test")], ["--evaluate", "--data-dir", str(tiny_data)]):
            with pytest.raises(SystemExit) as info:
                train.main([*flags, "--checkpoint", str(tmp_path / "r" / "checkpoint.pt"),
                            "--results-dir", str(tmp_path / "elsewhere")])
            assert "belongs to a train.py run that is still going (process 4242)" in str(info.value)
            with pytest.raises(SystemExit, match="is in use by another train.py run"):  # in its own folder too
                train.main([*flags, "--results-dir", str(tmp_path / "r")])
    assert not (tmp_path / "elsewhere" / "predictions.csv").exists()


def test_predict_lists_linked_subfolders_images_once_and_names_each_link_inside_or_out(tiny_data, tmp_path,
                                                                                        capsys):
    import os
    import shutil

    run(tiny_data, tmp_path / "r")
    new = tmp_path / "new"
    shutil.copytree(tiny_data / "mnist_test", new / "real")
    os.symlink(new / "real", new / "linked")  # a link to a folder inside: its images once, not twice
    (new / "sub").mkdir()
    os.symlink(new / "real" / "00000.png", new / "sub" / "first.png")  # a linked file inside: it counts
    outside = tmp_path / "outside"
    shutil.copytree(tiny_data / "mnist_valid", outside)
    os.symlink(outside, new / "away")  # leads out of the folder: skipped, and said
    out = train.main(["--predict", str(new), "--results-dir", str(tmp_path / "r")])
    files = [row[0] for row in read_rows(out)[1:]]
    assert len(files) == 21 and "sub/first.png" in files  # away/ is skipped: it used to be, without a word
    captured = capsys.readouterr()
    assert "Predicted 21 images" in captured.out and f"skipped {new / 'away'}: a link to {outside}" in captured.err
    assert f"skipped {new / 'linked'}: a link to {new / 'real'}, a folder of {new}" in captured.err  # named now
    assert all(f.startswith(("real/", "sub/")) for f in files)  # under their own path, whatever the walk's order


def test_another_checkpoint_in_the_same_folder_or_through_a_link_is_another_runs(tiny_data, tmp_path):
    """From the red team: ep2.pt beside checkpoint.pt is another model, and a link to a running run's
    checkpoint is that run's."""
    import fcntl
    import os
    import shutil

    run(tiny_data, tmp_path / "A")
    shutil.copy(tmp_path / "A" / "checkpoint.pt", tmp_path / "A" / "ep3.pt")
    train.main(["--epochs", "4", "--seed", "2", "--batch-size", "8", "--data-dir", str(tiny_data),
                "--results-dir", str(tmp_path / "A"), "--resume"])
    reports = (tmp_path / "A" / "per_class.csv").read_bytes()
    four = (tmp_path / "A" / "checkpoint.pt").read_bytes()
    train.main(["--evaluate", "--checkpoint", str(tmp_path / "A" / "ep3.pt"), "--data-dir", str(tiny_data)])
    assert (tmp_path / "A" / "version_1" / "per_class.csv").read_bytes() == reports
    train.main(["--epochs", "5", "--seed", "2", "--batch-size", "8", "--data-dir", str(tiny_data), "--resume",
                "--checkpoint", str(tmp_path / "A" / "ep3.pt")])
    assert (tmp_path / "A" / "version_2" / "checkpoint.pt").read_bytes() == four
    (tmp_path / "X").mkdir()
    os.symlink(tmp_path / "A" / "checkpoint.pt", tmp_path / "X" / "ck.pt")
    with open(tmp_path / "A" / ".lock", "r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running train.py holds it
        with pytest.raises(SystemExit, match="belongs to a train.py run that is still going"):
            train.main(["--predict", str(tiny_data / "mnist_test"), "--checkpoint", str(tmp_path / "X" / "ck.pt")])


def test_a_refused_resume_from_another_folder_moves_and_writes_nothing(tmp_path):
    from make_shapes import make_shapes

    csv = make_shapes(tmp_path / "shapes", per_class=8)
    args = ["--csv", str(csv), "--file-column", "path", "--label-column", "label", "--mode", "RGB", "--epochs", "1",
            "--batch-size", "4", "--image-size", "16", "--no-disk-cache"]
    train.main(args + ["--results-dir", str(tmp_path / "B"), "--split-seed", "5"])
    train.main(args + ["--results-dir", str(tmp_path / "C")])
    before = sorted(p.name for p in (tmp_path / "C").iterdir())
    split = (tmp_path / "C" / "split.csv").read_bytes()
    with pytest.raises(SystemExit, match=f"differs from {tmp_path / 'B' / 'split.csv'}"):
        train.main(args + ["--results-dir", str(tmp_path / "C"), "--resume", "--epochs", "2", "--split-seed", "7",
                           "--checkpoint", str(tmp_path / "B" / "checkpoint.pt")])
    assert sorted(p.name for p in (tmp_path / "C").iterdir()) == before  # no version_N, nothing new
    assert (tmp_path / "C" / "split.csv").read_bytes() == split
    train.main(args + ["--results-dir", str(tmp_path / "C"), "--resume", "--epochs", "2", "--split-seed", "5",
                       "--checkpoint", str(tmp_path / "B" / "checkpoint.pt")])  # B's own flags: it goes on
    assert (tmp_path / "C" / "split.csv").read_bytes() == (tmp_path / "B" / "split.csv").read_bytes()
    assert (tmp_path / "C" / "version_1" / "split.csv").read_bytes() == split  # C's own, kept


def test_evaluate_without_data_flags_names_the_data_it_was_trained_on_and_builds_nothing(trained, tmp_path,
                                                                                         monkeypatch):
    data, results, _, _ = trained
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # no data/ here
    with pytest.raises(SystemExit, match=re.escape(f"was trained on {data / 'mnist_train.csv'} (40 rows)")):
        train.main(["--evaluate", "--checkpoint", str(results / "checkpoint.pt"), "--results-dir", str(tmp_path / "e")])
    assert not (tmp_path / "elsewhere" / "data").exists()


# ---- issue 29: files that are not what they seem ---------------------------------------------------

def test_predict_reads_an_image_without_an_extension_and_refuses_an_edited_class_list(trained, tmp_path):
    _, results, _, _ = trained
    scan = tmp_path / "scan"  # a PNG without an extension: an image, not a CSV to decode as text
    write_png(tmp_path / "scan.png", np.full((28, 28), 90, dtype=np.uint8)).rename(scan)
    rows = read_rows(train.main(["--predict", str(scan), "--results-dir", str(tmp_path / "p"),
                                 "--checkpoint", str(results / "checkpoint.pt")]))
    assert rows[1][0] == "scan" and rows[1][1] in [str(i) for i in range(10)]
    checkpoint = torch.load(results / "checkpoint.pt", weights_only=True)
    checkpoint["classes"] = checkpoint["classes"][:3]  # shorter than the model's 10 outputs
    torch.save(checkpoint, tmp_path / "edited.pt")
    with pytest.raises(SystemExit, match=r"edited.pt names 3 classes but its model has 10 outputs"):
        train.main(["--predict", str(scan), "--results-dir", str(tmp_path / "q"),
                    "--checkpoint", str(tmp_path / "edited.pt")])


def test_a_checkpoint_that_cannot_be_read_or_is_a_fifo_is_a_sentence_not_damaged_or_a_hang(tmp_path,
                                                                                             monkeypatch):
    import subprocess
    import sys

    import evaluate
    from conftest import ROOT
    fifo = tmp_path / "checkpoint.pt"
    os.mkfifo(fifo)
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import evaluate, pathlib\n" \
           f"evaluate.read_checkpoint(pathlib.Path({str(fifo)!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "is not a regular file (a FIFO, device or socket)" in done.stderr
    real_open = os.open

    def refused(path, *args, **kwargs):  # what a file of another user's gives (root reads anything)
        if str(path).endswith("theirs.pt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(evaluate.os, "open", refused)
    with pytest.raises(evaluate.RunError, match=r"theirs.pt cannot be read \(Permission denied\)") as e:
        evaluate.read_checkpoint(tmp_path / "theirs.pt")
    assert "damaged" not in e.value.message


def test_a_fifo_named_lock_beside_another_folders_checkpoint_is_a_sentence_not_a_hang(trained, tmp_path):
    import shutil
    import subprocess
    import sys

    from conftest import ROOT
    tiny_data, results, _, _ = trained
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(results / "checkpoint.pt", other / "checkpoint.pt")
    os.mkfifo(other / ".lock")
    for use in (["--predict", str(tiny_data / "mnist_test")], ["--evaluate", "--data-dir", str(tiny_data)]):
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), *use, "--checkpoint",
                               str(other / "checkpoint.pt"), "--results-dir", str(tmp_path / "p")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "other/.lock cannot be used as a lock (it is not a regular file: a FIFO, device or socket)" \
            in done.stderr


def test_predict_on_a_folder_names_the_files_it_skips_for_their_extension(trained, tmp_path, capsys):
    _, results, _, _ = trained
    folder = tmp_path / "new"
    write_png(folder / "a.png", np.full((28, 28), 30, dtype=np.uint8))
    write_png(folder / "b.png", np.full((28, 28), 60, dtype=np.uint8)).rename(folder / "scan")  # no extension
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0")  # hidden: a system's, not the user's
    capsys.readouterr()
    rows = read_rows(train.main(["--predict", str(folder), "--results-dir", str(tmp_path / "p"),
                                 "--checkpoint", str(results / "checkpoint.pt")]))
    assert [row[0] for row in rows[1:]] == ["a.png"]
    assert (f"train.py: warning: skipped 2 file(s) in {folder} that are not image files by their extension, "
            "such as 'notes.txt' (list them in a CSV, or pass one as --predict FILE, to predict them)") \
        in capsys.readouterr().err


# ---- predictions for a submission (issue 30, point 8): Kaggle's layout -------------------------

KAGGLE_TEST_IDS = ["t3", "a9", "t1", "b0", "t2"]  # sample_submission.csv's order: not sorted


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    """A Kaggle competition folder, and a 1-epoch model of it (in model/), shared by the tests
    below: train.csv (id,label; the file column names <id>.png until --file-suffix reads ids
    there), train/<id>.png of cats (light) and dogs (dark), test/<id>.png and
    sample_submission.csv (id,label, the label a placeholder 0)."""
    from conftest import no_figures

    root = tmp_path_factory.mktemp("kaggle")
    rng = np.random.default_rng(30)
    lines = ["id,label"]
    for i in range(20):  # 10 a class: the drawn split gives each one valid and one test image
        label = "cat" if i % 2 else "dog"
        base = 200 if label == "cat" else 40
        write_png(root / "train" / f"{i:04d}.png", rng.integers(base, base + 50, (8, 8, 3), dtype=np.uint8))
        lines.append(f"{i:04d}.png,{label}")
    write_csv(root / "train.csv", "\n".join(lines) + "\n")
    for j, name in enumerate(KAGGLE_TEST_IDS):
        base = 200 if j % 2 else 40
        write_png(root / "test" / f"{name}.png", rng.integers(base, base + 50, (8, 8, 3), dtype=np.uint8))
    write_csv(root / "sample_submission.csv", "id,label\n" + "".join(f"{n},0\n" for n in KAGGLE_TEST_IDS))
    with pytest.MonkeyPatch.context() as patch:
        no_figures(patch)
        train.main(["--csv", str(root / "train.csv"), "--file-column", "id", "--label-column", "label",
                    "--img-dir", str(root / "train"), "--epochs", "1", "--batch-size", "8",
                    "--results-dir", str(root / "model")])
    return root


def predict_kaggle(root, results, *flags: str):
    return train.main(["--checkpoint", str(root / "model" / "checkpoint.pt"), "--results-dir", str(results),
                       *flags])


def test_predict_a_kaggle_test_folder_and_sample_submission_writes_a_submission_as_it_stands(kaggle, tmp_path,
                                                                                             capsys):
    sample = read_rows(kaggle / "sample_submission.csv")
    by_folder = read_rows(predict_kaggle(kaggle, tmp_path / "f", "--predict", str(kaggle / "test"),
                                         "--predict-columns", "id,label", "--file-suffix", ".png"))
    assert by_folder[0] == ["id", "label"] and all(len(row) == 2 for row in by_folder)
    assert [row[0] for row in by_folder[1:]] == sorted(KAGGLE_TEST_IDS)  # a folder: by name, no .png
    assert {row[1] for row in by_folder[1:]} <= {"cat", "dog"}  # class names, not indices
    said = capsys.readouterr().out
    assert f"Predicted 5 images with {kaggle / 'model' / 'checkpoint.pt'}: {tmp_path / 'f' / 'predictions.csv'} " \
           "(columns id,label)" in said and "Accuracy" not in said
    by_table = read_rows(predict_kaggle(kaggle, tmp_path / "t", "--predict", str(kaggle / "sample_submission.csv"),
                                        "--img-dir", str(kaggle / "test"), "--predict-columns", "id,label",
                                        "--file-suffix", ".png"))
    assert [row[0] for row in by_table] == [row[0] for row in sample]  # the ids, header and order exactly
    assert sorted(by_table[1:]) == sorted(by_folder[1:])  # the placeholder 0s were not read: no label error
    assert "Accuracy" not in capsys.readouterr().out
    with_ending = read_rows(predict_kaggle(kaggle, tmp_path / "e", "--predict", str(kaggle / "test"),
                                           "--predict-columns", "id,label"))
    assert with_ending[1][0] == "a9.png" and "The ids keep their .png: pass --file-suffix .png for ids without " \
        "it, as a sample_submission.csv has them" in capsys.readouterr().out


def test_predict_without_predict_columns_names_rows_by_id_and_says_when_labels_look_like_placeholders(
        kaggle, tmp_path, capsys):
    rows = read_rows(predict_kaggle(kaggle, tmp_path / "p", "--predict", str(kaggle / "test"), "--file-suffix",
                                    ".png"))
    assert rows[0][:2] == ["file", "predicted"] and rows[0][-1] == "problem"  # today's columns stay
    assert [row[0] for row in rows[1:]] == sorted(KAGGLE_TEST_IDS)
    flags = ["--img-dir", str(kaggle / "test"), "--file-column", "id", "--label-column", "label", "--file-suffix",
             ".png"]  # the label column asked for: read as the truth, as today
    # the classes are names (cat, dog): the placeholder 0 is none of them (not index 0: a silent 'cat')
    with pytest.raises(DatasetError, match=r"line 2: label '0' is not one of the classes(.|\n)*"
                                           r"placeholder labels\? --predict-columns ID,LABEL does not read"):
        predict_kaggle(kaggle, tmp_path / "p", "--predict", str(kaggle / "sample_submission.csv"), *flags)
    same = write_csv(tmp_path / "same.csv", "id,label\nt1,cat\nt3,cat\n")
    with pytest.warns(UserWarning, match="every image's true class is 'cat': if the label column holds a sample "
                                         "submission's placeholders, this accuracy means nothing"):
        predict_kaggle(kaggle, tmp_path / "p", "--predict", str(same), *flags)
    assert "Accuracy: " in capsys.readouterr().out
    text = write_csv(tmp_path / "s.csv", "id,label\nt1,?\nt3,?\n")
    with pytest.raises(DatasetError, match=r"line 2: label '\?' is not one of the classes(.|\n)*"
                                           r"placeholder labels\? --predict-columns ID,LABEL does not read"):
        predict_kaggle(kaggle, tmp_path / "p", "--predict", str(text), *flags)


def test_a_submission_with_an_unreadable_image_is_refused_naming_it_and_nothing_is_written(kaggle, tmp_path):
    test = tmp_path / "test"
    shutil.copytree(kaggle / "test", test)
    (test / "t2.png").write_bytes((test / "t2.png").read_bytes()[:40])  # truncated
    (test / "b0.png").unlink()  # listed in the table, not on disk
    sample = write_csv(tmp_path / "sample_submission.csv", (kaggle / "sample_submission.csv").read_text())
    first = predict_kaggle(kaggle, tmp_path / "p", "--predict", str(kaggle / "test"), "--predict-columns",
                           "id,label", "--file-suffix", ".png").read_bytes()
    with pytest.raises(DatasetError) as info:
        predict_kaggle(kaggle, tmp_path / "p", "--predict", str(sample), "--img-dir", str(test),
                       "--predict-columns", "id,label", "--file-suffix", ".png")
    said = str(info.value)
    assert said.startswith(f"{sample}: 2 of 5 images could not be read, so no submission was written (it "
                           f"would lack their rows):\n  'b0': line 5: file not found: {test / 'b0.png'}")
    assert "'t2': line 6: " in said  # each named by its id, as the table has it and "without --predict-columns, predictions.csv holds every" in said
    with pytest.raises(DatasetError, match=r"1 of 4 images could not be read, so no submission(.|\n)*'t2.png'"):
        predict_kaggle(kaggle, tmp_path / "p", "--predict", str(test), "--predict-columns", "id,label")
    assert (tmp_path / "p" / "predictions.csv").read_bytes() == first and not (tmp_path / "p" / "version_1").exists()


def test_a_submission_keeps_every_row_of_the_table_a_repeated_id_included(kaggle, tmp_path):
    sample = write_csv(tmp_path / "s.csv", "\n\nid,label\nt1,0\n\nt3,0\nt1,0\n")  # blank lines: no rows
    with pytest.warns(UserWarning, match=f"^{sample}: 1 row"):  # the user's table named, not our listing
        rows = read_rows(predict_kaggle(kaggle, tmp_path / "p", "--predict", str(sample), "--img-dir",
                                        str(kaggle / "test"), "--predict-columns", "id,label", "--file-suffix",
                                        ".png"))
    assert [row[0] for row in rows] == ["id", "t1", "t3", "t1"] and rows[1] == rows[3]


def test_predict_columns_must_be_two_names_and_go_with_predict(kaggle, tmp_path, capsys):
    for flags, message in [(["--predict", str(kaggle / "test"), "--predict-columns", "id"],
                            "expected two column names, ID,LABEL (such as id,label from sample_submission.csv)"),
                           (["--predict", str(kaggle / "test"), "--predict-columns", "id,id"], "got 'id,id'"),
                           (["--predict-columns", "id,label"], "--predict-columns goes with --predict")]:
        with pytest.raises(SystemExit) as info:
            predict_kaggle(kaggle, tmp_path / "p", *flags)
        assert info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(DatasetError, match=r"sample_submission.csv: no column 'ImageId' of ids; the columns are "
                                           r"\['id', 'label'\]: pass --predict-columns ID,LABEL with the ids' column first"):
        predict_kaggle(kaggle, tmp_path / "p", "--predict", str(kaggle / "sample_submission.csv"), "--img-dir",
                       str(kaggle / "test"), "--predict-columns", "ImageId,Label")


def test_predict_names_each_linked_subfolder_to_a_folder_read_already_in_one_line_and_a_loop_ends(kaggle,
                                                                                                 tmp_path, capsys):
    new = tmp_path / "new"
    shutil.copytree(kaggle / "test", new / "b_real")
    os.symlink(new / "b_real", new / "a_sibling")  # sorts first: its images still come under b_real/
    os.symlink(new, new / "b_real" / "up")  # the folder itself
    os.symlink(new / "loop2", new / "loop1")  # a loop of links: neither folder nor file
    os.symlink(new / "loop1", new / "loop2")
    capsys.readouterr()
    rows = read_rows(predict_kaggle(kaggle, tmp_path / "p", "--predict", str(new)))
    assert [row[0] for row in rows[1:]] == [f"b_real/{n}.png" for n in sorted(KAGGLE_TEST_IDS)]
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "a_sibling" in line] == [
        f"train.py: warning: skipped {new / 'a_sibling'}: a link to {new / 'b_real'}, a folder of {new} whose "
        "images are listed under their own path"]
    assert [line for line in err if "/up" in line] == [
        f"train.py: warning: skipped {new / 'b_real' / 'up'}: a link to {new}, {new} itself"]
    assert "skipped 2 file(s)" in "\n".join(err)  # the looping links: counted among the files skipped


def test_write_predictions_of_a_dataset_built_elsewhere(kaggle, tmp_path, capsys):
    """The interface for unlabelled test rows of a training table: a dataset, the model and its
    classes -> predictions.csv, in either form."""
    from dataset import CsvImageDataset
    from evaluate import ToPredict, model_from_checkpoint, read_checkpoint, write_predictions

    path = kaggle / "model" / "checkpoint.pt"
    checkpoint = read_checkpoint(path)
    model = model_from_checkpoint(checkpoint, path, torch.device("cpu")).eval()
    table = write_csv(tmp_path / "rows.csv", "id,label\nt1.png,\nmissing.png,\nt3.png,\n")
    with pytest.warns(UserWarning, match="skipping bad rows"):
        ds = CsvImageDataset(table, kaggle / "test", file_column="id", label_column=None, mode=checkpoint["mode"],
                             image_size=tuple(checkpoint["image_size"]), classes=checkpoint["classes"],
                             skip_bad_rows=True)
    with pytest.warns(UserWarning, match="1 of 3 images could not be read"):
        out = write_predictions(model, ToPredict.of(ds), checkpoint["classes"], torch.device("cpu"), tmp_path / "p",
                                source=table, model_path=path)
    assert [row[0] for row in read_rows(out)] == ["file", "t1.png", "missing.png", "t3.png"]
    with pytest.raises(DatasetError, match="1 of 3 images could not be read, so no submission"):
        write_predictions(model, ToPredict.of(ds), checkpoint["classes"], torch.device("cpu"), tmp_path / "p",
                          source=table, model_path=path, submission=("id", "label"))


def test_a_submission_past_one_prediction_batch_has_every_image(kaggle, tmp_path):
    from evaluate import PREDICT_BATCH

    ids = [f"x{i:04d}" for i in range(PREDICT_BATCH + 45)]
    for i, name in enumerate(ids):
        write_png(tmp_path / "test" / f"{name}.png", np.full((8, 8, 3), (i * 7) % 256, dtype=np.uint8))
    rows = read_rows(predict_kaggle(kaggle, tmp_path / "p", "--predict", str(tmp_path / "test"), "--predict-columns",
                                    "id,label", "--file-suffix", ".png"))
    assert [row[0] for row in rows[1:]] == ids and {row[1] for row in rows[1:]} <= {"cat", "dog"}


def test_predict_reads_a_headerless_table_and_warns_when_a_first_row_is_read_as_a_header(kaggle, tmp_path, capsys):
    """fastai's header=None table: --no-header goes with --predict; without it, the first row (an image's
    name) would be taken for a header and its image left out: a warning names it."""
    table = write_csv(tmp_path / "t.csv", "t1.png,cat\nt3.png,dog\n")
    rows = read_rows(predict_kaggle(kaggle, tmp_path / "p", "--predict", str(table), "--img-dir",
                                    str(kaggle / "test"), "--no-header", "--file-column", "0"))
    assert [row[0] for row in rows[1:]] == ["t1.png", "t3.png"]
    with pytest.warns(UserWarning, match="its header line names 't1.png', which looks like an image file: if the "
                                         "first line is a row, pass header=False \\(--no-header\\)"):
        rows = read_rows(predict_kaggle(kaggle, tmp_path / "p", "--predict", str(table), "--img-dir",
                                        str(kaggle / "test"), "--file-column", "0"))
    assert [row[0] for row in rows[1:]] == ["t3.png"]


def test_predict_refuses_a_label_column_the_table_lacks_rather_than_score_nothing(kaggle, tmp_path):
    table = write_csv(tmp_path / "t.csv", "file,label\nt1.png,cat\nt3.png,dog\n")
    with pytest.raises(DatasetError, match="no column\\(s\\) \\['lables'\\].*leave it out to predict without them"):
        predict_kaggle(kaggle, tmp_path / "p", "--predict", str(table), "--img-dir", str(kaggle / "test"),
                       "--file-column", "file", "--label-column", "lables")
    rows = read_rows(predict_kaggle(kaggle, tmp_path / "p", "--predict", str(table), "--img-dir",
                                    str(kaggle / "test"), "--file-column", "file", "--label-column", "1"))
    assert rows[0][-2] == "true" and [row[-2] for row in rows[1:]] == ["cat", "dog"]  # by position, scored
