"""Domain logic: what happens to challenges, instances, workers and settings."""
