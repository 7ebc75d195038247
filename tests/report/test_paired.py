"""The paired statistics against SciPy, the reference the package does not depend on, and the
pairing rules: members scored on other episodes are never paired, and the report says why."""

from __future__ import annotations

import csv
import io
import math
import random
import warnings

import pytest

from metarun.report.cli import main
from metarun.report.comparisons import Side, compare
from metarun.report.members import ReportError, collect_runs, collect_sweep
from metarun.report.paired import ALL_ZERO, ONE_EPISODE, average_ranks, paired, t_two_sided_p
from metarun.report.stats import t_quantile_975
from metarun.report.tables import build_report
from metarun.report.terminal import show

scipy_stats = pytest.importorskip("scipy.stats")

# Hand-made scores with zero differences (episodes 0, 4, 9), tied absolute differences (0.2 four
# times, 0.1 twice, 0.4 twice) and both signs; all exactly representable after rounding.
A = [0.8, 0.6, 0.9, 0.7, 0.5, 1.0, 0.4, 0.9, 0.6, 0.7, 0.8, 0.3]
B = [0.8, 0.4, 0.7, 0.9, 0.5, 0.6, 0.6, 0.8, 0.2, 0.7, 0.6, 0.4]


def reference(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy warns that small samples make approx rough
        t = scipy_stats.ttest_rel(a, b)
        d = [round(x - y, 12) for x, y in zip(a, b, strict=True)]
        w = scipy_stats.wilcoxon(d, zero_method="wilcox", correction=False, method="approx")
    return t, w


def test_the_hand_made_table_agrees_with_scipy() -> None:
    mine = paired(A, B)
    t, w = reference(A, B)
    diffs = [a - b for a, b in zip(A, B, strict=True)]
    assert mine.n == 12 and mine.mean == pytest.approx(sum(diffs) / 12, abs=1e-15)
    std = math.sqrt(sum((d - mine.mean) ** 2 for d in diffs) / 11)
    assert mine.ci95 == pytest.approx(t_quantile_975(11) * std / math.sqrt(12), rel=1e-12)
    assert mine.t == pytest.approx(t.statistic, rel=1e-12)
    assert mine.t_p == pytest.approx(t.pvalue, rel=1e-10)
    assert mine.wilcoxon == w.statistic  # min(W+, W-) with average ranks
    assert mine.wilcoxon_p == pytest.approx(w.pvalue, rel=1e-12)
    assert (mine.nonzero, mine.higher, mine.tied, mine.lower) == (9, 6, 3, 3)


def test_average_ranks_share_ties() -> None:
    assert average_ranks([0.2, 0.1, 0.2, 0.4, 0.2]) == ([3.0, 1.0, 3.0, 5.0, 3.0], [1, 3, 1])


@pytest.mark.parametrize("n", [2, 5, 30, 600])
def test_t_and_wilcoxon_p_values_agree_with_scipy_over_sizes(n: int) -> None:
    rng = random.Random(n)
    for shift in (0.0, 0.02, 0.1, 0.5):  # from p near 1 to p far below 1e-100 at n = 600
        a = [rng.randint(0, 75) / 75 for _ in range(n)]
        b = [min(1.0, max(0.0, x - shift + rng.randint(-8, 8) / 75)) for x in a]
        if all(round(x - y, 12) == 0 for x, y in zip(a, b, strict=True)):
            continue
        mine, (t, w) = paired(a, b), reference(a, b)
        assert mine.t == pytest.approx(t.statistic, rel=1e-9)
        assert mine.t_p == pytest.approx(t.pvalue, rel=1e-9, abs=1e-300)
        assert mine.wilcoxon == pytest.approx(w.statistic, abs=1e-9)
        assert mine.wilcoxon_p == pytest.approx(w.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("df", [1, 2, 4, 29, 599, 5000])
def test_t_tails_from_near_one_to_tiny(df: int) -> None:
    for t in (0.01, 0.7, 2.0, 5.0, 12.0, 40.0):
        assert t_two_sided_p(t, df) == pytest.approx(2 * scipy_stats.t.sf(t, df), rel=1e-9)
    assert t_two_sided_p(40.0, 599) < 1e-150 and t_two_sided_p(math.inf, df) == 0.0


def test_edge_cases() -> None:
    same = paired([0.5, 0.7, 0.9], [0.5, 0.7, 0.9])
    assert (same.mean, same.t_p, same.wilcoxon_p, same.note) == (0.0, 1.0, 1.0, ALL_ZERO)
    assert (same.higher, same.tied, same.lower) == (0, 3, 0)
    one = paired([0.9], [0.7])
    assert one.mean == pytest.approx(0.2) and one.note == ONE_EPISODE
    assert (one.ci95, one.t, one.t_p, one.wilcoxon, one.wilcoxon_p) == (None,) * 5
    constant = paired([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])  # float noise aside, all +0.1
    assert constant.higher == 3 and constant.wilcoxon == 0.0
    with pytest.raises(ValueError, match="equal lengths"):
        paired([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="no episodes"):
        paired([], [])


def scores(seed: int, p: float, n: int = 40) -> list[float]:
    rng = random.Random(seed)
    return [100 * sum(rng.random() < p for _ in range(75)) / 75 for _ in range(n)]  # percent


def test_members_tested_on_other_episodes_are_not_paired(tmp_path, member_writer) -> None:
    member_writer(tmp_path, 0, ["algorithm=protonet"], test=(90.0, 1.0), episodes=scores(0, 0.9))
    member_writer(
        tmp_path, 1, ["algorithm=maml"], test=(80.0, 1.0), episodes=scores(1, 0.8), eval_seed=1
    )
    member_writer(tmp_path, 2, ["algorithm=anil"], test=(85.0, 1.0))  # before episodes.csv
    report = build_report(collect_sweep(tmp_path), sort="member")
    first, second, third = report.comparisons
    assert first.pairs == () and first.across is None
    assert first.refused == (
        "algorithm=protonet and algorithm=maml were tested on different episodes "
        "(40 of 40 ids differ; eval.seed 0 vs 1)",
    )
    assert second.refused == (
        "algorithm=anil has no episodes.csv (run before metarun recorded episodes)",
    )
    assert third.pairs == () and len(third.refused) == 1
    side = Side("x", tuple(report.members[:1]), "acc")
    other = Side("y", tuple(report.members[:1]), "acc")
    assert len(compare(side, other).pairs) == 1  # the same episodes pair


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_end_to_end_on_a_sweep_with_episodes(tmp_path, member_writer, capsys) -> None:
    sweep = tmp_path / "sweep"
    number = 0
    per_seed = {}
    for algorithm, p, inference in (("protonet", 0.9, "transductive"), ("maml", 0.85, None)):
        for seed in (0, 1, 2):
            own = scores(10 * seed + number, p)
            per_seed[algorithm, seed] = own
            member_writer(
                sweep,
                number,
                [f"algorithm={algorithm}", f"seed={seed}"],
                test=(sum(own) / len(own), 1.0),
                curve=[(2, 50.0)],
                inference=inference,
                episodes=own,
            )
            number += 1
    main([str(sweep)])
    shown = capsys.readouterr().out
    assert "## Paired comparisons" in shown
    assert "algorithm=protonet (transductive) vs algorithm=maml (unknown)" in shown
    rows = read_csv(sweep / "comparisons.csv")
    assert [r["seed"] for r in rows] == ["0", "1", "2", "all"]
    means = []
    for row in rows[:3]:
        a, b = per_seed["protonet", int(row["seed"])], per_seed["maml", int(row["seed"])]
        t, w = reference(a, b)
        means.append(sum(a) / 40 - sum(b) / 40)
        assert float(row["mean_diff"]) == pytest.approx(means[-1], rel=1e-12)
        assert float(row["t_p"]) == pytest.approx(t.pvalue, rel=1e-9)
        assert float(row["wilcoxon"]) == w.statistic
        assert float(row["wilcoxon_p"]) == pytest.approx(w.pvalue, rel=1e-9)
        assert int(row["a_won"]) + int(row["tied"]) + int(row["a_lost"]) == 40
    across = rows[3]
    std = math.sqrt(sum((m - sum(means) / 3) ** 2 for m in means) / 2)
    assert float(across["mean_diff"]) == pytest.approx(sum(means) / 3, rel=1e-12)
    assert float(across["ci95"]) == pytest.approx(4.3027 * std / math.sqrt(3), rel=1e-9)
    assert (across["seeds"], across["episodes"]) == ("3", "120")
    text = (sweep / "report.md").read_text()
    assert "| inference " in text and "![paired_acc](paired_acc.png)" in text
    assert (sweep / "paired_acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_several_run_directories_are_compared(tmp_path, member_writer, capsys) -> None:
    runs = tmp_path / "runs"
    a = member_writer(
        runs / "a", 0, ["algorithm=protonet"], test=(90.0, 1.0), episodes=scores(0, 0.9)
    )
    b = member_writer(runs / "b", 0, ["algorithm=maml"], test=(80.0, 1.0), episodes=scores(1, 0.8))
    main([str(a), str(b)])
    assert capsys.readouterr().out.endswith(f"to {runs}\n")
    (row, across) = read_csv(runs / "comparisons.csv")
    assert (row["a"], row["b"], row["episodes"], row["seed"]) == ("a/0", "b/0", "40", "")
    assert across["note"] == "one seed: the seed variance is unknown"
    assert "one seed paired, so the seed variance is unknown" in (runs / "report.md").read_text()
    with pytest.raises(ReportError, match="is a sweep"):
        collect_runs([a, runs / "a"])
    with pytest.raises(ReportError, match="given twice"):
        collect_runs([a, a])


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_table_per_comparison(tmp_path, member_writer) -> None:
    for number, (algorithm, p) in enumerate((("protonet", 0.9), ("maml", 0.8))):
        own = scores(number, p)
        test, keys = (sum(own) / 40, 1.0), [f"algorithm={algorithm}"]
        member_writer(tmp_path, number, keys, test=test, episodes=own, inference="inductive")
    stream = Terminal()
    show(build_report(collect_sweep(tmp_path)), stream)
    text = stream.getvalue()
    assert "Paired comparisons" in text and "A - B acc" in text
    assert "algorithm=protonet (inductive) vs algorithm=maml (inductive)" in text
    assert "one seed paired, so the seed variance is unknown" in " ".join(text.split())


def test_an_episodes_file_that_cannot_be_trusted_gives_a_reason(tmp_path, member_writer) -> None:
    run = member_writer(tmp_path, 0, ["seed=0"], test=(50.0, 1.0), episodes=[50.0, 60.0, 70.0])
    good = (run / "episodes.csv").read_text()
    cases = {
        good.replace(",60.0,", ",nan,"): "scored nan on episode 1",
        good.replace(",60.0,", ",160.0,"): "accuracies outside [0, 100]",
        good.replace(",60.0,", ",x,"): "not a number",
        good.replace("\n1,", "\n7,"): "not 0, 1, 2, ... in order",
        good.replace("episode_id", "id"): "without the column episode_id",
        good.splitlines()[0] + "\n": "without episodes",
    }
    for text, why in cases.items():
        (run / "episodes.csv").write_text(text)
        (member,) = collect_sweep(tmp_path).members
        assert member.episodes is None and why in member.episodes_missing, why
    (run / "episodes.csv").write_text(good)
    (member,) = collect_sweep(tmp_path).members
    assert member.episodes.scores == (50.0, 60.0, 70.0) and member.episodes.eval_seeds == ("0",)
