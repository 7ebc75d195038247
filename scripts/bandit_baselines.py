"""RL²'s baseline tables beside metarun's: k-armed Bernoulli bandits (Duan et al. 2016, Table 1)
and random tabular MDPs (Table 2), every baseline on the same fixed test trials.

The trials are those a run tests on: drawn from ``--seed + 1`` (``eval.seed + 1`` in
``metarun/run.py``). Each cell is the mean total return per trial with its 95% CI; bandit rows
add the mean pseudo-regret (the best arm's expected reward times the pulls, minus the chosen
arms'). The paper's values are the ones the issue quotes (Random 5.0 / 49.9, Gittins 6.6 /
78.3, UCB1 6.7 / 78.0; MDPs at n = 10: Random 100.1, PSRL 138.1); the Thompson and greedy rows
are printed without one, since no copy of the paper could be read to check them. For short
trials (``EXACT_PULLS``) it adds the exact expected returns of the Bayes-optimal policy, of
Gittins-index play and of greedy play (``metarun.envs.bayes_bandit``).

Run from the repository root::

    python scripts/bandit_baselines.py --trials 1000 --arms 5 --pulls 10,100
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from metarun.envs import BernoulliBandits, RandomMDPs
from metarun.envs.bandit_policies import UCB1, Gittins, Greedy, Thompson
from metarun.envs.bayes_bandit import bayes_optimal_return, index_policy_return
from metarun.envs.evaluate import FixedTrials, TrialResult, evaluate_policy
from metarun.envs.gittins import gittins_indices
from metarun.envs.policies import RandomPolicy, TrialPolicy
from metarun.envs.psrl import PSRL

PAPER_BANDITS = {  # k = 5 arms: {policy: {pulls: value}}
    "random": {10: 5.0, 100: 49.9},
    "gittins": {10: 6.6, 100: 78.3},
    "ucb1 (Beta prior, scale 0.2)": {10: 6.7, 100: 78.0},
}
PAPER_MDPS = {"random": {10: 100.1}, "psrl": {10: 138.1}}

BANDIT_POLICIES: dict[str, Callable[[], TrialPolicy]] = {
    "random": RandomPolicy,
    "gittins": Gittins,
    "ucb1 (Beta prior, scale 0.2)": lambda: UCB1(scale=0.2, prior=(1.0, 1.0)),
    "ucb1 (Auer et al.)": UCB1,
    "thompson": Thompson,
    "greedy": Greedy,
}
MDP_POLICIES: dict[str, Callable[[], TrialPolicy]] = {"random": RandomPolicy, "psrl": PSRL}
EXACT_PULLS = 12
"""Trials up to this long also get their exact Bayes-optimal and Gittins-play expectations."""


def table_lookup(index: torch.Tensor) -> Callable[[int, int, int], float]:
    rows = index.tolist()
    return lambda left, s, f: rows[left][s][f]


def cell(result: TrialResult) -> str:
    mean, ci95 = result.mean_ci95
    return f"{mean:6.2f} ± {ci95:4.2f}"


def paper(value: float | None) -> str:
    return "     —" if value is None else f"{value:6.1f}"


def bandit_table(arms: int, pulls: list[int], trials: int, seed: int, device: str) -> list[str]:
    sets = {n: FixedTrials(BernoulliBandits(arms, n), trials, seed + 1) for n in pulls}
    header = f"{'policy':30s}" + "".join(
        f" | {f'n={n} ours':>13s}  {'paper':>6s}  {'regret':>6s}" for n in pulls
    )
    lines = [f"Bernoulli bandits, k={arms} arms, {trials} test trials", header]
    for name, make in BANDIT_POLICIES.items():
        row, started = f"{name:30s}", time.perf_counter()
        for n in pulls:
            result = evaluate_policy(make, sets[n], device=device)
            value = PAPER_BANDITS.get(name, {}).get(n) if arms == 5 else None
            regret = result.regret.mean().item()
            row += f" | {cell(result):>13s}  {paper(value)}  {regret:6.2f}"
        lines.append(f"{row}   ({time.perf_counter() - started:.1f} s)")
    for n in (n for n in pulls if n <= EXACT_PULLS):
        gittins = index_policy_return(arms, n, table_lookup(gittins_indices(n)))
        greedy = index_policy_return(arms, n, lambda r, s, f: (s + 1) / (s + f + 2))
        lines.append(
            f"exact expectations, n={n}: Bayes-optimal {bayes_optimal_return(arms, n):.3f}, "
            f"Gittins play {gittins:.3f}, greedy {greedy:.3f} (no sampling noise)"
        )
    return lines


def mdp_table(trials: int, seed: int, device: str, episodes: int = 10) -> list[str]:
    family = RandomMDPs(episodes=episodes)
    fixed = FixedTrials(family, trials, seed + 1)
    lines = [
        f"Random MDPs, 10 states, 5 actions, horizon 10, n={episodes} episodes, {trials} trials",
        f"{'policy':30s} | {'ours':>13s}  {'paper':>6s}",
    ]
    for name, make in MDP_POLICIES.items():
        started = time.perf_counter()
        result = evaluate_policy(make, fixed, device=device)
        value = PAPER_MDPS[name].get(episodes)
        took = time.perf_counter() - started
        lines.append(f"{name:30s} | {cell(result):>13s}  {paper(value)}   ({took:.1f} s)")
    optimal = family.make(fixed.plan, device).optimal_return().double().cpu()
    mean, ci95 = optimal.mean().item(), 1.96 * optimal.std().item() / len(optimal) ** 0.5
    lines.append(f"{'optimal (knows the MDP)':30s} | {mean:6.2f} ± {ci95:4.2f}  {paper(None)}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--arms", type=int, default=5)
    parser.add_argument("--pulls", default="10,100", help="comma-separated trial lengths")
    parser.add_argument("--mdp-trials", type=int, default=None, help="default: --trials")
    parser.add_argument("--seed", type=int, default=0, help="eval.seed; trials from seed + 1")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    pulls = [int(n) for n in args.pulls.split(",") if n]
    with torch.no_grad():  # a context, not a global switch: tests call main() in process
        lines = bandit_table(args.arms, pulls, args.trials, args.seed, args.device)
        lines += [""] + mdp_table(args.mdp_trials or args.trials, args.seed, args.device)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
