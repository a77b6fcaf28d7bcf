"""Same seed, same bits: across runs, worker counts, interruptions and --resume."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys

import pytest
import torch

import make_subset
import train
from conftest import ROOT, no_figures


@pytest.fixture(autouse=True)
def _no_figures_unless_marked(request, monkeypatch):
    """The runs here test bits, resumes and signals; the figures and reports (three quarters of a
    tiny run's time) are drawn only where a test is marked `figures` (and tested in test_train.py,
    test_plot_and_files.py and test_evaluate_predict.py)."""
    if "figures" not in request.keywords:
        no_figures(monkeypatch)


def run(data, results, *extra: str, epochs: int = 3) -> dict:
    return train.main(["--epochs", str(epochs), "--seed", "11", "--batch-size", "8", "--eval-batch-size", "16",
                       "--data-dir", str(data), "--results-dir", str(results), *extra])


def metrics(results) -> list[tuple[str, str, str]]:
    with open(results / "metrics.csv") as f:
        return [(row["epoch"], row["train_acc"], row["valid_acc"]) for row in csv.DictReader(f)]  # no times


def assert_same_run(a, b) -> None:
    ca = torch.load(a / "checkpoint.pt", weights_only=True)
    cb = torch.load(b / "checkpoint.pt", weights_only=True)
    assert ca["epoch"] == cb["epoch"]
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        for key in sa:
            assert torch.equal(sa[key], sb[key])
    assert ca["optimizer"]["param_groups"] == cb["optimizer"]["param_groups"]
    for key in ("minibatch_loss", "train_acc", "valid_acc"):
        assert ca["history"][key] == cb["history"][key], key
    assert metrics(a) == metrics(b)


def test_two_runs_are_bit_identical(tiny_data, tmp_path):
    first, second = run(tiny_data, tmp_path / "a"), run(tiny_data, tmp_path / "b")
    assert first.minibatch_loss == second.minibatch_loss and first.test_acc == second.test_acc
    assert_same_run(tmp_path / "a", tmp_path / "b")
    run(tiny_data, tmp_path / "c", "--hidden", "101")  # a check that can fail: a different run differs
    c = torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=True)
    assert c["history"]["minibatch_loss"] != first.minibatch_loss


@pytest.mark.parametrize("flags", [["--num-workers", "2"], ["--num-workers", "2", "--persistent-workers"],
                                   ["--cache-mb", "0"]])
def test_workers_persistent_workers_and_cache_do_not_change_the_bits(tiny_data, tmp_path, flags):
    run(tiny_data, tmp_path / "plain")
    run(tiny_data, tmp_path / "other", *flags)
    assert_same_run(tmp_path / "plain", tmp_path / "other")


def test_uint8_batches_scaled_in_the_loop_match_scaled_loaders(tiny_data):
    from loaders import get_dataloaders
    from model import MLP

    weights = []
    for pixels in ("float01", "uint8"):
        torch.manual_seed(0)
        model = MLP()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        train_loader, valid_loader, _ = get_dataloaders(8, tiny_data, seed=2, dataset_kwargs={"pixels": pixels})
        train.train_model(model, 2, train_loader, valid_loader, optimizer=optimizer, device=torch.device("cpu"))
        weights.append(model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key])


def test_resume_ends_bit_identical_to_an_uninterrupted_run(tiny_data, tmp_path):
    full = run(tiny_data, tmp_path / "full", epochs=4)
    run(tiny_data, tmp_path / "split", epochs=2)
    torch.manual_seed(999)  # whatever happened in between must not matter
    resumed = run(tiny_data, tmp_path / "split", "--resume", epochs=4)
    assert resumed.minibatch_loss == full.minibatch_loss and len(resumed.train_acc) == 4
    assert_same_run(tmp_path / "full", tmp_path / "split")
    assert [row[0] for row in metrics(tmp_path / "split")] == ["1", "2", "3", "4"]


@pytest.mark.parametrize("change, message", [
    (["--seed", "12"], "seed: checkpoint has 11, this run has 12"),
    (["--batch-size", "4"], "batch_size: checkpoint has 8"),
    (["--hidden", "50"], "another model than --hidden 50 (the checkpoint's: 100) asks for"),
    (["--lr", "0.05"], "lr: checkpoint has 0.1"),
    ("data", "data: the checkpoint's run read"),
])
def test_resume_refuses_a_checkpoint_from_a_different_run(tiny_data, tmp_path, change, message):
    run(tiny_data, tmp_path / "r", epochs=1)
    if change == "data":
        csv_path = tiny_data / "mnist_train.csv"
        lines = csv_path.read_text().splitlines()
        csv_path.write_text("\n".join(lines[:-1]) + "\n")  # one row fewer
        change = []
    args = ["--epochs", "2", "--seed", "11", "--batch-size", "8", "--data-dir", str(tiny_data),
            "--results-dir", str(tmp_path / "r"), "--resume"]
    with pytest.raises(SystemExit) as info:
        train.main(args + change)
    assert message in str(info.value) and "cannot --resume" in str(info.value)


def test_checkpoint_holds_every_rng_state_in_weights_only_form(tiny_data, tmp_path):
    run(tiny_data, tmp_path / "r", epochs=1)
    checkpoint = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    rng = checkpoint["rng"]
    assert set(rng) == {"torch", "cuda", "numpy", "python"}
    assert isinstance(rng["numpy"][1], list) and len(rng["numpy"][1]) == 624
    import numpy as np
    import random
    np.random.seed(0)
    random.seed(0)
    train.set_rng_states(rng)
    assert torch.equal(torch.get_rng_state(), rng["torch"])
    assert np.random.get_state()[1].tolist() == rng["numpy"][1]


def test_a_crash_during_a_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"

    def save(epoch: int) -> None:
        buffer = io.BytesIO()
        torch.save({"model": {"w": torch.ones(3) * epoch}, "epoch": epoch}, buffer)
        train.write_together([(tmp_path / "best.pt", buffer.getvalue()), (path, buffer.getvalue())])

    save(1)

    def killed(fd):
        raise KeyboardInterrupt  # as if stopped between write and rename

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        save(2)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "checkpoint.pt"]


def test_ctrl_c_saves_exits_130_and_resume_matches_an_uninterrupted_run(tiny_data, tmp_path):
    epochs = "100"
    args = ["--epochs", epochs, "--seed", "11", "--batch-size", "8", "--eval-batch-size", "16",
            "--data-dir", str(tiny_data), "--logging-interval", "1000"]
    with subprocess.Popen([sys.executable, "-u", str(ROOT / "train.py"), *args, "--results-dir",
                           str(tmp_path / "cut")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            if "Train:" in line:  # first epoch done
                proc.send_signal(signal.SIGINT)
                break
        out = proc.stdout.read()
        assert proc.wait(timeout=60) == 130, out
    assert "Interrupted. The checkpoint of epoch" in out and "--resume" in out
    stopped_at = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"]
    print("stopped after epoch", stopped_at)
    assert 1 <= stopped_at < int(epochs)
    # Both runs end 2 epochs after the cut (--epochs is not part of a run's settings with a constant
    # rate): a resume of the cut run ends where an uninterrupted run of as many epochs does.
    args[1] = str(stopped_at + 2)
    train.main(args + ["--results-dir", str(tmp_path / "cut"), "--resume"])
    train.main(args + ["--results-dir", str(tmp_path / "full")])
    assert_same_run(tmp_path / "full", tmp_path / "cut")


def test_ctrl_c_right_after_a_resume_points_back_to_the_resumed_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    run(tiny_data, tmp_path / "r", epochs=1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_model", interrupted)
    with pytest.raises(SystemExit) as info:
        run(tiny_data, tmp_path / "r", "--resume", epochs=3)
    assert info.value.code == 130
    out = capsys.readouterr().out
    assert "The checkpoint of epoch 1 is in" in out and "nothing was saved" not in out


# ---- exact on every path, past the decode chunks (256 images): 1,100 training images ------------

@pytest.fixture(scope="module")
def chunks_data(tmp_path_factory):
    """1,100 train (5 decode chunks), 40 valid, 40 test real digits, and a run of reference."""
    import loaders

    root = tmp_path_factory.mktemp("chunks")
    make_subset.main(["--out-dir", str(root / "data"), "--train-size", "1100", "--valid-size", "40",
                      "--test-size", "40"])
    assert 1100 > 4 * loaders.DECODE_CHUNK  # several chunks, so that workers share the decode
    with pytest.MonkeyPatch.context() as patch:
        no_figures(patch)
        big_run(root / "data", root / "reference", "--num-workers", "0", "--no-disk-cache", epochs=2)
    return root / "data", root / "reference"




def big_run(data, results, *extra: str, epochs: int = 1):
    return train.main(["--epochs", str(epochs), "--seed", "11", "--batch-size", "64", "--eval-batch-size", "512",
                       "--logging-interval", "1000", "--data-dir", str(data), "--results-dir", str(results),
                       *extra])


def global_states() -> tuple:
    import random

    import numpy as np

    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def assert_same_states(a: tuple, b: tuple) -> None:
    import numpy as np

    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_same_weights_for_workers_cache_fill_and_cache_hit_on_several_chunks(chunks_data, tmp_path, capsys,
                                                                              monkeypatch):
    """And the model starts from the seed alone: what the data's path did before it was built (decode in
    workers, fill or read the cache) left torch's, NumPy's and Python's global generators as set_all_seeds did."""
    data, reference = chunks_data
    no_figures(monkeypatch)
    train.set_all_seeds(11)
    seeded, seen = global_states(), []
    real_build = train.build_model

    def recording_build(*args, **kwargs):
        seen.append(global_states())
        return real_build(*args, **kwargs)

    monkeypatch.setattr(train, "build_model", recording_build)
    cache = tmp_path / "cache"
    for name, flags in [("fill", ["--num-workers", "2", "--cache-dir", str(cache)]),
                        ("hit", ["--num-workers", "2", "--cache-dir", str(cache)]),
                        ("hit0", ["--num-workers", "0", "--cache-dir", str(cache)]),
                        ("per-batch", ["--num-workers", "2", "--cache-mb", "0", "--no-disk-cache"])]:
        capsys.readouterr()
        big_run(data, tmp_path / name, *flags, epochs=2)
        out = capsys.readouterr().out
        assert ("decoded into the disk cache" if name == "fill" else
                "read from the disk cache" if name.startswith("hit") else "not keeping") in out  # the path taken
        if name != "hit0":  # and where batches were made: in this process from memory, or in the workers
            assert ("2 workers decode each batch" if name == "per-batch" else "gathered in this process") in out
        assert_same_run(reference, tmp_path / name)
        assert_same_states(seen.pop(), seeded)


def test_same_augmented_weights_for_0_and_2_workers_and_after_resume_on_several_chunks(chunks_data, tmp_path,
                                                                                        monkeypatch):
    data, _ = chunks_data
    no_figures(monkeypatch)
    big_run(data, tmp_path / "a0", "--augment", "--no-disk-cache", epochs=2)
    flags = ["--augment", "--num-workers", "2", "--cache-dir", str(tmp_path / "c")]
    big_run(data, tmp_path / "cut", *flags)
    torch.manual_seed(999)
    big_run(data, tmp_path / "cut", *flags, "--resume", epochs=2)
    assert_same_run(tmp_path / "a0", tmp_path / "cut")


@pytest.mark.figures
def test_loaders_and_reports_leave_the_global_generators_as_they_were(chunks_data, tmp_path):
    from loaders import get_dataloaders
    from model import MLP

    data, _ = chunks_data
    model = MLP()  # its initial weights are drawn from the global RNG, as they should be
    train.set_all_seeds(5)
    before = global_states()
    for workers, transform in ((2, train.augmentation()), (0, None)):
        loaders = get_dataloaders(64, data, num_workers=workers, seed=3, cache_dir=tmp_path / "c",
                                  train_transforms=transform)
        for loader in loaders:
            for _ in loader:
                pass
    train.write_reports(model, torch.zeros(10, 10, dtype=torch.int64), loaders[2], tmp_path, [str(i) for i in range(10)])
    assert_same_states(global_states(), before)
    torch.rand(1)  # a check that can fail: a draw does move it
    assert not torch.equal(torch.get_rng_state(), before[0])


@pytest.mark.figures
def test_main_gives_back_the_callers_torch_settings(tiny_data, tmp_path):
    threads = torch.get_num_threads()
    assert not torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    run(tiny_data, tmp_path / "r", epochs=1)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark == benchmark and not torch.backends.cudnn.deterministic
    assert torch.get_num_threads() == threads and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with pytest.raises(SystemExit):  # a refused run too: --batch-size larger than the train split
            run(tiny_data, tmp_path / "s", "--batch-size", "41", epochs=1)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_sigterm_keeps_the_last_checkpoint_prints_the_resume_command_and_exits_143(tiny_data, tmp_path):
    args = ["--epochs", "100", "--seed", "11", "--batch-size", "8", "--data-dir", str(tiny_data),
            "--logging-interval", "1000", "--results-dir", str(tmp_path / "cut")]
    with subprocess.Popen([sys.executable, "-u", str(ROOT / "train.py"), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            if "Train:" in line:  # first epoch done
                proc.send_signal(signal.SIGTERM)  # what a cluster's scheduler sends
                break
        out = proc.stdout.read()
        assert proc.wait(timeout=60) == 143, out
    assert "Terminated (SIGTERM). The checkpoint of epoch" in out and "Resume with:" in out and "--resume" in out
    assert "Traceback" not in out
    assert 1 <= torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] < 100


@pytest.mark.parametrize("where", ["reading the data", "--predict"])
def test_ctrl_c_outside_the_epochs_is_a_sentence_and_exit_130(tiny_data, tmp_path, where):
    """A Ctrl-C while the data is read (the cache fill) or while --predict runs: no traceback."""
    args = ["--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "r"), "--epochs", "1", "--batch-size", "8"]
    if where == "--predict":
        run(tiny_data, tmp_path / "r", epochs=1)
        args = ["--predict", str(tiny_data / "mnist_test"), "--results-dir", str(tmp_path / "r")]
    script = ("import sys, runpy; sys.path.insert(0, {root!r}); import dataset\n"
              "def stop(*args, **kwargs): raise KeyboardInterrupt\n"
              "dataset.decode_image = stop\n"
              "sys.argv = ['train.py', *{args!r}]\n"
              "runpy.run_path({train!r}, run_name='__main__')").format(root=str(ROOT), args=args,
                                                                        train=str(ROOT / "train.py"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "train.py: interrupted; every file is written whole or not at all" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r" / "predictions.csv").exists()
