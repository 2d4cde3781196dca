"""Side-by-side benchmarks of normref against torch and jax, reported as ratios."""
