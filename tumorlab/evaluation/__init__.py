"""After a run: its report (metrics recomputed from predictions.csv, figures, report.md) and run comparisons.

``write_report(run_dir)`` writes the report of one run folder; ``compare_runs(run_dirs)`` puts several runs
side by side. Both are what ``tumorlab report`` and ``tumorlab compare`` call.
"""

from tumorlab.evaluation.compare import compare_runs
from tumorlab.evaluation.report import write_report

__all__ = ["compare_runs", "write_report"]
