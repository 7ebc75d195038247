"""ResNet-12's shape and DropBlock, and that it works where the learners put it: functional
calls under vmap (MAML's meta-gradient against a per-task autograd loop), every BatchNorm mode
of the gradient-based family, and ProtoNet's per-episode BatchNorm."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import TINY_ALGORITHM, TINY_SETTINGS, metarun
from learner_helpers import image_batch, reference_model, vary_batch_norm
from torch import nn
from torch.func import functional_call, vmap

from metarun.algorithms.maml import MAML
from metarun.algorithms.protonet import ProtoNet
from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models.conv4 import Conv4
from metarun.models.norm import BATCH_NORM_MODES, apply_batch_norm
from metarun.models.resnet12 import DropBlock, ResNet12
from metarun.randomness import drawing_from, task_keys

TINY = partial(ResNet12, channels=[4, 4, 4, 4])


@pytest.fixture(autouse=True)
def _one_thread():
    """The nets here are tiny: a second intra-op thread only adds synchronisation, which costs
    whole seconds per test on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- architecture ----------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "pooling", "embedding"), [(84, "avg", 640), (32, "avg", 640)])
def test_embedding_is_640_for_84_and_32_pixel_images(size: int, pooling: str, embedding: int):
    torch.manual_seed(0)
    model = ResNet12((3, size, size), pooling=pooling)
    assert model.embedding_size == embedding and model.head is None
    assert model(torch.rand(2, 3, size, size)).shape == (2, embedding)


def test_flatten_keeps_the_last_feature_map() -> None:
    model = ResNet12((3, 84, 84), pooling="flatten", channels=[4, 4, 4, 8])
    assert model.embedding_size == 8 * 5 * 5  # 84 -> 42 -> 21 -> 10 -> 5
    assert model(torch.rand(2, 3, 84, 84)).shape == (2, 200)
    assert ResNet12((3, 84, 84), pooling="flatten").embedding_size == 16000  # MetaOptNet's


def test_blocks_are_three_conv_bn_leaky_relu_with_a_1x1_shortcut_and_a_head() -> None:
    model = ResNet12((3, 84, 84), out_features=5)
    widths = [block.conv1.out_channels for block in model.blocks]
    assert widths == [64, 160, 320, 640]
    in_channels = 3
    for block in model.blocks:
        for conv in (block.conv1, block.conv2, block.conv3):
            assert conv.kernel_size == (3, 3) and conv.bias is None
        assert all(isinstance(b, nn.BatchNorm2d) for b in (block.bn1, block.bn2, block.bn3))
        shortcut_conv, shortcut_bn = block.shortcut
        assert shortcut_conv.kernel_size == (1, 1) and shortcut_conv.bias is None
        assert shortcut_conv.in_channels == in_channels and isinstance(shortcut_bn, nn.BatchNorm2d)
        assert block.activation.negative_slope == 0.1
        assert block.pool.kernel_size == 2
        in_channels = block.conv1.out_channels
    assert (model.head.in_features, model.head.out_features) == (640, 5)


def test_the_last_activation_follows_the_residual_addition() -> None:
    """With every conv branch zeroed, a block is pool(leaky(shortcut(x))): the activation sees
    the sum, so negative shortcut outputs come out scaled by 0.1, not clipped or passed."""
    model = ResNet12((1, 16, 16), channels=[2, 2, 2, 2]).double().eval()
    block = model.blocks[0]
    with torch.no_grad():
        block.bn3.weight.zero_()
        block.bn3.bias.zero_()
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    expected = F.max_pool2d(F.leaky_relu(block.shortcut(x), 0.1), 2)
    torch.testing.assert_close(block(x), expected)


def test_dropblock_sits_in_the_last_two_blocks_only() -> None:
    model = ResNet12((3, 32, 32), channels=[4, 4, 4, 4], dropblock_rate=0.1, dropblock_size=3)
    assert [block.dropblock.rate for block in model.blocks] == [0.0, 0.0, 0.1, 0.1]
    assert all(block.dropblock.block_size == 3 for block in model.blocks)
    assert all(block.dropblock.rate == 0 for block in ResNet12((3, 32, 32)).blocks)  # off


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"channels": []}, "model.channels"),
        ({"channels": [4, 0]}, "model.channels"),
        ({"pooling": "max"}, "model.pooling"),
        ({"dropblock_rate": 1.0}, "model.dropblock_rate"),
        ({"dropblock_rate": -0.1}, "model.dropblock_rate"),
        ({"dropblock_size": 0}, "model.dropblock_size"),
    ],
)
def test_bad_settings_name_their_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ResNet12((3, 32, 32), **kwargs)


def test_rejects_images_too_small_for_four_poolings() -> None:
    with pytest.raises(ValueError, match="16 pixels"):
        TINY((3, 8, 8))


# -- DropBlock ---------------------------------------------------------------------------------
def covered_by_whole_blocks(dropped: torch.Tensor, size: int) -> bool:
    """Whether every dropped position lies in some ``size`` x ``size`` square that is dropped
    entirely: true for DropBlock, false (almost surely) for independent dropout."""
    whole = -F.max_pool2d(-dropped, size, stride=1)  # 1 where the whole square is dropped
    spread = F.max_pool2d(F.pad(whole, [size - 1] * 4), size, stride=1)
    return bool(torch.equal(spread, dropped))


def dropblock(layer: DropBlock, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``layer(x)`` drawing from the key of a run's first task (as a learner opens it)."""
    with drawing_from(task_keys(seed, 1, 1)[0]):
        return layer(x)


def test_dropblock_drops_whole_blocks_at_about_the_rate_and_keeps_the_mean() -> None:
    layer = DropBlock(rate=0.2, block_size=3).train()
    x = torch.ones(16, 32, 20, 20)
    out = dropblock(layer, x)
    dropped = (out == 0).to(x.dtype)
    assert 0.15 < dropped.mean().item() < 0.25
    assert covered_by_whole_blocks(dropped, 3)
    # The survivors are rescaled so the mean is the input's: exactly, for a constant input.
    torch.testing.assert_close(out.mean(), x.mean())
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - dropped.mean().item())))
    positive = torch.rand(16, 32, 20, 20) + 0.5
    assert dropblock(layer, positive).mean().item() == pytest.approx(
        positive.mean().item(), rel=0.02
    )


def test_dropblock_masks_follow_the_key_and_each_draw_is_fresh() -> None:
    layer = DropBlock(rate=0.3, block_size=2).train()
    x = torch.ones(4, 8, 10, 10)
    assert torch.equal(dropblock(layer, x, seed=1), dropblock(layer, x, seed=1))
    assert not torch.equal(dropblock(layer, x, seed=1), dropblock(layer, x, seed=2))
    with drawing_from(task_keys(1, 1, 1)[0]):
        first, second = layer(x), layer(x)  # two layers of one forward pass
    assert not torch.equal(first, second)
    with pytest.raises(RuntimeError, match="drawing_from"):
        layer(x)  # never a silent draw from the global generator


def test_the_block_check_can_fail_on_independent_dropout() -> None:
    torch.manual_seed(0)
    independent = (torch.rand(4, 8, 20, 20) < 0.2).float()
    assert not covered_by_whole_blocks(independent, 3)


def test_dropblock_is_the_identity_in_eval_mode_and_at_rate_zero() -> None:
    x = torch.randn(2, 4, 10, 10)
    assert DropBlock(0.3, 5).eval()(x) is x
    assert DropBlock(0.0, 5).train()(x) is x
    model = ResNet12((3, 32, 32), channels=[4, 4, 4, 4], dropblock_rate=0.3, dropblock_size=2)
    images = torch.rand(4, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(images), model(images))


def test_dropblock_shrinks_to_feature_maps_smaller_than_the_block() -> None:
    out = dropblock(DropBlock(0.5, 5).train(), torch.ones(64, 4, 2, 2))
    whole_maps = (out == 0).flatten(2).all(-1)  # a 2x2 map is dropped entirely or not at all
    assert torch.equal((out == 0).flatten(2).any(-1), whole_maps)
    assert 0.35 < whole_maps.float().mean().item() < 0.65


# -- functional use ----------------------------------------------------------------------------
def per_task_weights(model: nn.Module, tasks: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        name: torch.stack(
            [
                p.detach() + 0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype)
                for _ in range(tasks)
            ]
        )
        for name, p in model.named_parameters()
    }


@pytest.mark.parametrize("transductive", [False, True])
def test_vmapped_functional_call_equals_a_per_task_loop(transductive: bool) -> None:
    torch.manual_seed(0)
    model = TINY((3, 16, 16), out_features=3).double()
    if transductive:  # batch statistics in train mode, as the gradient-based learners run it
        apply_batch_norm(model, "transductive", steps=1).train()
    else:  # running statistics: nothing is written in place under vmap
        model.eval()
    params = per_task_weights(model, tasks=3)
    x = torch.rand(3, 5, 3, 16, 16, dtype=torch.float64)
    batched = vmap(lambda p, xi: functional_call(model, p, (xi,)))(params, x)
    for t in range(3):
        single = functional_call(model, {k: v[t] for k, v in params.items()}, (x[t],))
        torch.testing.assert_close(batched[t], single)
    assert (batched[0] - batched[1]).abs().max() > 1e-6  # the weights really differ per task


def test_dropblock_under_vmap_draws_each_tasks_mask_from_its_key() -> None:
    torch.manual_seed(0)
    model = TINY((3, 32, 32), dropblock_rate=0.3, dropblock_size=2)
    apply_batch_norm(model, "transductive", steps=1).train()
    params = {k: torch.stack([v.detach()] * 3) for k, v in model.named_parameters()}
    x = torch.rand(5, 3, 32, 32).expand(3, -1, -1, -1, -1)  # the same images for every task

    def one_task(p, xi, key):
        with drawing_from(key):
            return functional_call(model, p, (xi,))

    call = vmap(one_task, randomness="error")  # nothing from torch's generators
    keys = task_keys(0, 1, 3)
    out = call(params, x, keys)
    assert torch.isfinite(out).all()
    assert (out[0] - out[1]).abs().max() > 1e-4 and (out[1] - out[2]).abs().max() > 1e-4
    # Task 2 alone, or first of a reordered batch, gets the mask it got third of three.
    alone = call({k: v[:1] for k, v in params.items()}, x[:1], keys[2:])
    torch.testing.assert_close(alone[0], out[2])
    torch.testing.assert_close(call(params, x, keys.flip(0))[0], out[2])


# -- in the learners ---------------------------------------------------------------------------
image_batch = partial(image_batch, channels=3)


def tiny_maml(**kwargs) -> MAML:
    torch.manual_seed(0)
    task = TaskSpec("classification", (3, 16, 16), 3)
    learner = MAML(TINY, task, inner_lr=0.4, **kwargs).double()
    vary_batch_norm(learner)
    return learner


def loop_meta_gradient(learner: MAML, batch: EpisodeBatch, first_order: bool) -> list:
    """Textbook MAML, one task at a time, on a copy with PyTorch's own batch-statistics
    BatchNorm (the same parameter names, so one dict drives both)."""

    model = reference_model(learner)
    params = dict(learner.model.named_parameters())
    total = 0.0
    for t in range(len(batch)):
        logits = functional_call(model, params, (batch.support_x[t],))
        loss = F.cross_entropy(logits, batch.support_y[t])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        fast = {
            n: p - learner.inner_lr * g for (n, p), g in zip(params.items(), grads, strict=True)
        }
        query = functional_call(model, fast, (batch.query_x[t],))
        total = total + F.cross_entropy(query, batch.query_y[t])
    return list(torch.autograd.grad(total / len(batch), list(params.values())))


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_meta_gradient_through_resnet12_equals_a_per_task_loop(first_order: bool) -> None:
    learner = tiny_maml(first_order=first_order)
    batch = image_batch(tasks=2, ways=3, shots=1, queries=2)
    loss, _ = learner.meta_loss(batch)
    actual = torch.autograd.grad(loss, list(learner.model.parameters()))
    expected = loop_meta_gradient(learner, batch, first_order)
    for name, a, e in zip(dict(learner.model.named_parameters()), actual, expected, strict=True):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, e, atol=1e-6, rtol=1e-5, msg=name)


def test_maml_second_order_differs_from_first_order_on_resnet12() -> None:
    """Guards the test above: the second-order terms through the residual blocks are real."""
    batch = image_batch(tasks=2, ways=3, shots=1, queries=2)
    grads = []
    for first_order in (False, True):
        learner = tiny_maml(first_order=first_order)
        loss, _ = learner.meta_loss(batch)
        grads.append(torch.autograd.grad(loss, list(learner.model.parameters())))
    assert max((s - f).abs().max().item() for s, f in zip(*grads, strict=True)) > 1e-5


@pytest.mark.parametrize("mode", BATCH_NORM_MODES)
def test_maml_second_order_gives_every_parameter_a_finite_gradient(mode: str) -> None:
    torch.manual_seed(0)
    task = TaskSpec("classification", (3, 16, 16), 3)
    model = partial(TINY, dropblock_rate=0.2, dropblock_size=2)
    learner = MAML(model, task, inner_lr=0.1, inner_steps=2, test_inner_steps=2, batch_norm=mode)
    batch = image_batch(tasks=2, ways=3, shots=1, queries=2)
    batch = EpisodeBatch(
        batch.support_x.float(), batch.support_y, batch.query_x.float(), batch.query_y, 3,
        keys=batch.keys,
    )  # fmt: skip
    loss, metrics = learner.meta_loss(batch)
    loss.backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    learner.eval()
    with torch.no_grad():
        assert torch.isfinite(learner.predict(batch)).all()


def test_protonet_trains_and_evaluates_with_resnet12() -> None:
    torch.manual_seed(0)
    task = TaskSpec("classification", (3, 16, 16), 3)
    learner = ProtoNet(partial(TINY, dropblock_rate=0.1, dropblock_size=2), task)
    assert learner.encoder.embedding_size == 4 and learner.encoder.head is None
    batch = image_batch(tasks=2, ways=3, shots=2, queries=2)
    batch = EpisodeBatch(
        batch.support_x.float(), batch.support_y, batch.query_x.float(), batch.query_y, 3,
        keys=batch.keys,
    )  # fmt: skip
    first_mean = learner.encoder.blocks[0].bn1.running_mean.clone()
    loss, metrics = learner.meta_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= metrics["acc"] <= 100
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learner.parameters())
    assert not torch.equal(learner.encoder.blocks[0].bn1.running_mean, first_mean)
    learner.eval()
    assert learner.predict(batch).shape == (2, 6, 3)


def test_conv4_at_maml_mini_imagenet_width_gives_an_800_d_embedding() -> None:
    model = Conv4((3, 84, 84), None, hidden_channels=32)  # 84 -> 42 -> 21 -> 10 -> 5
    assert model.embedding_size == 32 * 5 * 5 == 800
    assert model(torch.rand(2, 3, 84, 84)).shape == (2, 800)


# -- configs and the command line -------------------------------------------------------------
def test_the_config_builds_the_metaoptnet_widths(compose_config) -> None:
    from hydra.utils import instantiate

    cfg = compose_config(["model=resnet12", "dataset=mini_imagenet", "algorithm=protonet"])
    assert list(cfg.model.channels) == [64, 160, 320, 640]
    model = instantiate(cfg.model)((3, 84, 84), None)
    assert isinstance(model, ResNet12) and model.embedding_size == 640
    assert model.blocks[3].dropblock.rate == cfg.model.dropblock_rate == 0.0


def test_end_to_end_protonet_with_resnet12_on_the_omniglot_sample(
    tmp_path: Path, omniglot_sample_root: Path, data_cache_dir: Path
) -> None:
    settings = [s for s in TINY_SETTINGS if not s.startswith("model.")]
    done = metarun(
        "experiment=omniglot_sample",
        *settings,
        *TINY_ALGORITHM["protonet"],
        "model=resnet12",
        "model.channels=[4,8,8,8]",
        "model.dropblock_rate=0.1",
        "model.dropblock_size=2",
        "hardware.threads=1",  # tiny tensors: see _one_thread
        f"dataset.root={omniglot_sample_root}",
        f"dataset.cache_dir={data_cache_dir}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (summary,) = (tmp_path / "outputs" / "runs").glob("*/summary.json")
    test = json.loads(summary.read_text())["test"]
    assert 0 <= test["mean"] <= 100
