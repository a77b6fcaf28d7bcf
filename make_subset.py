"""Build train / valid / test splits of PNG files plus CSVs from MNIST-style IDX files.

    python make_subset.py                         # 256 digits per split from the bundled mnist-5k/
    python make_subset.py --train-size 1000 --valid-size 500 --test-size 500 --out-dir data-1k
    python make_subset.py --images X-idx3-ubyte.gz --labels y-idx1-ubyte.gz   # Fashion-MNIST, ...
    python make_subset.py --download              # full MNIST via torchvision (needs the network)

What it writes (default --out-dir data/):

    data/
      mnist_train.csv        File Name,Class Label     (one row per image)
      mnist_train/00000.png  28x28 grayscale PNG
      mnist_valid.csv, mnist_valid/, mnist_test.csv, mnist_test/
      .make_subset.json      the arguments that made it

Splits are disjoint and balanced by class, drawn with --seed (fixed by default), so the same
arguments give byte-identical files on every machine. The whole folder is written next to its final
place and swapped in at once: an interrupted run leaves the previous dataset, complete, or none.
An existing dataset is only replaced with --force, and only if make_subset.py made it: a folder that
holds anything else (your results, notes, a link) is refused, and nothing in it is removed. A full
disk is a sentence with the space needed, and the previous dataset stays.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import gzip
import json
import os
import re
import stat
import struct
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

BUNDLED_DIR = Path(__file__).resolve().parent / "mnist-5k"
BUNDLED_IMAGES = BUNDLED_DIR / "mnist-5k-images-idx3-ubyte.gz"
BUNDLED_LABELS = BUNDLED_DIR / "mnist-5k-labels-idx1-ubyte.gz"
DEFAULT_SEED = 1
DEFAULT_SIZE = 256
SPLITS = ("train", "valid", "test")
MARKER = ".make_subset.json"
# In the names of this project's temporary files and folders, and only there: a clean-up removes
# nothing else (".notes.tmp-1" is someone else's).
TEMP_TAG, OLD_TAG = "csvimg-tmp", "csvimg-old"
# What make_subset.py writes into --out-dir, known by name (and kind): --force replaces these and
# nothing else, and every clean-up removes only these.
OWN_FILES = (MARKER, *(f"mnist_{split}.csv" for split in SPLITS))
OWN_FOLDERS = tuple(f"mnist_{split}" for split in SPLITS)
OWN_IMAGE = re.compile(r"\d{5,}\.png")  # write_split's 00000.png, ...
# train.py's disk cache of decoded images (.cache in the data folder, unless --cache-dir): not
# make_subset.py's, so never removed, and no reason to refuse either: its files are named by the
# images' sizes and times, never read for other images. It moves into the new dataset.
CARRIED = (".cache",)


class IdxError(ValueError):
    """An IDX file that is not what its header promises."""


class OutDirError(OSError):
    """--out-dir cannot take the new dataset (files of others in it, a dataset there without
    --force, a full disk); the message names what was found and what to do."""


def read_idx(path: str | Path, expected_ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip or plain) into an array of the header's shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise IdxError(f"{path}: broken or truncated gzip data ({e})") from e
    expected_magic = 0x0800 | expected_ndim
    if len(raw) < 4 + 4 * expected_ndim:
        raise IdxError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        raise IdxError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {expected_ndim} dimension(s)); is this the right file?"
        )
    dims = struct.unpack(f">{expected_ndim}I", raw[4 : 4 + 4 * expected_ndim])
    data = raw[4 + 4 * expected_ndim :]
    expected_bytes = int(np.prod(dims))
    if len(data) != expected_bytes:
        raise IdxError(
            f"{path}: header promises shape {dims} = {expected_bytes} bytes of data, "
            f"found {len(data)} bytes (file truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def load_idx_pair(images_path: str | Path,
                  labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) from an IDX3 / IDX1 pair, checked against each
    other."""
    images = read_idx(images_path, expected_ndim=3)
    labels = read_idx(labels_path, expected_ndim=1)
    if len(images) != len(labels):
        raise IdxError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            "labels; they must come in matching pairs"
        )
    return images, labels


def choose_indices(labels: np.ndarray, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Disjoint index sets, one per size, each balanced by class, in a seeded shuffled order.

    Each split takes size // C images of every class and one more of size % C classes picked at
    random. Raises before anything is written when a class runs out.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    used = {c: 0 for c in pools}
    chosen = []
    for size in sizes:
        quota = {c: size // len(classes) for c in pools}
        for c in rng.permutation(classes)[: size % len(classes)]:
            quota[int(c)] += 1
        for c, q in quota.items():
            if used[c] + q > len(pools[c]):
                raise ValueError(
                    f"the requested sizes {sizes} need at least {used[c] + q} images of class {c}, "
                    f"but the source has only {len(pools[c])} ({len(labels)} images in all, "
                    f"{len(classes)} classes); ask for smaller splits or use a bigger source"
                )
        picked = np.concatenate([pools[c][used[c] : used[c] + quota[c]] for c in pools])
        for c in pools:
            used[c] += quota[c]
        chosen.append(rng.permutation(picked))
    return chosen


def write_split(folder: Path, name: str, images: np.ndarray, labels: np.ndarray) -> None:
    """folder/mnist_<name>.csv and folder/mnist_<name>/00000.png, ... (as loaders.folder_layout
    expects them)."""
    img_dir = folder / f"mnist_{name}"
    img_dir.mkdir()
    lines = ["File Name,Class Label"]
    for i, (image, label) in enumerate(zip(images, labels)):
        file_name = f"{i:05d}.png"
        Image.fromarray(image).save(img_dir / file_name, format="PNG")  # (H, W) uint8 -> mode "L"
        lines.append(f"{file_name},{int(label)}")
    (folder / f"mnist_{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def not_ours(folder: Path) -> list[str]:
    """What in folder make_subset.py did not write, as names relative to folder, sorted: anything
    but its CSVs, marker and image folders, and in an image folder anything but 00000.png, ...
    A link, or another kind of entry than ours under one of our names, is not ours either."""
    found = []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name in OWN_FILES and entry.is_file(follow_symlinks=False):
                continue
            if entry.name in OWN_FOLDERS and entry.is_dir(follow_symlinks=False):
                with os.scandir(entry.path) as images:
                    found += sorted(f"{entry.name}/{image.name}" for image in images
                                    if not (OWN_IMAGE.fullmatch(image.name)
                                            and image.is_file(follow_symlinks=False)))
                continue
            found.append(entry.name)
    return found


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Raise OutDirError unless out_dir can take a new dataset: it is missing or empty, or it holds
    make_subset.py's own files and nothing else (and then a complete dataset only with force)."""
    if out_dir.is_symlink():  # the swap would replace the link itself, not the folder it names
        raise OutDirError(
            f"{out_dir} is a symbolic link (to {os.readlink(out_dir)}); make_subset.py swaps a new "
            "folder in at that name, which would replace the link, not the folder it points to; "
            f"pass --out-dir {out_dir.resolve()}, or remove the link")
    if not out_dir.exists():
        return
    if os.path.ismount(out_dir):  # renamed neither away nor into: the swap would fail half-way
        raise OutDirError(
            f"{out_dir} is a mount point (a disk of its own); make_subset.py writes the new "
            "dataset beside its folder and swaps it in at that name, which a mount point cannot "
            f"take; pass a folder inside it, e.g. --out-dir {out_dir / 'data'}")
    if not out_dir.is_dir():
        raise OutDirError(f"{out_dir} is a file, not a folder; move it, or choose another "
                          "--out-dir")
    others = [name for name in not_ours(out_dir) if name not in CARRIED]
    if others:
        raise OutDirError(
            f"{out_dir} holds files make_subset.py did not write: {_listing(out_dir, others)}; it "
            f"replaces only its own (mnist_*.csv, their image folders and {MARKER}), so it "
            f"removed nothing: move them out of {out_dir}, or choose another --out-dir")
    present = sorted(set(os.listdir(out_dir)) - set(CARRIED))
    if not present:
        return
    if MARKER not in present:
        raise OutDirError(
            f"{out_dir} holds {', '.join(present)} but no {MARKER}, so make_subset.py did not "
            f"make it (or its {MARKER} was deleted); move them out of {out_dir}, or choose "
            "another --out-dir")
    if force:
        return
    missing = [name for name in (*OWN_FILES, *OWN_FOLDERS) if name not in present]
    if missing:
        raise OutDirError(
            f"{out_dir} holds an incomplete dataset ({', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing); rebuild it with --force (python "
            f"make_subset.py --out-dir {out_dir} --force), which replaces only make_subset.py's "
            "own files")
    raise OutDirError(f"{out_dir} already holds a dataset made by make_subset.py; pass --force to "
                      "replace it, or choose another --out-dir")


def recover(out_dir: Path) -> None:
    """Undo what a killed run left beside out_dir: clear its temporaries, restore a moved-away
    dataset. write_dataset runs it first."""
    parent = out_dir.parent
    if not parent.is_dir():
        return
    # Our names exactly (mkdtemp's suffix has no dot): not the temporaries of a folder named
    # "d.csvimg-tmp-x" beside "d", and no glob, which would read "[" in out_dir's name
    ours = re.compile(rf"\.{re.escape(out_dir.name)}\.({TEMP_TAG}|{OLD_TAG})-[a-z0-9_]+")
    matches = [ours.fullmatch(name) for name in sorted(os.listdir(parent))]
    found = [(m.group(1), parent / m.group(0)) for m in matches if m]
    for tag, leftover in found:
        if tag == TEMP_TAG:
            _remove_own(leftover, out_dir)
    for tag, old in found:
        if tag != OLD_TAG:
            continue
        if not os.path.lexists(out_dir) and old.is_dir() and not old.is_symlink():
            os.rename(old, out_dir)  # killed between the two renames of the fallback swap
        else:
            _remove_own(old, out_dir)


def _remove_own(folder: Path, out_dir: Path) -> None:
    """Remove a folder of ours (a temporary, or the dataset a swap moved out of out_dir) by
    removing our own files in it, by name. A file of someone else's in it was saved into out_dir
    in the moment before the swap: it goes back into out_dir; one that cannot stays, with a
    warning. A link or file named like our folder is not ours: left alone."""
    if folder.is_symlink() or not folder.is_dir():
        return
    others = not_ours(folder)
    for name in others:
        target = out_dir / name
        into = target.parent
        if into.is_dir() and not into.is_symlink() and not os.path.lexists(target):
            os.rename(folder / name, target)
    for name in OWN_FILES:
        if (folder / name).is_file() and not (folder / name).is_symlink():
            (folder / name).unlink()
    for name in OWN_FOLDERS:
        images = folder / name
        if images.is_dir() and not images.is_symlink():
            with os.scandir(images) as entries:
                for image in entries:
                    if OWN_IMAGE.fullmatch(image.name) and image.is_file(follow_symlinks=False):
                        os.unlink(image.path)
            _rmdir_if_empty(images)
    _rmdir_if_empty(folder)
    if others:
        kept = not_ours(folder) if folder.exists() else []
        moved = [name for name in others if name not in kept and name not in CARRIED]
        if moved:
            warnings.warn(f"{_listing(out_dir, moved)} appeared in {out_dir} while make_subset.py "
                          "replaced it; moved into the new dataset there (make_subset.py removes "
                          "only its own files)", stacklevel=2)
        if kept:
            warnings.warn(f"{_listing(folder, kept)} appeared in {out_dir} while make_subset.py "
                          f"replaced it, and could not go back there (the new dataset has those "
                          f"names); kept in {folder}: move them where you want them", stacklevel=2)


def _rmdir_if_empty(folder: Path) -> None:
    try:
        os.rmdir(folder)
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # not empty: something of someone else's
            raise


def write_dataset(out_dir: str | Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], *,
                  force: bool, meta: dict) -> Path:
    """Write all splits into a temporary sibling folder, then swap it into place as a whole.
    One run at a time per folder: a lock file beside it (flock, released even by a kill) makes a
    second run refuse, and only the lock holder cleans up temporaries, so it never removes the
    folder another run is writing. A full disk or a folder that cannot be written is an
    OutDirError with the fix; the previous dataset stays."""
    out_dir = Path(out_dir)
    had_dataset = out_dir.is_dir()
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = open_lock(out_dir.parent / f".{out_dir.name}.lock", "choose another --out-dir")
        try:
            _hold(lock, out_dir)
            return _write_dataset(out_dir, splits, force=force, meta=meta)
        finally:
            os.close(lock)
    except OSError as e:  # the temporary folder is gone by now (_write_dataset's finally)
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise OutDirError(_no_space(out_dir, splits, had_dataset)) from None
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):  # a read-only disk or folder
            kept = f"{out_dir} is unchanged" if had_dataset else "nothing was written"
            raise OutDirError(f"cannot write the new dataset beside {out_dir}: "
                              f"{e.filename or out_dir.parent}: {e.strerror}; {kept}; choose "
                              "another --out-dir") from None
        raise


def _hold(lock: int, out_dir: Path) -> None:
    holder = lock_or_holder(lock)
    if holder is not None:
        raise FileExistsError(f"another make_subset.py run (process {holder}) is writing "
                              f"{out_dir}; wait for it to finish, or choose another --out-dir")


class LockFileError(ValueError):
    """A lock file that is not ours to use: a link, not a regular file, or another user's."""


def open_lock(path: Path, fix: str) -> int:
    """Open (or create, mode 0644 less the umask) the lock file `path`, never following a symbolic
    link and never using a file with other names (hard links): a planted link would make the pid
    written into the lock overwrite its target. fix: what the user can do instead, for the error."""
    # O_NONBLOCK: nothing named like the lock may make open() wait (a device waiting for its line,
    # a FIFO where POSIX leaves O_RDWR undefined); a regular file's reads, writes, flock ignore it
    flags = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_NONBLOCK", 0))
    try:
        fd = os.open(path, flags, 0o644)
    except PermissionError:
        if not os.path.lexists(path):
            raise LockFileError(f"{path} cannot be created ({path.parent} is not writable for "
                                f"this user); {fix}") from None
        owner = path.stat().st_uid if path.exists() else "?"
        raise LockFileError(f"{path} cannot be opened for writing (it belongs to user id {owner}; "
                            f"another user's run uses this folder); {fix}") from None
    except OSError:
        if os.path.islink(path):
            raise LockFileError(f"{path} is a symbolic link, which is not followed (it may point "
                                f"at a file of someone else's); remove it, or {fix}") from None
        if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
            raise LockFileError(f"{path} is not a regular file, so it is not used as a lock; "
                                f"remove it, or {fix}") from None  # a socket or a folder
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else \
            f"a file with {st.st_nlink} names (hard links)"
        raise LockFileError(f"{path} is {what}, so it is not used as a lock; remove it, or {fix}")
    return fd


def lock_or_holder(fd: int) -> str | None:
    """Take an exclusive flock on the open lock file fd (released when fd closes, also when the
    process is killed) and write this process's id into it; None then. When another process
    holds it: that process's id, and nothing is taken. train.py uses it for its results folder."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return None


def ensure_dataset(out_dir: Path) -> None:
    """Build the default dataset in out_dir when it is missing (train.py's first run); when
    another run is building it (two first runs at once), wait for that one instead."""
    import fcntl

    def complete() -> bool:
        return all((out_dir / f"mnist_{split}.csv").is_file() for split in SPLITS)

    for _ in range(5):  # another run may take the lock between our look and our build: again
        if complete():
            return
        lock = open_lock(out_dir.parent / f".{out_dir.name}.lock", "pass another --data-dir")
        try:
            if lock_or_holder(lock) is not None:  # another run builds it: wait
                print(f"Waiting for another run to finish building {out_dir}/ ...")
                fcntl.flock(lock, fcntl.LOCK_EX)
            recover(out_dir)  # a swap a kill cut in two: the previous dataset comes back first
        finally:
            os.close(lock)  # main() takes the lock again itself
        if complete():
            return
        check_out_dir(out_dir, force=False)  # a CSV deleted, files of others: say so, build nothing
        print(f"No dataset in {out_dir}/: building it with make_subset.py's defaults "
              "(bundled MNIST digits)")
        try:
            main(["--out-dir", str(out_dir)])
            return
        except (FileExistsError, SystemExit) as e:
            if "another make_subset.py run" not in str(e):
                raise


def _write_dataset(out_dir: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], *,
                   force: bool, meta: dict) -> Path:
    recover(out_dir)  # safe: we hold the lock, so no other run is writing beside out_dir
    check_out_dir(out_dir, force)
    tmp: Path | None = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{TEMP_TAG}-",
                                             dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the dataset gets a normal folder's mode
        for name, (images, labels) in splits.items():
            write_split(tmp, name, images, labels)
        marker = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        (tmp / MARKER).write_text(marker, encoding="utf-8")
        try:  # again: a file of someone else's may have been saved into out_dir meanwhile
            check_out_dir(out_dir, force=True)
        except OutDirError as e:
            raise OutDirError(f"the new dataset was not swapped in: {e}") from None
        for name in CARRIED:  # in place the moment the new dataset is
            if os.path.lexists(out_dir / name):
                os.rename(out_dir / name, tmp / name)
        # What lands in out_dir between that check and the swap goes into the swapped-out folder:
        # _remove_own moves it back into out_dir, never away
        if not os.path.lexists(out_dir):
            os.rename(tmp, out_dir)
            tmp = None
        elif not _exchange(tmp, out_dir):
            old = tmp.with_name(tmp.name.replace(f".{TEMP_TAG}-", f".{OLD_TAG}-"))
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)  # a kill between these two renames is undone by recover
            tmp = old
    finally:
        if tmp is not None:  # after a swap, tmp holds the previous dataset
            _remove_own(tmp, out_dir)
    return out_dir


def _listing(folder: Path, names: list[str], few: int = 3) -> str:
    """A few of names (a folder with a trailing /), then how many more, for a sentence."""
    shown = [name + "/" * ((folder / name).is_dir() and not (folder / name).is_symlink())
             for name in names[:few]]
    return ", ".join(shown) + (f" and {len(names) - few} more" if len(names) > few else "")


def _no_space(out_dir: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
              had_dataset: bool) -> str:
    """The sentence for a full disk, with roughly the space the new dataset takes: each image a
    PNG of at most about its pixel bytes, each file whole blocks of the disk."""
    folder = out_dir.parent
    vfs = os.statvfs(folder) if hasattr(os, "statvfs") else None
    block = vfs.f_frsize if vfs else 4096

    def blocks(size: int) -> int:
        return -(-size // block) * block

    needed = blocks(256)  # the marker
    for images, _ in splits.values():
        pixels = int(np.prod(images.shape[1:]))
        needed += blocks(block) + len(images) * blocks(pixels + 100) + blocks(16 * len(images) + 32)
    free = f" and {_size(vfs.f_bavail * vfs.f_frsize)} is free" if vfs else ""
    images = sum(len(labels) for _, labels in splits.values())
    beside, kept = ("", "nothing was left behind")
    if had_dataset:
        beside = ", written beside the previous dataset before the swap"
        kept = f"{out_dir} is unchanged"
    return (f"no space left in {folder} for the new dataset: it needs about {_size(needed)} "
            f"({images} images{beside}){free}; {kept}; free some space, or choose an --out-dir "
            "on another disk")


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e6 else \
        f"{max(n // 1000, 1)} KB"


def _download_mnist(root: str | Path) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    from torchvision import datasets  # only this path needs torchvision and the network

    train = datasets.MNIST(str(root), train=True, download=True)
    test = datasets.MNIST(str(root), train=False, download=True)
    return _as_arrays(train), _as_arrays(test)


def _as_arrays(mnist) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(mnist.data, dtype=np.uint8), np.asarray(mnist.targets, dtype=np.int64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out-dir", default="data",
                   help="folder to write the CSVs and PNG folders into")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="seed that picks and orders the images")
    for split in SPLITS:
        p.add_argument(f"--{split}-size", type=int, default=DEFAULT_SIZE,
                       help=f"images in the {split} split")
    p.add_argument("--images",
                   help="IDX3 images file (gzip or plain); default: the bundled mnist-5k digits")
    p.add_argument("--labels", help="IDX1 labels file that pairs with --images")
    p.add_argument("--download", action="store_true",
                   help="fetch full MNIST with torchvision; train and valid come from its "
                        "training set, test from its test set")
    p.add_argument("--download-root", default="downloads",
                   help="where --download keeps the raw files")
    p.add_argument("--force", action="store_true",
                   help="replace an existing dataset made by this script (only its own files: "
                        "a folder that holds anything else is refused, nothing removed)")
    args = p.parse_args(argv)
    out, here = Path(args.out_dir).resolve(), Path.cwd().resolve()
    if out == here or out in here.parents:
        p.error(f"--out-dir {args.out_dir} is the folder you are in (or holds it); make_subset.py "
                "replaces its output folder as a whole: choose a new folder, e.g. --out-dir data")
    if (args.images is None) != (args.labels is None):
        p.error("--images and --labels go together")
    if args.download and args.images:
        p.error("choose either --download or --images/--labels")
    for split in SPLITS:
        if getattr(args, f"{split}_size") < 1:
            p.error(f"--{split}-size must be at least 1")
    if args.seed < 0:
        p.error("--seed must be >= 0")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    sizes = [args.train_size, args.valid_size, args.test_size]
    if args.download:
        (train_x, train_y), (test_x, test_y) = _download_mnist(args.download_root)
        train_idx, valid_idx = choose_indices(train_y, sizes[:2], args.seed)
        (test_idx,) = choose_indices(test_y, sizes[2:], args.seed)
        pools = [(train_x, train_y, train_idx), (train_x, train_y, valid_idx),
                 (test_x, test_y, test_idx)]
        source = "torchvision.datasets.MNIST (train/valid from train, test from test)"
    else:
        images_path = Path(args.images) if args.images else BUNDLED_IMAGES
        labels_path = Path(args.labels) if args.labels else BUNDLED_LABELS
        images, labels = load_idx_pair(images_path, labels_path)
        pools = [(images, labels, idx) for idx in choose_indices(labels, sizes, args.seed)]
        source = f"{images_path.name} + {labels_path.name}"
    splits = {name: (x[idx], y[idx]) for name, (x, y, idx) in zip(SPLITS, pools)}
    meta = {"source": source, "seed": args.seed, "sizes": dict(zip(SPLITS, sizes))}
    out = write_dataset(args.out_dir, splits, force=args.force, meta=meta)
    counts = ", ".join(f"{n} {split}" for split, n in zip(SPLITS, sizes))
    print(f"Wrote {sum(sizes)} images ({counts}) to {out}/")
    return out


if __name__ == "__main__":
    try:
        main()
    except (FileExistsError, FileNotFoundError, ValueError, OutDirError) as e:  # LockFileError too
        sys.exit(f"make_subset.py: error: {e}")
    except KeyboardInterrupt:  # Ctrl-C: the temporary folder is gone, the swap is whole or undone
        print("\nmake_subset.py: interrupted; no dataset was left half-written: --out-dir holds "
              "the previous one or the new one, whole (the next run finishes a swap cut short)",
              file=sys.stderr)
        sys.exit(130)
