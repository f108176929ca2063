"""``predictions.csv`` from the test pass itself: one pass gives the test metrics and the rows of the report.

``TestPredictions`` is a callback that ``tumorlab test`` (and ``fit --run.test_after_fit true``) adds to the
trainer: after each test batch it hands the batch to the task's own ``predict_step`` (the same outputs as
``tumorlab predict`` on the test split: class probabilities, and for segmentation tumour and true pixels and
the slice Dice) and keeps the rows of ``tumorlab.runs.predictions.prediction_rows``; when the test epoch ends, rank
zero writes them with ``tumorlab.runs.predictions.write_predictions``. The report then reads that file and runs no
predict pass of its own (no ``<time>_predict`` folder beside the test folder). The rows are those the test
scored: with ``trainer.limit_test_batches`` below 1 only the batches that were tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

from tumorlab.runs.predictions import gather_rows, prediction_rows, write_predictions

__all__ = ["TestPredictions"]


class TestPredictions(Callback):
    """Collect the prediction rows of every test batch and write ``run_dir/predictions.csv``.

    Args:
        run_dir: the run folder of the command (``predictions.csv`` goes there).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, Any]] = []
        self.path: Path | None = None

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.rows, self.path = [], None

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        predict = getattr(pl_module, "predict_step", None)
        if callable(predict):  # rows per batch: the tensors go to the CPU and are dropped at once
            self.rows += prediction_rows([predict(batch, batch_idx)])

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        rows = gather_rows(self.rows)  # every process takes part; rank zero gets all rows in data-set order
        if trainer.is_global_zero and rows:
            from tumorlab.runs.folders import update_run_json

            self.path = write_predictions(rows, self.run_dir)
            update_run_json(self.run_dir, predictions=str(self.path))
        self.rows = []
