"""`tumorlab audit`: its parser and what it runs (tumorlab.data.audit, imported lazily)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _audit(ns: argparse.Namespace) -> int:
    import json
    import logging

    from tumorlab.cli.quiet import quiet_known_noise
    from tumorlab.data.audit import audit
    from tumorlab.data.audit_text import format_audit

    quiet_known_noise()

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    report = audit(ns.root, test_root=ns.test_root, near_threshold=ns.near_threshold, seed=ns.seed)
    print(json.dumps(report, indent=2) if ns.json else format_audit(report))
    return 0


def add_parser(sub) -> None:
    """Add ``audit`` to the subcommands ``sub``."""
    audit = sub.add_parser(
        "audit",
        help="report what a data root holds: classes, patients, splits, duplicates, leaks, bad files",
        description="Read a data root as training would and report counts per class, patient and split, "
        "byte-identical duplicates (SHA-256), near-duplicates (256-bit perceptual hash), duplicates shared "
        "with a test root, unreadable and skipped files, image sizes and modes.",
    )
    audit.add_argument(
        "root",
        help="class folders (optionally Training/ + Testing/), an LGG kaggle_3m tree, a CSV manifest, a volume "
        "folder (BraTS, Decathlon, nnU-Net raw, DICOM) or a datalist JSON",
    )
    audit.add_argument(
        "--test-root",
        help="a test set in ROOT's layout (class folders, or an LGG kaggle_3m tree of other patients): counted as "
        "the test split, its overlap with ROOT reported (a patient in both roots is refused)",
    )
    audit.add_argument("--json", action="store_true", help="print the full report as JSON")
    audit.add_argument(
        "--near-threshold",
        type=int,
        default=12,  # = tumorlab.data.duplicates.DEFAULT_NEAR_THRESHOLD (not imported: keeps --help fast)
        help="perceptual-hash bits (of 256) within which two images count as near-duplicates (default 12)",
    )
    audit.add_argument("--seed", type=int, default=42, help="seed of the split that is reported (default 42)")
    audit.set_defaults(func=_audit)
