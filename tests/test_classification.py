"""ClassificationTask: the loss, class weights, metrics against sklearn, the confusion matrix file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, fbeta_score, precision_score

from tests.conftest import quiet_trainer
from tests.helpers import ShapesDataModule
from tumorlab.errors import ConfigError
from tumorlab.models import CNN9, ResNet3
from tumorlab.tasks import ClassificationTask
from tumorlab.tasks.classification import CONFUSION_FILE


def test_loss_is_weighted_label_smoothed_cross_entropy():
    task = ClassificationTask(CNN9(num_classes=3, width=4), class_weights=[1.0, 2.0, 0.5], label_smoothing=0.1)
    logits, labels = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 1, 2, 2, 1])
    expected = F.cross_entropy(logits, labels, weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1)
    assert torch.isclose(task.loss(logits, labels), expected)


def test_bad_task_values_say_what_is_allowed():
    net = CNN9(num_classes=3, width=4)
    with pytest.raises(ConfigError, match="class_weights must be 3 non-negative finite numbers"):
        ClassificationTask(net, class_weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match=r"label_smoothing must lie in \[0, 1\)"):
        ClassificationTask(net, label_smoothing=1.0)
    with pytest.raises(ConfigError, match="num_classes is 3 but the data module ShapesDataModule has 4"):
        ClassificationTask(net).check_data(ShapesDataModule(num_classes=4))


def test_auto_class_weights_come_from_the_data(tmp_path):
    dm = ShapesDataModule(num_classes=3, n=30)
    task = ClassificationTask(ResNet3(num_classes=3, width=4), class_weights="auto")
    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1).fit(task, dm)
    assert torch.allclose(task.class_weight, dm.class_weights())
    assert float(task.class_weight.mean()) == pytest.approx(1.0)


def test_test_metrics_and_confusion_matrix_match_sklearn(tmp_path):
    torch.manual_seed(0)
    dm = ShapesDataModule(num_classes=3, n=40)
    task = ClassificationTask(ResNet3(num_classes=3, width=4))
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(task, dm)
    metrics = trainer.test(task, dm, verbose=False)[0]
    batches = trainer.predict(task, dm)
    prob = torch.cat([b["class_prob"] for b in batches]).numpy()
    truth = dm.datasets["test"].labels.numpy()
    pred = prob.argmax(1)
    assert metrics["test/acc"] == pytest.approx(float((pred == truth).mean()), abs=1e-6)
    assert metrics["test/f2"] == pytest.approx(fbeta_score(truth, pred, beta=2, average="macro"), abs=1e-5)
    per_class = precision_score(truth, pred, average=None, zero_division=0)
    for k, name in enumerate(("class_a", "class_b", "class_c")):
        assert metrics[f"test/precision_{name}"] == pytest.approx(per_class[k], abs=1e-5)
    record = json.loads((tmp_path / CONFUSION_FILE).read_text())
    assert record["class_names"] == ["class a", "class b", "class c"]
    np.testing.assert_array_equal(np.array(record["matrix"]), confusion_matrix(truth, pred, labels=[0, 1, 2]))


def test_training_time_is_logged(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    task = ClassificationTask(CNN9(num_classes=3, width=4))
    trainer.fit(task, ShapesDataModule())
    assert trainer.callback_metrics["train/time_s"] > 0 and task.train_time_s > 0


def test_every_architecture_has_a_model_shorthand():
    """Each network class tumorlab.models exports expands to a task that accepts it as its ``net``."""
    import typing

    import tumorlab.models as models
    import tumorlab.tasks as tasks
    from tumorlab.cli.config import expand_model_shorthand

    nets = [getattr(models, n) for n in models.__all__]
    nets = [c for c in nets if isinstance(c, type) and issubclass(c, models.TumorNet) and c is not models.TumorNet]
    assert len(nets) >= 5
    for net in nets:
        argv = expand_model_shorthand(["fit", "--model", net.__name__])
        assert argv[3:] == ["--model.net", net.__name__], f"no shorthand for {net.__name__}"
        task = getattr(tasks, argv[2])
        assert issubclass(net, typing.get_type_hints(task.__init__)["net"]), (net, task)


def _trainable_layers_message() -> str:
    from tumorlab.models import TimmClassifier, parameterised_layers

    n = len(parameterised_layers(TimmClassifier("resnet18")))  # counted here: it changes with timm's version
    return f"trainable_layers is 999 but resnet18 with its head has {n} parameterised layers; choose 1..{n}"


BAD_INPUT = {
    "unknown timm model": (
        ["--model", "TimmClassifier", "--model.net.init_args.name", "resnet1000"],
        "unknown timm model 'resnet1000'",
    ),
    "unknown smp encoder": (
        ["--model", "UNetWithClassifier", "--model.net.init_args.encoder_name", "resnet1000"],
        "unknown smp encoder 'resnet1000'; use one of smp.encoders.get_encoder_names()",
    ),
    "too many trainable layers": (
        ["--model", "TimmClassifier", "--model.net.init_args.trainable_layers", "999"],
        _trainable_layers_message,
    ),
    "theta outside [0, 1]": (["--model", "UNetWithClassifier", "--model.theta", "1.5"], r"theta must lie in [0, 1]"),
    "classes disagree with the data": (
        ["--model", "CNN9", "--model.net.init_args.num_classes", "4"],
        "model.net.init_args.num_classes is 4 but the data (LGGDataModule) gives num_classes 2",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_stops_before_training_with_one_line(case, lgg_phantom, tmp_path, capsys):
    from tumorlab.cli.main import main

    args, message = BAD_INPUT[case]
    message = message() if callable(message) else message
    argv = ["fit", *args, "--data", "LGGDataModule", "--data.root", str(lgg_phantom), "--run.root", str(tmp_path)]
    assert main([*argv, "--trainer.logger=false"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tumorlab: error:")]
    assert len(lines) == 1 and message in lines[0], err[-2000:]
    assert not any(tmp_path.iterdir()), "nothing is written before the configuration is valid"
