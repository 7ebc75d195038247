"""``metarun.load``: a trained learner used from Python on episodes it never saw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import metarun
from metarun.data.episodes import FixedEpisodes
from metarun.data.omniglot import Omniglot
from metarun.run import RunContext, build, run
from metarun.training.checkpoint import load_checkpoint

TEST_EPISODES = 20  # enough queries (120) that another learner's score would not coincide


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_overrides, compose_config) -> dict[str, Path]:
    runs = {}
    for algorithm in ("maml", "protonet"):
        run_dir = tmp_path_factory.mktemp(algorithm)
        overrides = tiny_overrides(algorithm, f"eval.test_episodes={TEST_EPISODES}")
        run(compose_config(overrides), RunContext(run_dir, algorithm))
        runs[algorithm] = run_dir
    return runs


@pytest.fixture(scope="module")
def unseen_episode(omniglot_sample_root, data_cache_dir):
    """One 3-way episode from the sample's test alphabets, as the tiny runs evaluate."""
    data = Omniglot(
        str(omniglot_sample_root), background="images_background_small1",
        evaluation="images_background_small2", val_alphabets=1, ways=3, queries=2,
        cache_dir=str(data_cache_dir),
    )  # fmt: skip
    return next(FixedEpisodes(data.sampler("test", data.episodes), 1, seed=99).batches(1))[0]


def recorded_test_episodes(run_dir: Path) -> FixedEpisodes:
    """The test episodes the run scored, rebuilt from its checkpoint as ``run.py`` built them
    (its data set config, normalisation and ``eval`` settings)."""
    state = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    config = OmegaConf.create(state["config"])
    data = build(config, "dataset")
    data.load_state_dict(state["data"])
    test = data.sampler("test", data.episodes)
    return FixedEpisodes(test, config.eval.test_episodes, config.eval.seed + 1)


def episode_accuracies(learner: metarun.FewShotLearner, episodes: FixedEpisodes) -> torch.Tensor:
    """Each episode's accuracy through the public API: ``adapt`` on its support set alone,
    labels for its queries."""
    scores = []
    for batch in episodes.batches(1):
        episode = batch[0]
        labels = learner.adapt(episode.support_x, episode.support_y)(episode.query_x)
        assert labels.shape == episode.query_y.shape and labels.dtype == episode.query_y.dtype
        scores.append((labels == episode.query_y).double().mean() * 100)
    return torch.stack(scores)


@pytest.mark.parametrize("algorithm", ["maml", "protonet"])
def test_a_loaded_learner_scores_the_runs_test_episodes_as_the_run_did(algorithm, trained) -> None:
    """A fresh ``metarun.load`` of the run directory, episode by episode, gives the test
    accuracy the run recorded in ``summary.json`` (its best checkpoint, in evaluation mode)."""
    recorded = json.loads((trained[algorithm] / "summary.json").read_text())["test"]
    episodes = recorded_test_episodes(trained[algorithm])
    scores = episode_accuracies(metarun.load(trained[algorithm]), episodes)
    assert len(scores) == recorded["episodes"] == TEST_EPISODES
    assert scores.mean().item() == pytest.approx(recorded["mean"], abs=1e-4)


def test_the_recorded_score_check_would_catch_a_learner_left_in_training_mode(trained) -> None:
    """Guards the test above: ProtoNet adapting with batch statistics (``load`` without
    ``.eval()``) scores the same episodes differently."""
    recorded = json.loads((trained["protonet"] / "summary.json").read_text())["test"]
    learner = metarun.load(trained["protonet"])
    learner.learner.train()
    with torch.no_grad():
        scores = episode_accuracies(learner, recorded_test_episodes(trained["protonet"]))
    assert abs(scores.mean().item() - recorded["mean"]) > 1.0


@pytest.mark.parametrize("algorithm", ["maml", "protonet"])
def test_labels_come_back_in_the_callers_label_space(algorithm, trained, unseen_episode) -> None:
    learner = metarun.load(trained[algorithm] / "checkpoints" / "best.pt")
    episode = unseen_episode
    internal = learner.adapt(episode.support_x, episode.support_y)(episode.query_x)
    names = torch.tensor([4, 17, 230])  # any integer labels; sorted, they keep the class order
    classify = learner.adapt(episode.support_x, names[episode.support_y])
    torch.testing.assert_close(classify(episode.query_x), names[internal])
    if algorithm == "protonet":  # prototypes do not care which class is called what
        shuffled = torch.tensor([230, 4, 17])
        relabelled = learner.adapt(episode.support_x, shuffled[episode.support_y])
        torch.testing.assert_close(relabelled(episode.query_x), shuffled[internal])


def test_preprocess_turns_a_raw_image_into_the_training_tensor(
    trained, omniglot_sample_root, unseen_episode
) -> None:
    learner = metarun.load(trained["protonet"])
    png = next((omniglot_sample_root / "images_background_small2" / "Tagalog").glob("*/*.png"))
    with Image.open(png) as image:
        x = learner.preprocess(image)
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    # Normalised with the training split's statistics, which come from the checkpoint: loading
    # a learner reads no data.
    norm = learner.data.normalization
    assert learner.data._splits is None
    pixels = x * norm.std[0] + norm.mean[0]
    assert -1e-5 <= pixels.min() and pixels.max() <= 1 + 1e-5 and pixels.mean() < 0.5
    assert x.shape == unseen_episode.support_x.shape[1:]
    classify = learner.adapt(unseen_episode.support_x, unseen_episode.support_y)
    assert classify(x.unsqueeze(0)).shape == (1,)


def test_a_maml_learner_refuses_more_classes_than_it_was_trained_for(trained) -> None:
    learner = metarun.load(trained["maml"])
    with pytest.raises(ValueError, match="3-way head"):
        learner.adapt(torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]))


def test_loading_a_corrupt_file_is_one_clear_error(tmp_path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(metarun.errors.CheckpointError, match="unreadable"):
        metarun.load(bad)
