"""Per-item random streams (nphm.utils.seeding) and their callers: the draws are those of
``np.random.SeedSequence([seed, *key])`` with each caller's historical key order."""
from __future__ import annotations

import numpy as np
import pytest

from nphm.utils.seeding import item_generator, item_generators, item_key, item_seed


def _old_generator(entropy):
    return np.random.default_rng(np.random.SeedSequence(entropy))


def test_item_seed_and_generator_are_the_seed_sequence_of_the_key():
    assert item_key(0, 3) == [0, 3]
    assert item_seed(0, 3) == int(np.random.SeedSequence([0, 3]).generate_state(1)[0]) == 2613022947
    assert item_seed(5, 17, 2) == int(np.random.SeedSequence([5, 17, 2]).generate_state(1)[0])
    assert np.array_equal(item_generator(1, 2, 3, 0).random(6), _old_generator([1, 2, 3, 0]).random(6))
    assert item_generator(1, 2, 3, 0).integers(0, 1000, 4).tolist() == [964, 670, 872, 111]
    # NumPy / Python integers give the same stream; the key order and length matter.
    assert item_seed(np.int64(4), np.int32(2)) == item_seed(4, 2)
    assert len({item_seed(1, 2), item_seed(2, 1), item_seed(1, 2, 1)}) == 3
    assert item_seed(1, 2) == item_seed(1, 2, 0)  # SeedSequence pads with zeros (documented)


def test_item_generators_are_the_spawned_children():
    got = [g.random(4) for g in item_generators(7, 12, 4, n=3)]
    want = [np.random.default_rng(c).random(4) for c in np.random.SeedSequence([7, 12, 4]).spawn(3)]
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert len(item_generators(7, 12, 4, n=2)) == 2


def test_observation_streams_are_unchanged():
    from nphm.preprocessing.observations import item_rngs

    children = np.random.SeedSequence([3, 1, 0]).spawn(3)
    for got, child in zip(item_rngs(3, 1, 0), children):
        assert np.array_equal(got.random(5), np.random.default_rng(child).random(5))


def test_fitting_subject_seed_is_unchanged():
    from nphm.fitting import pipeline

    assert pipeline.item_seed(2, 9) == int(np.random.SeedSequence([2, 9]).generate_state(1)[0])


def test_preprocessing_and_synthetic_streams_are_unchanged():
    from nphm.data.synthetic.subject import rng_for
    from nphm.preprocessing import jobs

    assert (jobs._STREAM_IDENTITY, jobs._STREAM_DEFORMATION) == (0, 1)
    assert np.array_equal(rng_for(1, 2, 1, 5).random(4), _old_generator([1, 2, 1, 5]).random(4))
    assert np.array_equal(rng_for(0, 3, 2).random(4), _old_generator([0, 3, 2, 0]).random(4))
    with pytest.raises(ValueError):
        rng_for(-1, 0, 0)


def test_training_streams_are_unchanged(monkeypatch):
    from nphm.training import data as td

    ds = td._KeyedDataset(9)
    ds.set_epoch(4)
    assert np.array_equal(ds.item_rng(2).random(3), _old_generator([9, 11, 4, 2]).random(3))
    order = _old_generator([9, 12, 3]).permutation(20)
    assert [b.tolist() for b in td.epoch_batches(20, 6, 9, 3)] == [order[i : i + 6].tolist() for i in range(0, 20, 6)]

    seeds = []

    def fake_loader(dataset, generator=None, **kwargs):
        seeds.append(generator.initial_seed())
        return [None] * 2

    monkeypatch.setattr(td, "DataLoader", fake_loader)

    class Items(td._KeyedDataset):
        def __len__(self):
            return 4

    list(td.iterate_epoch(Items(9), batch_size=2, epoch=3, seed=9, rank=1, world_size=2))
    assert seeds == [int(np.random.SeedSequence([9, 13, 3, 1]).generate_state(1)[0])]


def test_evaluation_streams_are_unchanged(monkeypatch, tmp_path):
    import trimesh

    from nphm.evaluation import EvalSettings, ground_truth_samples
    from nphm.evaluation import pipeline

    draws = []

    def fake_sample_scan(mesh, keep, region, n_samples, seed, protocol):
        draws.append(np.random.default_rng(seed).random(5))
        return "samples"

    scan_file = tmp_path / "scan.ply"
    scan_file.write_text("x")

    class Manager:
        def scan_path(self, subject, expression):
            return scan_file

        flame_path = scan_path

        def load_scan(self, subject, expression):
            return trimesh.creation.icosphere(subdivisions=1)

    monkeypatch.setattr(pipeline, "sample_scan", fake_sample_scan)
    settings = EvalSettings(seed=6)
    assert ground_truth_samples(Manager(), 2, 5, settings, None, keep=lambda p: p, region=object()) == "samples"
    assert np.array_equal(draws[0], _old_generator([6, 2, 5, 0]).random(5))
    assert (pipeline._STREAM_GROUND_TRUTH, pipeline._STREAM_PREDICTION) == (0, 1)


def test_sample_scan_takes_a_generator_as_its_key_list():
    import trimesh

    from nphm.evaluation import FaceRegion, RenderProtocol, sample_scan

    head = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    front = head.vertices[head.vertices[:, 2] > 0.2]
    region = FaceRegion(front, front / np.linalg.norm(front, axis=1, keepdims=True))
    fast = RenderProtocol().scaled(0.1)

    def keep(p):
        return p[:, 1] > -0.2

    a = sample_scan(head, keep, region, n_samples=500, seed=[6, 2, 5, 1], protocol=fast)
    b = sample_scan(head, keep, region, n_samples=500, seed=item_generator(6, 2, 5, 1), protocol=fast)
    for k, v in a.as_dict().items():
        assert np.array_equal(v, b.as_dict()[k])
