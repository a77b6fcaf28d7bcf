"""make_subset.py: balanced, disjoint, reproducible splits; bad IDX input; never a half-written dataset."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torchvision

import make_subset
from conftest import ROOT, tmpfs

SIZES = ["--train-size", "30", "--valid-size", "20", "--test-size", "10"]


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def complete_state(out: Path) -> int | None:
    """The seed of a complete dataset in `out`, None if there is none; fails on a mixed or partial one."""
    if not out.exists():
        return None
    meta = json.loads((out / make_subset.MARKER).read_text())
    for split in make_subset.SPLITS:
        df = pd.read_csv(out / f"mnist_{split}.csv")
        assert len(df) == meta["sizes"][split]
        assert sorted(p.name for p in (out / f"mnist_{split}").iterdir()) == sorted(df["File Name"])
    return meta["seed"]


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, compress: bool = True) -> Path:
    magic = (0x0800 | array.ndim) if magic is None else magic
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_splits_are_balanced_and_disjoint(tmp_path):
    out = make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES])
    hashes = {}
    for split, size in zip(make_subset.SPLITS, (30, 20, 10)):
        df = pd.read_csv(out / f"mnist_{split}.csv")
        assert list(df.columns) == ["File Name", "Class Label"] and len(df) == size
        counts = Counter(df["Class Label"])
        assert len(counts) == 10 and max(counts.values()) - min(counts.values()) <= 1
        hashes[split] = set(file_hashes(out / f"mnist_{split}").values())
        assert len(hashes[split]) == size  # no image twice within a split
    assert not hashes["train"] & hashes["valid"] and not hashes["train"] & hashes["test"]
    assert not hashes["valid"] & hashes["test"]
    labels = np.repeat(np.arange(10), 50)
    picked = make_subset.choose_indices(labels, [256, 128, 100], seed=3)
    assert sum(len(p) for p in picked) == len(set(np.concatenate(picked).tolist()))


def test_same_arguments_give_byte_identical_files_and_seed_changes_them(tmp_path):
    a = make_subset.main(["--out-dir", str(tmp_path / "a"), *SIZES])
    b = make_subset.main(["--out-dir", str(tmp_path / "b"), *SIZES])
    c = make_subset.main(["--out-dir", str(tmp_path / "c"), *SIZES, "--seed", "2"])
    assert file_hashes(a) == file_hashes(b)
    assert file_hashes(a) != file_hashes(c)


def test_refuses_to_overwrite_without_force_and_foreign_folders_even_with_force(tmp_path):
    out = make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES])
    before = file_hashes(out)
    with pytest.raises(make_subset.OutDirError, match="--force"):
        make_subset.main(["--out-dir", str(out), *SIZES, "--seed", "2"])
    assert file_hashes(out) == before
    make_subset.main(["--out-dir", str(out), *SIZES, "--seed", "2", "--force"])
    assert complete_state(out) == 2
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(make_subset.OutDirError, match="did not write: notes.txt"):
        make_subset.main(["--out-dir", str(foreign), *SIZES, "--force"])
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_sizes_beyond_the_source_fail_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="class"):
        make_subset.main(["--out-dir", str(tmp_path / "d"), "--train-size", "4000", "--valid-size", "900"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage, message", [
    ("magic", "wrong magic number"),
    ("short", "truncated"),
    ("count", "matching pairs"),
    ("gzip", "gzip"),
])
def test_bad_idx_files_get_a_clear_error_and_nothing_is_written(tmp_path, damage, message):
    images = np.zeros((20, 4, 4), dtype=np.uint8)
    labels = np.arange(20) % 2
    img_path = write_idx(tmp_path / "x.gz", images, magic=0x0801 if damage == "magic" else None)
    lab_path = write_idx(tmp_path / "y.gz", labels[:19] if damage == "count" else labels)
    if damage == "short":
        raw = gzip.decompress(img_path.read_bytes())
        img_path.write_bytes(gzip.compress(raw[:-5]))
    if damage == "gzip":
        img_path.write_bytes(img_path.read_bytes()[:30])
    with pytest.raises(make_subset.IdxError, match=message) as info:
        make_subset.main(["--out-dir", str(tmp_path / "out"), "--images", str(img_path), "--labels", str(lab_path),
                          "--train-size", "4", "--valid-size", "2", "--test-size", "2"])
    assert "x.gz" in str(info.value) or "y.gz" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_any_idx_pair_works(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 5, 6), dtype=np.uint8)
    img_path = write_idx(tmp_path / "x", images, compress=False)
    lab_path = write_idx(tmp_path / "y.gz", np.arange(30) % 3)
    out = make_subset.main(["--out-dir", str(tmp_path / "out"), "--images", str(img_path), "--labels", str(lab_path),
                            "--train-size", "6", "--valid-size", "3", "--test-size", "3"])
    assert complete_state(out) == make_subset.DEFAULT_SEED
    from PIL import Image
    with Image.open(next((out / "mnist_train").iterdir())) as im:
        assert im.size == (6, 5) and im.mode == "L"


def test_download_path_uses_torchvision_mnist(tmp_path, monkeypatch):
    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            calls.append((train, download))
            n = 60 if train else 30
            self.data = np.full((n, 28, 28), 200 if train else 100, dtype=np.uint8)
            self.targets = np.arange(n) % 10

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    out = make_subset.main(["--download", "--download-root", str(tmp_path / "raw"), "--out-dir", str(tmp_path / "d"),
                            "--train-size", "20", "--valid-size", "20", "--test-size", "20"])
    assert sorted(calls) == [(False, True), (True, True)]
    from PIL import Image
    for split, value in (("train", 200), ("valid", 200), ("test", 100)):  # test comes from MNIST's test set
        with Image.open(out / f"mnist_{split}" / "00000.png") as im:
            assert np.array(im).max() == value


def test_a_crash_while_writing_keeps_the_previous_dataset(tmp_path, monkeypatch):
    out = make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES])
    before = file_hashes(out)
    real = make_subset.write_split

    def crash_on_valid(folder, name, images, labels):
        if name == "valid":
            raise KeyboardInterrupt  # as if interrupted half-way
        real(folder, name, images, labels)

    monkeypatch.setattr(make_subset, "write_split", crash_on_valid)
    with pytest.raises(KeyboardInterrupt):
        make_subset.main(["--out-dir", str(out), *SIZES, "--seed", "9", "--force"])
    assert file_hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]  # no temporary left behind


def test_sigkill_at_any_moment_leaves_old_or_new_dataset(tmp_path):
    out = tmp_path / "d"
    make_subset.main(["--out-dir", str(out), "--train-size", "1500", "--valid-size", "10", "--test-size", "10"])
    seen = set()
    for delay in (0.3, 0.6, 0.9, 1.2, 1.6):
        proc = subprocess.Popen([sys.executable, str(ROOT / "make_subset.py"), "--out-dir", str(out), "--force",
                                 "--train-size", "1500", "--valid-size", "10", "--test-size", "10", "--seed",
                                 str(int(delay * 10))], stdout=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        make_subset.recover(out)  # what the next run does first
        seen.add(complete_state(out))
    assert None not in seen
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]


def test_a_second_concurrent_run_into_the_same_folder_refuses_and_a_kill_frees_it(tmp_path):
    out = tmp_path / "d"
    big = ["--train-size", "4900", "--valid-size", "40", "--test-size", "40"]
    first = subprocess.Popen([sys.executable, str(ROOT / "make_subset.py"), "--out-dir", str(out), *big],
                             stdout=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not list(tmp_path.glob(".d.csvimg-tmp-*")) and time.time() < deadline:  # first is writing
        time.sleep(0.02)
    second = subprocess.run([sys.executable, str(ROOT / "make_subset.py"), "--out-dir", str(out), *SIZES],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"another make_subset.py run (process {first.pid}) is writing {out}" in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert list(tmp_path.glob(".d.csvimg-tmp-*"))  # the killed run's temporary folder ...
    make_subset.main(["--out-dir", str(out), *SIZES])  # ... is cleaned up by the next holder of the lock
    assert complete_state(out) is not None and not list(tmp_path.glob(".d.csvimg-tmp-*"))


def test_out_dir_that_is_the_current_folder_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        make_subset.main(["--out-dir", "."])
    assert info.value.code == 2 and "is the folder you are in" in capsys.readouterr().err


# ---- issue 29: --force replaces only its own files; a dataset with a CSV deleted; a full disk ----------------


def folder_state(folder: Path) -> dict[str, str]:
    """Every file and link under folder (not followed), by relative name: what a run must leave alone
    (the lock files aside, which hold the last run's process id)."""
    state = {}
    for p in sorted(folder.rglob("*")):
        if p.name.endswith(".lock"):
            continue
        if p.is_symlink():
            state[str(p.relative_to(folder))] = "-> " + os.readlink(p)
        elif p.is_file():
            state[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return state


def plant(out: Path, what: str) -> str:
    """Something of the user's in a dataset folder; returns the name the refusal must show."""
    if what == "results folder":
        (out / "results").mkdir()
        (out / "results" / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
        return "results/"
    if what == "notes":
        (out / "notes.txt").write_text("keep me")
        return "notes.txt"
    if what == "file in an image folder":
        (out / "mnist_train" / "mine.txt").write_text("keep me")
        return "mnist_train/mine.txt"
    if what == "link named like an image folder":
        elsewhere = out.parent / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "precious.png").write_bytes(b"keep me")
        for p in (out / "mnist_valid").iterdir():
            p.unlink()
        (out / "mnist_valid").rmdir()
        os.symlink(elsewhere, out / "mnist_valid")
        return "mnist_valid"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["results folder", "notes", "file in an image folder",
                                  "link named like an image folder"])
def test_force_refuses_a_dataset_folder_holding_files_of_others_and_removes_nothing(tmp_path, what):
    out = make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES])
    shown = plant(out, what)
    before = folder_state(tmp_path)
    with pytest.raises(make_subset.OutDirError) as info:
        make_subset.main(["--out-dir", str(out), *SIZES, "--seed", "2", "--force"])
    message = str(info.value)
    assert str(out) in message and shown in message and "make_subset.py did not write" in message
    assert "move them out" in message and "choose another --out-dir" in message
    assert folder_state(tmp_path) == before  # nothing removed, nothing added: not even a temporary


def test_the_refusal_names_a_few_files_of_others_then_a_count_and_the_script_exits_non_zero(tmp_path):
    out = make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES])
    for i in range(7):
        (out / f"note{i}.txt").write_text("keep me")
    before = folder_state(tmp_path)
    run = subprocess.run([sys.executable, str(ROOT / "make_subset.py"), "--out-dir", str(out), *SIZES, "--force"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith(f"make_subset.py: error: {out} holds files make_subset.py did not write: "
                                 "note0.txt, note1.txt, note2.txt and 4 more")
    assert folder_state(tmp_path) == before


def test_force_replaces_its_own_files_and_leaves_the_lock_beside_them(tmp_path):
    out = make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES])
    make_subset.main(["--out-dir", str(out), *SIZES, "--seed", "2", "--force"])
    assert complete_state(out) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]


def test_force_carries_train_pys_disk_cache_into_the_new_dataset(tiny_data, tmp_path):
    """data/.cache is train.py's, not make_subset.py's: never removed, and no reason to refuse."""
    import warnings

    import train

    run = ["--epochs", "1", "--batch-size", "8", "--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "r")]
    train.main(run)
    cache = folder_state(tiny_data / ".cache")
    assert cache  # the decoded images of the first dataset
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say: the cache is expected there
        make_subset.main(["--out-dir", str(tiny_data), *SIZES, "--seed", "2", "--force"])
    assert complete_state(tiny_data) == 2 and folder_state(tiny_data / ".cache") == cache
    assert len(train.main(run).train_acc) == 1
    assert set(folder_state(tiny_data / ".cache")) != set(cache)  # named by the images: the new ones decoded anew


def test_a_file_of_others_that_appears_while_the_new_dataset_is_written_stops_the_run(tmp_path, monkeypatch):
    out = make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES])
    before = file_hashes(out)
    real = make_subset.write_split

    def user_saves_notes_meanwhile(folder, name, images, labels):
        real(folder, name, images, labels)
        if name == "test":
            (out / "notes.txt").write_text("keep me")

    monkeypatch.setattr(make_subset, "write_split", user_saves_notes_meanwhile)
    with pytest.raises(make_subset.OutDirError, match="notes.txt"):
        make_subset.main(["--out-dir", str(out), *SIZES, "--seed", "2", "--force"])
    assert file_hashes(out) == {**before, "notes.txt": file_hashes(out)["notes.txt"]}
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]


def test_a_file_of_others_that_appears_just_before_the_swap_is_moved_into_the_new_dataset(tmp_path, monkeypatch):
    """The last check and the swap cannot be one step: what lands in between goes along, never away."""
    out = make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES])
    for swap in ("_exchange", "no exchange"):
        def late_arrivals(a, b, real=make_subset._exchange, swap=swap):
            (out / "late.txt").write_text(f"keep me {swap}")
            (out / "mnist_test" / "late.txt").write_text("me too")
            return real(a, b) if swap == "_exchange" else False  # False: the two-rename fallback

        monkeypatch.setattr(make_subset, "_exchange", late_arrivals)
        with pytest.warns(UserWarning, match="late.txt"):
            make_subset.main(["--out-dir", str(out), *SIZES, "--seed", "3", "--force"])
        assert (out / "late.txt").read_text() == f"keep me {swap}"
        assert (out / "mnist_test" / "late.txt").read_text() == "me too"
        assert json.loads((out / make_subset.MARKER).read_text())["seed"] == 3
        assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]
        (out / "late.txt").unlink()
        (out / "mnist_test" / "late.txt").unlink()


def test_leftovers_of_a_killed_run_are_cleared_but_files_of_others_in_them_are_kept(tmp_path):
    out = make_subset.main(["--out-dir", str(tmp_path / "d[1]"), *SIZES])  # [ ] are no glob pattern here
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep me")
    left = tmp_path / f".d[1].{make_subset.TEMP_TAG}-abc"
    left.mkdir()
    make_subset.write_split(left, "train", np.zeros((3, 4, 4), np.uint8), np.arange(3))
    (left / "notes.txt").write_text("keep me")  # someone's, saved into the old dataset before the swap
    os.symlink(mine, tmp_path / f".d[1].{make_subset.TEMP_TAG}-link")  # a link named like ours: not ours
    with pytest.warns(UserWarning, match="notes.txt appeared in .* moved into the new dataset"):
        make_subset.recover(out)
    assert (out / "notes.txt").read_text() == "keep me"  # moved back to where it was saved
    assert not left.exists() and (mine / "keep.txt").read_text() == "keep me"
    assert (tmp_path / f".d[1].{make_subset.TEMP_TAG}-link").is_symlink()


def test_a_linked_out_dir_is_refused_with_the_folder_to_pass_instead(tmp_path):
    real = make_subset.main(["--out-dir", str(tmp_path / "real"), *SIZES])
    os.symlink(real, tmp_path / "d")
    before = folder_state(tmp_path)
    with pytest.raises(make_subset.OutDirError, match=f"is a symbolic link.*--out-dir {real}"):
        make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES, "--force"])
    assert folder_state(tmp_path) == before


def test_a_dataset_with_a_csv_deleted_is_named_and_force_rebuilds_it(tmp_path, monkeypatch):
    import train

    monkeypatch.chdir(tmp_path)
    out = make_subset.main(["--out-dir", "data", *SIZES])
    (out / "mnist_valid.csv").unlink()
    with pytest.raises(make_subset.OutDirError) as info:
        make_subset.main(["--out-dir", "data", *SIZES])
    assert str(info.value) == ("data holds an incomplete dataset (mnist_valid.csv is missing); rebuild it with "
                               "--force (python make_subset.py --out-dir data --force), which replaces only "
                               "make_subset.py's own files")
    with pytest.raises(SystemExit) as caught:  # train.py's first run builds data/ through ensure_dataset
        train.main(["--epochs", "1", "--results-dir", "r"])
    assert str(caught.value) == f"train.py: error: {info.value}"
    make_subset.main(["--out-dir", "data", *SIZES, "--force"])
    assert complete_state(out) == make_subset.DEFAULT_SEED


def test_a_full_disk_is_a_sentence_and_the_previous_dataset_stays(tmp_path, monkeypatch):
    import errno

    from PIL import Image

    out = make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES])
    before = file_hashes(out)
    real, saved = Image.Image.save, []

    def disk_fills_up(self, fp, *args, **kwargs):
        if len(saved) == 40:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(fp)
        return real(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_fills_up)
    with pytest.raises(make_subset.OutDirError) as info:
        make_subset.main(["--out-dir", str(out), *SIZES, "--seed", "2", "--force"])
    message = str(info.value)
    assert message.startswith(f"no space left in {tmp_path} for the new dataset: it needs about ")
    assert f"{out} is unchanged; free some space, or choose an --out-dir on another disk" in message
    assert file_hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]


def test_a_real_full_disk_is_a_sentence_and_the_previous_dataset_stays(tmp_path):
    with tmpfs(tmp_path / "disk", "1M") as disk:
        out = make_subset.main(["--out-dir", str(disk / "d"), *SIZES])
        before = file_hashes(out)
        run = subprocess.run([sys.executable, str(ROOT / "make_subset.py"), "--out-dir", str(out), "--force"],
                             capture_output=True, text=True, timeout=120)  # 768 images: about 3 MB
        assert run.returncode == 1 and "Traceback" not in run.stderr
        assert run.stderr.startswith(f"make_subset.py: error: no space left in {disk} for the new dataset: it "
                                     "needs about 3.")
        assert file_hashes(out) == before
        assert sorted(p.name for p in disk.iterdir()) == [".d.lock", "d"]


# ---- issue 29: a lock file that is no regular file is a sentence, never a wait -------------------------


LOCK_PROBE = """
import json, os, socket, stat, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import loaders, make_subset
folder, posix = Path(sys.argv[2]), sys.argv[3] == "posix"
real_open = os.open
def strict_posix_open(path, flags, *args, **kwargs):
    # POSIX leaves an O_RDWR open of a FIFO undefined; where it waits like a writer's, so does this
    if os.path.exists(path) and stat.S_ISFIFO(os.stat(path).st_mode) and not flags & os.O_NONBLOCK:
        flags = flags & ~os.O_RDWR | os.O_WRONLY
    return real_open(path, flags, *args, **kwargs)
if posix:
    os.open = strict_posix_open
os.mkfifo(folder / "fifo")
server = socket.socket(socket.AF_UNIX)
server.bind(str(folder / "socket"))
(folder / "folder").mkdir()
seen = {}
for module in (loaders, make_subset):
    for name in ("fifo", "socket", "folder"):
        try:
            os.close(module.open_lock(folder / name, "pass another --results-dir"))
            seen[module.__name__ + " " + name] = "opened"
        except module.LockFileError as e:
            seen[module.__name__ + " " + name] = str(e)
print(json.dumps(seen))
"""


@pytest.mark.parametrize("system", ["linux", "posix"])
def test_a_lock_file_that_is_a_fifo_socket_or_folder_is_a_sentence_not_a_hang(tmp_path, system):
    try:  # a regression hangs in open(): the timeout turns it into a failure
        run = subprocess.run([sys.executable, "-c", LOCK_PROBE, str(ROOT), str(tmp_path), system],
                             capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("open_lock waited on a FIFO named like the lock file")
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout)
    for name in ("fifo", "socket", "folder"):
        assert seen[f"loaders {name}"] == seen[f"make_subset {name}"] == (
            f"{tmp_path / name} is not a regular file, so it is not used as a lock; remove it, or pass "
            "another --results-dir")


def test_make_subset_with_a_fifo_as_its_lock_file_stops_with_a_sentence(tmp_path):
    os.mkfifo(tmp_path / ".d.lock")
    run = subprocess.run([sys.executable, str(ROOT / "make_subset.py"), "--out-dir", str(tmp_path / "d"), *SIZES],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and run.stderr == (f"make_subset.py: error: {tmp_path / '.d.lock'} is not a regular "
                                                  "file, so it is not used as a lock; remove it, or choose another "
                                                  "--out-dir\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock"]


# ---- issue 29, the red team's second pass: Ctrl-C, a mount point, a read-only disk, a swap cut in two -------


def test_ctrl_c_while_writing_is_a_sentence_and_keeps_the_previous_dataset(tmp_path):
    out = make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES])
    before = file_hashes(out)
    run = subprocess.Popen([sys.executable, str(ROOT / "make_subset.py"), "--out-dir", str(out), "--force",
                            "--train-size", "4900", "--valid-size", "40", "--test-size", "40"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".d.csvimg-tmp-*")) and time.time() < deadline:  # it is writing
        time.sleep(0.02)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130 and "Traceback" not in err
    assert err.strip() == ("make_subset.py: interrupted; no dataset was left half-written: --out-dir holds the "
                           "previous one or the new one, whole (the next run finishes a swap cut short)")
    assert file_hashes(out) == before and sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]


def test_a_swap_cut_in_two_is_finished_by_train_pys_first_run_not_refused(tmp_path):
    """Without renameat2 the swap is two renames; a kill between them leaves no out_dir, only the
    previous dataset under a temporary name: the next run puts it back rather than building anew."""
    out = make_subset.main(["--out-dir", str(tmp_path / "d"), *SIZES])
    before = file_hashes(out)
    os.rename(out, tmp_path / f".d.{make_subset.OLD_TAG}-abc")
    make_subset.ensure_dataset(out)
    assert file_hashes(out) == before and sorted(p.name for p in tmp_path.iterdir()) == [".d.lock", "d"]


def test_a_mount_point_or_a_read_only_disk_as_out_dir_is_a_sentence(tmp_path):
    with tmpfs(tmp_path / "d", "1M") as disk:
        with pytest.raises(make_subset.OutDirError, match=f"is a mount point .* --out-dir {disk / 'data'}$"):
            make_subset.main(["--out-dir", str(disk), *SIZES])  # the swap's rename would fail half-way
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(make_subset.OutDirError) as info:
            make_subset.main(["--out-dir", str(disk / "data"), *SIZES])
        assert str(info.value) == (f"cannot write the new dataset beside {disk / 'data'}: {disk / '.data.lock'}: "
                                   "Read-only file system; nothing was written; choose another --out-dir")
        assert os.listdir(disk) == []
