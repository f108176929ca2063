"""Run folders: one new folder per command, never reused, with what is needed to trace the run.

``<root>/<name>/<YYYY-mm-dd_HH-MM-SS>_<command>[_<k>]/`` holds ``config.yaml`` (the resolved config),
``run.json`` (command line, git commit, package versions, best checkpoint, metrics), ``checkpoints/``
and the logger's files (``wandb/offline-run-*`` in offline mode).

Two commands with the same name never share a folder, even when they start in the same second: each
claims its folder name atomically (see ``new_run_dir``). Checkpoints named on the command line are read
with ``torch.load(weights_only=True)`` before anything is built (``check_checkpoint``), so a truncated file
or one holding pickled code stops the command with one line instead of a traceback or code execution.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "RUN_DIR_ENV",
    "new_run_dir",
    "run_info",
    "update_run_json",
    "find_checkpoint",
    "find_resume_checkpoint",
    "check_checkpoint",
]

RUN_DIR_ENV = "TUMORLAB_RUN_DIR"
_PACKAGES = (
    "tumorlab",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "timm",
    "segmentation-models-pytorch",
    "albumentations",
    "wandb",
)


def _is_child_rank() -> bool:
    return any(int(os.environ.get(v, "0") or 0) > 0 for v in ("LOCAL_RANK", "RANK", "NODE_RANK"))


def _launcher_job_id() -> str | None:
    """The job id shared by all processes that torchrun (``--rdzv-id``) or SLURM started, if any."""
    for var in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        value = os.environ.get(var, "")
        processes = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
        if value and value != "none" and processes > 1:
            return f"{value}_{os.environ.get('SLURM_STEP_ID', '0')}" if var == "SLURM_JOB_ID" else value
    return None


def new_run_dir(root: str | Path, name: str, command: str) -> Path:
    """The path of a new, unused run folder (not created yet), its name claimed by this process.

    Another command that starts in the same second with the same name gets ``<stamp>_<command>_2`` and so
    on: the name is claimed atomically (``_claim``), not merely checked for existence, so two processes
    can never pick the same folder between choosing it and creating it.

    DDP worker processes started by Lightning inherit the folder of rank zero through ``TUMORLAB_RUN_DIR``;
    processes started by torchrun (with ``--rdzv-id``) or SLURM name it after the job, so all ranks agree.
    """
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and _is_child_rank():
        return Path(inherited)
    job = _launcher_job_id()
    if job:  # every process of a torchrun/SLURM job computes the same folder, with no clock involved
        path = Path(root).resolve() / name / f"job-{job}_{command}"
        os.environ[RUN_DIR_ENV] = str(path)
        return path
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    base = Path(root).resolve() / name / f"{stamp}_{command}"
    path, k = base, 1
    while path.exists() or not _claim(path):
        k += 1
        path = base.with_name(f"{base.name}_{k}")
    os.environ[RUN_DIR_ENV] = str(path)
    return path


_CLAIMS = Path(tempfile.gettempdir()) / f"tumorlab-run-claims-{os.getuid() if hasattr(os, 'getuid') else 0}"
_CLAIM_TTL_S = 24 * 3600


def _claim(path: Path) -> bool:
    """Reserve the run folder name ``path`` for this process; False if another command holds it already.

    The folder itself comes into being only once the config is valid (a bad config writes nothing), so the
    name is reserved by creating a marker file with ``O_EXCL``, which exactly one process can do. Markers
    live in the temporary folder, keyed by the folder's path, so run folders never hold them; those older
    than a day are removed (a name carries its second, so an old marker guards nothing).
    """
    _CLAIMS.mkdir(exist_ok=True)
    key = hashlib.sha256(str(path).encode()).hexdigest()[:32]
    try:
        os.close(os.open(_CLAIMS / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    now = time.time()
    for old in _CLAIMS.iterdir():
        try:
            if now - old.stat().st_mtime > _CLAIM_TTL_S:
                old.unlink()
        except OSError:  # another process removed it first
            pass
    return True


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_info(command: str, argv: list[str]) -> dict[str, Any]:
    """What identifies a run: command line, time, git commit and package versions."""
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "command": command,
        "argv": ["tumorlab", *argv],
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "git_commit": _git_commit(),
        "versions": versions,
    }


def update_run_json(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``run_dir/run.json`` and return the whole record."""
    path = Path(run_dir) / "run.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update(fields)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def find_resume_checkpoint(ckpt_path: str, root: str | Path, name: str) -> str:
    """Resolve ``fit --ckpt_path``: ``last`` is the newest ``checkpoints/last.ckpt`` among the runs of ``name``;
    a run folder is its ``checkpoints/last.ckpt``; a file stays as it is. The resumed fit gets a new run folder."""
    from tumorlab.errors import ConfigError

    if ckpt_path == "last":
        candidates = sorted((Path(root) / name).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ConfigError(f"--ckpt_path last: no run of {name!r} under {root} has checkpoints/last.ckpt to resume")
        return check_checkpoint(candidates[-1].resolve())
    path = Path(ckpt_path)
    if path.is_dir():
        last = path / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(f"--ckpt_path {path}: a run folder without checkpoints/last.ckpt to resume from")
        return check_checkpoint(last.resolve())
    if not path.is_file():
        raise ConfigError(f"--ckpt_path {path}: no such checkpoint file")
    return check_checkpoint(path)


def find_checkpoint(path: str | Path) -> str:
    """Resolve ``--ckpt_path``: a file as it is, or a run folder to the best checkpoint it recorded."""
    path = Path(path)
    if path.is_dir():
        record_path = path / "run.json"
        best = json.loads(record_path.read_text()).get("best_checkpoint") if record_path.exists() else None
        if not best:
            last = path / "checkpoints" / "last.ckpt"
            if last.exists():
                return check_checkpoint(last)
            from tumorlab.errors import ConfigError

            raise ConfigError(
                f"--ckpt_path {path}: a folder without a recorded best checkpoint or checkpoints/last.ckpt"
            )
        return check_checkpoint(best)
    if not path.is_file():
        from tumorlab.errors import ConfigError

        raise ConfigError(f"--ckpt_path {path}: no such checkpoint file or run folder")
    return check_checkpoint(path)


def check_checkpoint(path: str | Path) -> str:
    """``path`` as a string once ``torch.load(path, weights_only=True)`` has read it; else a ``ConfigError``.

    ``weights_only=True`` unpickles tensors and plain values only: a checkpoint that holds any other object
    (which unpickling could turn into running code) is refused, never executed. The file is memory-mapped,
    so the check costs little more than opening it.
    """
    import pickle
    import zipfile

    import torch

    from tumorlab.errors import ConfigError

    try:
        # memory-map the zip format that torch.save writes; older (and truncated) files are read plainly
        torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"--ckpt_path {path}: holds pickled objects other than tensors and plain values ({first}); "
            "tumorlab does not unpickle them, because unpickling a file from an untrusted source can run code"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        # torch's first sentence says what is wrong; the rest of its message is advice for torch.load users
        first = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--ckpt_path {path}: not a readable checkpoint (truncated or corrupt: {first})") from None
    return str(path)
