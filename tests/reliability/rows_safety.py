"""Rows of the matrix about safe loading: no pickled code runs from a checkpoint, an ONNX file or an image."""

from __future__ import annotations

import ast
import csv
import json
import pickle
import shutil
from pathlib import Path

import torch

from tests.conftest import REPO
from tests.reliability.builders import class_folders, fit_args, folder_data, one_error, succeeded, write_picture
from tests.reliability.registry import Ctx, row


class _Payload:
    """Unpickling it creates the file ``marker``: what an attacker's command would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def torch_load_calls(package: Path) -> list[tuple[str, int, bool]]:
    """Every ``torch.load(...)`` call in ``package``: (file, line, whether it passes ``weights_only=True``)."""
    calls = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            func = getattr(node, "func", None)
            if (
                isinstance(node, ast.Call)
                and isinstance(func, ast.Attribute)
                and func.attr == "load"
                and isinstance(func.value, ast.Name)
                and func.value.id == "torch"
            ):
                safe = any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords
                )
                calls.append((str(path.relative_to(package.parent)), node.lineno, safe))
    return calls


@row("torch-load-weights-only")
def _(ctx: Ctx) -> None:
    calls = torch_load_calls(REPO / "tumorlab")
    assert len(calls) >= 2, calls  # runs.check_checkpoint and runs.load.load_weights, at least
    assert [c for c in calls if not c[2]] == []


def _payload_checkpoint(ctx: Ctx) -> tuple[Path, Path]:
    """A checkpoint whose unpickling would create the file ``marker``: (checkpoint, marker)."""
    marker, evil = ctx.tmp_path / "pwned", ctx.tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "note": _Payload(marker)}, evil)
    return evil, marker


def _evil_run(ctx: Ctx, evil: Path) -> tuple[Path, Path]:
    """A copy of a trained run folder whose checkpoints were swapped for ``evil``: (run folder, best)."""
    run_dir = Path(shutil.copytree(ctx.fixture("run_cnn9"), ctx.tmp_path / "run"))
    record = json.loads((run_dir / "run.json").read_text())
    best = run_dir / "checkpoints" / Path(record["best_checkpoint"]).name
    shutil.copy(evil, best)
    shutil.copy(evil, run_dir / "checkpoints" / "last.ckpt")
    (run_dir / "run.json").write_text(json.dumps({**record, "best_checkpoint": str(best)}))
    return run_dir, best


REFUSED = "holds pickled objects other than tensors and plain values"


@row("malicious-checkpoint")
def _(ctx: Ctx) -> None:
    evil, marker = _payload_checkpoint(ctx)
    run_dir, best = _evil_run(ctx, evil)
    root = class_folders(ctx.tmp_path / "data")
    message = one_error(ctx.cli(*fit_args(ctx.tmp_path, folder_data(root), "--ckpt_path", str(run_dir))))
    last = run_dir / "checkpoints" / "last.ckpt"
    assert message.startswith(f"--ckpt_path {last}: {REFUSED}"), message
    assert "unpickling a file from an untrusted source can run code" in message
    message = one_error(ctx.cli("export", "--ckpt_path", str(run_dir), "--out", str(ctx.tmp_path / "m.onnx")))
    assert message.startswith(f"--ckpt_path {best}: {REFUSED}"), message
    assert not marker.exists(), "the pickled payload ran"


@row("malicious-checkpoint-file")
def _(ctx: Ctx) -> None:
    evil, marker = _payload_checkpoint(ctx)
    root = class_folders(ctx.tmp_path / "data")
    try:
        message = one_error(ctx.cli(*fit_args(ctx.tmp_path, folder_data(root), "--ckpt_path", str(evil))))
    finally:
        assert not marker.exists(), "the pickled payload ran"
    assert message.startswith(f"--ckpt_path {evil}: {REFUSED}"), message


@row("onnx-no-pickle")
def _(ctx: Ctx) -> None:
    import onnx

    out = ctx.tmp_path / "model.onnx"
    succeeded(ctx.cli("export", "--ckpt_path", str(ctx.fixture("run_cnn9")), "--out", str(out)))
    model = onnx.load(str(out))  # protobuf: parsing it runs no code
    assert model.graph.initializer, "no weights exported"
    for prop in model.metadata_props:
        value = prop.value.encode()
        assert not value.startswith(b"\x80"), f"metadata {prop.key} looks like a pickle stream"
        try:
            pickle.loads(value)
        except Exception:  # noqa: BLE001  (any failure: it is no pickle)
            continue
        raise AssertionError(f"metadata {prop.key} unpickles")
    assert b"\x80\x04\x95" not in out.read_bytes()[:64]  # not a pickle (or a torch.save zip) in disguise


@row("predict-images-pickle")
def _(ctx: Ctx) -> None:
    marker = ctx.tmp_path / "pwned"
    files = ctx.tmp_path / "in"
    good = write_picture(files / "good.png", seed=3)
    evil = files / "scan.png"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    out = ctx.tmp_path / "out"
    succeeded(ctx.cli("predict-images", str(files), "--ckpt_path", str(ctx.fixture("run_cnn9")), "--out", str(out)))
    rows = {r["file"]: r for r in csv.DictReader(open(out / "predictions.csv"))}
    assert rows[str(evil)]["error"].startswith(f"{evil}: not a readable image") and rows[str(good)]["error"] == ""
    assert not marker.exists(), "the pickled payload ran"
