"""metarun's Hydra config tree. It lives at the top of the repository for people editing it and
ships inside the wheel as ``metarun.configs``; ``metarun.cli`` finds it with importlib."""
