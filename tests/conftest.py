"""Fixtures: tiny datasets built in tmp_path, fast enough for every test to make its own."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import make_subset  # noqa: E402


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A real file system of `size` ("900k", "1M") mounted at folder (made here) while the block
    runs, unmounted after; the test is skipped where mounting is not allowed (not root)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here (needs root or CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """make_subset.py output with 40 train, 20 valid, 20 test real digits."""
    out = tmp_path / "data"
    make_subset.main(["--out-dir", str(out), "--train-size", "40", "--valid-size", "20", "--test-size", "20"])
    return out


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """img/ with 6 gray 8x8 PNGs (a.png ... f.png) whose pixel values are known; no CSV yet."""
    rng = np.random.default_rng(0)
    for i, name in enumerate("abcdef"):
        write_png(tmp_path / "img" / f"{name}.png", rng.integers(0, 200 + i * 10, (8, 8), dtype=np.uint8))
    return tmp_path


def no_figures(monkeypatch) -> None:
    """train.main draws no figures and reports: for tests of the data's paths, bits and resumes,
    which they would only slow down (three quarters of a tiny run's time)."""
    import train

    monkeypatch.setattr(train, "write_figures", lambda *args, **kwargs: None)
    monkeypatch.setattr(train, "write_reports", lambda *args, **kwargs: None)


@pytest.fixture
def without_figures(monkeypatch) -> None:
    no_figures(monkeypatch)
