"""Meta-training: the loop, atomic checkpoints, and evaluation with 95% confidence intervals."""
