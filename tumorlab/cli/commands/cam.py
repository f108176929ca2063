"""`tumorlab cam`: its parser and what it runs (tumorlab.evaluation.cam, imported lazily)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _cam(ns: argparse.Namespace) -> int:
    from tumorlab.cli.quiet import quiet_known_noise
    from tumorlab.evaluation.cam import explain, format_explanation

    quiet_known_noise()
    result = explain(
        ns.ckpt_path, ns.out, images=ns.images, method=ns.method, misclassified=ns.misclassified, score=ns.score,
        limit=ns.limit, data_root=ns.data_root, tolerance=ns.tolerance, device=ns.device, layer=ns.layer,
        restriction=ns.restrict, pad=ns.pad,
    )  # fmt: skip
    print(format_explanation(result, ns.out))
    return 0


def add_parser(sub) -> None:
    """Add ``cam`` to the subcommands ``sub``."""
    cam = sub.add_parser(
        "cam",
        help="explain a run's predictions: Grad-CAM overlays and how well they point at the tumour",
        description="Draw class-activation maps (pytorch-grad-cam) of a trained run on images prepared exactly "
        "as the run was trained, one PNG per image (image, CAM, true and predicted class with its probability, the "
        "explained class: the predicted one); an LGG slice's true class comes from its _mask.tif beside it. "
        "--score measures on the test split's tumour slices (data with masks) whether the CAM of the tumour "
        "class points at the tumour.",
    )
    cam.add_argument(
        "--ckpt_path", required=True, help="a run folder (its config.yaml and best checkpoint) or a checkpoint in one"
    )
    cam.add_argument("--images", nargs="+", default=[], metavar="PATH", help="image files to explain")
    cam.add_argument("--out", required=True, help="folder for the overlays, cams.csv and localisation.json")
    cam.add_argument(  # = tumorlab.evaluation.cam_maps.METHODS (not imported: keeps --help fast)
        "--method",
        choices=("gradcam", "gradcam++", "scorecam", "layercam", "hirescam"),
        default="gradcam",
        help="pytorch-grad-cam's method (default gradcam); layercam weighs each position by its own positive "
        "gradient, which suits the earlier, finer layers",
    )
    cam.add_argument(
        "--layer",
        metavar="NAME",
        help="the module to hook, named as the network's named_modules() names it (e.g. features.21); "
        "default: the network's cam_layer",
    )
    cam.add_argument(
        "--restrict",
        choices=("none", "brain"),
        default="none",
        help="brain: zero the CAM outside the brain before scoring and drawing, and judge it (and the chance "
        "levels) on the brain's pixels only; the brain is the input slice's foreground (Otsu threshold of its "
        "brightest channel, closed, holes filled, largest component)",
    )
    cam.add_argument(
        "--pad",
        type=int,
        default=0,
        metavar="PX",
        help="show the network each slice in a canvas of black (background) PX pixels wider on each side, and crop "
        "the CAM back: the convolutions' zero padding then lies in background rather than at the slice's edge "
        "(default 0; a U-Net needs sizes divisible by 2^depth, e.g. 16 px at 64 px)",
    )
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
