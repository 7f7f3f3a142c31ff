"""Save a model, then SIGKILL this process at a chosen moment of a second save (test_hub_security.py).

    python _save_kill_worker.py {weights|commit|after_commit} DIR

DIR gets ``old`` and ``new`` (reference saves) and ``model``: ``old`` saved, then ``new`` saved over
it and killed while the weights are half written, just before the commit, or just after it.
"""

import os
import signal
import sys
from pathlib import Path

import hf_prune.hub.pretrained as pretrained_module
from hf_prune import save_pretrained
from test_hub_security import _resnet


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_half_way_through_the_weights() -> None:
    original = pretrained_module.save_file

    def save_half(tensors, path, metadata=None):
        original(tensors, path, metadata=metadata)
        os.truncate(path, os.path.getsize(path) // 2)
        _kill()

    pretrained_module.save_file = save_half


def _kill_at_the_commit(after: bool) -> None:
    original = os.replace

    def replace(source, destination):
        if str(destination).endswith(os.path.join(".hf_prune", "current")):
            if after:
                original(source, destination)
            _kill()
        original(source, destination)

    os.replace = replace


def main(moment: str, root: Path) -> None:
    old, source = _resnet(seed=0)
    new, _ = _resnet(seed=1, keep=2)
    save_pretrained(old, root / "old", source=source)
    save_pretrained(new, root / "new", source=source)
    save_pretrained(old, root / "model", source=source)
    (root / "model" / "notes.txt").write_text("mine")
    if moment == "weights":
        _kill_half_way_through_the_weights()
    else:
        _kill_at_the_commit(after=moment == "after_commit")
    save_pretrained(new, root / "model", source=source)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
