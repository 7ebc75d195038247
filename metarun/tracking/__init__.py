"""Where a run reports: the console (rich or plain), metrics.jsonl, W&B or nothing."""
