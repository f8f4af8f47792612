"""Meta-SGD: learned per-weight inner learning rates. The inner loop steps at them, FOMAML's
gradient for them is checked against one computed by hand, and the plain start keeps the fixed rate."""

from __future__ import annotations

import copy

import pytest
import torch
from test_meta import random_tasks, tiny_recommender
from torch.utils.data import DataLoader
from trainers import quiet_trainer

from lightning_rec.data.datasets import keep_batch
from lightning_rec.meta import FOMAML, AdaptivePolicy, InnerLoop, Reptile, UserHead
from lightning_rec.stages.meta_training import MetaPolicyOptimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def policy_with_rates(lr: float = 0.5) -> AdaptivePolicy:
    policy = AdaptivePolicy(tiny_recommender(), UserHead())
    policy.learn_inner_rates(policy.adapted_names("head"), lr)
    with torch.no_grad():  # rates that differ per weight, so a rate applied to the wrong weight shows
        for rate in policy.inner_rates.values():
            rate.uniform_(0.2, 0.8)
    return policy


def test_inner_steps_use_each_weights_learned_rate():
    policy = policy_with_rates()
    tasks = random_tasks()
    loop = InnerLoop(policy, policy.adapted_names("head"), steps=1, lr=123.0)  # the fixed rate is not used
    assert set(policy.learned_rates()) == set(loop.names) and not any(n.startswith("inner_rates") for n in loop.names)
    fast = loop.adapt(tasks)
    params = dict(policy.named_parameters())
    for t in range(len(tasks)):
        loss = policy(tasks.support_input[t], tasks.support_target[t])
        grads = torch.autograd.grad(loss, [params[n] for n in loop.names])
        for n, g in zip(loop.names, grads):
            torch.testing.assert_close(fast[n][t], params[n] - policy.learned_rates()[n] * g, atol=1e-6, rtol=1e-5)


def test_fomaml_gradient_of_the_rates_is_minus_query_gradient_times_the_summed_step_gradients():
    policy = policy_with_rates()
    tasks = random_tasks()
    loop = InnerLoop(policy, policy.adapted_names("head"), steps=2, lr=0.5)
    gradient, _ = FOMAML().meta_gradient(loop, tasks)
    rates = policy.learned_rates()
    expected = {n: torch.zeros_like(r) for n, r in rates.items()}
    for t in range(len(tasks)):  # by hand: a deep copy, SGD at the learned rates, gradients kept
        copy_ = copy.deepcopy(policy)
        params = dict(copy_.named_parameters())
        steps = {n: torch.zeros_like(r) for n, r in rates.items()}
        for _ in range(2):
            grads = torch.autograd.grad(
                copy_(tasks.support_input[t], tasks.support_target[t]), [params[n] for n in loop.names]
            )
            with torch.no_grad():
                for n, g in zip(loop.names, grads):
                    steps[n] += g
                    params[n] -= rates[n] * g
        query = torch.autograd.grad(copy_(tasks.query_input[t], tasks.query_target[t]), [params[n] for n in loop.names])
        for n, g in zip(loop.names, query):
            expected[n] -= g * steps[n] / len(tasks)
    for n in loop.names:
        torch.testing.assert_close(gradient[AdaptivePolicy.rate_name(n)], expected[n], atol=1e-6, rtol=1e-4)
        assert expected[n].abs().sum() > 0


def test_meta_training_moves_the_rates_and_the_plain_start_keeps_the_fixed_one(tmp_path):
    model = MetaPolicyOptimizer(
        recommender=tiny_recommender(),
        head=UserHead(),
        adapt="head",
        inner_steps=2,
        inner_lr=0.5,
        learn_inner_lr=True,
        meta_parameters="adapted",
        meta_lr=0.05,
    )
    assert model.plain.inner_rates is None and set(model.policy.learned_rates()) == set(model.inner.names)
    trainer = quiet_trainer(max_steps=2, default_root_dir=tmp_path)
    trainer.fit(
        model,
        train_dataloaders=DataLoader([{"cold_start": random_tasks()}] * 2, batch_size=None, collate_fn=keep_batch),
    )
    rates = model.policy.learned_rates()
    assert all(not torch.all(rate == 0.5) for rate in rates.values())
    path = tmp_path / "meta.ckpt"
    trainer.save_checkpoint(path)
    restored = MetaPolicyOptimizer.load_from_checkpoint(path, recommender=tiny_recommender(), weights_only=False)
    for n, rate in restored.policy.learned_rates().items():
        torch.testing.assert_close(rate, rates[n])
    with pytest.raises(ValueError, match="needs FOMAML"):
        MetaPolicyOptimizer(
            recommender=tiny_recommender(), head=UserHead(), adapt="head", algorithm=Reptile(), learn_inner_lr=True
        )
