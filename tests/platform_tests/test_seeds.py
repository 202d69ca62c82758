"""platform/seeds.py: `stream(seed, *keys)` is numpy's generator of that key list, so
the draws pinned elsewhere (partition, profiles, faults, clock, protocols) stay put."""

import numpy as np
import pytest

from sfprompt.platform.seeds import stream


@pytest.mark.parametrize("seed", [0, 7, 2**32 + 5])
def test_stream_is_default_rng_of_the_key_list(seed):
    np.testing.assert_array_equal(stream(seed).random(4), np.random.default_rng(seed).random(4))
    np.testing.assert_array_equal(stream(seed, 3, 1, 0xC4A5).random(4),
                                  np.random.default_rng([seed, 3, 1, 0xC4A5]).random(4))
    # a tuple of keys, as datasets.py once passed it, is the same stream
    np.testing.assert_array_equal(stream(seed, 1).random(4),
                                  np.random.default_rng((seed, 1)).random(4))


def test_keys_order_and_count_make_other_streams():
    draws = {tuple(stream(1, *keys).random(3)) for keys in [(), (2,), (2, 3), (3, 2)]}
    assert len(draws) == 4
