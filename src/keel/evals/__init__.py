"""Evaluation: datasets, evaluators, the runner, run comparison and CI gates."""
