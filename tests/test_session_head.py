"""The policy's session head: its bias on hand-computed episodes, and its learning rate and checks."""

from __future__ import annotations

import pytest
import torch

from lightning_rec.data.errors import DataError
from lightning_rec.rl.session_head import CategoryRecency, head_categories

pytestmark = pytest.mark.usefixtures("one_thread")

CATEGORIES = torch.tensor([0, 1, 1, 2, 2, 3, 0])  # items 1-2: category 1, 3-4: 2, 5: 3, 6: none


def test_bias_weighs_each_category_by_how_recently_it_was_clicked():
    head = CategoryRecency(windows=[1, 2, 4])
    with torch.no_grad():
        head.weights.copy_(torch.tensor([-1.0, -0.5, -0.25]))
    clicks = torch.tensor([[1, 3, 5, 0], [2, 4, 6, 1], [6, 6, 0, 0], [1, 2, 0, 0]])
    count = torch.tensor([3, 1, 2, 0])  # only the first `count` clicks of a row have happened
    bias = head.bias(clicks, count, CATEGORIES)
    # row 0: item 5 (category 3) is the latest click (in windows 1, 2, 4), item 3 (category 2) the one
    # before (2, 4), item 1 (category 1) the third latest (4)
    assert bias[0].tolist() == [0.0, -0.25, -0.25, -0.75, -0.75, -1.75, 0.0]
    assert bias[1].tolist() == [0.0, -1.75, -1.75, 0.0, 0.0, 0.0, 0.0]  # item 2 only: 4, 6, 1 are later
    assert (bias[2] == 0).all() and (bias[3] == 0).all()  # uncategorised clicks; no clicks yet
    repeated = head.bias(torch.tensor([[1, 2, 1, 0]]), torch.tensor([3]), CATEGORIES)
    assert repeated[0, 1].item() == pytest.approx(-1.75 - 0.75 - 0.25)  # every click of category 1 counts


def test_bias_gradient_is_the_clicks_counted_in_each_window():
    head = CategoryRecency(windows=[1, 2, 4])
    bias = head.bias(torch.tensor([[1, 3, 5, 0]]), torch.tensor([3]), CATEGORIES)
    bias[0, 1].backward()  # an item of category 1: its one click is 3rd latest, in window 4 only
    assert head.weights.grad.tolist() == [0.0, 0.0, 1.0]
    assert CategoryRecency().bias(torch.tensor([[1, 3]]), torch.tensor([2]), CATEGORIES).abs().sum() == 0  # starts off


def test_head_refuses_bad_settings_and_data_without_categories():
    with pytest.raises(ValueError, match="windows"):
        CategoryRecency(windows=[0, 2])
    with pytest.raises(ValueError, match="lr"):
        CategoryRecency(lr=0.0)
    with pytest.raises(DataError, match="needs item categories: set the data module's `category`"):
        head_categories(CategoryRecency(), None)
    assert head_categories(None, None) is None
    assert CategoryRecency(windows=[1, 4]).describe() == "w1=0 w4=0"
