import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lama_refine.models import BIG_LAMA, build_generator
from lama_refine.parts.partition import (
    BalancedPartitioner,
    EvenPartitioner,
    ExplicitPartitioner,
    SinglePartitioner,
    balanced_block_counts,
    saved_activation_bytes,
    trunk_bounds,
)

META = torch.device("meta")


def blocks_per_stage(partition, first, n_blocks):
    return [len([i for i in stage if first <= i < first + n_blocks]) for stage in partition.rear_indices]


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


@pytest.mark.slow  # seconds: full suite only
def test_split_does_not_change_the_output(case):
    g = case.generator()
    x = torch.rand(1, 4, 64, 64)
    whole = g(x)
    for n in (1, 2, 3):
        p = EvenPartitioner().split(g, [torch.device("cpu")] * n)
        assert torch.equal(p.run_rear(p.front(x)), whole)


def test_single_puts_everything_on_the_first_device(big_lama):
    partition = SinglePartitioner().split(big_lama, [META] * 3)
    assert len(partition.rear) == 1 and partition.rear_indices == [list(range(5, 36))]


@pytest.mark.parametrize("blocks", [[12, 6], [0, 18], [5, 5, 5, 3]])
def test_explicit_gives_each_device_its_count(big_lama, blocks):
    partition = ExplicitPartitioner(blocks).split(big_lama, [META] * len(blocks))
    assert blocks_per_stage(partition, 5, 18) == blocks
    assert partition.rear_indices[-1][-1] == 35


@pytest.mark.parametrize("blocks,n_devices", [([9, 8], 2), ([9, 9], 3), ([18], 2)])
def test_explicit_refuses_counts_that_do_not_fit(big_lama, blocks, n_devices):
    with pytest.raises(ValueError, match="one count per device"):
        ExplicitPartitioner(blocks).split(big_lama, [META] * n_devices)


def test_activation_estimate_charges_the_decoder_at_full_resolution(big_lama):
    costs = saved_activation_bytes(big_lama)
    assert len(costs) == 36 - 5
    blocks, tail = costs[:18], sum(costs[18:])
    assert len(set(blocks)) == 1 and blocks[0] > 0  # identical blocks, identical cost
    assert tail > 2 * blocks[0]  # the decoder keeps more than two blocks' worth


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.parametrize("n_devices", [2, 3, 4])
def test_balanced_puts_fewer_blocks_on_the_device_holding_the_tail(big_lama, n_devices):
    partition = BalancedPartitioner().split(big_lama, [META] * n_devices)
    counts = blocks_per_stage(partition, 5, 18)
    assert sum(counts) == 18 and counts[-1] < counts[0]
    costs = saved_activation_bytes(big_lama)

    def worst_load(counts):
        loads, start = [], 0
        for c in counts:
            loads.append(sum(costs[start : start + c]))
            start += c
        return max(loads[:-1] + [loads[-1] + sum(costs[18:])])

    even = blocks_per_stage(EvenPartitioner().split(big_lama, [META] * n_devices), 5, 18)
    assert worst_load(counts) < worst_load(even)


def test_balanced_takes_a_replacement_estimate(big_lama):
    free_tail = BalancedPartitioner(estimate=lambda g: [1.0] * 18 + [0.0] * 13)
    assert blocks_per_stage(free_tail.split(big_lama, [META] * 2), 5, 18) == [9, 9]
    heavy_tail = BalancedPartitioner(estimate=lambda g: [1.0] * 18 + [6.0] + [0.0] * 12)
    assert blocks_per_stage(heavy_tail.split(big_lama, [META] * 2), 5, 18) == [12, 6]


@settings(max_examples=60, deadline=None)
@given(costs=st.lists(st.integers(0, 9), min_size=1, max_size=7), tail=st.integers(0, 20), n_devices=st.integers(1, 4))
def test_balanced_counts_are_an_optimal_contiguous_split(costs, tail, n_devices):
    def worst(counts):
        loads, start = [], 0
        for c in counts:
            loads.append(sum(costs[start : start + c]))
            start += c
        loads[-1] += tail
        return max(loads)

    counts = balanced_block_counts(costs, tail, n_devices)
    assert len(counts) == n_devices and sum(counts) == len(costs) and min(counts) >= 0
    every_split = [c for c in itertools.product(range(len(costs) + 1), repeat=n_devices) if sum(c) == len(costs)]
    assert worst(counts) == min(worst(c) for c in every_split)


@pytest.mark.slow  # seconds: full suite only
@pytest.mark.parametrize("partitioner", [SinglePartitioner(), BalancedPartitioner(), ExplicitPartitioner([2, 1])])
def test_alternative_splits_do_not_change_the_output(case, partitioner):
    g = case.generator()
    x = torch.rand(1, 4, 64, 64)
    whole = g(x)
    _, n_blocks = trunk_bounds(g)
    if isinstance(partitioner, ExplicitPartitioner):
        partitioner = ExplicitPartitioner([n_blocks - 1, 1])
    p = partitioner.split(g, [torch.device("cpu")] * 2)
    assert torch.equal(p.run_rear(p.front(x)), whole)
    assert not g.training  # the estimate's probe leaves the generator as it was
