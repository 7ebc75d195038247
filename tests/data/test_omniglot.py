"""Omniglot: the Lake and Vinyals splits, rotations, decoding and the errors users can hit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from metarun.data.episodes import ClassImages, EpisodeSampler, EpisodeSpec
from metarun.data.images import ImageFormat
from metarun.data.omniglot import Omniglot, alphabet_of, decode_folder, lake_split
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_data_cache")

SMALL1, SMALL2 = "images_background_small1", "images_background_small2"
SMALL1_ALPHABETS = {"Balinese": 24, "Early_Aramaic": 22, "Greek": 24, "Korean": 40, "Latin": 26}
SMALL2_ONLY_ALPHABETS = {"Japanese_(katakana)": 47, "Sanskrit": 42, "Tagalog": 17}

# The 50 official alphabets with their character counts (Lake et al. 2015).
BACKGROUND = {
    "Alphabet_of_the_Magi": 20, "Anglo-Saxon_Futhorc": 29, "Arcadian": 26, "Armenian": 41,
    "Asomtavruli_(Georgian)": 40, "Balinese": 24, "Bengali": 46,
    "Blackfoot_(Canadian_Aboriginal_Syllabics)": 14, "Braille": 26, "Burmese_(Myanmar)": 34,
    "Cyrillic": 33, "Early_Aramaic": 22, "Futurama": 26, "Grantha": 43, "Greek": 24,
    "Gujarati": 48, "Hebrew": 22, "Inuktitut_(Canadian_Aboriginal_Syllabics)": 16,
    "Japanese_(hiragana)": 52, "Japanese_(katakana)": 47, "Korean": 40, "Latin": 26,
    "Malay_(Jawi_-_Arabic)": 40, "Mkhedruli_(Georgian)": 41, "N_Ko": 33,
    "Ojibwe_(Canadian_Aboriginal_Syllabics)": 14, "Sanskrit": 42, "Syriac_(Estrangelo)": 23,
    "Tagalog": 17, "Tifinagh": 55,
}  # fmt: skip
EVALUATION = {
    "Angelic": 20, "Atemayar_Qelisayer": 26, "Atlantean": 26, "Aurek-Besh": 26, "Avesta": 26,
    "Ge_ez": 26, "Glagolitic": 45, "Gurmukhi": 45, "Kannada": 41, "Keble": 26, "Malayalam": 47,
    "Manipuri": 40, "Mongolian": 30, "Old_Church_Slavonic_(Cyrillic)": 45, "Oriya": 46,
    "Sylheti": 28, "Syriac_(Serto)": 23, "Tengwar": 25, "Tibetan": 42, "ULOG": 26,
}  # fmt: skip
SPLITS = ("train", "val", "test")


def alphabets(classes: ClassImages) -> set[str]:
    return {alphabet_of(name) for name in classes.names}


@pytest.fixture
def sample(omniglot_sample_root: Path, data_cache_dir: Path) -> Callable[..., Omniglot]:
    """``sample(**overrides)``: Omniglot over the real sample with the Lake split, no rotation."""

    def make(**overrides: object) -> Omniglot:
        options: dict = {
            "root": str(omniglot_sample_root),
            "background": SMALL1,
            "evaluation": SMALL2,
            "val_alphabets": 1,
            "rotate": False,
            "cache_dir": str(data_cache_dir),
        }
        options.update(overrides)
        return Omniglot(**options)

    return make


@pytest.fixture(scope="module")
def sample_folders(omniglot_sample_root: Path, data_cache_dir: Path) -> tuple[ClassImages, ...]:
    """The two decoded sample folders, in the format ``Omniglot`` uses by default."""
    image_format = ImageFormat(size=28, channels=1, invert=True)
    return tuple(
        decode_folder(omniglot_sample_root / folder, image_format, data_cache_dir)
        for folder in (SMALL1, SMALL2)
    )


# --------------------------------------------------------------------------- Lake split


def test_lake_split_on_the_sample(sample: Callable[..., Omniglot]) -> None:
    omniglot = sample()
    splits = {split: omniglot.classes(split) for split in SPLITS}
    by_split = {split: alphabets(classes) for split, classes in splits.items()}

    assert not by_split["train"] & by_split["val"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["val"] & by_split["test"]
    assert len(by_split["val"]) == 1
    assert by_split["train"] | by_split["val"] == set(SMALL1_ALPHABETS)
    assert by_split["test"] == {"Japanese_(katakana)", "Sanskrit", "Tagalog"}
    assert "Greek" not in by_split["test"] and "Latin" not in by_split["test"]

    # Characters before rotation: all of small1 (136) between train and val, 106 to test.
    assert splits["train"].num_classes + splits["val"].num_classes == 136
    assert splits["test"].num_classes == sum(SMALL2_ONLY_ALPHABETS.values()) == 106
    for split, classes in splits.items():
        for alphabet in by_split[split]:
            count = sum(alphabet_of(n) == alphabet for n in classes.names)
            assert count == {**SMALL1_ALPHABETS, **SMALL2_ONLY_ALPHABETS}[alphabet]
        assert set(classes.counts.tolist()) == {20}, "every character has 20 drawings"
        assert classes.images.shape[0] == 20 * classes.num_classes

    names = [name for classes in splits.values() for name in classes.names]
    assert len(names) == len(set(names)), "a class name appears twice across splits"


def test_lake_val_alphabets_by_name(sample: Callable[..., Omniglot]) -> None:
    omniglot = sample(val_alphabets=["Korean", "Latin"])
    assert alphabets(omniglot.classes("val")) == {"Korean", "Latin"}
    assert alphabets(omniglot.classes("train")) == {"Balinese", "Early_Aramaic", "Greek"}
    assert omniglot.classes("val").num_classes == 40 + 26
    assert "Latin" not in alphabets(omniglot.classes("test"))


@pytest.mark.parametrize(
    "val_alphabets",
    [["Klingon"], ["Greek", "Klingon"], ["Sanskrit"], [], list(SMALL1_ALPHABETS), 0, 5, -1],
    ids=["unknown", "partly-unknown", "evaluation-only", "empty", "all", "zero", "all-int", "neg"],
)
def test_bad_val_alphabets_are_config_errors(
    sample: Callable[..., Omniglot], val_alphabets: object
) -> None:
    omniglot = sample(val_alphabets=val_alphabets)
    with pytest.raises(ConfigError) as info:
        omniglot.classes("train")
    assert info.value.key == "dataset.val_alphabets"
    message = str(info.value)
    assert message.startswith("dataset.val_alphabets: ") and "\n" not in message
    if isinstance(val_alphabets, list) and "Klingon" in val_alphabets:
        assert "Klingon" in message


def test_a_single_alphabet_name_is_not_split_into_letters(
    sample: Callable[..., Omniglot],
) -> None:
    """``metarun ... dataset.val_alphabets=Latin`` reaches Omniglot as the str ``"Latin"``.

    Exposes a bug in ``Omniglot.__init__``: ``list("Latin")`` holds out the letters L, a, t, i, n
    and the error reads "got ['L', 'a', 'i', 'n', 't']".
    """
    omniglot = sample(val_alphabets="Latin")
    try:
        held_out = alphabets(omniglot.classes("val"))
    except ConfigError as error:  # rejecting it is fine, if the message shows the name
        assert "'L', 'a'" not in str(error), f"the name was split into letters: {error}"
    else:
        assert held_out == {"Latin"}


def test_null_val_alphabets_is_a_config_error(sample: Callable[..., Omniglot]) -> None:
    """``dataset.val_alphabets=null`` should be a one-line ConfigError.

    Exposes a bug in ``Omniglot.__init__``: ``list(None)`` raises a bare TypeError, which the CLI
    shows as a traceback instead of naming the key.
    """
    with pytest.raises(ConfigError) as info:
        sample(val_alphabets=None).classes("train")
    assert info.value.key == "dataset.val_alphabets"


def test_evaluation_folder_without_new_alphabets(sample: Callable[..., Omniglot]) -> None:
    with pytest.raises(ConfigError) as info:
        sample(evaluation=SMALL1).classes("test")
    assert info.value.key == "dataset.evaluation" and "\n" not in str(info.value)


def test_seeded_val_choice(
    sample: Callable[..., Omniglot], sample_folders: tuple[ClassImages, ...]
) -> None:
    torch.manual_seed(0)
    first = alphabets(sample(split_seed=7).classes("val"))
    torch.manual_seed(1)  # the global RNG plays no part
    assert alphabets(sample(split_seed=7).classes("val")) == first

    background, evaluation = sample_folders
    chosen = {
        seed: frozenset(alphabets(lake_split(background, evaluation, 2, seed)["val"]))
        for seed in range(12)
    }
    assert all(len(held_out) == 2 for held_out in chosen.values())
    assert len(set(chosen.values())) > 1, "every split_seed holds out the same alphabets"
    for seed in (0, 5):
        again = lake_split(background, evaluation, 2, seed)["val"]
        assert frozenset(alphabets(again)) == chosen[seed]


# --------------------------------------------------------------------------- rotations


def test_rotations_are_new_training_classes(sample: Callable[..., Omniglot]) -> None:
    plain = sample(rotate=False)
    rotated = sample(rotate=True, rotate_eval=False)
    base = plain.classes("train")
    train = rotated.classes("train")

    assert train.num_classes == 4 * base.num_classes
    assert train.images.shape[0] == 4 * base.images.shape[0]
    assert len(set(train.names)) == train.num_classes
    for degrees in (0, 90, 180, 270):
        picked = train.select(
            [i for i, name in enumerate(train.names) if name.endswith(f"/rot{degrees:03d}")]
        )
        assert [name.rsplit("/", 1)[0] for name in picked.names] == base.names
        assert torch.equal(picked.counts, base.counts)
        expected = torch.rot90(base.images, k=degrees // 90, dims=(-2, -1))
        assert torch.equal(picked.images, expected)
    assert not torch.equal(torch.rot90(base.images, 1, (-2, -1)), base.images)

    # rotate_eval=False leaves validation and test alone.
    for split in ("val", "test"):
        assert rotated.classes(split).names == plain.classes(split).names
        assert torch.equal(rotated.classes(split).images, plain.classes(split).images)


def test_rotate_eval_controls_val_and_test(sample: Callable[..., Omniglot]) -> None:
    plain = sample(rotate=False, rotate_eval=False)
    eval_only = sample(rotate=False, rotate_eval=True)
    assert eval_only.classes("train").names == plain.classes("train").names
    for split in ("val", "test"):
        rotated = eval_only.classes(split)
        base = plain.classes(split)
        assert rotated.num_classes == 4 * base.num_classes
        names_270 = [n for n in rotated.names if n.endswith("/rot270")]
        rows = rotated.select([rotated.names.index(n) for n in names_270])
        assert torch.equal(rows.images, torch.rot90(base.images, k=3, dims=(-2, -1)))


# --------------------------------------------------------------------------- images


def test_images_are_cached_uint8_and_decode_inverted(sample: Callable[..., Omniglot]) -> None:
    omniglot = sample()
    classes = omniglot.classes("test")
    assert classes.images.dtype == torch.uint8
    assert classes.images.shape[1:] == (1, 28, 28)
    # Stored as drawn: white (255) background, dark strokes.
    assert torch.mode(classes.images.flatten()).values.item() == 255

    x = omniglot.image_format.decode(classes.images)
    assert x.dtype == torch.float32 and x.shape == classes.images.shape
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert float(torch.median(x)) == 0.0, "background should decode to ~0"
    assert float(x.mean()) < 0.25
    per_image_max = x.flatten(1).max(dim=1).values
    assert float(per_image_max.min()) > 0.5, "every drawing should have bright strokes"
    assert float((x > 0.9).float().mean()) > 0.01


def test_image_size_sets_the_stored_size(
    sample: Callable[..., Omniglot], sample_copy, tmp_path: Path
) -> None:
    # A few real drawings, so the real sample is decoded only once (at 28x28) per session.
    root = sample_copy(
        tmp_path / "omniglot", {SMALL1: {"Greek": 2, "Latin": 2}, SMALL2: {"Tagalog": 2}}
    )
    at_28 = sample(root=str(root), cache_dir=str(tmp_path / "cache"))
    omniglot = sample(root=str(root), cache_dir=str(tmp_path / "cache"), image_size=32)
    assert omniglot.task.input_shape == (1, 32, 32)
    classes = omniglot.classes("val")
    assert classes.images.shape == (2 * 3, 1, 32, 32)
    assert at_28.classes("val").images.shape == (2 * 3, 1, 28, 28)
    sampler = omniglot.sampler("val", EpisodeSpec(2, 1, 1))
    episodes = sampler.gather(sampler.draw(1, torch.Generator().manual_seed(0)))
    assert episodes.support_x.shape == (1, 2, 1, 32, 32)
    # The larger size is a resize of the same drawings: the ink lands in the same places.
    small = torch.nn.functional.interpolate(
        at_28.image_format.decode(at_28.classes("val").images), size=(32, 32), mode="bilinear"
    )
    big = omniglot.image_format.decode(classes.images)
    assert float((small - big).abs().mean()) < 0.04  # other drawings: ~0.09


def test_sampler_on_the_sample(sample: Callable[..., Omniglot]) -> None:
    omniglot = sample(ways=5, shots=1, queries=15)
    sampler = omniglot.sampler("test", omniglot.episodes)
    assert isinstance(sampler, EpisodeSampler)
    batch = sampler.gather(sampler.draw(3, torch.Generator().manual_seed(0)))
    assert batch.support_x.shape == (3, 5, 1, 28, 28)
    assert batch.query_x.shape == (3, 75, 1, 28, 28)
    assert batch.support_x.dtype == torch.float32
    # Normalised with the statistics of the training split (not of the test split).
    norm = omniglot.normalization
    train = omniglot.image_format.decode(omniglot.classes("train").images)
    assert norm is not None and norm.mean[0] == pytest.approx(float(train.mean()), abs=1e-5)
    assert norm.std[0] == pytest.approx(float(train.std()), abs=1e-4)
    pixels = batch.query_x * norm.std[0] + norm.mean[0]
    assert -1e-5 <= float(pixels.min()) and float(pixels.max()) <= 1.0 + 1e-5

    keys = ("algorithm.train_ways", "algorithm.train_shots", "algorithm.train_queries")
    with pytest.raises(ConfigError, match=r"^algorithm\.train_shots \+ algorithm\.train_queries"):
        omniglot.sampler("test", EpisodeSpec(5, 10, 11), keys)  # 21 > 20 drawings
    with pytest.raises(ConfigError) as info:
        omniglot.sampler("val", EpisodeSpec(100, 1, 1), keys)
    assert info.value.key == "algorithm.train_ways"
    assert str(omniglot.classes("val").num_classes) in str(info.value)


def test_preprocess_matches_the_cached_training_images(
    sample: Callable[..., Omniglot], omniglot_sample_root: Path
) -> None:
    omniglot = sample(val_alphabets=["Korean"])
    classes = omniglot.classes("train")
    character = omniglot_sample_root / SMALL1 / "Greek" / "character01"
    pngs = sorted(character.glob("*.png"))
    index = classes.names.index("Greek/character01")
    assert int(classes.counts[index]) == len(pngs)

    for position in (0, len(pngs) - 1):
        with Image.open(pngs[position]) as image:
            image.load()
        x = omniglot.preprocess(image)
        fmt = omniglot.image_format
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32
        assert torch.equal(x, omniglot.decoder(fmt.encode(image)))
        cached = classes.images[int(classes.offsets[index]) + position]
        assert torch.equal(x, omniglot.decoder(cached))
        # The mode the user's image arrives in does not matter.
        assert torch.equal(omniglot.preprocess(image.convert("RGB")), x)


# --------------------------------------------------------------------------- Vinyals split


@pytest.fixture(scope="module")
def full_layout_root(tmp_path_factory: pytest.TempPathFactory, omniglot_tree) -> Path:
    """Both official folders with all 50 alphabets and official character counts, but only two
    tiny drawings per character."""
    root = tmp_path_factory.mktemp("omniglot-full-layout")
    return omniglot_tree(root, {"images_background": BACKGROUND, "images_evaluation": EVALUATION})


def test_official_character_counts() -> None:
    assert len(BACKGROUND) == 30 and sum(BACKGROUND.values()) == 964
    assert len(EVALUATION) == 20 and sum(EVALUATION.values()) == 659


def test_vinyals_split_is_1028_172_423(full_layout_root: Path, data_cache_dir: Path) -> None:
    omniglot = Omniglot(
        str(full_layout_root),
        split="vinyals",
        rotate=False,
        rotate_eval=False,
        cache_dir=str(data_cache_dir),
    )
    splits = {split: omniglot.classes(split) for split in SPLITS}
    assert [splits[s].num_classes for s in SPLITS] == [1028, 172, 423]
    names = [set(splits[s].names) for s in SPLITS]
    assert not names[0] & names[1] and not names[0] & names[2] and not names[1] & names[2]
    assert sum(len(n) for n in names) == 1623
    assert set(splits["train"].counts.tolist()) == {2}
    # Gurmukhi is cut between training (41 characters) and test (4).
    gurmukhi = {s: sum(alphabet_of(n) == "Gurmukhi" for n in splits[s].names) for s in SPLITS}
    assert gurmukhi == {"train": 41, "val": 0, "test": 4}
    assert alphabets(splits["val"]) == {
        "Armenian",
        "Bengali",
        "Early_Aramaic",
        "Hebrew",
        "Mkhedruli_(Georgian)",
    }

    rotated = Omniglot(
        str(full_layout_root),
        split="vinyals",
        rotate=True,
        rotate_eval=True,
        cache_dir=str(data_cache_dir),
    )
    assert [rotated.classes(s).num_classes for s in SPLITS] == [4112, 688, 1692]


def test_lake_split_on_the_full_layout(full_layout_root: Path, data_cache_dir: Path) -> None:
    omniglot = Omniglot(str(full_layout_root), rotate=False, cache_dir=str(data_cache_dir))
    splits = {split: omniglot.classes(split) for split in SPLITS}
    held_out = alphabets(splits["val"])
    assert len(held_out) == 5 and held_out <= set(BACKGROUND)
    held_out_characters = sum(BACKGROUND[a] for a in held_out)
    assert splits["val"].num_classes == held_out_characters
    assert splits["train"].num_classes == 964 - held_out_characters
    assert splits["test"].num_classes == 659
    assert alphabets(splits["test"]) == set(EVALUATION)
    assert alphabets(splits["train"]) == set(BACKGROUND) - held_out


def test_vinyals_split_on_the_sample_is_a_config_error(sample: Callable[..., Omniglot]) -> None:
    omniglot = sample(split="vinyals")
    with pytest.raises(ConfigError) as info:
        omniglot.classes("train")
    assert info.value.key == "dataset.split"
    assert "vinyals" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- errors


def test_missing_folder_without_download(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    omniglot = Omniglot(str(root), download=False, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        omniglot.classes("train")
    message = str(info.value)
    assert "\n" not in message
    assert str(root / "images_background") in message
    assert "dataset.download" in message
    assert not root.exists(), "a failed lookup must not create the data directory"


def test_missing_unofficial_folder_names_it(tmp_path: Path) -> None:
    omniglot = Omniglot(
        str(tmp_path), download=True, background="my_alphabets", cache_dir=str(tmp_path / "c")
    )
    with pytest.raises(DataError) as info:
        omniglot.classes("train")
    message = str(info.value)
    assert str(tmp_path / "my_alphabets") in message and "images_background" in message
    assert "\n" not in message


@pytest.mark.parametrize("contents", ["empty", "no-pngs", "no-characters"])
def test_folder_without_drawings_is_a_data_error(
    tmp_path: Path, omniglot_tree, contents: str
) -> None:
    omniglot_tree(tmp_path, {"ev": {"Tagalog": 2}})
    folder = tmp_path / "bg"
    folder.mkdir()
    if contents == "no-pngs":
        (folder / "Greek" / "character01").mkdir(parents=True)
        (folder / "Greek" / "character01" / "notes.txt").write_text("not a drawing")
        (folder / "Greek" / "character02").mkdir()
    elif contents == "no-characters":
        (folder / "Greek").mkdir()
        (folder / "readme.png").write_bytes(b"")
    omniglot = Omniglot(
        str(tmp_path),
        background="bg",
        evaluation="ev",
        val_alphabets=1,
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(DataError) as info:
        omniglot.classes("train")
    assert str(folder) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_png_names_the_file(tmp_path: Path, sample_copy, damage: str) -> None:
    root = sample_copy(
        tmp_path / "omniglot",
        {SMALL1: {"Greek": 2, "Latin": 2}, SMALL2: {"Tagalog": 2}},
    )
    bad = root / SMALL1 / "Latin" / "character02"
    bad = sorted(bad.glob("*.png"))[1]
    data = bad.read_bytes()
    bad.write_bytes(
        {
            "garbage": b"\x89PNG but not really" * 20,
            "truncated": data[: len(data) // 2],
            "empty": b"",
        }[damage]
    )
    omniglot = Omniglot(
        str(root),
        background=SMALL1,
        evaluation=SMALL2,
        val_alphabets=1,
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(DataError) as info:
        omniglot.classes("train")
    assert str(bad) in str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- construction


def test_construction_reads_nothing(tmp_path: Path) -> None:
    root = tmp_path / "not" / "there"
    omniglot = Omniglot(
        str(root), download=True, ways=20, shots=5, queries=3, cache_dir=str(tmp_path / "c")
    )
    assert not root.exists() and not (tmp_path / "c").exists()
    assert omniglot.task == TaskSpec("classification", (1, 28, 28), 20)
    assert omniglot.task.output_size == omniglot.episodes.ways == 20
    assert omniglot.episodes == EpisodeSpec(ways=20, shots=5, queries=3)

    offline = Omniglot(str(root), download=False, cache_dir=str(tmp_path / "c"))
    assert offline.task == TaskSpec("classification", (1, 28, 28), 5)
    with pytest.raises(DataError):
        offline.classes("train")
    with pytest.raises(DataError):
        offline.sampler("train", offline.episodes)


@pytest.mark.parametrize(
    ("options", "key"),
    [({"split": "random"}, "dataset.split"), ({"image_size": 0}, "dataset.image_size")],
)
def test_invalid_options_fail_at_construction(options: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Omniglot("/nonexistent", **options)
    assert info.value.key == key
