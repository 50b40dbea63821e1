"""CTKD: the curriculum equals the public code's schedule (0.0245 in epoch 1, 1.0 from epoch 10
of 10 loops, rising), the reversal layer flips the temperature's gradient with that strength,
and CTKD's DKD has no warm-up unless asked for."""
import math

import pytest
import torch

from workbench import models
from workbench.config import RunConfig
from workbench.methods import build_method
from workbench.methods.ctkd import LearnableTemperature, curriculum_lambda

LOOPS = 10  # the public code's --decay_loops in scripts/run_cifar_distill.sh


def public_code_strength(epoch: int, loops: int) -> float:
    """zhengli97/CTKD: CosineDecay(max_value=0, min_value=-1, num_loops).get_value(epoch) is
    (cos(pi * i / loops) + 1) / 2 * (0 - (-1)) + (-1) with i = epoch clamped to [0, loops]; the
    reversal layer multiplies theta's gradient by it, i.e. reverses it with strength -value."""
    i = min(max(epoch, 0), loops)
    return -((math.cos(i * math.pi / loops) + 1.0) * 0.5 * (0.0 - (-1.0)) + (-1.0))


def test_curriculum_values_at_epochs_1_and_10():
    assert curriculum_lambda(1, LOOPS) == pytest.approx(0.0245, abs=5e-5)  # the published rounding
    assert curriculum_lambda(10, LOOPS) == 1.0
    assert curriculum_lambda(11, LOOPS) == curriculum_lambda(240, LOOPS) == 1.0


def test_curriculum_equals_the_public_schedule_and_rises():
    ours = [curriculum_lambda(e, LOOPS) for e in range(1, 241)]
    # same closed form up to cos(pi + x) = -cos(x): float rounding only
    assert ours == pytest.approx([public_code_strength(e, LOOPS) for e in range(1, 241)], abs=1e-12)
    assert all(a < b for a, b in zip(ours[:LOOPS], ours[1:LOOPS]))  # easy to hard, strictly rising


def test_curriculum_spans_lambda_min_to_max():
    assert curriculum_lambda(0, LOOPS, 0.2, 0.8) == pytest.approx(0.2)
    assert curriculum_lambda(LOOPS, LOOPS, 0.2, 0.8) == pytest.approx(0.8)
    assert curriculum_lambda(5, LOOPS, 0.2, 0.8) == pytest.approx(0.5)  # half-way at loops / 2


def test_reversal_flips_the_temperature_gradient_with_the_curriculum_strength():
    temp = LearnableTemperature(t_start=1.0, t_end=20.0, loops=LOOPS)
    temp.set_epoch(3, 240)
    temp().backward()  # d T / d theta = t_end * sigmoid'(theta), then reversed and scaled
    s = torch.sigmoid(temp.theta.detach())
    natural = 20.0 * s * (1 - s)
    torch.testing.assert_close(temp.theta.grad, -curriculum_lambda(3, LOOPS) * natural)


def _ctkd_method(**kw):
    cfg = RunConfig.from_dict(dict(dataset="digits", teacher="resnet8", student="resnet8", **kw))
    return build_method(cfg, models.build("resnet8", 10, 1), models.build("resnet8", 10, 1))


def test_trainer_epoch_sets_the_curriculum():
    method = _ctkd_method(method="ctkd", base="kd")
    method.on_epoch_start(1, 240)
    assert method.criterion.temperature.lam == pytest.approx(0.0245, abs=5e-5)
    method.on_epoch_start(10, 240)
    assert method.criterion.temperature.lam == 1.0


@pytest.mark.parametrize("kw, factor_epoch_1, learnable", [
    (dict(method="ctkd", base="dkd"), 1.0, True),                  # no warm-up, as in the public code
    (dict(method="dkd", ctkd=True), 1.0, True),
    (dict(method="ctkd", base="dkd", dkd_warmup=20), 1 / 20, True),  # still overridable
    (dict(method="dkd"), 1 / 20, False),                            # plain DKD keeps mdistiller's 20 epochs
])
def test_ctkd_dkd_has_no_warmup_by_default(kw, factor_epoch_1, learnable):
    method = _ctkd_method(**kw)
    method.on_epoch_start(1, 240)
    assert method.criterion.warmup_factor() == pytest.approx(factor_epoch_1)
    assert isinstance(method.criterion.temperature, LearnableTemperature) == learnable
