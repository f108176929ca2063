"""``tumorlab predict`` run inside another command (the report of a run folder without predictions).

It lives on the CLI side: ``tumorlab.evaluation`` never imports the CLI, and is handed ``run_predict``
instead (``write_report(..., predict=run_predict)``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["run_predict"]


def run_predict(argv: list[str]) -> Path:
    """Run ``tumorlab predict`` in this process as ``tumorlab.cli.main`` would; return its run folder.

    ``TumorlabCLI`` is called directly, not through ``run_lightning_cli``: that one ends the active W&B run
    when it returns, which would end the W&B run of a ``tumorlab test`` that writes its report at the end.
    """
    from tumorlab.cli import expand_model_shorthand
    from tumorlab.lightning_cli import TumorlabCLI
    from tumorlab.quiet import quiet_known_noise
    from tumorlab.run_config import with_run_config
    from tumorlab.runs import RUN_DIR_ENV

    quiet_known_noise()
    before = os.environ.get(RUN_DIR_ENV)
    try:
        args, tested = with_run_config(expand_model_shorthand(argv))
        return Path(TumorlabCLI(args, tested=tested, user_args=argv).run_dir)
    finally:  # the folder of the command that asked for the report stays the current one
        if before is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = before
