"""Numbers per image (issue 31 point 2): --task regression on a Kaggle-style table, train.csv
`id,angle,scale,split` with the images in train/<id>.jpg, each image as bright as its angle."""
import numpy as np
import pytest
import torch
from PIL import Image

from dataset import CsvImageDataset, DatasetError
from dataset import main as check_main


def kaggle(tmp_path, n=48, seed=0, rows_extra=""):
    """train.csv (id,angle,scale,split) and train/<id>.jpg: angle uniform in [-45, 45] (seeded,
    one decimal), scale = 1 + angle / 90; each image's brightness follows its angle. The first
    60% of rows train, then 20% valid, 20% test."""
    rng = np.random.default_rng(seed)
    (tmp_path / "train").mkdir()
    lines = ["id,angle,scale,split"]
    for i in range(n):
        angle = round(float(rng.uniform(-45, 45)), 1)
        pixels = np.full((8, 8), int(round((angle + 45) / 90 * 255)), dtype=np.uint8)
        pixels[::2, ::2] = 255 - pixels[0, 0]  # two levels: not a flat image
        Image.fromarray(pixels).save(tmp_path / "train" / f"img{i}.jpg", quality=95)
        split = "train" if i < 0.6 * n else "valid" if i < 0.8 * n else "test"
        lines.append(f"img{i},{angle},{1 + angle / 90:.4f},{split}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n" + rows_extra)
    return tmp_path / "train.csv"


def regress_args(tmp_path, results, *extra, targets="angle,scale"):
    return ["--csv", str(tmp_path / "train.csv"), "--img-dir", str(tmp_path / "train"),
            "--file-column", "id", "--file-suffix", ".jpg", "--split-column", "split",
            "--task", "regression", "--label-column", targets, "--epochs", "3",
            "--batch-size", "8", "--optimizer", "adam", "--seed", "7", "--results-dir",
            str(results), "--no-disk-cache", "--logging-interval", "1000", *extra]


def same_weights(a_path, b_path) -> bool:
    a = torch.load(a_path, weights_only=True)["model"]
    b = torch.load(b_path, weights_only=True)["model"]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- the dataset: numbers from the rows ----------------------------------------------------------

def test_targets_are_float32_rows_of_every_target_column(tmp_path):
    csv = kaggle(tmp_path, n=10)
    ds = CsvImageDataset(csv, tmp_path / "train", file_column="id", file_suffix=".jpg",
                         label_column="angle,scale", task="regression")
    table = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    image, target = ds[3]
    assert ds.classes == ["angle", "scale"] and image.shape == (1, 8, 8)
    assert target.dtype == torch.float32 and target.tolist() == pytest.approx(
        [float(table[3][1]), float(table[3][2])])
    images, targets = ds[[0, 1, 2]]
    assert targets.shape == (3, 2) and targets.dtype == torch.float32
    one = CsvImageDataset(csv, tmp_path / "train", file_column="id", file_suffix=".jpg",
                          label_column=["angle"], task="regression")
    assert one[0][1].shape == (1,) and one.classes == ["angle"]


def test_a_weight_column_gives_image_target_weight(tmp_path):
    (tmp_path / "train").mkdir()
    for i in range(3):
        Image.new("L", (4, 4), i * 60).save(tmp_path / "train" / f"{i}.jpg")
    csv = tmp_path / "train.csv"
    csv.write_text("id,angle,w\n0,1.5,1\n1,-2.25,0.5\n2,3.75,2\n")
    ds = CsvImageDataset(csv, tmp_path / "train", file_column="id", file_suffix=".jpg",
                         label_column="angle", task="regression", weight_column="w")
    image, target, weight = ds[1]
    assert target.tolist() == [-2.25] and weight == 0.5
    _, targets, weights = ds[[0, 2]]
    assert targets.tolist() == [[1.5], [3.75]] and weights.tolist() == [1.0, 2.0]


def test_a_float_column_without_task_regression_names_the_flag(tmp_path):
    csv = kaggle(tmp_path, n=10)
    with pytest.raises(DatasetError) as info:
        CsvImageDataset(csv, tmp_path / "train", file_column="id", file_suffix=".jpg",
                        label_column="angle")
    first = csv.read_text().splitlines()[1].split(",")[1]
    assert str(info.value) == (f"{csv}: column 'angle' holds numbers that are not whole "
                               f"(line 2: {first}): pass --task regression "
                               "(task=\"regression\") to predict them")


def test_one_odd_number_among_whole_ones_stays_class_names(tmp_path):
    """Issue 30's rule is kept: 1 and 2.5 are two class names (tests/test_dataset.py pins it),
    and so are 0, 1, 2 with one 2.5; two or more numbers not whole, at least as many as the
    whole ones, are measurements."""
    (tmp_path / "train").mkdir()
    for i in range(4):
        Image.new("L", (4, 4)).save(tmp_path / "train" / f"{i}.jpg")
    csv = tmp_path / "train.csv"
    csv.write_text("id,label\n0,0\n1,1\n2,2\n3,2.5\n")
    with pytest.warns(UserWarning, match="every label is read as a class name"):
        ds = CsvImageDataset(csv, tmp_path / "train", file_column="id", file_suffix=".jpg",
                             label_column="label")
    assert ds.classes == ["0", "1", "2", "2.5"]
    csv.write_text("id,label\n0,0\n1,1.5\n2,2\n3,2.5\n")
    with pytest.raises(DatasetError, match=r"line 3: 1\.5\): pass --task regression"):
        CsvImageDataset(csv, tmp_path / "train", file_column="id", file_suffix=".jpg",
                        label_column="label")


def test_nan_empty_and_text_targets_are_bad_rows_by_line_and_column(tmp_path):
    csv = kaggle(tmp_path, n=10, rows_extra="img1,nan,1.0,train\nimg2,,1.0,train\n"
                                            "img3,1.5,abc,train\nimg4,inf,1,train\n")
    with pytest.raises(DatasetError) as info:
        CsvImageDataset(csv, tmp_path / "train", file_column="id", file_suffix=".jpg",
                        label_column="angle,scale", task="regression")
    message = str(info.value)
    assert "4 bad row(s) out of 14" in message and str(csv) in message
    assert "line 12: 'img1': target nan in column 'angle' is NaN (expected a number)" in message
    assert "line 13: 'img2': empty target in column 'angle'" in message
    assert "line 14: 'img3': target 'abc' in column 'scale' is not a number" in message
    assert "line 15: 'img4': target inf in column 'angle' is not finite" in message
    with pytest.warns(UserWarning, match="4 bad row"):
        ds = CsvImageDataset(csv, tmp_path / "train", file_column="id", file_suffix=".jpg",
                             label_column="angle,scale", task="regression", skip_bad_rows=True)
    assert len(ds) == 10 and np.isfinite(ds.rows.values).all()


def test_check_command_prints_each_targets_range_and_names_bad_rows(tmp_path, capsys):
    csv = kaggle(tmp_path, n=10)
    assert check_main([str(csv), str(tmp_path / "train"), "--file-column", "id", "--file-suffix",
                       ".jpg", "--task", "regression", "--label-column", "angle"]) == 0
    out = capsys.readouterr().out
    angles = np.array([float(line.split(",")[1]) for line in csv.read_text().splitlines()[1:]])
    assert "10 rows, 1 target(s)" in out
    assert (f"target 'angle': min {angles.min():g}, max {angles.max():g}, "
            f"mean {angles.mean():g}") in out
    with csv.open("a") as f:
        f.write("img1,NaN,1,train\n")
    assert check_main([str(csv), str(tmp_path / "train"), "--file-column", "id", "--file-suffix",
                       ".jpg", "--task", "regression", "--label-column", "angle"]) == 1
    assert "line 12: 'img1': target NaN in column 'angle' is NaN" in capsys.readouterr().out


def test_loaders_batch_targets_of_regression(tmp_path):
    from loaders import get_dataloaders_from_split_csv
    csv = kaggle(tmp_path, n=20)
    train, valid, test = get_dataloaders_from_split_csv(
        csv, tmp_path / "train", batch_size=4, dataset_kwargs={
            "file_column": "id", "file_suffix": ".jpg", "label_column": "angle,scale",
            "task": "regression"})
    images, targets = next(iter(train))
    assert images.shape == (4, 1, 8, 8) and targets.shape == (4, 2)
    assert targets.dtype == torch.float32 and test is not None


# ---- the task: standardisation, loss and figures --------------------------------------------------

def test_rmse_mae_r2_against_numpy():
    from evaluate import regression_scores
    truth = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    predicted = np.array([[1.5, 12.0], [2.0, 18.0], [2.0, 33.0], [5.0, 40.0]])
    scores = regression_scores(predicted, truth)
    error = predicted - truth
    assert scores["rmse"] == pytest.approx(np.sqrt((error ** 2).mean(0)))
    assert scores["rmse"][0] == pytest.approx(np.sqrt((0.25 + 0 + 1 + 1) / 4))  # 0.75
    assert scores["mae"] == pytest.approx([(0.5 + 0 + 1 + 1) / 4, (2 + 2 + 3 + 0) / 4])
    assert scores["r2"][0] == pytest.approx(1 - 2.25 / 5.0)  # spread round 2.5: 5
    assert scores["r2"][1] == pytest.approx(1 - 17 / 500)
    flat = regression_scores(np.array([[1.0], [2.0]]), np.array([[3.0], [3.0]]))
    assert np.isnan(flat["r2"][0])  # no spread: R² undefined, not a division error


def test_standardisation_round_trip_and_loss():
    from train import Regression, target_standardisation
    values = np.array([[10.0, 1.0], [20.0, 1.0], [40.0, 1.0]])
    mean, std = target_standardisation(values)
    assert mean == pytest.approx([70 / 3, 1.0]) and std[0] == pytest.approx(values[:, 0].std())
    assert std[1] == 1.0  # a target that never varies: nothing to divide
    task = Regression(mean=mean, std=std)
    targets = torch.tensor(values, dtype=torch.float32)
    z = task.standardise(targets)
    assert z[:, 0].double().mean().item() == pytest.approx(0, abs=1e-6)
    back = z.double() * torch.tensor(std, dtype=torch.float64) + torch.tensor(mean)
    assert torch.allclose(back, targets.double(), atol=1e-5)
    outputs = torch.tensor([[0.5, 0.0], [-1.0, 0.2], [1.0, 0.0]])
    assert torch.equal(task.loss(outputs, targets), torch.nn.functional.mse_loss(outputs, z))
    w = torch.tensor([1.0, 0.0, 3.0])
    per_image = torch.nn.functional.l1_loss(outputs, z, reduction="none").mean(1)
    l1 = Regression(mean=mean, std=std, loss_name="l1")
    assert torch.allclose(l1.loss(outputs, targets, w), (w * per_image).sum() / w.sum())


def test_best_epoch_follows_lowest_rmse_or_highest_r2():
    from train import History, best_epoch, monitored_text
    scores = [{"rmse": 3.0, "mae": 2.0, "r2": 0.1, "loss": 1.0},
              {"rmse": 1.0, "mae": 2.5, "r2": 0.5, "loss": 0.9},
              {"rmse": 2.0, "mae": 1.0, "r2": 0.7, "loss": 0.8}]
    history = History(valid_acc=[s["rmse"] for s in scores], valid_scores=scores, monitor="rmse")
    assert best_epoch(history) == 2 and monitored_text(history, 2) == "RMSE 1.0000"
    assert best_epoch(History(valid_acc=[1, 1, 1], valid_scores=scores, monitor="r2")) == 3
    assert best_epoch(History(valid_acc=[1, 1, 1], valid_scores=scores, monitor="mae")) == 3


def test_scatter_and_worst_errors_figures(tmp_path):
    import matplotlib.pyplot as plt

    from plot import plot_regression_scatter, show_worst_errors
    fig = plot_regression_scatter(torch.tensor([[1.0, 2.0], [3.0, 1.0]]),
                                  torch.tensor([[1.0, 2.5], [2.0, 1.5]]), ["angle", "scale"],
                                  tmp_path)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "true angle"
    plt.close(fig)

    class Constant(torch.nn.Module):  # predicts 0 standardised: the mean, 10
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return self.w.expand(len(x), 1)

    images = torch.zeros(3, 1, 4, 4)
    loader = [(images, torch.tensor([[12.3], [40.1], [11.0]]))]
    fig = show_worst_errors(Constant(), loader, [10.0], [2.0], tmp_path)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "true 40.1, predicted 10"  # the furthest off first
    plt.close(fig)
    assert (tmp_path / "scatter.png").stat().st_size and (tmp_path / "worst_errors.png").exists()


# ---- train.py ------------------------------------------------------------------------------------

def test_train_evaluate_and_predict_two_targets(tmp_path, capsys):
    import train
    csv = kaggle(tmp_path)
    history = train.main(regress_args(tmp_path, tmp_path / "r"))
    out = capsys.readouterr().out
    assert "Train RMSE: " in out and "Validation RMSE: " in out and "Test RMSE: " in out
    assert "| MAE: train " in out and "R²: train " in out and "Train: " not in out
    assert history.monitor == "rmse" and len(history.valid_acc) == 3
    assert history.valid_acc == [s["rmse"] for s in history.valid_scores]
    checkpoint = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    config = checkpoint["config"]
    assert config["task"] == "regression" and checkpoint["classes"] == ["angle", "scale"]
    assert config["loss"] == "mse" and config["num_classes"] == 2
    table = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    train_angles = np.array([float(r[1]) for r in table if r[3] == "train"])
    assert config["target_mean"][0] == pytest.approx(train_angles.mean(), rel=1e-12)
    assert config["target_std"][0] == pytest.approx(train_angles.std(), rel=1e-12)
    report = (tmp_path / "r" / "regression_report.csv").read_text().splitlines()
    assert report[0] == "target,count,rmse,mae,r2,rmse_of_train_mean"
    n_test = str(sum(r[3] == "test" for r in table))
    assert [r.split(",")[:2] for r in report[1:]] == [["angle", n_test], ["scale", n_test]]
    # the test line gives what the model must beat: predicting the train mean for every image
    mean_rmse = np.mean([float(r.split(",")[5]) for r in report[1:]])
    test_lines = [line for line in out.splitlines() if line.startswith("Test RMSE: ")]
    assert len(test_lines) == 1 and test_lines[0].startswith(f"Test RMSE: {history.test_acc:.4f} (")
    assert test_lines[0].endswith(f"{mean_rmse:.4f})")
    assert (tmp_path / "r" / "scatter.png").exists()
    assert (tmp_path / "r" / "worst_errors.png").exists()
    metrics = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert "train_rmse,valid_rmse,train_mae,valid_mae,train_r2,valid_r2" in metrics[0]
    # --evaluate and --predict: no --task, no --label-column; the checkpoint says them
    evaluated = train.main(["--csv", str(csv), "--img-dir", str(tmp_path / "train"),
                            "--file-column", "id", "--file-suffix", ".jpg", "--split-column",
                            "split", "--evaluate", "--results-dir", str(tmp_path / "r"),
                            "--no-disk-cache"])
    assert evaluated.test_acc == pytest.approx(history.test_acc)
    assert f"Test RMSE: {history.test_acc:.4f}" in capsys.readouterr().out
    train.main(["--predict", str(csv), "--img-dir", str(tmp_path / "train"), "--file-column",
                "id", "--file-suffix", ".jpg", "--results-dir", str(tmp_path / "r")])
    assert "angle: RMSE " in capsys.readouterr().out
    lines = (tmp_path / "r" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "file,angle,scale,true_angle,true_scale,problem"
    cells = lines[1].split(",")
    assert cells[0] == "img0" and [float(c) for c in cells[3:5]] == pytest.approx(
        [float(table[0][1]), float(table[0][2])])
    assert -200 < float(cells[1]) < 200  # in degrees, not standardised


def test_regression_weights_bit_identical_for_any_num_workers(tmp_path):
    import train
    kaggle(tmp_path)
    for workers in ("0", "2"):
        train.main(regress_args(tmp_path, tmp_path / workers, "--num-workers", workers,
                                "--epochs", "2", targets="angle"))
    assert same_weights(tmp_path / "0" / "checkpoint.pt", tmp_path / "2" / "checkpoint.pt")


def test_regression_resume_is_the_uninterrupted_run(tmp_path):
    import train
    kaggle(tmp_path)
    train.main(regress_args(tmp_path, tmp_path / "whole", "--loss", "huber"))
    train.main(regress_args(tmp_path, tmp_path / "parts", "--loss", "huber", "--epochs", "2"))
    args = regress_args(tmp_path, tmp_path / "parts", "--resume")
    at = args.index("--task")
    train.main(args[:at] + args[at + 4:])  # --task, --label-column, --loss: the checkpoint's
    assert same_weights(tmp_path / "whole" / "checkpoint.pt", tmp_path / "parts" / "checkpoint.pt")


def test_regression_refuses_balance(tmp_path, capsys):
    """A drawn split is no longer refused: it is drawn at random (tests/test_redteam_31.py)."""
    import train
    kaggle(tmp_path, n=10)
    with pytest.raises(SystemExit):
        train.main(regress_args(tmp_path, tmp_path / "r", "--balance", "loss"))
    assert "--label-delim and --balance are for classes" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_float_column_and_a_drawn_split_still_name_the_flag(tmp_path):
    """A Kaggle regression table (id,angle, no split column) trained without --task regression:
    the split drawn by class must not answer first with "no class has one to spare" (each angle
    its own class), but with the sentence that names --task regression."""
    import train
    from loaders import split_csv
    csv = kaggle(tmp_path, n=12)
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(",".join(line.split(",")[:2]) for line in lines) + "\n")
    first = lines[1].split(",")[1]
    with pytest.raises(DatasetError, match=rf"line 2: {first}\): pass --task regression"):
        split_csv(csv, tmp_path / "split.csv", file_column="id", label_column="angle")
    with pytest.raises(DatasetError, match=r"line 2: [^)]*\): pass --task regression"):
        train.main(["--csv", str(csv), "--img-dir", str(tmp_path / "train"), "--file-column",
                    "id", "--file-suffix", ".jpg", "--label-column", "angle", "--epochs", "1",
                    "--results-dir", str(tmp_path / "r"), "--no-disk-cache"])


def test_predict_warns_when_every_true_target_is_one_value(tmp_path, capsys):
    """A sample submission (id,angle with 0.0 on every row) predicted without --predict-columns
    is scored against its placeholders: the RMSE is printed with a warning that it may mean
    nothing, as --predict of a classification table does; real targets bring no warning."""
    import train
    csv = kaggle(tmp_path)
    train.main(regress_args(tmp_path, tmp_path / "r", "--epochs", "1", targets="angle"))
    capsys.readouterr()
    ids = [line.split(",")[0] for line in csv.read_text().splitlines()[1:6]]
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("id,angle\n" + "".join(f"{i},0.0\n" for i in ids))
    predict = ["--img-dir", str(tmp_path / "train"), "--file-column", "id", "--file-suffix",
               ".jpg", "--results-dir", str(tmp_path / "r")]
    with pytest.warns(UserWarning, match=r"every image's true 'angle' is 0: if the table holds "
                      "a sample submission's placeholders, these RMSE and MAE mean nothing"):
        train.main(["--predict", str(sample), *predict])
    assert "angle: RMSE " in capsys.readouterr().out
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real angles: no warning
        train.main(["--predict", str(csv), *predict])


def test_the_test_line_says_when_rmse_is_no_better_than_predicting_the_train_mean():
    import train
    task = train.Regression(mean=[0.0], std=[1.0])
    assert task.test_line(3.0) == "Test RMSE: 3.0000"  # no test figure measured: the RMSE alone
    task.mean_rmse = 5.0
    assert task.test_line(3.0) == "Test RMSE: 3.0000 (predicting the train mean: 5.0000)"
    for worse in (5.0, 7.5):  # as printed: equal is no better
        assert task.test_line(worse) == (f"Test RMSE: {worse:.4f} (no better than predicting the "
                                         "train mean for every image: 5.0000)")
