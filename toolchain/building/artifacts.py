"""Atomic artifact writing and hashing: nothing half-written survives a failure."""
import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from featherface import registry


def usual_mode(path: str | Path) -> Path:
    """Give a file or folder from mkstemp/mkdtemp (0600/0700) the mode a plain create would (umask applied):
    a bundle copied to a device must stay readable by the user who runs it there."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)
    return Path(path)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    usual_mode(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_weights(path: str | Path, model) -> None:
    """A model's state dict alone (on the CPU), the plain weights every ``--weights`` option loads."""
    import torch

    with atomic_output(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_dir(model: str) -> str:
    """The build folder of a model: its registered name, or a pruned model's channel-config stem."""
    return Path(model).stem if registry.is_channel_file(model) else model
