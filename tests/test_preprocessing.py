"""One image file, one network input: the DataModule (fit, test, report's predict pass), ``tumorlab cam`` and
``tumorlab predict-images`` (its numpy path serves checkpoints and ONNX files alike) prepare a file alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tumorlab.compression.export import run_metadata
from tumorlab.compression.predict_images import preprocess
from tumorlab.evaluation.cam import load_item, run_preprocessing
from tumorlab.runs.load import load_run


def test_each_path_turns_a_file_into_the_same_tensor(cnn9_run):
    run = load_run(cnn9_run)
    dm = run.datamodule
    dm.setup("test")
    ds = dm.datasets["test"]
    spec, mean, std = run_preprocessing(cnn9_run)
    meta = run_metadata(run)
    for k in (0, len(ds) // 2, len(ds) - 1):
        fed = ds[k]["image"]
        path = ds[k]["image_path"]
        sample = dm.store.samples[int(ds.indices[k])]
        cam = load_item(path, spec, mean, std, sample).tensor
        predicted, _ = preprocess(Path(path), meta)
        assert fed.shape == cam.shape == predicted.shape == (3, 32, 32)
        assert torch.equal(cam, fed), path
        np.testing.assert_allclose(predicted, fed.numpy(), rtol=0, atol=1e-5, err_msg=str(path))
