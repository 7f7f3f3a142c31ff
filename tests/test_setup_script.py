"""scripts/setup.sh chooses a torch that the machine can install (issue 17, item 8); nothing is installed here."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def _plan(tmp_path: Path, wheels: Path, **env: str) -> str:
    """The torch choice and pip command of ``setup.sh plan`` on a CPU machine with ``wheels`` as the wheel folder."""
    variables = {name: value for name, value in os.environ.items() if name != "HF_PRUNE_TORCH_INDEX"}
    variables.update(HF_PRUNE_DEVICE="cpu", HF_PRUNE_WHEELS=str(wheels), HF_PRUNE_VENV=str(tmp_path / "venv"), **env)
    run = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "plan"], env=variables, capture_output=True,
                         text=True, timeout=60, check=True)
    assert not (tmp_path / "venv").exists()  # a plan installs nothing
    return run.stdout


@pytest.fixture
def pinned_torch() -> str:
    lines = (ROOT / "scripts" / "constraints-cpu.txt").read_text().splitlines()
    return next(line.removeprefix("torch==") for line in lines if line.startswith("torch=="))


def test_the_local_cpu_wheel_is_used_when_present(tmp_path, pinned_torch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / f"torch-{pinned_torch}-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    out = _plan(tmp_path, wheels)
    assert f"torch: local CPU wheel torch {pinned_torch} from {wheels}" in out
    assert f"-c scripts/constraints-cpu.txt --find-links {wheels} -e .[test]" in out


def test_without_the_wheel_the_cpu_build_comes_from_the_pytorch_index(tmp_path, pinned_torch):
    (tmp_path / "empty").mkdir()
    out = _plan(tmp_path, tmp_path / "empty")
    assert f"CPU build torch {pinned_torch} from https://download.pytorch.org/whl/cpu (no torch-{pinned_torch} wheel" in out
    assert "-c scripts/constraints-cpu.txt --extra-index-url https://download.pytorch.org/whl/cpu -e .[test]" in out


def test_without_the_wheel_and_without_an_index_the_default_torch_is_installed_unpinned(tmp_path):
    (tmp_path / "empty").mkdir()
    out = _plan(tmp_path, tmp_path / "empty", HF_PRUNE_TORCH_INDEX="")
    assert "torch: default torch of the package index" in out
    assert "constraints" not in out.split("pip command:")[1]
