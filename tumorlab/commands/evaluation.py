"""`tumorlab report`, `compare`, `cam` and `cv`: their parsers and what they run (imported lazily)."""

from __future__ import annotations

import argparse

__all__ = ["add_parsers"]


def _report(ns: argparse.Namespace) -> int:
    from tumorlab.commands.predict_run import run_predict
    from tumorlab.evaluation.report import write_report
    from tumorlab.quiet import quiet_known_noise

    quiet_known_noise()
    path = write_report(ns.run_dir, slice_panel=not ns.no_slices, predict=run_predict)
    print(f"report: {path}\nmetrics: {path.with_name('metrics.json')}\nfigures: {path.with_name('figures')}")
    return 0


def _compare(ns: argparse.Namespace) -> int:
    from tumorlab.evaluation.compare import compare_runs

    result = compare_runs(ns.run_dirs, sort=ns.sort or None, out_dir=ns.out)
    print(result.markdown.read_text(), end="")
    written = [result.markdown, result.csv] + ([result.png] if result.png else [])
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _cam(ns: argparse.Namespace) -> int:
    from tumorlab.evaluation.cam import explain, format_explanation
    from tumorlab.quiet import quiet_known_noise

    quiet_known_noise()
    result = explain(
        ns.ckpt_path, ns.out, images=ns.images, method=ns.method, misclassified=ns.misclassified, score=ns.score,
        limit=ns.limit, data_root=ns.data_root, tolerance=ns.tolerance, device=ns.device,
    )  # fmt: skip
    print(format_explanation(result, ns.out))
    return 0


def _cv(ns: argparse.Namespace) -> int:
    from tumorlab.cli import main
    from tumorlab.evaluation.cv import cross_validate, fold_commands, format_summary

    if ns.print_commands:
        for command in fold_commands(ns.config, ns.folds, ns.overrides):
            print(command)
        return 0
    summary = cross_validate(ns.config, ns.folds, ns.overrides, collect=ns.collect, fit=main)
    print(format_summary(summary))
    return 0


def _add_cam_parser(sub) -> None:
    cam = sub.add_parser(
        "cam",
        help="explain a run's predictions: Grad-CAM overlays and how well they point at the tumour",
        description="Draw class-activation maps (pytorch-grad-cam) of a trained run on images prepared exactly "
        "as the run was trained, one PNG per image (image, CAM, true and predicted class with its probability). "
        "--score measures on the test split's tumour slices (data with masks) whether the CAM of the tumour "
        "class points at the tumour.",
    )
    cam.add_argument(
        "--ckpt_path", required=True, help="a run folder (its config.yaml and best checkpoint) or a checkpoint in one"
    )
    cam.add_argument("--images", nargs="+", default=[], metavar="PATH", help="image files to explain")
    cam.add_argument("--out", required=True, help="folder for the overlays, cams.csv and localisation.json")
    cam.add_argument("--method", choices=("gradcam", "gradcam++", "scorecam"), default="gradcam")
    cam.add_argument("--misclassified", action="store_true", help="also explain the test images the model gets wrong")
    cam.add_argument(
        "--score",
        action="store_true",
        help="average the pointing game, IoU of the top 15 %% and energy share over the test tumour slices",
    )
    cam.add_argument("--limit", type=int, default=50, help="at most this many misclassified images (default 50)")
    cam.add_argument("--data-root", help="where the run's data lies now, if it moved (replaces data.root)")
    cam.add_argument(  # 3 = tumorlab.evaluation.localisation.DEFAULT_TOLERANCE (not imported: keeps --help fast)
        "--tolerance", type=float, default=3.0, help="pointing game: pixels the maximum may miss the mask by"
    )
    cam.add_argument("--device", help="where the network runs: cpu, cuda, cuda:1 ... (default: cuda if available)")
    cam.set_defaults(func=_cam)


def _add_cv_parser(sub) -> None:
    cv = sub.add_parser(
        "cv",
        keep_unknown=True,
        allow_abbrev=False,  # `--data.fold` and friends pass on to fit; nothing may be read as an abbreviation
        usage="tumorlab cv --config FILE [--config FILE ...] --folds K [--print-commands] [--collect] "
        "[--KEY VALUE ...]",
        help="k-fold cross-validation by patient: one fit + test per fold, then mean ± std of the test metrics",
        description="Run `tumorlab fit ... --data.num_folds K --data.fold k --run.test_after_fit true` for every "
        "fold k in turn (folds of the non-test patients, StratifiedGroupKFold; the test patients are held out "
        "once, the same for every fold), then write the per-fold test metrics and their mean and sample "
        "standard deviation (ddof=1) to <run.root>/<run.name>-cv/<time>_cv/. Other --KEY VALUE options are "
        "passed on to every fit.",
    )
    cv.add_argument("--config", action="append", required=True, help="a config of tumorlab fit (repeatable)")
    cv.add_argument("--folds", type=int, required=True, help="number of folds K (at least 2)")
    cv.add_argument("--print-commands", action="store_true", help="print one `tumorlab fit` command per fold and stop")
    cv.add_argument(
        "--collect",
        action="store_true",
        help="train nothing: summarise the newest finished run of every fold (after --print-commands)",
    )
    cv.set_defaults(func=_cv)


def add_parsers(sub) -> None:
    """Add ``report``, ``compare``, ``cam`` and ``cv`` to the subcommands ``sub``."""
    report = sub.add_parser(
        "report",
        help="write a run's metrics.json, figures and report.md, recomputed from its predictions.csv",
        description="Recompute a run's metrics from its predictions.csv with scikit-learn (overall, per class, "
        "confusion matrix, per patient for segmentation) and draw its figures (confusion matrix, ROC and "
        "precision-recall curves, training curves, per-patient Dice, best/median/worst slices) into the run "
        "folder, with report.md. A folder without predictions.csv gets one from `tumorlab predict` first.",
    )
    report.add_argument("run_dir", help="a test run folder (runs/<name>/<time>_test) or a fit run folder")
    report.add_argument(
        "--no-slices", action="store_true", help="skip the slice panel (it loads the model and its data)"
    )
    report.set_defaults(func=_report)

    compare = sub.add_parser(
        "compare",
        help="put runs side by side: one row per run as Markdown, CSV and a bar chart",
        description="One row per run (fit or test folder): model, data, train/val accuracy and loss at the "
        "best epoch of metrics.csv, the test metrics of run.json, parameters, training time and epochs. Runs "
        "on other data are flagged in the data_check column; folders that are not runs are skipped with a warning.",
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders; quoted globs are expanded")
    compare.add_argument(
        "--sort", default="test/f1", help="column to sort by, best first (default test/f1; '' keeps the order)"
    )
    compare.add_argument("--out", default="comparison", help="folder for comparison.md/.csv/.png (default comparison)")
    compare.set_defaults(func=_compare)
    _add_cam_parser(sub)
    _add_cv_parser(sub)
