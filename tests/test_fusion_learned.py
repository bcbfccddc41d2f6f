"""Learned fusion heads: XOR across modalities, seeded training, exact save/load round trips, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmcli.errors import InputError, UsageError
from mmcli.fusion.learned import (
    HEAD_METHODS,
    FusionHead,
    TrainingOptions,
    _split,
    check_inputs,
    load_head,
    save_head,
    train_head,
)

WIDTH = 32
HIDDEN = 48
# Small and quick, but the same code path as the defaults.
FAST = dict(hidden=HIDDEN, epochs=25, batch_size=128, lr=3e-3)


def xor_data(rows, seed):
    """Two blocks, each hiding one bit as the sign along a fixed direction; the label is their XOR.

    The sign of a projection survives L2 normalisation (a positive rescaling), so normalised heads see it too.
    Neither block alone says anything about the label.
    """
    directions = np.random.default_rng(1234).standard_normal((2, WIDTH))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (2, rows))
    blocks = [
        (rng.standard_normal((rows, WIDTH)) * 0.3 + 1.5 * np.where(bit == 1, 1.0, -1.0)[:, None] * direction).astype(
            np.float32
        )
        for direction, bit in zip(directions, bits, strict=True)
    ]
    labels = np.where(bits[0] ^ bits[1], "yes", "no").tolist()
    return blocks, labels


@pytest.fixture(scope="module")
def train():
    return xor_data(2000, seed=0)


@pytest.fixture(scope="module")
def test():
    return xor_data(1000, seed=1)


@pytest.fixture(scope="module")
def heads(train):
    blocks, labels = train
    return {method: train_head(blocks, labels, TrainingOptions(method=method, **FAST)) for method in HEAD_METHODS}


def best_validation(head):
    return min((log for log in head.history if log.val_loss is not None), key=lambda log: log.val_loss)


def accuracy(head, blocks, labels):
    predicted, _ = head.predict(blocks)
    return float(np.mean(np.array(predicted) == np.array(labels)))


@pytest.mark.parametrize("method", HEAD_METHODS)
def test_fused_head_learns_xor_across_modalities(heads, test, method):
    head = heads[method]
    assert best_validation(head).val_accuracy >= 0.95
    assert accuracy(head, *test) >= 0.95
    assert head.config["labels"] == ["no", "yes"] and head.config["method"] == method
    assert head.config["input_dims"] == [WIDTH, WIDTH]


@pytest.mark.parametrize("which", [0, 1])
def test_one_modality_alone_stays_near_chance(train, test, which):
    blocks, labels = train
    head = train_head([blocks[which]], labels, TrainingOptions(method="attention", **FAST))
    assert head.config["input_dims"] == [WIDTH]
    assert best_validation(head).val_accuracy < 0.65
    assert accuracy(head, [test[0][which]], test[1]) < 0.65


def test_outputs_have_the_promised_shapes(heads, test):
    blocks, _ = test
    head = heads["gated"]
    embedded = head.embed(blocks, batch_size=300)
    assert embedded.shape == (1000, HIDDEN) and embedded.dtype == np.float32
    probabilities = head.probabilities(blocks)
    assert probabilities.shape == (1000, 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    labels, scores = head.predict(blocks)
    assert len(labels) == 1000 and set(labels) <= {"no", "yes"}
    np.testing.assert_array_equal(scores, probabilities.max(axis=1))
    assert [head.config["labels"][i] for i in probabilities.argmax(axis=1)] == labels
    # Batching does not change what a row gets (up to float rounding).
    np.testing.assert_allclose(head.embed(blocks, batch_size=7), embedded, rtol=1e-5, atol=1e-6)
    empty = head.embed([block[:0] for block in blocks])
    assert empty.shape == (0, HIDDEN)


def test_same_seed_gives_identical_weights_and_leaves_global_rng_alone(train):
    blocks, labels = [block[:400] for block in train[0]], train[1][:400]
    options = TrainingOptions(method="attention", hidden=16, epochs=4, batch_size=64)
    torch.manual_seed(99)
    before = torch.random.get_rng_state().clone()
    first = train_head(blocks, labels, options)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(7)  # another global state must not matter: the seed in the options decides everything
    second = train_head(blocks, labels, options)
    other = train_head(blocks, labels, TrainingOptions(method="attention", hidden=16, epochs=4, batch_size=64, seed=1))
    one, two, three = (head.model.state_dict() for head in (first, second, other))
    assert all(torch.equal(one[name], two[name]) for name in one)
    assert not all(torch.equal(one[name], three[name]) for name in one)
    assert first.history == second.history
    np.testing.assert_array_equal(first.probabilities(blocks), second.probabilities(blocks))


def test_save_then_load_gives_identical_outputs(tmp_path, heads, test):
    blocks, _ = test
    head = heads["attention"]
    head.config["inputs"] = [{"set": "a.npy", "models": ["model-a"], "width": WIDTH}, {"set": "b.npy"}]
    written = save_head(head, tmp_path / "head")
    assert written == [tmp_path / "head.safetensors", tmp_path / "head.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.json", "head.safetensors"]  # no temporary leftovers
    assert json.loads((tmp_path / "head.json").read_text())["format"] == "mmcli-fusion-head"
    labels, scores = head.predict(blocks)
    embedded = head.embed(blocks)
    for name in ("head", "head.safetensors", "head.json"):
        loaded = load_head(tmp_path / name)
        assert loaded.config == head.config
        assert loaded.history == []
        again, again_scores = loaded.predict(blocks)
        assert again == labels
        assert np.array_equal(again_scores, scores)
        assert np.array_equal(loaded.embed(blocks), embedded)
    # A name given with the weights' suffix writes the same pair.
    assert save_head(head, tmp_path / "other.safetensors") == [tmp_path / "other.safetensors", tmp_path / "other.json"]


def test_early_stopping_restores_the_best_weights(train):
    blocks, _ = train
    blocks = [block[:300] for block in blocks]
    noise = np.random.default_rng(5).integers(0, 2, 300)  # labels with nothing to learn: validation loss rises
    labels = np.where(noise == 1, "a", "b").tolist()
    seen = []
    options = TrainingOptions(method="mlp", hidden=64, epochs=200, lr=1e-2, batch_size=32, patience=3, dropout=0.0)
    head = train_head(blocks, labels, options, on_epoch=seen.append)
    assert seen == head.history
    assert len(head.history) < 200
    best = best_validation(head)
    assert head.history[-1].epoch == best.epoch + 3
    targets = (noise == 0).astype(np.int64)  # classes are sorted labels: "a" (noise 1) is 0, "b" is 1
    _, val_rows = _split(targets, options.val_fraction, options.seed)
    probabilities = head.probabilities([block[val_rows] for block in blocks])
    picked = probabilities[np.arange(len(val_rows)), targets[val_rows]]
    loss = -np.mean(np.log(picked))
    assert loss == pytest.approx(best.val_loss, rel=1e-4)


def test_no_validation_split_trains_every_epoch(train):
    blocks, labels = [block[:200] for block in train[0]], train[1][:200]
    head = train_head(blocks, labels, TrainingOptions(method="gated", hidden=16, epochs=5, val_fraction=0))
    assert [log.epoch for log in head.history] == [1, 2, 3, 4, 5]
    assert all(log.val_loss is None and log.val_accuracy is None for log in head.history)


def test_check_inputs_refuses_other_widths_and_counts(heads, test):
    blocks, _ = test
    head = heads["mlp"]
    check_inputs(head, blocks)
    with pytest.raises(UsageError, match=r"widths \[32, 32\].*\[32, 16\]"):
        check_inputs(head, [blocks[0], blocks[1][:, :16]])
    with pytest.raises(UsageError, match="2 feature set"):
        check_inputs(head, [blocks[0]])
    with pytest.raises(UsageError, match="widths"):
        head.predict([blocks[0], blocks[1], blocks[1]])


def test_load_refuses_other_json_missing_files_and_mismatched_weights(tmp_path, heads):
    (tmp_path / "notes.json").write_text(json.dumps({"format": "something-else"}))
    (tmp_path / "notes.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="not an mmcli fusion head"):
        load_head(tmp_path / "notes.json")
    with pytest.raises(InputError, match="does not exist"):
        load_head(tmp_path / "absent")
    save_head(heads["gated"], tmp_path / "head")
    (tmp_path / "head.safetensors").unlink()
    with pytest.raises(InputError, match=r"head\.safetensors does not exist"):
        load_head(tmp_path / "head.json")
    save_head(heads["gated"], tmp_path / "head")
    config = json.loads((tmp_path / "head.json").read_text())
    config["input_dims"] = [WIDTH, 8]
    (tmp_path / "head.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="weights do not match"):
        load_head(tmp_path / "head")


def test_training_refuses_bad_data_with_a_clear_message(train):
    blocks, labels = [block[:50].copy() for block in train[0]], train[1][:50]
    blocks[1][7, 3] = np.nan
    with pytest.raises(InputError, match=r"block 2 .*row 7"):
        train_head(blocks, labels, TrainingOptions(**FAST))
    blocks[1][7, 3] = 0.0
    with pytest.raises(InputError, match=r"at least 2 distinct labels.*'yes'"):
        train_head(blocks, ["yes"] * 50, TrainingOptions(**FAST))
    with pytest.raises(InputError, match=r"row counts are \[50, 49\]"):
        train_head([blocks[0], blocks[1][:49]], labels, TrainingOptions(**FAST))
    with pytest.raises(InputError, match="49 labels for 50 rows"):
        train_head(blocks, labels[:49], TrainingOptions(**FAST))
    with pytest.raises(UsageError, match="unknown learned fusion method 'sum'"):
        train_head(blocks, labels, TrainingOptions(method="sum"))
    with pytest.raises(UsageError, match="--val-fraction"):
        train_head(blocks, labels, TrainingOptions(val_fraction=1.0))


def test_head_is_built_from_its_config_alone(heads):
    head = heads["attention"]
    rebuilt = FusionHead(json.loads(json.dumps(head.config)))
    assert rebuilt.state_dict().keys() == head.model.state_dict().keys()


@pytest.mark.parametrize("fraction, held_out", [(0.2, 1), (0.25, 1), (0.5, 2)])
def test_a_set_too_small_to_stratify_is_split_over_all_rows_and_says_so(fraction, held_out):
    # One row per label, as the example photos are labelled: each label's share rounds to no row
    # (0.2, 0.25) or to its only row (0.5), so the per-label split would leave a set empty.
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32)]
    notes = []
    options = TrainingOptions(method="attention", hidden=8, epochs=3, val_fraction=fraction)
    head = train_head(blocks, ["astronaut", "cat", "coffee", "rocket"], options, on_note=notes.append)
    assert all(epoch.val_loss is not None for epoch in head.history)
    train_rows, val_rows = _split(np.arange(4), fraction, options.seed)
    assert len(val_rows) == held_out and len(train_rows) == 4 - held_out
    assert len(notes) == 1 and f"validating on {held_out} row" in notes[0] and "each label" in notes[0], notes


def test_one_labelled_row_cannot_be_split():
    with pytest.raises(UsageError, match="at least 2 labelled rows"):
        _split(np.array([0]), 0.2, 0)
