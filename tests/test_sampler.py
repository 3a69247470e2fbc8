from __future__ import annotations

import torch

from resshift_cli.config import DiffusionConfig
from resshift_cli.devices import generator
from resshift_cli.sampler import StepInfo, sample
from resshift_cli.schedule import make_schedule
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
