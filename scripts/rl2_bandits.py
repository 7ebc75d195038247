"""RL² (Duan et al. 2016) trained by PPO on k-armed Bernoulli bandits, then scored on the same
fixed test trials as ``scripts/bandit_baselines.py``, beside the paper's RL² value.

Each update plays ``--trials-per-update`` fresh training trials, drawn from a generator seeded
with ``--seed`` (the run's training plans), and runs the PPO epochs on them
(``RL2.train_step``); the learning rate anneals linearly to 0 over the updates (CleanRL's
``anneal_lr``). Every ``--every`` updates the policy is scored on fixed validation trials (from
``--eval-seed``); at the end on the test trials (from ``--eval-seed + 1``, ``eval.seed + 1`` in
``metarun/run.py``, the baselines' trials). The paper's values are those the issue quotes (k=5:
6.7 at n=10, 78.7 at n=100), unchecked against the paper, which could not be read here.

Run from the repository root::

    OMP_NUM_THREADS=1 python scripts/rl2_bandits.py --updates 600 --arms 5 --pulls 10
"""

from __future__ import annotations

import argparse
import time

import torch

from metarun.algorithms.rl2 import RL2
from metarun.envs import BernoulliBandits
from metarun.envs.evaluate import FixedTrials, evaluate_policy
from metarun.envs.policies import RandomPolicy

PAPER_RL2 = {(5, 10): 6.7, (5, 100): 78.7}  # (arms, pulls): mean return, Duan et al. Table 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--arms", type=int, default=5)
    parser.add_argument("--pulls", type=int, default=10)
    parser.add_argument("--trials-per-update", type=int, default=500)
    parser.add_argument("--hidden", type=int, default=256, help="GRU units (the paper's 256)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam's, annealed linearly to 0")
    parser.add_argument("--seed", type=int, default=0, help="initial weights, training plans")
    parser.add_argument("--eval-seed", type=int, default=0, help="eval.seed; test from + 1")
    parser.add_argument("--val-trials", type=int, default=500)
    parser.add_argument("--test-trials", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50, help="validate every N updates")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    family = BernoulliBandits(args.arms, args.pulls)
    torch.manual_seed(args.seed)
    learner = RL2.for_family(family, hidden_size=args.hidden).to(args.device)
    optimizer = torch.optim.Adam(learner.parameters(), lr=args.lr, eps=1e-5)
    updates = args.updates
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: 1.0 - done / updates)
    plans = torch.Generator().manual_seed(args.seed)
    validation = FixedTrials(family, args.val_trials, args.eval_seed)
    test = FixedTrials(family, args.test_trials, args.eval_seed + 1)
    print(
        f"RL² on {args.arms}-armed bandits, {args.pulls} pulls: GRU {args.hidden}, {updates} "
        f"updates of {args.trials_per_update} trials, Adam lr {args.lr} annealed to 0"
    )
    started = time.perf_counter()
    for update in range(1, updates + 1):
        env = family.make(family.draw(args.trials_per_update, plans), args.device)
        metrics = learner.train_step(env, optimizer)
        schedule.step()
        if update % args.every == 0 or update == updates:
            val = evaluate_policy(learner.policy, validation, device=args.device)
            print(
                f"update {update:4d}  train return {metrics['return']:.2f}  "
                f"entropy {metrics['entropy']:.2f}  approx_kl {metrics['approx_kl']:.4f}  "
                f"{val.line('val')}  ({time.perf_counter() - started:.0f} s)"
            )
    with torch.no_grad():
        result = evaluate_policy(learner.policy, test, device=args.device)
        random = evaluate_policy(RandomPolicy, test, device=args.device)
    paper = PAPER_RL2.get((args.arms, args.pulls))
    paper_text = "—" if paper is None else f"{paper}"
    print(f"{result.line('test')}  paper RL² {paper_text}  ({random.line('random')})")
    print(f"mean pseudo-regret {result.regret.mean().item():.2f}")


if __name__ == "__main__":
    main()
