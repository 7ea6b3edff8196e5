"""The faint, thin and textural synthetic defects: reproducible from a seed, every change inside the mask, faint
(a small change per pixel) and of the size each kind promises, on grey and colour images of any aspect."""
from __future__ import annotations

import pytest
import torch

from scgan.data.faint import FAINT_DEFECTS, faint_defect

pytestmark = pytest.mark.unit


def _batch(channels: int, h: int, w: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(4, channels, h, w, generator=g), 5, 1, 2)
    return smooth * 1.2 - 0.6  # a textured image in [-1, 1], away from the clamp


@pytest.mark.parametrize("name", list(FAINT_DEFECTS))
@pytest.mark.parametrize("channels,h,w", [(1, 64, 64), (3, 48, 96)])
def test_a_defect_is_reproducible_and_bounded_to_its_mask(name, channels, h, w):
    x = _batch(channels, h, w)
    a = faint_defect(name).apply(x, generator=torch.Generator().manual_seed(5))
    b = faint_defect(name).apply(x, generator=torch.Generator().manual_seed(5))
    c = faint_defect(name).apply(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.image, c.image)
    assert a.image.shape == x.shape and a.mask.shape == (4, 1, h, w) and a.mask.dtype == torch.bool
    changed = (a.image != x).any(1, keepdim=True)
    assert torch.equal(changed, a.mask)  # every changed pixel is in the mask, every mask pixel changed
    assert a.mask.flatten(1).any(1).all()  # every image gets a defect
    assert x.equal(_batch(channels, h, w))  # the input is left alone


@pytest.mark.parametrize("name,largest_change,area", [("crack", 0.4, (0.0005, 0.05)), ("spot", 0.5, (1e-4, 0.01)),
                                                      ("uneven", 0.25, (0.02, 0.31)), ("blend", 1.0, (0.01, 0.09)),
                                                      ("warp", 2.0, (0.002, 0.04))])
def test_each_kind_is_faint_and_of_its_size(name, largest_change, area):
    x = _batch(1, 128, 128)
    a = faint_defect(name).apply(x, generator=torch.Generator().manual_seed(1))
    change = (a.image - x).abs()
    assert change.max() <= largest_change + 1e-6
    share = a.mask.float().flatten(1).mean(1)
    assert ((share >= area[0]) & (share <= area[1])).all(), share


def test_uneven_has_no_sharp_edge():
    """The brightness shift fades to nothing at the region's rim: no step between neighbours larger than a
    fraction of the shift."""
    x = torch.zeros(2, 1, 128, 128)
    a = faint_defect("uneven").apply(x, generator=torch.Generator().manual_seed(2))
    d = a.image - x
    steps = torch.maximum((d[..., 1:, :] - d[..., :-1, :]).abs().amax(), (d[..., 1:] - d[..., :-1]).abs().amax())
    assert steps < 0.25 * d.abs().amax()


def test_an_unknown_kind_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: crack, spot, uneven, blend, warp"):
        faint_defect("scratch")
