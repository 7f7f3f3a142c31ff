"""A new pruning method is one file: register it, name it in PruningArguments, train."""

from __future__ import annotations

import pytest

import hf_prune
from hf_prune import PruningArguments, PruningContext, PruningMethod, PruningPlan, register_method
from hf_prune.methods import list_methods


@register_method
class _KeepEvenUnits(PruningMethod):
    """A toy method defined in this file only: at step 3 every group keeps its even units."""

    name = "toy_keep_even"

    def on_step_end(self, context: PruningContext) -> PruningPlan | None:
        if context.state.global_step != 3:
            return None
        return PruningPlan({g.name: list(range(0, g.num_units, 2)) for g in context.graph.groups}, "toy")


def test_a_method_registered_in_one_file_is_usable_by_name(make_trainer, tmp_path):
    assert "toy_keep_even" in list_methods() and hf_prune.list_methods() == list_methods()
    trainer = make_trainer(tmp_path, pruning_method="toy_keep_even", max_steps=5)
    assert isinstance(trainer.pruning_method, _KeepEvenUnits)
    params_before = sum(p.numel() for p in trainer.model.parameters())
    trainer.train()
    (event,) = trainer.pruning_events
    assert event["global_step"] == 3 and event["reason"] == "toy"
    assert sum(p.numel() for p in trainer.model.parameters()) < 0.5 * params_before


def test_a_name_taken_by_another_class_is_refused():
    class Impostor(PruningMethod):
        name = "ocsp"

    with pytest.raises(ValueError, match="'ocsp' is already registered"):
        register_method(Impostor)


def test_unknown_method_names_the_registered_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown pruning_method 'toy_keep_odd'.*toy_keep_even"):
        PruningArguments(output_dir=str(tmp_path), report_to=[], pruning_method="toy_keep_odd")


def test_a_dense_run_never_traces_the_model(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="none", max_steps=3)
    trainer.train()
    assert trainer.state.global_step == 3
    assert trainer._graph is None and trainer.dense_macs is None and trainer.pruning_events == []


def test_each_method_settings_appear_under_their_own_heading():
    groups = PruningArguments.argument_groups()
    assert "target_flops_reduction" in groups["Pruning"] and "learning_rate" not in groups["Pruning"]
    assert "ocsp_stability_lag" in groups["Pruning method 'ocsp'"]
    assert groups["Pruning method 'laasp'"][0].startswith("laasp_") and groups["Pruning method 'tp_groupnorm'"] == ["tp_reg"]
    assert not set(groups["Pruning"]) & set(groups["Pruning method 'ocsp'"])
