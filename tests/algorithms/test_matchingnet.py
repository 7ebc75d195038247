"""Matching Networks' defining computation: a query's label distribution is the softmax (over
the support set) of cosine similarities, applied to the support set's one-hot labels; the loss is
its negative log-likelihood; Full Context Embeddings follow the paper's appendix A."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from learner_helpers import image_batch
from torch import nn

from metarun.algorithms.matchingnet import MatchingNet, cosine_attention
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import Conv4

D = 5  # embedding width of the vector episodes below


def identity_encoder(input_shape: tuple[int, ...], out_features: int | None) -> nn.Module:
    assert out_features is None  # Matching Networks ask for an embedding, not a classifier head
    return nn.Flatten()


def vector_batch(tasks: int = 3, ways: int = 3, shots: int = 2, queries: int = 2) -> EpisodeBatch:
    """Episodes of float64 vectors whose norms vary a lot, so that a similarity that forgot to
    normalise a side would give other numbers."""
    g = torch.Generator().manual_seed(0)

    def vectors(count: int) -> torch.Tensor:
        scale = torch.rand(tasks, count, 1, generator=g, dtype=torch.float64) * 5 + 0.2
        return torch.randn(tasks, count, D, generator=g, dtype=torch.float64) * scale

    labels = torch.arange(ways)
    return EpisodeBatch(
        vectors(ways * shots),
        labels.repeat_interleave(shots).expand(tasks, -1),
        vectors(ways * queries),
        labels.repeat(queries).expand(tasks, -1),  # not label-major: order must not matter
        ways,
    )


def reference_label_distribution(
    support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int
) -> torch.Tensor:
    """y^ for one episode, query by query: softmax of F.cosine_similarity times one-hot labels."""
    rows = []
    for q in query:
        attention = torch.softmax(F.cosine_similarity(q[None], support, dim=-1), dim=0)
        rows.append(
            sum(
                a * F.one_hot(y, ways).to(a.dtype)
                for a, y in zip(attention, support_y, strict=True)
            )
        )
    return torch.stack(rows)


def test_attention_weights_sum_to_one_over_the_support_set() -> None:
    batch = vector_batch()
    attention = cosine_attention(batch.query_x, batch.support_x).exp()
    assert attention.shape == (3, 6, 6)
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, 6, dtype=torch.float64))


def test_prediction_is_the_attention_weighted_sum_of_one_hot_support_labels() -> None:
    learner = MatchingNet(identity_encoder, TaskSpec("classification", (D,), 3))
    batch = vector_batch()
    predicted = learner.predict(batch).exp()
    for t in range(3):
        expected = reference_label_distribution(
            batch.support_x[t], batch.support_y[t], batch.query_x[t], 3
        )
        torch.testing.assert_close(predicted[t], expected)
        # Guard: normalising only the support side (or neither) gives other numbers here.
        support_only = (
            torch.softmax(batch.query_x[t] @ F.normalize(batch.support_x[t], dim=-1).T, -1)
            @ F.one_hot(batch.support_y[t], 3).double()
        )
        assert not torch.allclose(support_only, expected, atol=1e-3)


def test_loss_is_the_negative_log_of_the_weighted_label_at_the_true_class() -> None:
    learner = MatchingNet(identity_encoder, TaskSpec("classification", (D,), 3))
    batch = vector_batch()
    loss, metrics = learner.meta_loss(batch)
    terms, correct = [], []
    for t in range(3):
        y_hat = reference_label_distribution(
            batch.support_x[t], batch.support_y[t], batch.query_x[t], 3
        )
        terms += [-torch.log(y_hat[j, c]) for j, c in enumerate(batch.query_y[t])]
        correct.append((y_hat.argmax(-1) == batch.query_y[t]).double().mean() * 100)
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    torch.testing.assert_close(metrics["acc"].double(), torch.stack(correct).mean())


def test_loss_equals_the_closed_form_on_a_hand_made_episode() -> None:
    # The query has cosine 1 with the class-0 item and -1 with the class-1 item, its true class:
    # -log y^_1 = -log(e^-1 / (e + e^-1)), with a finite gradient.
    learner = MatchingNet(identity_encoder, TaskSpec("classification", (2,), 2))
    support = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]], requires_grad=True)
    query = torch.tensor([[[1.0, 0.0]]])
    batch = EpisodeBatch(support, torch.tensor([[0, 1]]), query, torch.tensor([[1]]), 2)
    loss, _ = learner.meta_loss(batch)
    loss.backward()
    expected = -torch.log(torch.tensor(torch.e**-1 / (torch.e + torch.e**-1)))
    torch.testing.assert_close(loss, expected)
    assert torch.isfinite(support.grad).all()


def lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = (w_ih @ x + b_ih + w_hh @ h + b_hh).chunk(4)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def reference_fce(learner: MatchingNet, support: torch.Tensor, query: torch.Tensor, steps: int):
    """Appendix A of the paper for one episode, written out step by step with the learner's LSTM
    weights: g(x_i) = h_fwd_i + h_bwd_i + g'(x_i); h^_k, c_k = LSTM(f'(x^), [h_{k-1}, r_{k-1}],
    c_{k-1}); h_k = h^_k + f'(x^); r_{k-1} = sum_i softmax(h_{k-1}.g(x_i)) g(x_i)."""
    lstm, cell = learner.context.support_lstm, learner.context.query_cell
    n, d = support.shape

    def run(direction: str, order: list[int]) -> dict[int, torch.Tensor]:
        w = [getattr(lstm, f"{name}_l0{direction}") for name in ("weight_ih", "weight_hh")]
        b = [getattr(lstm, f"{name}_l0{direction}") for name in ("bias_ih", "bias_hh")]
        h, c, out = torch.zeros(d, dtype=support.dtype), torch.zeros(d, dtype=support.dtype), {}
        for i in order:
            h, c = lstm_step(support[i], h, c, *w, *b)
            out[i] = h
        return out

    forward, backward = run("", list(range(n))), run("_reverse", list(range(n))[::-1])
    g = torch.stack([forward[i] + backward[i] + support[i] for i in range(n)])
    # The paper's LSTM takes f'(x^) as input and [h, r] as hidden state.
    w_x, w_hidden = cell.weight_ih[:, :d], torch.cat([cell.weight_hh, cell.weight_ih[:, d:]], 1)
    f = []
    for x in query:
        h, c = x, torch.zeros(d, dtype=x.dtype)
        for _ in range(steps):
            r = torch.softmax(g @ h, 0) @ g
            h_hat, c = lstm_step(x, torch.cat([h, r]), c, w_x, w_hidden, cell.bias_ih, cell.bias_hh)
            h = h_hat + x
        f.append(h)
    return g, torch.stack(f)


def test_full_context_embeddings_follow_the_papers_appendix() -> None:
    torch.manual_seed(0)
    task = TaskSpec("classification", (D,), 3)
    learner = MatchingNet(identity_encoder, task, fce=True, fce_steps=3).double()
    batch = vector_batch()
    g, f = learner.contextualise(batch.support_x, batch.query_x)
    for t in range(3):
        g_ref, f_ref = reference_fce(learner, batch.support_x[t], batch.query_x[t], steps=3)
        torch.testing.assert_close(g[t], g_ref)
        torch.testing.assert_close(f[t], f_ref)
        # Guard: one read step fewer is a different f.
        fewer = reference_fce(learner, batch.support_x[t], batch.query_x[t], steps=2)[1]
        assert not torch.allclose(f[t], fewer)
    # The prediction uses them: cosine attention between f and g.
    expected = torch.stack(
        [reference_label_distribution(g[t], batch.support_y[t], f[t], 3) for t in range(3)]
    )
    with torch.no_grad():
        torch.testing.assert_close(learner.predict(batch).exp(), expected)
        plain = MatchingNet(identity_encoder, task).double()
        assert not torch.allclose(learner.predict(batch), plain.predict(batch), atol=1e-3)


@pytest.mark.parametrize("fce", [False, True])
def test_only_fce_makes_a_support_embedding_depend_on_the_rest_of_the_support_set(fce) -> None:
    torch.manual_seed(0)
    task = TaskSpec("classification", (D,), 3)
    learner = MatchingNet(identity_encoder, task, fce=fce).double()
    batch = vector_batch()
    changed = batch.support_x.clone()
    changed[:, -1] += 1.0  # another support item (the last one) changes
    g, f = learner.contextualise(batch.support_x, batch.query_x)
    g_changed, f_changed = learner.contextualise(changed, batch.query_x)
    others_unchanged = torch.allclose(g[:, :-1], g_changed[:, :-1])
    queries_unchanged = torch.allclose(f, f_changed)
    assert others_unchanged is not fce and queries_unchanged is not fce


def conv_learner(fce: bool) -> MatchingNet:
    torch.manual_seed(0)
    task = TaskSpec("classification", (1, 16, 16), 3)
    return MatchingNet(partial(Conv4, hidden_channels=4), task, fce=fce, fce_steps=2).double()


@pytest.mark.parametrize("fce", [False, True])
def test_adapt_equals_predict_and_episodes_do_not_depend_on_their_batch(fce) -> None:
    learner = conv_learner(fce)
    learner.meta_loss(image_batch())  # move the running statistics off their initial values
    learner.eval()
    batch = image_batch(tasks=3)
    with torch.no_grad():
        batched = learner.predict(batch)
        for t in range(3):
            classify = learner.adapt(batch.support_x[t], batch.support_y[t])
            torch.testing.assert_close(classify(batch.query_x[t]), batched[t])
            torch.testing.assert_close(
                learner.predict(batch.select(slice(t, t + 1)))[0], batched[t]
            )


def test_training_normalises_each_episode_on_its_own() -> None:
    """The meta-batch loss is the mean of its episodes' own losses (per-episode BatchNorm)."""
    batch = image_batch(tasks=2)
    loss, _ = conv_learner(False).meta_loss(batch)
    singles = [conv_learner(False).meta_loss(batch.select(slice(t, t + 1)))[0] for t in range(2)]
    torch.testing.assert_close(loss, (singles[0] + singles[1]) / 2)


@pytest.mark.parametrize("fce", [False, True])
def test_meta_loss_trains_the_encoder_and_the_context_lstms(fce) -> None:
    learner = conv_learner(fce)
    loss, _ = learner.meta_loss(image_batch(tasks=2))
    loss.backward()
    for name, parameter in learner.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert any(n.startswith("context.") for n, _ in learner.named_parameters()) is fce


def test_defaults_train_on_the_test_shape_with_5_queries() -> None:
    learner = MatchingNet(partial(Conv4), TaskSpec("classification", (1, 28, 28), 5))
    assert learner.training_episodes(EpisodeSpec(20, 1, 15)) == EpisodeSpec(20, 1, 5)
    assert learner.meta_batch_size == 1 and learner.context is None


def test_regression_tasks_are_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match="algorithm: matchingnet classifies.*algorithm=maml"):
        MatchingNet(identity_encoder, TaskSpec("regression", (1,), 1))


@pytest.mark.parametrize(
    "key, value",
    [
        ("fce_steps", 0),
        ("meta_batch_size", 0),
        ("train_ways", 0),
        ("train_queries", -1),
        ("fce", "yes"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_key(key, value) -> None:
    task = TaskSpec("classification", (D,), 3)
    with pytest.raises(ConfigError, match=f"^algorithm.{key}: ") as error:
        MatchingNet(identity_encoder, task, **{key: value})
    assert error.value.key == f"algorithm.{key}"


def test_under_bf16_autocast_only_the_encoder_runs_in_bf16() -> None:
    torch.manual_seed(0)
    task = TaskSpec("classification", (1, 16, 16), 3)
    learner = MatchingNet(partial(Conv4, hidden_channels=4), task, fce=True, fce_steps=2)
    batch = image_batch(tasks=2)
    batch = EpisodeBatch(
        batch.support_x.float(), batch.support_y, batch.query_x.float(), batch.query_y, 3
    )
    learner.eval()
    with torch.no_grad():
        exact = learner.predict(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = learner.encoder(batch.query_x[0])
            mixed = learner.predict(batch)
    assert features.dtype == torch.bfloat16  # the guard: autocast is on for the encoder
    assert mixed.dtype == torch.float32  # ... and off for the LSTMs, cosine and log-sum-exp
    torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(2, 6))
    torch.testing.assert_close(mixed, exact, atol=0.1, rtol=0.1)
