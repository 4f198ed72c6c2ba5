"""The counter-based per-sample noise source."""

from __future__ import annotations

import numpy as np
import torch

from scoregen.sampling.noise import NoiseSource, seeds_for, splitmix64


def _splitmix64_reference(x: int) -> int:
    """Unsigned SplitMix64 in plain Python integers (Steele et al. 2014)."""
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_splitmix64_matches_unsigned_reference() -> None:
    xs = [0, 1, 12345, 2**63 - 1, 2**40 + 7]
    got = splitmix64(torch.tensor(xs, dtype=torch.int64)).tolist()
    want = [_splitmix64_reference(x) for x in xs]
    assert [g & ((1 << 64) - 1) for g in got] == want


def test_draws_depend_only_on_own_seed() -> None:
    big = NoiseSource(seeds_for(64, seed=10), (3, 2))
    small = NoiseSource(torch.tensor([10 + 17]), (3, 2))
    for _ in range(3):
        torch.testing.assert_close(big()[17], small()[0], rtol=0, atol=0)


def test_draws_are_standard_normal_and_independent() -> None:
    z = NoiseSource(seeds_for(2000), (50,), dtype=torch.float64)
    a, b = z(), z()
    flat = a.flatten().numpy()
    assert abs(flat.mean()) < 4 / np.sqrt(flat.size)
    assert abs(flat.std() - 1) < 4 / np.sqrt(2 * flat.size)
    # fourth moment of a standard normal is 3
    assert abs((flat**4).mean() - 3) < 0.1
    corr = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
    assert abs(corr) < 4 / np.sqrt(flat.size)
    neighbours = np.corrcoef(a[:, :-1].flatten().numpy(), a[:, 1:].flatten().numpy())[0, 1]
    assert abs(neighbours) < 4 / np.sqrt(flat.size)
    assert not torch.equal(a[0], a[1])


def test_odd_event_size_and_dtype() -> None:
    z = NoiseSource(seeds_for(3), (1, 3, 3), dtype=torch.float32)
    x = z.draw(5)
    assert x.shape == (3, 1, 3, 3) and x.dtype == torch.float32
    torch.testing.assert_close(x, z.draw(5))


def test_draws_made_ahead_in_blocks_are_the_draws_one_at_a_time() -> None:
    """``noise()`` makes draws ahead in growing blocks (capped by ``block_elements``); the
    stream is the same as ``draw(j)`` one at a time, also after moving ``count``."""
    seeds = seeds_for(5, seed=3)
    one_by_one = [NoiseSource(seeds, (3,), torch.float64).draw(j) for j in range(40)]
    for block_elements in (1, 45, 1 << 17):
        z = NoiseSource(seeds, (3,), torch.float64, block_elements=block_elements)
        for j in range(25):
            torch.testing.assert_close(z(), one_by_one[j], rtol=0, atol=0)
        z.count = 7  # moving the stream drops what was made ahead
        for j in range(7, 40):
            torch.testing.assert_close(z(), one_by_one[j], rtol=0, atol=0)
        assert z.count == 40
    stacked = NoiseSource(seeds, (3,), torch.float64).draws(11, 6)
    torch.testing.assert_close(stacked, torch.stack(one_by_one[11:17]), rtol=0, atol=0)
