"""train.py end to end on tiny data: history, files, checkpoint, flag errors."""

from __future__ import annotations

import pytest
import torch

import train
from model import MLP


def run(tiny_data, results, *extra: str) -> dict:
    return train.main(["--epochs", "2", "--seed", "1", "--batch-size", "8", "--data-dir", str(tiny_data),
                       "--results-dir", str(results), *extra])


def test_main_two_epochs_returns_history_and_writes_every_output(tiny_data, tmp_path, capsys):
    history = run(tiny_data, tmp_path / "results")
    assert len(history.train_acc) == len(history.valid_acc) == 2
    assert len(history.minibatch_loss) == 2 * (40 // 8)
    assert all(0 <= a <= 100 for a in history.train_acc + history.valid_acc + [history.test_acc])
    out = capsys.readouterr().out
    assert "Epoch: 001/002 | Batch 0000/0005 | Loss: " in out
    assert f"Test accuracy: {history.test_acc:.2f}%" in out
    results = tmp_path / "results"
    for name in ("metrics.csv", "checkpoint.pt", "loss.png", "accuracy.png", "examples.png"):
        assert (results / name).stat().st_size > 0
    assert (results / "metrics.csv").read_text().splitlines()[0].startswith("epoch,train_acc,valid_acc")
    assert len((results / "metrics.csv").read_text().splitlines()) == 3
    checkpoint = torch.load(results / "checkpoint.pt", weights_only=True)
    model = MLP()
    model.load_state_dict(checkpoint["model"])
    assert checkpoint["epoch"] == 2


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--data-dir", "no/such/folder"], "no such folder"),
    (["--resume", "--results-dir", "nowhere"], "no checkpoint"),
])
def test_invalid_flags_get_an_argparse_error(flags, message, capsys):
    with pytest.raises(SystemExit) as info:
        train.parse_args(flags)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_states_every_default(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in [("--epochs", "100"), ("--batch-size", "64"), ("--lr", "0.1"), ("--hidden", "100"),
                          ("--num-workers", "0"), ("--data-dir", "data"), ("--results-dir", "results"),
                          ("--device", "auto")]:
        assert flag in text and f"(default: {default})" in text


def test_accuracy_counts_every_sample(tiny_data):
    from loaders import get_dataloaders

    _, valid, _ = get_dataloaders(batch_size=6, data_dir=tiny_data)
    model = MLP()
    predictions = torch.cat([model(x).argmax(1) for x, _ in valid])
    labels = torch.cat([y for _, y in valid])
    assert len(labels) == 20
    expected = 100.0 * (predictions == labels).sum().item() / 20
    assert train.compute_accuracy(model, valid, torch.device("cpu")) == expected
