"""Ranking of unlabeled images: uncertainty, diversity, sequence-aware sampling, baselines."""
