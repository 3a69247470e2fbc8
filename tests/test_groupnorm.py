from __future__ import annotations

import pytest
import torch

from resshift_cli.nets.groupnorm import SharedGroupNorm, shared_statistics


def test_statistics_gathered_over_a_partition_equal_whole_image_groupnorm() -> None:
    torch.manual_seed(0)
    norm = SharedGroupNorm(4, 8, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(1, 8, 12, 20) * 3 + torch.linspace(-2, 5, 20)  # tone varies across the image
    whole = norm(x)
    parts = [x[..., :, :7], x[..., :, 7:]]
    with shared_statistics(norm) as freeze:
        local = [norm(p) for p in parts]
        freeze()
        shared = torch.cat([norm(p) for p in parts], dim=-1)
    torch.testing.assert_close(shared, whole, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(torch.cat(local, dim=-1), whole, atol=1e-2)
    torch.testing.assert_close(norm(x), whole)  # back to ordinary GroupNorm afterwards


def test_freeze_without_gathering_is_an_error() -> None:
    norm = SharedGroupNorm(2, 4)
    norm.start_gathering()
    with pytest.raises(RuntimeError):
        norm.freeze()
