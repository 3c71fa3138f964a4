"""NoC evaluation (the RITM protocol used by SimpleClick and AdaptiveClick): loop, metrics, datasets, plots."""
