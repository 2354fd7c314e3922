import pytest
import torch

from lama_refine.models import BIG_LAMA, build_generator
from lama_refine.partition import EvenPartitioner, trunk_bounds


@pytest.fixture(scope="module")
def big_lama():
    with torch.device("meta"):  # shapes only: the split does not need weights
        return build_generator(BIG_LAMA)


@pytest.mark.parametrize("n_devices,blocks", [(1, [18]), (2, [9, 9]), (3, [6, 6, 6]), (4, [4, 4, 4, 6])])
def test_even_split_of_big_lama(big_lama, n_devices, blocks):
    partition = EvenPartitioner().split(big_lama, [torch.device("meta")] * n_devices)
    assert trunk_bounds(big_lama) == (5, 18)
    assert list(range(5)) == list(range(len(partition.front.module)))
    indices = partition.rear_indices
    # resnet blocks per device; the last device also carries the whole tail (indices 23..35)
    assert [len([i for i in stage if 5 <= i <= 22]) for stage in indices] == blocks
    assert indices[-1][-1] == 35 and 23 in indices[-1]
    assert sum(indices, []) == list(range(5, 36))


def test_split_matches_the_original_device_assignment(case):
    partition = EvenPartitioner().split(case.generator(), [torch.device("cpu")] * case.n_devices)
    assert partition.rear_indices == case.meta["devices"]["rear_indices_per_device"]
    assert list(range(len(partition.front.module))) == case.meta["devices"]["front_indices"]


def test_split_does_not_change_the_output(case):
    g = case.generator()
    x = torch.rand(1, 4, 64, 64)
    whole = g(x)
    for n in (1, 2, 3):
        p = EvenPartitioner().split(g, [torch.device("cpu")] * n)
        assert torch.equal(p.run_rear(p.front(x)), whole)
