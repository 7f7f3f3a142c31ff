"""The paper recipes in scripts/reproduce/ only use flags the example script accepts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
RECIPES = sorted(p for p in (ROOT / "scripts" / "reproduce").glob("*.sh") if not p.name.startswith("_"))

# Stands in for `accelerate`: parses the script's arguments with its own parser and prints a summary.
FAKE_ACCELERATE = f"""#!{sys.executable}
import runpy, sys
args = sys.argv[sys.argv.index("scripts/prune_image_classification.py") + 1:]
parser = runpy.run_path("scripts/prune_image_classification.py")["make_parser"]()
model, data, _, training = parser.parse_args_into_dataclasses(args=args)
print(model.model_name_or_path, data.dataset_name, training.pruning_method, training.target_flops_reduction,
      training.optimizer_state_after_prune, training.laasp_screen_fraction, training.laasp_race, training.round_to)
"""


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_flags_parse(tmp_path, recipe):
    fake = tmp_path / "accelerate"
    fake.write_text(FAKE_ACCELERATE)
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(recipe), "--use_cpu"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    model, dataset, method, target, optimizer_state, screen_fraction, race, round_to = result.stdout.split()
    assert method in recipe.stem and dataset.startswith(("uoft-cs/cifar10", "ILSVRC/imagenet-1k"))
    assert 0.4 < float(target) < 0.61
    # Both references continue with a fresh optimizer after a prune; LAASP scores every candidate on the whole subset.
    assert optimizer_state == "reset" and (method != "laasp" or float(screen_fraction) == float(race) == 0.0)
    assert round_to == "1"  # the references' unrounded widths
