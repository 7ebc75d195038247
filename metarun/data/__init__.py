"""Data: the ``Episode`` types and sampler every learner consumes, and one module per data set.

A data set object exposes ``task`` (a ``TaskSpec``), ``episodes`` (the evaluation
``EpisodeSpec``), ``sampler(split, spec)`` and ``preprocess(raw)``; constructing one reads no
files, so a trained learner can be rebuilt from its config without the data.
"""
