"""Models beyond the lecture's MLP (issue 19): shapes, optimizers and schedules that resume to the bit,
best.pt and early stopping, pretrained weights from a planted file, and --normalize."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import model
import train
from conftest import ROOT
from model import ConvNet, Normalized, build_model
from test_reproducibility import assert_same_run, metrics, run


# ---- shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18"])
@pytest.mark.parametrize("channels, size", [(1, (28, 28)), (3, (8, 8)), (3, (32, 48)), (1, (64, 64))])
def test_every_model_gives_one_logit_per_class_for_any_channels_and_size(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, channels, size, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.rand(2, channels, *size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_resnet18_keeps_small_images_large_in_its_stem_and_uses_torchvisions_below_64():
    small, large = build_model("resnet18", 1, (63, 80), 5), build_model("resnet18", 1, (64, 64), 5)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.in_channels == 1
    assert build_model("resnet18", 3, (224, 224), 5).conv1.in_channels == 3


def test_the_conv_net_refuses_images_below_8x8_with_a_sentence():
    with pytest.raises(ValueError, match="at least 8x8, got 7x9: pass a larger --image-size"):
        build_model("cnn", 1, (7, 9), 10)
    assert isinstance(build_model("cnn", 1, (8, 8), 10), ConvNet)


def interrupted(monkeypatch, data, results, *flags: str, after: int, epochs: int) -> None:
    """A run stopped as by a Ctrl-C once epoch `after` is saved: same flags, same --epochs."""
    save_run = train.save_run

    def save_then_stop(*args, **kwargs):
        save_run(*args, **kwargs)
        if len(args[-1].train_acc) == after:
            raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(train, "save_run", save_then_stop)
        with pytest.raises(SystemExit):
            run(data, results, *flags, epochs=epochs)


# ---- train.py --model: recorded, rebuilt, refused ----------------------------------------------

def test_cnn_trains_and_evaluate_and_predict_rebuild_it_without_the_flag(tiny_data, tmp_path, capsys):
    history = run(tiny_data, tmp_path / "r", "--model", "cnn", epochs=2)
    checkpoint = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"]["model"] == "cnn" and "features.0.0.weight" in checkpoint["model"]
    capsys.readouterr()
    evaluated = train.main(["--evaluate", "--batch-size", "8", "--data-dir", str(tiny_data),
                            "--results-dir", str(tmp_path / "r")])
    assert evaluated.test_acc == history.test_acc
    train.main(["--predict", str(tiny_data / "mnist_test.csv"), "--img-dir", str(tiny_data / "mnist_test"),
                "--results-dir", str(tmp_path / "p"), "--checkpoint", str(tmp_path / "r" / "checkpoint.pt")])
    assert f"Accuracy: {history.test_acc:.2f}%" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"cannot --evaluate .*: it holds another model than --model mlp \(the checkpoint.s: cnn\)"):
        train.main(["--evaluate", "--model", "mlp", "--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "r")])


def test_resume_takes_the_model_and_optimizer_from_the_checkpoint_and_refuses_others(tiny_data, tmp_path, without_figures,
                                                                                    monkeypatch):
    flags = ["--model", "cnn", "--optimizer", "adam", "--lr", "0.002", "--lr-schedule", "cosine"]
    run(tiny_data, tmp_path / "full", *flags, epochs=2)
    interrupted(monkeypatch, tiny_data, tmp_path / "split", *flags, after=1, epochs=2)
    run(tiny_data, tmp_path / "split", "--resume", epochs=2)  # not one of those flags repeated
    assert_same_run(tmp_path / "full", tmp_path / "split")
    for change, message in [(["--optimizer", "sgd"], "optimizer: checkpoint has 'adam', this run has 'sgd'"),
                            (["--lr", "0.1"], "lr: checkpoint has 0.002, this run has 0.1"),
                            (["--lr-schedule", "onecycle"], "lr_schedule: checkpoint has 'cosine'"),
                            (["--weight-decay", "0.1"], "weight_decay: checkpoint has 0.0"),
                            ([], "schedule_epochs: checkpoint has 2, this run has 3")]:  # epochs=3
        with pytest.raises(SystemExit, match=message):
            run(tiny_data, tmp_path / "split", "--resume", *change)


OPTIMIZATION = [[*opt, "--lr-schedule", schedule] for opt in (["--optimizer", "sgd", "--momentum", "0.9"],
                                                              ["--optimizer", "adam"], ["--optimizer", "adamw"])
                for schedule in ("constant", "cosine", "onecycle")]


@pytest.mark.parametrize("flags", OPTIMIZATION, ids=[" ".join(f[1::2]) for f in OPTIMIZATION])
def test_every_optimizer_and_schedule_resumes_bit_identical_and_ignores_workers(tiny_data, tmp_path, without_figures, flags,
                                                                                 monkeypatch):
    run(tiny_data, tmp_path / "full", *flags, epochs=4)
    interrupted(monkeypatch, tiny_data, tmp_path / "split", *flags, "--num-workers", "2", after=2, epochs=4)
    run(tiny_data, tmp_path / "split", *flags, "--resume", epochs=4)
    assert_same_run(tmp_path / "full", tmp_path / "split")
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert a["scheduler"] == b["scheduler"]
    if "constant" not in flags:  # the schedule really moved the rate, so the test can fail
        assert a["scheduler"]["_last_lr"][0] != a["config"]["lr"]


def test_the_default_run_is_still_plain_sgd_with_no_schedule(tiny_data, tmp_path):
    run(tiny_data, tmp_path / "r", epochs=1)
    checkpoint = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    group = checkpoint["optimizer"]["param_groups"][0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0, 0)
    assert checkpoint["scheduler"] is None and list(checkpoint["model"]) == [
        "layers.1.weight", "layers.1.bias", "layers.3.weight", "layers.3.bias"]


# ---- best.pt and early stopping ----------------------------------------------------------------

def test_best_pt_is_the_best_validation_epoch_and_evaluate_uses_it(tiny_data, tmp_path, capsys):
    history = run(tiny_data, tmp_path / "r", "--lr", "1", epochs=8)  # peaks at 6, ties at 8
    best = history.valid_acc.index(max(history.valid_acc)) + 1
    saved = torch.load(tmp_path / "r" / "best.pt", weights_only=True)  # weights_only, as checkpoint.pt
    assert saved["epoch"] == best and saved["history"]["valid_acc"] == history.valid_acc[:best]
    out = capsys.readouterr().out
    assert best < 8, "this data and lr should peak before the last epoch, so the test can tell them apart"
    assert f"Best epoch: {best} of 8, validation {max(history.valid_acc):.2f}%; its model" in out
    assert f"scores {history.best_test_acc:.2f}% on test, the last epoch's {history.test_acc:.2f}%" in out
    assert history.best_test_acc != history.test_acc  # on this data: the two models differ
    evaluated = train.main(["--evaluate", "--batch-size", "8", "--data-dir", str(tiny_data),
                            "--checkpoint", str(tmp_path / "r" / "best.pt")])
    assert evaluated.test_acc == history.best_test_acc
    assert (tmp_path / "r" / "checkpoint.pt").is_file() and (tmp_path / "r" / "confusion_matrix.csv").is_file()


def test_early_stopping_ends_after_n_epochs_without_a_better_validation_and_resume_keeps_it(tiny_data, tmp_path, without_figures,
                                                                                             capsys):
    history = run(tiny_data, tmp_path / "r", "--lr", "1e-9", "--early-stopping", "2", epochs=10)
    assert len(set(history.valid_acc)) == 1  # nothing learnt at this rate: epoch 1 stays the best
    assert len(history.valid_acc) == 3 and [row[0] for row in metrics(tmp_path / "r")] == ["1", "2", "3"]
    assert "Early stopping: no better validation accuracy in the 2 epochs after epoch 1" in capsys.readouterr().out
    again = run(tiny_data, tmp_path / "r", "--lr", "1e-9", "--early-stopping", "2", "--resume", epochs=10)
    assert len(again.valid_acc) == 3
    assert torch.load(tmp_path / "r" / "best.pt", weights_only=True)["epoch"] == 1


def test_a_new_run_moves_the_old_best_pt_aside_with_the_rest(tiny_data, tmp_path, without_figures):
    run(tiny_data, tmp_path / "r", epochs=1)
    old = (tmp_path / "r" / "best.pt").read_bytes()
    run(tiny_data, tmp_path / "r", "--seed", "3", epochs=1)
    assert (tmp_path / "r" / "version_1" / "best.pt").read_bytes() == old


# ---- pretrained weights: planted where torchvision looks, or one sentence ------------------------

def plant_resnet18_weights(torch_home, monkeypatch) -> dict:
    """ResNet-18's tensors, values of our own, where torchvision looks; the hash its name announces
    is made that of this file (the real one's cannot be planted offline)."""
    from torchvision.models import ResNet18_Weights, resnet18
    torch.manual_seed(42)
    state = resnet18().state_dict()  # ImageNet's shapes (1000 classes), values of our own
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    file = folder / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    torch.save(state, file)
    own = hashlib.sha256(file.read_bytes()).hexdigest()[:8]
    monkeypatch.setattr(model, "published_sha256_prefix", lambda name: own)
    return state


def test_pretrained_resnet18_starts_from_the_planted_weights_with_imagenet_normalisation(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    planted = plant_resnet18_weights(tmp_path / "torch", monkeypatch)
    model = build_model("resnet18", 1, (32, 32), 5, pretrained=True).eval()
    assert isinstance(model, Normalized) and model.repeat_to == 3
    for key, value in model.net.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, planted[key]), key
    assert model.net.fc.out_features == 5
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    with torch.no_grad():  # a gray image goes in as three equal channels, normalised
        x = torch.rand(1, 1, 32, 32)
        expected = model.net((x.expand(-1, 3, -1, -1) - model.mean) / model.std)
        assert torch.equal(model(x), expected)


def test_pretrained_weights_missing_offline_is_one_sentence_naming_the_file(tiny_data, tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "OMP_NUM_THREADS": "1"}  # no network, for certain
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--model", "resnet18", "--pretrained",
                           "--epochs", "1", "--batch-size", "8", "--data-dir", str(tiny_data), "--results-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert "train.py: error: the pretrained weights are not on this machine and could not be downloaded" in done.stderr
    assert f"put it at {expected}" in done.stderr


def test_train_py_fine_tunes_from_planted_weights_and_predict_needs_no_file(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    plant_resnet18_weights(tmp_path / "torch", monkeypatch)
    history = run(tiny_data, tmp_path / "r", "--model", "resnet18", "--pretrained", "--optimizer", "adam", epochs=1)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # the checkpoint holds every weight
    result = train.main(["--evaluate", "--batch-size", "8", "--data-dir", str(tiny_data),
                         "--results-dir", str(tmp_path / "r")])
    assert result.test_acc == history.test_acc


# ---- --normalize ---------------------------------------------------------------------------------

def test_normalize_uses_the_train_splits_exact_channel_statistics_and_predict_applies_them(tiny_data, tmp_path,
                                                                                           capsys):
    history = run(tiny_data, tmp_path / "r", "--normalize", epochs=2)
    with open(tiny_data / "mnist_train.csv") as f:
        names = [row["File Name"] for row in csv.DictReader(f)]
    pixels = np.stack([np.asarray(Image.open(tiny_data / "mnist_train" / n)) for n in names]) / 255.0
    config = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["config"]
    assert config["mean"] == pytest.approx([pixels.mean()], abs=1e-12)
    assert config["std"] == pytest.approx([pixels.std()], abs=1e-12)
    capsys.readouterr()
    train.main(["--predict", str(tiny_data / "mnist_test.csv"), "--img-dir", str(tiny_data / "mnist_test"),
                "--results-dir", str(tmp_path / "p"), "--checkpoint", str(tmp_path / "r" / "checkpoint.pt")])
    assert f"Accuracy: {history.test_acc:.2f}%" in capsys.readouterr().out


def test_normalize_with_augmentation_and_workers_keeps_the_run_exact(tiny_data, tmp_path):
    run(tiny_data, tmp_path / "a", "--normalize", "--augment", epochs=2)
    run(tiny_data, tmp_path / "b", "--normalize", "--augment", "--num-workers", "2", "--cache-mb", "0", epochs=2)
    assert_same_run(tmp_path / "a", tmp_path / "b")


# ---- from the red team's pass over the above -----------------------------------------------------

def test_resume_from_best_pt_in_its_own_folder_continues_from_the_best_epoch(tiny_data, tmp_path, without_figures):
    history = run(tiny_data, tmp_path / "r", "--lr", "1", epochs=8)  # peaks at epoch 6
    best = torch.load(tmp_path / "r" / "best.pt", weights_only=True)
    resumed = run(tiny_data, tmp_path / "r", "--lr", "1", "--resume", "--checkpoint",
                  str(tmp_path / "r" / "best.pt"), epochs=8)
    assert resumed.valid_acc[:best["epoch"]] == history.valid_acc[:best["epoch"]]
    assert (tmp_path / "r" / "version_1" / "checkpoint.pt").is_file()  # the earlier last epoch, kept aside


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("content, message", [
    ("code", "is damaged or not a weights file (UnpicklingError)"),
    ("bytes", "is damaged or not a weights file"),
    ("other", "does not hold ResNet-18's ImageNet weights (120 of 120 tensors missing or of another shape"),
])
def test_a_planted_weights_file_never_runs_code_and_a_bad_one_is_a_sentence(tmp_path, monkeypatch, content,
                                                                               message):
    from torchvision.models import ResNet18_Weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "torch" / "hub" / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    file.parent.mkdir(parents=True)
    if content == "code":
        torch.save({"conv1.weight": RunsCode()}, file)
    elif content == "bytes":
        file.write_bytes(os.urandom(1000))
    else:
        torch.save({"foo": torch.zeros(1)}, file)
    from model import PretrainedWeightsMissing
    with pytest.raises(PretrainedWeightsMissing, match=re.escape(message)):
        build_model("resnet18", 3, (64, 64), 5, pretrained=True)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("planted, message", [
    ("resnet34", "holds 96 tensors ResNet-18 does not have, such as layer1.2.bn1.bias: the weights "
                 "of another network"),
    ("nan", "holds NaN or infinite values, in conv1.weight: delete it"),
    ("unpublished", "is not the published file: its sha256 begins "),
])
def test_pretrained_weights_are_refused_unless_resnet18s_published_finite_file(tmp_path, monkeypatch, planted,
                                                                               message):
    from torchvision.models import ResNet18_Weights, resnet18, resnet34
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    file = tmp_path / "torch" / "hub" / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    file.parent.mkdir(parents=True)
    state = (resnet34() if planted == "resnet34" else resnet18()).state_dict()  # ResNet-34 has 18's names too
    if planted == "nan":
        state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, file)
    own = hashlib.sha256(file.read_bytes()).hexdigest()[:8]
    if planted != "unpublished":  # each file would pass the hash check: the contents refuse it
        monkeypatch.setattr(model, "published_sha256_prefix", lambda name: own)
    with pytest.raises(model.PretrainedWeightsMissing, match=re.escape(message)):
        build_model("resnet18", 3, (64, 64), 5, pretrained=True)
    if planted == "unpublished":
        assert f"begins {hashlib.sha256(file.read_bytes()).hexdigest()[:12]}, the published one's f37072fd" \
            in str(pytest.raises(model.PretrainedWeightsMissing, build_model, "resnet18", 3, (64, 64), 5,
                                 pretrained=True).value)


def test_the_published_hash_is_read_from_the_files_name_as_torch_hub_reads_it():
    assert model.published_sha256_prefix("/x/hub/checkpoints/resnet18-f37072fd.pth") == "f37072fd"
    assert model.published_sha256_prefix("weights.pth") == ""


def test_batchnorm_on_a_batch_of_one_at_1x1_is_a_sentence(tiny_data, tmp_path):
    with pytest.raises(SystemExit, match="BatchNorm needs more than one value per channel"):
        run(tiny_data, tmp_path / "r", "--model", "resnet18", "--image-size", "8", "--batch-size", "1", epochs=1)


def test_best_pt_is_written_before_checkpoint_pt(tiny_data, tmp_path, monkeypatch):
    renamed, replace = [], os.replace

    def recording(src, dst):
        renamed.append((Path(dst).name, sorted(p.name for p in Path(dst).parent.iterdir() if p.name != ".lock")))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", recording)
    run(tiny_data, tmp_path / "r", epochs=1)
    saved = [(name, files) for name, files in renamed if name in ("best.pt", "checkpoint.pt", "metrics.csv")]
    assert [name for name, _ in saved] == ["best.pt", "checkpoint.pt", "metrics.csv"]  # a kill between: resume
    # replays the epoch. And all three were written whole before the first was renamed: a full disk leaves none.
    assert len([f for f in saved[0][1] if f.startswith(".")]) == 3


def test_an_edited_checkpoint_and_a_damaged_best_pt_are_sentences(tiny_data, tmp_path, capsys):
    run(tiny_data, tmp_path / "r", "--lr", "1", epochs=8)
    checkpoint = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    for change, message in [({"model": "vit"}, "do not fit the model its config names (ValueError: unknown model"),
                            ({"model": "cnn"}, "do not fit the model its config names (RuntimeError")]:
        edited = {**checkpoint, "config": {**checkpoint["config"], **change}}
        torch.save(edited, tmp_path / "edited.pt")
        with pytest.raises(SystemExit, match=re.escape(message)):
            train.main(["--predict", str(tiny_data / "mnist_test"), "--checkpoint", str(tmp_path / "edited.pt"),
                        "--results-dir", str(tmp_path / "p")])
    torch.save({**checkpoint, "config": {}}, tmp_path / "empty.pt")
    with pytest.raises(SystemExit, match="settings .* are not those train.py writes"):
        train.main(["--predict", str(tiny_data / "mnist_test"), "--checkpoint", str(tmp_path / "empty.pt"),
                    "--results-dir", str(tmp_path / "p")])
    (tmp_path / "r" / "best.pt").write_bytes((tmp_path / "r" / "best.pt").read_bytes()[:1000])
    with pytest.warns(UserWarning, match="best.pt cannot be read"):  # resumed with nothing left to train
        history = run(tiny_data, tmp_path / "r", "--lr", "1", "--resume", epochs=8)
    assert history.best_test_acc is None and len(history.valid_acc) == 8


def test_flags_out_of_range_are_refused_and_resume_takes_pretrained(tmp_path, capsys):
    for flags in (["--dist-timeout", "1e12"], ["--dist-timeout", "0.00001"], ["--momentum", "inf"],
                  ["--weight-decay", "inf"]):
        with pytest.raises(SystemExit):
            train.parse_args(flags)
        assert flags[0] in capsys.readouterr().err
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    args = train.parse_args(["--resume", "--pretrained", "--results-dir", str(tmp_path)])
    assert args.pretrained and args.model is None


def test_a_loss_that_diverges_still_draws_its_figure():
    import matplotlib.pyplot as plt
    import plot
    fig = plot.plot_training_loss([2.3, float("nan"), float("inf"), 1.0], 2)
    assert fig.axes[0].get_ylim()[1] == pytest.approx(2.3 * 1.05)
    plt.close(fig)


def test_build_model_takes_a_config_and_every_older_call_shape():
    """build_model(ModelConfig(...)) and the calls of before it, positional or by keyword, with the
    same errors for missing arguments (a red team found them defaulted or dropped)."""
    from model import MLP, ModelConfig
    assert isinstance(build_model(name="cnn", channels=1, image_size=(28, 28), num_classes=10), ConvNet)
    wrapped = build_model("mlp", 1, (28, 28), 10, 100, False, True, [0.5], [0.25])  # mean and std, 8th and 9th
    assert isinstance(wrapped, Normalized) and wrapped.mean.item() == 0.5 and wrapped.std.item() == 0.25
    assert isinstance(build_model(ModelConfig(channels=3, image_size=(8, 8), num_classes=4)), MLP)
    with pytest.raises(TypeError, match="num_classes"):
        build_model("mlp", 1, (28, 28))
    with pytest.raises(TypeError):
        build_model(ModelConfig(), True, 6)  # a config takes load_weights alone


def test_a_checkpoint_config_without_its_data_shape_is_refused_not_defaulted(tiny_data, tmp_path, without_figures):
    run(tiny_data, tmp_path / "r", epochs=1)
    for key in ("num_classes", "image_size"):
        checkpoint = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
        del checkpoint["config"][key]
        torch.save(checkpoint, tmp_path / f"no_{key}.pt")
        for use in (["--evaluate", "--data-dir", str(tiny_data)], ["--predict", str(tiny_data / "mnist_test")]):
            with pytest.raises(SystemExit, match=rf"settings \(its 'config'\) are not those train.py writes .*{key}"):
                train.main([*use, "--checkpoint", str(tmp_path / f"no_{key}.pt"), "--results-dir", str(tmp_path / "x")])


def test_a_fifo_planted_as_the_pretrained_weights_is_a_sentence_not_a_hang(tmp_path, monkeypatch):
    from torchvision.models import ResNet18_Weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    file = tmp_path / "torch" / "hub" / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    file.parent.mkdir(parents=True)
    os.mkfifo(file)
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from model import build_model\n"
            "build_model('resnet18', 3, (64, 64), 5, pretrained=True)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TORCH_HOME": str(tmp_path / "torch")})
    assert f"PretrainedWeightsMissing: {file} is not a regular file (a FIFO, folder or device): remove it" \
        in done.stderr


def test_a_checkpoint_whose_weights_hold_nan_is_refused_by_predict_and_evaluate(tiny_data, tmp_path):
    run(tiny_data, tmp_path / "r", epochs=1)
    checkpoint = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    checkpoint["model"]["layers.1.weight"][0, 0] = float("nan")
    torch.save(checkpoint, tmp_path / "nan.pt")
    for use in (["--predict", str(tiny_data / "mnist_test")], ["--evaluate", "--data-dir", str(tiny_data)]):
        with pytest.raises(SystemExit, match=r"nan.pt's weights hold NaN or infinite values \(layers.1.weight\)"):
            train.main([*use, "--checkpoint", str(tmp_path / "nan.pt"), "--results-dir", str(tmp_path / "p")])
