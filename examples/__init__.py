"""Experiments from the normalization literature, reproduced with normref (runnable scripts)."""
