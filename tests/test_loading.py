"""``runs.load``: a checkpoint whose weights do not fit the run's model is refused, naming a tensor."""

from __future__ import annotations

import pytest
import torch

from tumorlab.errors import ConfigError
from tumorlab.models import CNN9
from tumorlab.runs.load import load_weights
from tumorlab.tasks import ClassificationTask


def _ckpt(tmp_path, task) -> str:
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": task.state_dict()}, path)
    return str(path)


def test_weights_of_another_head_are_refused(tmp_path):
    four = ClassificationTask(CNN9(num_classes=4, width=4))
    with pytest.raises(ConfigError, match=r"net\.\S+ is \[2, \d+\] there, \[4, \d+\] here"):
        load_weights(four, _ckpt(tmp_path, ClassificationTask(CNN9(num_classes=2, width=4))))


def test_matching_weights_load(tmp_path):
    torch.manual_seed(0)
    trained, fresh = ClassificationTask(CNN9(num_classes=4, width=4)), ClassificationTask(CNN9(num_classes=4, width=4))
    load_weights(fresh, _ckpt(tmp_path, trained))
    fresh_state = fresh.state_dict()
    assert all(torch.equal(value, fresh_state[key]) for key, value in trained.state_dict().items())
