"""``tumorlab test --ckpt_path RUN --data.root OTHER``: class mapping, tumour / no tumour scoring of a 4-class
model, an unseen class, the data sets named in the report, and near-copies of the training images."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
from lightning.pytorch.loggers import Logger

from tests.conftest import FAST_TRAINER, REPO
from tumorlab.cli.main import main
from tumorlab.evaluation.metrics import compute_metrics, parse_predictions
from tumorlab.evaluation.nearcopies import HASHES_FILE, hashes_of_files, read_train_hashes
from tumorlab.synth import write_folders

SMALLCNN = str(REPO / "configs" / "experiments" / "mri4_smallcnn.yaml")
# the other public naming of the 4 classes (the larger set's folders)
OTHER_NAMES = {
    "glioma_tumor": "glioma",
    "meningioma_tumor": "meningioma",
    "no_tumor": "notumor",
    "pituitary_tumor": "pituitary",
}
PLANTED = 3


def _other_set(out: Path, train_files: list[str]) -> Path:
    """A 4-class phantom under the other naming whose Testing/ holds PLANTED resized, re-encoded training images."""
    write_folders(out, train_per_class=2, test_per_class=2, size=80, seed=11)
    for split in ("Training", "Testing"):
        for old, new in OTHER_NAMES.items():
            (out / split / old).rename(out / split / new)
    for k, source in enumerate(train_files[:PLANTED]):
        folder = OTHER_NAMES[Path(source).parent.name]
        copy = cv2.resize(cv2.imread(source), (64, 64), interpolation=cv2.INTER_AREA)
        assert cv2.imwrite(str(out / "Testing" / folder / f"copy ({k}).jpg"), copy, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """SmallCNN fitted at 32 px on a phantom in the sartajbhuvaji naming, and another set to test it on."""
    base = tmp_path_factory.mktemp("cross")
    train_root = base / "sartaj"
    write_folders(train_root, train_per_class=4, test_per_class=1, size=64, seed=3)
    args = ["--config", SMALLCNN, *FAST_TRAINER, "--data.root", str(train_root), "--data.image_size", "32"]
    args += ["--data.batch_size", "8", "--data.num_workers", "0", "--run.root", str(base / "runs"), "--run.name", "m"]
    assert main(["fit", *args]) == 0
    (fit_dir,) = (base / "runs" / "m").iterdir()
    files = read_train_hashes(fit_dir).files
    return {"fit": fit_dir, "train_root": train_root, "other": _other_set(base / "masoud", files), "base": base}


def _test(trained: dict, *extra: str) -> dict:
    """``tumorlab test`` of the fit on the other set; its exit code, output and run folder."""
    before = set(trained["fit"].parent.iterdir())
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            ["test", "--ckpt_path", str(trained["fit"]), "--data.root", str(trained["other"]),
             "--trainer.limit_test_batches", "1.0", "--trainer.logger", "false", "--run.report", "true", *extra]
        )  # fmt: skip
    made = [p for p in set(trained["fit"].parent.iterdir()) - before if p.name.endswith("_test")]
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "dir": made[0] if made else None}


@pytest.fixture(scope="module")
def four_class(trained) -> dict:
    return _test(trained)


@pytest.fixture(scope="module")
def binary(trained) -> dict:
    return _test(trained, "--data.binary", "true")


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_fit_keeps_the_hashes_and_classes_of_its_training_split(trained):
    record = json.loads((trained["fit"] / "run.json").read_text())
    assert record["class_names"] == ["glioma", "meningioma", "no_tumour", "pituitary"]
    hashes = read_train_hashes(trained["fit"])
    assert hashes.hashes.dtype == np.uint8 and hashes.hashes.shape == (len(hashes.files), 32)
    # the training split only: 16 training images less the validation and test shares drawn from them
    assert 0 < len(hashes.files) < 16 and all("/Training/" in f for f in hashes.files)
    again, errors = hashes_of_files(hashes.files[:2])
    assert errors == [None, None] and np.array_equal(again, hashes.hashes[:2])
    assert (trained["fit"] / HASHES_FILE).stat().st_size < 4096


@pytest.mark.slow
def test_other_naming_is_mapped_and_near_copies_are_counted(trained, four_class):
    assert four_class["code"] == 0, four_class["stderr"]
    test_dir = four_class["dir"]
    assert (
        "class mapping (model <- data): glioma <- glioma/; meningioma <- meningioma/; no_tumour <- notumor/; "
        "pituitary <- pituitary/"
    ) in four_class["stdout"]
    assert f"near-copies of the training images: {PLANTED} of {8 + PLANTED} test images" in four_class["stdout"]
    record = json.loads((test_dir / "run.json").read_text())
    assert record["trained_on"]["root"] == str(trained["train_root"])
    assert record["tested_on"]["root"] == str(trained["other"]) and record["other_data"] is True
    rows = _rows(test_dir)
    assert len(rows) == 8 + PLANTED
    copies = [r for r in rows if r["near_copy_of_train"] == "1"]
    assert sorted(Path(r["file"]).name for r in copies) == [f"copy ({k}).jpg" for k in range(PLANTED)]
    planted = {f"copy ({k}).jpg": f for k, f in enumerate(read_train_hashes(trained["fit"]).files[:PLANTED])}
    assert all(r["train_copy"] == planted[Path(r["file"]).name] for r in copies)
    assert all(r["train_copy"] == "" for r in rows if r["near_copy_of_train"] == "0")
    metrics = json.loads((test_dir / "metrics.json").read_text())
    assert metrics["near_copies"]["count"] == PLANTED and metrics["near_copies"]["threshold_bits"] == 12
    clean = [r for r in rows if r["near_copy_of_train"] == "0"]
    assert metrics["without_near_copies"] == json.loads(json.dumps(compute_metrics(parse_predictions(clean))))
    hand = np.mean([r["true_class"] == r["predicted_class"] for r in clean])
    assert metrics["without_near_copies"]["overall"]["accuracy"] == pytest.approx(hand)
    assert metrics["samples"] == 8 + PLANTED and metrics["without_near_copies"]["samples"] == 8
    report = (test_dir / "report.md").read_text()
    assert f"trained on: `FolderDataModule` root `{trained['train_root']}`" in report
    assert "## Near-copies of the training images" in report and "| without near-copies | 8 |" in report


@pytest.mark.slow
def test_binary_scoring_of_a_four_class_model(four_class, binary):
    assert binary["code"] == 0, binary["stderr"]
    test_dir = binary["dir"]
    assert "the model's 4 outputs are scored as 2 classes" in binary["stdout"]
    assert "tumour = p(glioma) + p(meningioma) + p(pituitary) <- glioma/, meningioma/, pituitary/" in binary["stdout"]
    four = {r["file"]: r for r in _rows(four_class["dir"])}
    rows = _rows(test_dir)
    assert [k for k in rows[0] if k.startswith("prob_")] == ["prob_no_tumour", "prob_tumour"]
    for row in rows:  # the same images, the same weights: p(no_tumour) as before, p(tumour) the sum of the rest
        other = four[row["file"]]
        assert float(row["prob_no_tumour"]) == pytest.approx(float(other["prob_no_tumour"]), abs=1e-5)
        tumour = sum(float(other[f"prob_{c}"]) for c in ("glioma", "meningioma", "pituitary"))
        assert float(row["prob_tumour"]) == pytest.approx(tumour, abs=1e-5)
        assert row["true_class"] == ("no_tumour" if other["true_class"] == "no_tumour" else "tumour")
    confusion = json.loads((test_dir / "confusion_matrix.json").read_text())
    hand = [[sum(r["true_class"] == t and r["predicted_class"] == p for r in rows) for p in ("no_tumour", "tumour")]
            for t in ("no_tumour", "tumour")]  # fmt: skip
    assert confusion["class_names"] == ["no_tumour", "tumour"] and confusion["matrix"] == hand
    accuracy = json.loads((test_dir / "run.json").read_text())["test_metrics"]["acc"]
    assert accuracy == pytest.approx(np.mean([r["true_class"] == r["predicted_class"] for r in rows]))
    assert "scored as tumour / no tumour: the model keeps its 4 trained outputs" in (test_dir / "report.md").read_text()


@pytest.mark.slow
def test_a_class_the_model_never_saw_stops_first(trained, cli, tmp_path):
    other = shutil.copytree(trained["other"], tmp_path / "yes_no")
    (other / "Training" / "notumor").rename(other / "Training" / "tumor")
    (other / "Testing" / "notumor").rename(other / "Testing" / "tumor")
    before = set(trained["fit"].parent.iterdir())
    done = cli("test", "--ckpt_path", str(trained["fit"]), "--data.root", str(other), "--trainer.logger", "false")
    assert done.returncode == 2
    assert "class tumour of the test data is not a class of the model" in done.stderr
    assert "model classes: glioma, meningioma, no_tumour, pituitary" in done.stderr
    assert "data classes: glioma, meningioma, pituitary, tumour" in done.stderr
    assert set(trained["fit"].parent.iterdir()) == before  # no run folder: nothing was computed


# --- the pieces, without training ---------------------------------------------------------------------------


def _tiny_folders(root: Path, classes: list[str]) -> Path:
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        cv2.imwrite(str(root / name / "a.jpg"), np.full((8, 8, 3), 40 * k, np.uint8))
    return root


def test_data_is_read_as_the_model_classes(tmp_path):
    from tumorlab.data import FolderDataModule
    from tumorlab.links import head_classes
    from tumorlab.runs.crossdata import class_mapping

    model = ["glioma", "meningioma", "no_tumour", "pituitary"]
    root = _tiny_folders(tmp_path / "two", ["notumor", "glioma"])
    dm = FolderDataModule(str(root), model_classes=model, image_size=32)
    assert dm.class_names == model and head_classes(dm) == 4  # labels index the model's outputs
    assert {s.image.parent.name: s.label for s in dm.samples} == {"glioma": 0, "notumor": 2}
    line = class_mapping(dm)["line"]
    assert line == (
        "class mapping (model <- data): glioma <- glioma/; meningioma <- (no images); no_tumour <- notumor/; "
        "pituitary <- (no images)"
    )
    binary = FolderDataModule(str(root), model_classes=model, binary=True, image_size=32)
    assert binary.class_names == ["no_tumour", "tumour"] and binary.num_classes == 2 and head_classes(binary) == 4
    assert {s.image.parent.name: s.label for s in binary.samples} == {"glioma": 1, "notumor": 0}


def test_binary_data_of_a_yes_no_set_and_a_binary_model(tmp_path):
    from tumorlab.data import FolderDataModule
    from tumorlab.errors import ConfigError, DataError

    root = _tiny_folders(tmp_path / "yes_no", ["no", "yes"])
    dm = FolderDataModule(str(root), model_classes=["glioma", "no_tumour"], binary=True, image_size=32)
    assert dm.class_names == ["no_tumour", "tumour"]
    with pytest.raises(DataError, match="class tumour of the test data is not a class of the model.*binary true"):
        FolderDataModule(str(root), model_classes=["glioma", "no_tumour"], image_size=32)
    with pytest.raises(ConfigError, match="no_tumour against the tumour classes"):
        FolderDataModule(str(root), model_classes=["glioma", "meningioma"], binary=True, image_size=32)


def test_collapse_to_binary_keeps_the_weights_and_sums_the_tumour_classes():
    import torch

    from tumorlab.models import CNN9
    from tumorlab.runs.crossdata import collapse_to_binary
    from tumorlab.tasks import ClassificationTask

    torch.manual_seed(0)
    task = ClassificationTask(CNN9(num_classes=4, width=4), class_weights=[1.0, 2.0, 3.0, 4.0]).eval()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        four = task(x).softmax(1)
    keys = set(task.state_dict())
    collapse_to_binary(task, ["glioma", "meningioma", "no_tumour", "pituitary"])
    with torch.no_grad():
        two = task(x).softmax(1)
    assert set(task.state_dict()) == keys and task.num_classes == 2 and task.class_weight is None
    assert torch.allclose(two[:, 0], four[:, 2], atol=1e-6)
    assert torch.allclose(two[:, 1], four[:, [0, 1, 3]].sum(1), atol=1e-6)
    assert task.loss(task(x), torch.tensor([0, 1, 1, 0, 1])).isfinite()  # the 2-class loss, unweighted


def test_near_copies_within_the_threshold():
    from tumorlab.evaluation.nearcopies import TrainHashes, near_copies

    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (6, 32), dtype=np.uint8)
    bits = np.unpackbits(train[2])
    bits[:4] ^= 1  # 4 bits away from training image 2
    close = np.packbits(bits)
    bits[4:9] ^= 1  # 9 bits away
    far = np.packbits(bits)
    test = np.stack([close, far, rng.integers(0, 256, 32, dtype=np.uint8)])
    hashes = TrainHashes([f"t{i}.jpg" for i in range(6)], train, [], 12)
    assert near_copies(test, hashes, 4) == ["t2.jpg", None, None]
    assert near_copies(test, hashes, 9) == ["t2.jpg", "t2.jpg", None]


@pytest.mark.slow
def test_the_test_pass_writes_the_predictions_of_a_predict_pass(trained, four_class, cli):
    """One pass: no `<time>_predict` folder, and the rows equal those `tumorlab predict` gives the same data."""
    assert not [p for p in trained["fit"].parent.iterdir() if p.name.endswith("_predict")]
    done = cli(
        "predict", "--ckpt_path", str(trained["fit"]), "--data.root", str(trained["other"]),
        "--data.predict_split", "test", "--trainer.logger", "false",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (predict_dir,) = [p for p in trained["fit"].parent.iterdir() if p.name.endswith("_predict")]
    tested, predicted = _rows(four_class["dir"]), _rows(predict_dir)
    assert [r["file"] for r in tested] == [r["file"] for r in predicted]
    for a, b in zip(tested, predicted, strict=True):
        assert (a["true_class"], a["predicted_class"]) == (b["true_class"], b["predicted_class"])
        for key in (k for k in b if k.startswith("prob_")):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6)


# --- figures handed to W&B ------------------------------------------------------------------------------------


class ImageLogger(Logger):
    """A logger that takes images as W&B's does (``log_image``) and only records them."""

    calls: ClassVar[list[tuple[str, list[str]]]] = []

    def __init__(self, save_dir: str = ".") -> None:  # tumorlab points save_dir at the run folder
        super().__init__()
        self._save_dir = save_dir

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def name(self) -> str:
        return "images"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_image(self, key: str, images: list, caption=None, **kwargs) -> None:
        ImageLogger.calls.append((key, list(images)))


@pytest.mark.slow
def test_every_report_figure_reaches_an_image_logger(trained):
    ImageLogger.calls.clear()
    logger = json.dumps({"class_path": f"{__name__}.ImageLogger"})
    args = ["test", "--ckpt_path", str(trained["fit"]), "--trainer.logger", logger, "--run.report", "true"]
    assert main(args) == 0
    keys = {key: images for key, images in ImageLogger.calls}
    assert {"test/roc_pr", "test/confusion_matrix", "test/training_curves"} <= set(keys)
    assert all(Path(images[0]).is_file() and images[0].endswith(f"{key[5:]}.png") for key, images in keys.items())


def test_log_figures_names_nested_panels_by_their_path(tmp_path):
    from tumorlab.evaluation.report import figure_files, log_figures

    (tmp_path / "figures" / "cam").mkdir(parents=True)
    for name in ("roc_pr.png", "cam/gg (1).png"):
        (tmp_path / "figures" / name).write_bytes(b"png")
    ImageLogger.calls.clear()
    keys = log_figures([ImageLogger(), object()], figure_files(tmp_path), "test")
    assert keys == ["test/cam/gg (1)", "test/roc_pr"] and [k for k, _ in ImageLogger.calls] == keys
