"""After a run: its report (metrics recomputed from predictions.csv, figures, report.md), run comparisons,
class-activation maps with their localisation scores, and patient-grouped cross-validation.

``write_report(run_dir)`` and ``compare_runs(run_dirs)`` are what ``tumorlab report`` and ``tumorlab compare``
call; ``tumorlab cam`` and ``tumorlab cv`` call ``tumorlab.evaluation.cam`` and ``tumorlab.evaluation.cv``.
A trained run is rebuilt with ``tumorlab.runs.load.load_run``; ``nearcopies`` (with ``tumorlab.runs.crossdata``)
covers tests on other data sets (near-copies of the training images); ``rows`` lets the test pass write
``predictions.csv``.
"""

from tumorlab.evaluation.compare import compare_runs
from tumorlab.evaluation.report import write_report

__all__ = ["compare_runs", "write_report"]
