"""seas.method.training_data: the one loader and batch draw of the generator and the RMP."""
from __future__ import annotations

import pytest
import torch

from seas.method.training_data import TrainData, draw_keys, pick
from seas.run.errors import DataError


def _data(n_anom=3, n_norm=2):
    m = torch.zeros(1, 4, 4)
    m[0, 0, :2] = 1  # an asymmetric mask: its augmentation is visible
    return TrainData([(torch.zeros(3, 4, 4), m.clone(), f"t{i % 2}") for i in range(n_anom)],
                     [torch.zeros(3, 4, 4) for _ in range(n_norm)])


def test_without_replacement_while_the_pool_lasts():
    g = torch.Generator().manual_seed(0)
    assert sorted(pick(5, 5, g)) == [0, 1, 2, 3, 4]
    assert len(pick(2, 6, g)) == 6 and set(pick(2, 6, g)) <= {0, 1}  # larger batch than pool: with replacement
    assert pick(5, 0, g) == []


def test_draw_keys_abnormal_first_masks_follow_their_augmentation():
    keys, masks, types = draw_keys(_data(), 4, 2, torch.Generator().manual_seed(1), replacement=True)
    assert [k[0][0] for k in keys] == ["a"] * 4 + ["n"] * 2 and len(masks) == len(types) == 4
    data = _data()
    for (src, k, flipped), mask, typ in zip(keys, masks, types):
        expect = torch.rot90(data.anomalies[src[1]][1], k, dims=(-2, -1))
        expect = torch.flip(expect, dims=(-1,)) if flipped else expect
        assert torch.equal(mask, expect) and typ == data.anomalies[src[1]][2]


def test_the_same_seed_gives_the_same_batch_and_replacement_changes_the_draw():
    a = draw_keys(_data(8), 4, 0, torch.Generator().manual_seed(3))[0]
    b = draw_keys(_data(8), 4, 0, torch.Generator().manual_seed(3))[0]
    c = draw_keys(_data(8), 4, 0, torch.Generator().manual_seed(3), replacement=True)[0]
    assert a == b and len({k[0] for k in a}) == 4 and a != c


def test_normal_rows_need_normal_images():
    with pytest.raises(DataError, match="no normal training images"):
        draw_keys(_data(n_norm=0), 1, 1, torch.Generator())
