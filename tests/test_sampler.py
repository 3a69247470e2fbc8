from __future__ import annotations

import pytest
import torch

from resshift_cli.config import DiffusionConfig
from resshift_cli.devices import generator
from resshift_cli.sampler import StepInfo, sample
from resshift_cli.schedule import make_schedule, respace
from tiny import golden_case, tiny_model


def test_fixed_x0_denoiser_returns_exactly_that_x0() -> None:
    x0 = torch.randn(1, 3, 16, 24, generator=torch.Generator().manual_seed(3))
    y0 = x0 + 1.5
    schedule = make_schedule(DiffusionConfig(steps=15, min_noise_level=0.04))
    out = sample(lambda x, t: x0.clone(), y0, schedule, generator(7))
    assert torch.equal(out, x0)


def test_noise_contract_prior_then_one_draw_per_step() -> None:
    schedule = make_schedule(DiffusionConfig(steps=4, min_noise_level=0.2))
    y0 = torch.zeros(1, 3, 8, 8)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append((x.clone(), t.clone()))
        return torch.zeros_like(x)

    sample(denoise, y0, schedule, generator(5))
    reference = torch.Generator().manual_seed(5)
    prior = torch.randn(1, 3, 8, 8, generator=reference)
    expected_xt = (prior * torch.tensor(2 * 0.99, dtype=torch.float64).float()) / torch.sqrt(
        torch.tensor(schedule.etas[3]).float() * 4 + 1
    )
    torch.testing.assert_close(seen[0][0], expected_xt, atol=1e-6, rtol=0)
    assert [int(t) for _, t in seen] == [3, 2, 1, 0]


def test_callback_reports_every_step() -> None:
    schedule = make_schedule(DiffusionConfig(steps=4, min_noise_level=0.2))
    infos: list[StepInfo] = []
    sample(lambda x, t: torch.zeros_like(x), torch.zeros(1, 3, 8, 8), schedule, generator(0), infos.append)
    assert [info.i for info in infos] == [3, 2, 1, 0]


def test_each_unet_call_and_step_matches_golden() -> None:
    ref, _ = golden_case("sample_v3_64x64")
    model = tiny_model("v3")
    schedule = make_schedule(model.config.diffusion)
    y = ref["call0.y_padded"]
    infos: list[StepInfo] = []
    with torch.inference_mode():
        z0 = sample(
            lambda x, t: model.unet(x, t, y), ref["call0.z_y"], schedule, generator(12345), infos.append
        )
        for k, info in enumerate(infos):
            out = model.unet(ref[f"unet{k}.x_in"], ref[f"unet{k}.t"], y)
            torch.testing.assert_close(out, ref[f"unet{k}.out"], atol=1e-5, rtol=0)
            torch.testing.assert_close(info.x, ref[f"step{k}.sample"], atol=2e-5, rtol=0)
    torch.testing.assert_close(z0, ref["call0.z_0"], atol=2e-5, rtol=0)


# -- respaced sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "steps"),
    [pytest.param("sample_v1_64x64_steps5", 5, marks=pytest.mark.slow), ("sample_v3_64x64_steps2", 2)],
)
def test_each_respaced_unet_call_and_step_matches_golden(case: str, steps: int) -> None:
    """Prior with the largest kept η, network given the original index, posterior on the respaced schedule."""
    ref, meta = golden_case(case)
    model = tiny_model(meta["version"])
    schedule = respace(make_schedule(model.config.diffusion), steps)
    y = ref["call0.y_padded"]
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append((x, t))
        return model.unet(x, t, y)

    infos: list[StepInfo] = []
    with torch.inference_mode():
        z0 = sample(denoise, ref["call0.z_y"], schedule, generator(int(meta["seed"])), infos.append)
        assert len(calls) == len(infos) == steps == int(meta["steps"])
        for k, ((x_in, t), info) in enumerate(zip(calls, infos, strict=True)):
            assert torch.equal(t, ref[f"unet{k}.t"])
            torch.testing.assert_close(x_in, ref[f"unet{k}.x_in"], atol=2e-5, rtol=0)
            torch.testing.assert_close(info.x0, ref[f"unet{k}.out"], atol=5e-5, rtol=0)
            torch.testing.assert_close(info.x, ref[f"step{k}.sample"], atol=2e-5, rtol=0)
    torch.testing.assert_close(z0, ref["call0.z_0"], atol=2e-5, rtol=0)


def test_respaced_noise_contract_is_one_prior_draw_then_one_per_kept_step() -> None:
    ref, _ = golden_case("sample_v1_64x64_steps5")
    schedule = respace(make_schedule(DiffusionConfig(steps=15, min_noise_level=0.04)), 5)
    rng = generator(12345)
    sample(lambda x, t: torch.zeros_like(x), torch.zeros(1, 3, 64, 64), schedule, rng)
    reference = torch.Generator().manual_seed(12345)
    assert torch.equal(torch.randn(1, 3, 64, 64, generator=reference), ref["call0.prior_noise"])
    for _ in range(5):
        torch.randn(1, 3, 64, 64, generator=reference)
    assert torch.equal(rng.get_state(), reference.get_state())


def test_all_steps_kept_is_bit_identical_for_a_random_network_and_other_lengths() -> None:
    """A seeded random conv net that depends on t, T = 10: N = T equals the trained chain bit for bit, and
    N = 3 calls it with the kept indices 0, 3, 6 (descending) and gives a different latent."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    embed = torch.nn.Embedding(10, 3)
    seen: list[int] = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(int(t[0]))
        return torch.tanh(conv(x) + embed(t)[:, :, None, None])

    schedule = make_schedule(DiffusionConfig(steps=10, min_noise_level=0.1, kappa=1.5))
    y0 = torch.randn(2, 3, 12, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        trained = sample(denoise, y0, schedule, generator(3))
        same = sample(denoise, y0, respace(schedule, 10), generator(3))
        assert torch.equal(trained, same)
        seen.clear()
        fewer = sample(denoise, y0, respace(schedule, 3), generator(3))
    assert seen == [6, 3, 0]
    assert not torch.allclose(fewer, trained, atol=1e-3)
