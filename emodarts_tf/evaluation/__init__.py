"""Retraining a genotype, speaker-independent evaluation (UA, WA, F1) and reports."""
