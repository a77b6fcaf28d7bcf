"""Nothing lost, nothing raw (issue 11, the train.py part): one run per results folder, earlier
results kept, leftovers removed, damaged checkpoints and unusable flags as one sentence."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from conftest import ROOT, tmpfs


def flags(data, results, *extra: str, epochs: int = 2) -> list[str]:
    return ["--epochs", str(epochs), "--seed", "3", "--batch-size", "8", "--data-dir", str(data),
            "--results-dir", str(results), *extra]


def test_a_second_run_into_a_busy_results_folder_refuses_and_a_killed_run_frees_it(tiny_data, tmp_path):
    results = tmp_path / "r"
    args = flags(tiny_data, results, "--logging-interval", "1000", epochs=1000)
    with subprocess.Popen([sys.executable, "-u", str(ROOT / "train.py"), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as first:
        for line in first.stdout:
            if "Train:" in line:  # running, and holding the folder
                break
        with pytest.raises(SystemExit, match=rf"{results} is in use by another train.py run "
                                             rf"\(process {first.pid}\)"):
            train.main(flags(tiny_data, results))
        first.send_signal(signal.SIGKILL)
        first.stdout.read()
    history = train.main(flags(tiny_data, results))  # the kernel released the lock of the killed run
    assert len(history.train_acc) == 2


def test_running_again_keeps_the_earlier_results_in_version_folders(tiny_data, tmp_path, capsys):
    results = tmp_path / "r"
    train.main(flags(tiny_data, results))
    first = (results / "metrics.csv").read_bytes()
    (results / ".checkpoint.pt.csvimg-tmp-99999").write_bytes(b"left by a killed run")
    train.main(flags(tiny_data, results, "--hidden", "20"))
    assert f"Earlier results in {results} moved to {results / 'version_1'}/" in capsys.readouterr().out
    assert (results / "version_1" / "metrics.csv").read_bytes() == first
    assert (results / "version_1" / "checkpoint.pt").is_file() and (results / "checkpoint.pt").is_file()
    assert not list(results.glob(".*tmp*"))
    train.main(flags(tiny_data, results))
    assert sorted(p.name for p in results.glob("version_*")) == ["version_1", "version_2"]


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "missing keys"])
def test_a_damaged_checkpoint_is_one_sentence(tiny_data, tmp_path, damage):
    results = tmp_path / "r"
    train.main(flags(tiny_data, results))
    path = results / "checkpoint.pt"
    data = path.read_bytes()
    if damage == "missing keys":
        torch.save({"model": torch.load(path, weights_only=True)["model"]}, path)
    else:
        path.write_bytes({"truncated": data[: len(data) // 2], "random bytes": os.urandom(500),
                          "empty": b""}[damage])
    with pytest.raises(SystemExit) as info:
        train.main(flags(tiny_data, results, "--resume", epochs=3))
    message = str(info.value)
    assert f"{path} is damaged or not a checkpoint of train.py" in message
    assert "weights_only" not in message and "Start afresh without --resume" in message


def test_resume_with_fewer_epochs_than_the_checkpoint_is_a_usage_error(tiny_data, tmp_path, capsys):
    train.main(flags(tiny_data, tmp_path / "r", epochs=3))
    with pytest.raises(SystemExit) as info:
        train.main(flags(tiny_data, tmp_path / "r", "--resume", epochs=2))
    assert info.value.code == 2
    assert "already holds 3 epochs; pass --epochs 3 or more" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--seed", str(2**32)], "must be below 2**32"),
    (["--lr", "1e39"], "float32"),
    (["--results-dir", "README.md"], "a file is there, not a folder"),
    pytest.param(["--device", "cuda"], "no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_flag_values_the_run_cannot_use_are_usage_errors(extra, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        train.parse_args(extra)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_ctrl_c_after_the_last_epoch_exits_130_with_the_checkpoint_intact(tiny_data, tmp_path, monkeypatch,
                                                                          capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "write_figures", interrupted)
    with pytest.raises(SystemExit) as info:
        train.main(flags(tiny_data, tmp_path / "r"))
    assert info.value.code == 130
    out = capsys.readouterr().out
    assert "Interrupted after training: the checkpoint of epoch 2" in out and "--evaluate" in out
    assert torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_a_reader_that_goes_away_ends_the_run_quietly(tiny_data, tmp_path):
    command = (f"{sys.executable} {ROOT / 'train.py'} " + " ".join(flags(tiny_data, tmp_path / "r")) +
               " --logging-interval 1 | head -n 1")
    run = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True,
                         timeout=120)
    assert run.stdout.startswith("Disk cache of decoded images: ") and run.stderr == ""


# ---- the data side ---------------------------------------------------------------------------------------

def test_a_class_only_in_valid_or_test_joins_the_classes_with_a_warning(tmp_path):
    from conftest import write_csv, write_png
    from loaders import get_dataloaders_from_split_csv
    import numpy as np

    for i in range(6):
        write_png(tmp_path / "img" / f"{i}.png", np.full((4, 4), i, dtype=np.uint8))
    rows = "0.png,cat,train\n1.png,dog,train\n2.png,cat,valid\n3.png,emu,valid\n4.png,dog,test\n5.png,cat,test\n"
    csv = write_csv(tmp_path / "all.csv", "File Name,Class Label,split\n" + rows)
    with pytest.warns(UserWarning, match=r"training split has no example of class\(es\) \['emu'\]"):
        loaders = get_dataloaders_from_split_csv(csv, tmp_path / "img", batch_size=1)
    assert [loader.dataset.classes for loader in loaders] == [["cat", "dog", "emu"]] * 3
    assert loaders[1].dataset.targets == [0, 2]
    numbers = write_csv(tmp_path / "n.csv", "File Name,Class Label,split\n" + "0.png,0,train\n1.png,1,train\n"
                        "2.png,3,valid\n4.png,1,test\n")
    with pytest.warns(UserWarning, match=r"of class\(es\) \['3'\] \("), \
            pytest.warns(UserWarning, match="1 of the 4 classes has no image: 2"):  # 2 is in no split: nothing to miss
        loaders = get_dataloaders_from_split_csv(numbers, tmp_path / "img", batch_size=1)
    assert loaders[0].dataset.classes == ["0", "1", "2", "3"]  # up to the largest label of any split


def test_a_transparent_drawing_is_laid_over_white_and_counted_by_the_check_command(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    import dataset as dataset_module
    from conftest import write_csv

    pixels = np.zeros((8, 8, 4), dtype=np.uint8)
    pixels[2:6, 2:6, 3] = 255  # a black square on a transparent sheet
    (tmp_path / "img").mkdir()
    Image.fromarray(pixels, "RGBA").save(tmp_path / "img" / "a.png")
    image = dataset_module.decode_image(str(tmp_path / "img" / "a.png"), "L")[0]
    assert image[0, 0] == 255 and image[3, 3] == 0  # not all zeros, as dropping alpha gives
    assert dataset_module.decode_image(str(tmp_path / "img" / "a.png"), "RGB", background=(0, 0, 255))[2, 0, 0] == 255
    csv = write_csv(tmp_path / "x.csv", "File Name,Class Label\na.png,0\n")
    assert dataset_module.main([str(csv), str(tmp_path / "img")]) == 0
    assert "1 image(s) with transparency, laid over white" in capsys.readouterr().out


def test_an_oversized_first_image_is_the_one_blamed(tmp_path, capsys):
    import numpy as np

    import dataset as dataset_module
    from loaders import DecodedImages
    from conftest import write_csv, write_png

    write_png(tmp_path / "img" / "big.png", np.zeros((40, 40), dtype=np.uint8))
    for i in range(4):
        write_png(tmp_path / "img" / f"{i}.png", np.zeros((8, 8), dtype=np.uint8))
    csv = write_csv(tmp_path / "x.csv", "File Name,Class Label\nbig.png,0\n" + "".join(f"{i}.png,1\n" for i in range(4)))
    assert dataset_module.main([str(csv), str(tmp_path / "img")]) == 1
    out = capsys.readouterr().out
    assert "1 bad row(s)" in out and "line 2: 'big.png': size 40x40 (HxW) differs from the commonest, 8x8" in out
    ds = DecodedImages(dataset_module.CsvImageDataset(csv, tmp_path / "img"))
    with pytest.raises(dataset_module.ImageSizeError, match=r"1 bad row.*\n  line 2: 'big.png'"):
        ds.preload()


def test_a_batch_larger_than_the_training_set_is_a_usage_error(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        train.main(["--batch-size", "64", "--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "r")])
    assert info.value.code == 2
    assert "--batch-size 64 is larger than the 40 training images" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["not an image", "decompression bomb"])
def test_a_bad_first_row_is_named_with_its_line(tmp_path, capsys, damage, monkeypatch):
    import numpy as np
    from PIL import Image

    import dataset as dataset_module
    from conftest import write_csv, write_png

    for i in range(3):
        write_png(tmp_path / "img" / f"{i}.png", np.zeros((8, 8), dtype=np.uint8))
    if damage == "not an image":
        (tmp_path / "img" / "first.png").write_text("hello")
    else:
        write_png(tmp_path / "img" / "first.png", np.zeros((100, 100), dtype=np.uint8))
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels: over twice the limit
    csv = write_csv(tmp_path / "x.csv", "File Name,Class Label\nfirst.png,0\n0.png,1\n1.png,0\n2.png,1\n")
    assert dataset_module.main([str(csv), str(tmp_path / "img")]) == 1
    out = capsys.readouterr().out
    # Issue 30: named at the row check, by its header, before anything is decoded (was: when decoded)
    assert "line 2: 'first.png': cannot read the image's header" in out and "1 bad row(s)" in out
    with pytest.raises(dataset_module.DatasetError, match=r"x.csv: 1 bad row\(s\) out of 4:\n  line 2: 'first.png'"):
        dataset_module.CsvImageDataset(csv, tmp_path / "img")


def test_only_this_projects_temporaries_are_removed_from_shared_folders(tiny_data, tmp_path, photos_like=None):
    """Someone else's dot-files that look like temporaries stay, in the results and the cache folder."""
    results, cache = tmp_path / "r", tmp_path / "cache"
    others = [".notes.txt.tmp-1", ".report.tmp-final", ".settings.new-backup", ".x.tmp"]
    for folder in (results, cache):
        folder.mkdir()
        for name in others:
            (folder / name).write_text("someone else's")
    (results / ".metrics.csv.csvimg-tmp-4242").write_text("left by a killed run of ours")
    train.main(flags(tiny_data, results, "--cache-dir", str(cache)))
    for folder in (results, cache):
        assert all((folder / name).read_text() == "someone else's" for name in others)
    assert not (results / ".metrics.csv.csvimg-tmp-4242").exists()


@pytest.mark.parametrize("plant", ["symlink", "hard link"])
def test_a_planted_lock_link_is_refused_with_a_sentence_and_its_target_left_alone(tiny_data, tmp_path, plant):
    import make_subset

    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    results = tmp_path / "r"
    results.mkdir()
    (os.symlink if plant == "symlink" else os.link)(target, results / ".lock")
    with pytest.raises(SystemExit) as info:
        train.main(flags(tiny_data, results))
    what = "is a symbolic link, which is not followed" if plant == "symlink" else "a file with 2 names"
    assert what in str(info.value) and "pass another --results-dir" in str(info.value)
    (os.symlink if plant == "symlink" else os.link)(target, tmp_path / ".d.lock")
    with pytest.raises(make_subset.LockFileError, match="choose another --out-dir"):
        make_subset.main(["--out-dir", str(tmp_path / "d"), "--train-size", "10", "--valid-size", "10",
                          "--test-size", "10"])
    assert target.read_text() == "keep me"


def test_another_users_lock_is_a_sentence(tiny_data, tmp_path, monkeypatch):
    results = tmp_path / "r"
    results.mkdir()
    (results / ".lock").write_text("")
    real_open = os.open

    def as_another_user(path, flags, mode=0o777, **kwargs):  # root may open anything: pretend
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", as_another_user)
    with pytest.raises(SystemExit) as info:
        train.main(flags(tiny_data, results))
    assert f"{results / '.lock'} cannot be opened for writing (it belongs to user id" in str(info.value)
    assert "another user's run uses this folder); pass another --results-dir" in str(info.value)


# ---- issue 29: what stops a run from outside, and a run that diverges --------------------------------

def test_a_loss_that_becomes_nan_stops_the_run_with_the_last_good_checkpoint_and_no_best_pt_from_it(
        tiny_data, tmp_path, monkeypatch, without_figures):
    calls, real = [], train.F.cross_entropy

    def diverging(logits, labels):  # finite for epoch 1 (5 batches of 8), NaN from epoch 2's third batch
        calls.append(1)
        loss = real(logits, labels)
        return loss * float("nan") if len(calls) == 8 else loss

    monkeypatch.setattr(train.F, "cross_entropy", diverging)
    with pytest.raises(SystemExit, match=r"the loss is nan at epoch 2, batch 2: training diverged\. The usual "
                                         r"cause is a learning rate too high .*\(--lr 0\.1: try a tenth of it\)"):
        train.main(flags(tiny_data, tmp_path / "r", epochs=3))
    for name in ("checkpoint.pt", "best.pt"):  # epoch 1's, as it was saved
        assert torch.load(tmp_path / "r" / name, weights_only=True)["epoch"] == 1
    assert (tmp_path / "r" / "metrics.csv").read_text().count("\n") == 2  # the header and epoch 1


def test_a_full_disk_at_the_second_epoch_keeps_the_first_epochs_files_whole(tiny_data, tmp_path, monkeypatch,
                                                                             without_figures):
    import errno
    fsyncs, real = [], os.fsync

    def full(fd):  # epoch 1 saves best.pt, checkpoint.pt, metrics.csv; epoch 2's first file finds the disk full
        if os.path.dirname(os.readlink(f"/proc/self/fd/{fd}")) == str(tmp_path / "r"):  # not the disk cache
            fsyncs.append(fd)
        if len(fsyncs) == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SystemExit) as e:
        train.main(flags(tiny_data, tmp_path / "r", epochs=3))
    message = str(e.value.code)
    assert re.match(rf"train.py: error: the disk holding {re.escape(str(tmp_path / 'r'))} is full \(No space left "
                    r"on device\): epoch 2's files \((best.pt, )?checkpoint.pt, metrics.csv\) need 0\.\d MiB there; "
                    r".*checkpoint.pt still holds epoch 1, so free that much and resume with --resume", message), message
    for name in ("checkpoint.pt", "best.pt"):
        assert torch.load(tmp_path / "r" / name, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [".lock", "best.pt", "checkpoint.pt", "metrics.csv"]


@pytest.fixture
def small_disk(tmp_path):
    """A real 900 KiB tmpfs (skipped without mount rights; the patched-fsync test covers that case):
    two MLP checkpoints fit, a third does not."""
    with tmpfs(tmp_path / "small", "900k") as folder:
        yield folder


def test_a_real_full_disk_is_a_sentence_and_the_last_checkpoint_stays(tiny_data, small_disk):
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *flags(tiny_data, small_disk / "r", epochs=3)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"train.py: error: the disk holding {small_disk / 'r'} is full (No space left on device)" in done.stderr
    checkpoint = torch.load(small_disk / "r" / "checkpoint.pt", weights_only=True)
    best = torch.load(small_disk / "r" / "best.pt", weights_only=True)
    assert best["epoch"] <= checkpoint["epoch"] and checkpoint["epoch"] >= 1  # no best.pt newer than it
    assert f"still holds epoch {checkpoint['epoch']}" in done.stderr
    assert not [p for p in (small_disk / "r").iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_a_killed_dataloader_worker_is_a_sentence_naming_the_cause_and_the_resume_command(tiny_data, tmp_path,
                                                                                           monkeypatch):
    import dataset
    real = dataset.CsvImageDataset._read

    def read(self, i, same_size):  # in a worker, once epoch 2 began: what the out-of-memory killer does
        if torch.utils.data.get_worker_info() is not None and (tmp_path / "r" / "checkpoint.pt").exists():
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, i, same_size)

    monkeypatch.setattr(dataset.CsvImageDataset, "_read", read)
    with pytest.raises(SystemExit) as e:
        train.main(flags(tiny_data, tmp_path / "r", "--num-workers", "2", "--cache-mb", "0", epochs=3))
    message = str(e.value.code)
    assert re.match(r"train.py: error: a DataLoader worker process stopped \(DataLoader worker \(pid.*\) (is killed "
                    r"by signal: Killed|exited unexpectedly).*\); one killed by signal Killed is most often the "
                    r"out-of-memory killer: pass a smaller --num-workers \(0: none\), or free memory\. "  # --cache-mb is 0
                    r"The checkpoint of the last finished epoch is in .*checkpoint.pt; resume with: python train.py "
                    r".* --resume$", message, re.S), message
    assert torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_sizes_that_cannot_fit_in_memory_are_refused_before_anything_is_allocated(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # 256 x 200000 x 200000 float32: far beyond any machine
        train.main(flags(tiny_data, tmp_path / "r", "--image-size", "200000", "--model", "cnn"))
    assert e.value.code == 2
    assert re.search(r"train.py: error: a batch of 256 images of 1x200000x200000 as float32 would take "
                     r"[\d,]+\.\d GiB, more than this machine's [\d,.]+ GiB of memory", capsys.readouterr().err)
    train.main(flags(tiny_data, tmp_path / "r", epochs=1))
    checkpoint = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    checkpoint["config"]["image_size"] = checkpoint["image_size"] = [200000, 200000]  # edited
    torch.save(checkpoint, tmp_path / "edited.pt")
    with pytest.raises(SystemExit, match=r"256 images of 1x200000x200000 \(.*edited.pt's size\) would take "
                                         r"[\d,]+\.\d GiB, more than this machine's"):
        train.main(["--predict", str(tiny_data / "mnist_test"), "--checkpoint", str(tmp_path / "edited.pt"),
                    "--results-dir", str(tmp_path / "p")])
    from model import build_model
    with pytest.raises(ValueError, match=r"an MLP on 1x28x28 images \(its 784 x 10000000000000 weights\) "
                                         r"would take [\d,]+\.\d GiB, more than"):
        build_model("mlp", 1, (28, 28), 10, hidden=10**13)


def test_a_wait_for_the_other_processes_longer_than_the_notice_says_what_it_waits_for(monkeypatch, capsys):
    import time
    monkeypatch.setattr(train, "WAIT_NOTICE_S", 0.05)
    monkeypatch.setattr(train.dist, "barrier", lambda: time.sleep(0.5))  # rank 0 still decoding
    train.barrier(1, "rank 0 decodes the images into the disk cache")
    assert capsys.readouterr().err == ("train.py: process 1 has waited 0.000833333 min for the others: rank 0 "
                                       "decodes the images into the disk cache (it stops after --dist-timeout)\n")
    monkeypatch.setattr(train.dist, "barrier", lambda: None)  # a prompt answer: not a word
    train.barrier(1, "rank 0 writes the figures and reports")
    time.sleep(0.1)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("signum, status, how", [(signal.SIGINT, 130, "interrupted"),
                                                 (signal.SIGTERM, 143, "terminated")])
def test_a_signal_while_train_py_imports_torch_is_one_line_and_the_signals_status(tmp_path, signum, status, how):
    run = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--epochs", "1", "--results-dir",
                            str(tmp_path / "r")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.15)  # torch's import takes a second or more
    run.send_signal(signum)
    out, err = run.communicate(timeout=60)
    assert run.returncode == status and err == f"\ntrain.py: {how} while starting; nothing was written\n", err
    assert not (tmp_path / "r").exists()


def test_a_fifo_or_folder_given_as_the_checkpoint_is_named_so(tmp_path, capsys):
    os.mkfifo(tmp_path / "c.pt")
    (tmp_path / "d.pt").mkdir()
    for name in ("c.pt", "d.pt"):
        with pytest.raises(SystemExit):
            train.main(["--evaluate", "--checkpoint", str(tmp_path / name)])
        assert f"--checkpoint {tmp_path / name} is not a regular file (a FIFO, folder or device)" \
            in capsys.readouterr().err


def test_a_make_subset_folder_missing_a_csv_names_the_rebuild_command_whatever_its_name(tmp_path):
    import make_subset
    make_subset.main(["--out-dir", str(tmp_path / "digits"), "--train-size", "16", "--valid-size", "8",
                      "--test-size", "8"])
    (tmp_path / "digits" / "mnist_valid.csv").unlink()
    with pytest.raises(SystemExit, match=re.escape(
            f"{tmp_path / 'digits'} holds an incomplete dataset (mnist_valid.csv missing); rebuild it with "
            f"python make_subset.py --out-dir {tmp_path / 'digits'} --force, which replaces only its own files")):
        train.main(flags(tmp_path / "digits", tmp_path / "r", epochs=1))
