import numpy as np

from tsnctl.data.sampling import eval_indices, sample_rng, short_clip_indices, train_indices


def test_eval_indices_match_reference_examples():
    assert eval_indices(300, 3) == [50, 150, 250]
    assert eval_indices(131, 8) == [8, 24, 40, 57, 73, 90, 106, 122]
    assert eval_indices(300, 25) == list(range(6, 295, 12))


def test_train_indices_stay_in_their_segment_and_skip_the_tail():
    rng = np.random.default_rng(0)
    for _ in range(200):
        indices = train_indices(131, 8, rng)  # avg = 16; frames 128..130 are never used
        assert [i // 16 for i in indices] == list(range(8))
        assert max(indices) < 128


def test_train_offsets_cover_the_whole_segment():
    rng = np.random.default_rng(1)
    seen = {train_indices(30, 3, rng)[0] for _ in range(500)}
    assert seen == set(range(10))


def test_short_clips_repeat_frames_instead_of_swapping_clips():
    assert short_clip_indices(2, 5) == [0, 0, 0, 1, 1]
    assert eval_indices(2, 5) == [0, 0, 0, 1, 1]
    assert train_indices(3, 3, np.random.default_rng(0)) == [0, 1, 2]
    assert eval_indices(1, 4) == [0, 0, 0, 0]


def test_sampling_is_deterministic_per_seed_epoch_index():
    a = train_indices(300, 8, sample_rng(0, 3, 17))
    b = train_indices(300, 8, sample_rng(0, 3, 17))
    c = train_indices(300, 8, sample_rng(0, 4, 17))
    assert a == b
    assert a != c
