"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016, NeurIPS,
"Matching Networks for One Shot Learning").

A query ``x^`` is labelled by attention over the episode's support set:
``y^ = sum_i a(x^, x_i) y_i`` with one-hot ``y_i`` and ``a(x^, x_i)`` the softmax, over the
support set, of the cosine similarity ``c(f(x^), g(x_i))``. Training minimises the negative
log-likelihood of the true label under ``y^``. Adapting to a task is embedding its support set:
no gradient steps. ``predict`` returns ``log y^`` ``[B, N*Q, ways]``, so its argmax is the
prediction (and ``exp`` of it sums to one over the ways).

Embeddings come from the ``model`` backbone (Conv-4 by default, as in the paper), shared by
support (g) and query (f). With ``fce=true`` they become Full Context Embeddings (paper,
appendix A): g is a bidirectional LSTM over the support embeddings with a skip connection,
``g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i)``, and f an attention LSTM that reads g(S) for
``fce_steps`` (K) steps: ``h^_k, c_k = LSTM(f'(x^), [h_{k-1}, r_{k-1}], c_{k-1})``,
``h_k = h^_k + f'(x^)``, ``r_{k-1} = sum_i softmax_i(h_{k-1} . g(x_i)) g(x_i)``, ``f = h_K``.
Both LSTMs have the embedding's width (the skip connections need it; 64 on 28x28 Omniglot,
1600 on 84x84 with Conv-4). The recurrences start from ``h_0 = f'(x^)``, ``c_0 = 0`` (the paper
leaves this open; as in Chen et al. 2019's MatchingNet). The biLSTM reads each episode's support
set in its stored order, which episodes give label-major (all shots of label 0, then label 1,
...); labels are assigned to classes at random per episode, so this is a random class order.

Choices the paper leaves open (the authors' code is not public):

* Cosine similarity normalises both sides, as the paper's ``c`` says (and zergylord/oneshot and
  oscarknagg/few-shot do). AntreasAntoniou/MatchingNetworks normalises only the support side
  (the query's norm then acts as a learned temperature), and Chen et al. (2019) scale a ReLU'd
  cosine by 100; neither is the paper's definition.
* The attention LSTM's read-out uses plain dot products (appendix A, eq. 6), not cosine.
* ``log y^`` is computed as a log-sum-exp of log-attention weights within each class, exact and
  finite however small the weights are.
* Training episode shape: the paper reports one model per test setting (N-way K-shot), i.e.
  training ways and shots as at test (``train_ways: null``). How many queries per class and
  episodes per update, the optimiser and its schedule are not given: this implementation uses
  ProtoNet's Omniglot conventions (5 queries per class, one episode per update, Adam 1e-3
  halved every 2000 episodes) and says so in its YAML.
* Omniglot results in the paper are without FCE (it reports FCE on miniImageNet only), so
  ``fce: false`` is the default; ``fce_steps`` (K) is not stated in the paper, 5 here (the value
  AntreasAntoniou/MatchingNetworks uses).

BatchNorm is handled as in ProtoNet: in training each episode (support and query together) goes
through the encoder on its own, so it is normalised with its own statistics and the running
statistics take one update per meta-batch; evaluation uses the running statistics and embeds a
whole batch of episodes at once. The LSTMs and the attention run over all episodes at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.base import ModelFactory, require_classification
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import embed_episodes, embedding_size, use_episode_statistics


def cosine_attention(query: Tensor, support: Tensor) -> Tensor:
    """Log-attention ``[B, M, S]``: log-softmax over the support set of the cosine similarity
    between every query ``[B, M, D]`` and every support embedding ``[B, S, D]``."""
    similarity = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)
    return similarity.log_softmax(-1)


def label_log_probs(log_attention: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """``log y^`` ``[B, M, ways]`` where ``y^ = sum_i a_i onehot(y_i)``: per class, the
    log-sum-exp of the log-attention on that class's support examples."""
    in_class = F.one_hot(support_y, ways).bool()  # [B, S, N]
    masked = log_attention.unsqueeze(-1).masked_fill(~in_class.unsqueeze(1), float("-inf"))
    return masked.logsumexp(dim=2)


class FullContextEmbedding(nn.Module):
    """The paper's FCE (appendix A): g, a bidirectional LSTM over the support set with a skip
    connection, and f, an attention LSTM with ``steps`` reads of g(S). Batched over episodes."""

    def __init__(self, size: int, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.support_lstm = nn.LSTM(size, size, batch_first=True, bidirectional=True)
        # LSTM(f'(x^), [h, r], c): gates from f'(x^) and [h, r] are gates from [f'(x^), r] and h.
        self.query_cell = nn.LSTMCell(2 * size, size)

    def embed_support(self, support: Tensor) -> Tensor:
        """g(x_i, S) ``[B, S, D]`` from g'(x_i) ``[B, S, D]``, in the support set's order."""
        outputs, _ = self.support_lstm(support)
        forward, backward = outputs.chunk(2, dim=-1)
        return forward + backward + support

    def embed_queries(self, query: Tensor, support: Tensor) -> Tensor:
        """f(x^, S) ``[B, M, D]`` from f'(x^) ``[B, M, D]`` and g(S) ``[B, S, D]``."""
        b, m, d = query.shape
        x = query.reshape(b * m, d)
        h, c = x, torch.zeros_like(x)
        for _ in range(self.steps):
            weights = (h.view(b, m, d) @ support.transpose(1, 2)).softmax(-1)  # [B, M, S]
            readout = (weights @ support).reshape(b * m, d)
            h_hat, c = self.query_cell(torch.cat([x, readout], dim=-1), (h, c))
            h = h_hat + x
        return h.view(b, m, d)


@contextlib.contextmanager
def full_precision(x: Tensor) -> Iterator[None]:
    """The LSTMs, cosine and log-sum-exp run outside autocast: only the encoder is bf16."""
    with torch.autocast(x.device.type, enabled=False):
        yield


class MatchingNet(nn.Module):
    autocast_safe = True  # the encoder only: the matching head runs in full precision
    # Plain convolutions: channels-last is faster on a CPU (as for ProtoNet).
    memory_format = torch.channels_last

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        fce: bool = False,
        fce_steps: int = 5,
        meta_batch_size: int = 1,
        train_ways: int | None = None,
        train_queries: int | None = 5,
    ) -> None:
        super().__init__()
        require_classification(task, "matchingnet")
        if not isinstance(fce, bool):
            raise ConfigError("algorithm.fce", f"must be true or false, got {fce!r}")
        for key, value in (("fce_steps", fce_steps), ("meta_batch_size", meta_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"algorithm.{key}", f"must be an integer >= 1, got {value!r}")
        for key, value in (("train_ways", train_ways), ("train_queries", train_queries)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(
                    f"algorithm.{key}", f"must be null (as at test) or >= 1, got {value!r}"
                )
        self.task = task
        self.encoder = use_episode_statistics(model(task.input_shape, None))
        self.context = (
            FullContextEmbedding(embedding_size(self.encoder, task.input_shape), fce_steps)
            if fce
            else None
        )
        self.meta_batch_size = meta_batch_size
        self.train_ways = train_ways
        self.train_queries = train_queries

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        return evaluation.replace(ways=self.train_ways, queries=self.train_queries)

    def contextualise(self, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """g(S) and f(x^, S) ``[B, n, D]`` from the encoder's g'(S) and f'(x^): Full Context
        Embeddings with ``fce``, else the encoder's embeddings unchanged."""
        if self.context is None:
            return support, query
        support = self.context.embed_support(support)
        return support, self.context.embed_queries(query, support)

    def _match(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """``log y^`` ``[B, M, ways]`` from the encoder's support and query embeddings."""
        with full_precision(support):
            if support.dtype in (torch.float16, torch.bfloat16):
                support, query = support.float(), query.float()
            support, query = self.contextualise(support, query)
            return label_log_probs(cosine_attention(query, support), support_y, ways)

    def _log_probs(self, batch: EpisodeBatch) -> Tensor:
        s = batch.support_y.shape[1]
        embeddings = embed_episodes(
            self.encoder, torch.cat([batch.support_x, batch.query_x], dim=1), batch.keys
        )
        return self._match(embeddings[:, :s], batch.support_y, embeddings[:, s:], batch.ways)

    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        log_probs = self._log_probs(batch)
        loss = F.nll_loss(log_probs.flatten(0, 1), batch.query_y.flatten())
        accuracy = self.task.score(log_probs.detach(), batch.query_y).mean()
        return loss, {"loss": loss.detach(), "acc": accuracy}

    def predict(self, batch: EpisodeBatch) -> Tensor:
        """``log y^`` ``[B, N*Q, ways]``: log-probabilities, argmax = predicted label."""
        return self._log_probs(batch)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        ways = int(support_y.max()) + 1
        support = self.encoder(support_x).flatten(1).detach().unsqueeze(0)
        labels = support_y.unsqueeze(0)

        def classify(query_x: Tensor) -> Tensor:
            query = self.encoder(query_x).flatten(1).unsqueeze(0)
            return self._match(support, labels, query, ways)[0]

        return classify
