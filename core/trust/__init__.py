"""When not to believe the model: photos unlike the training photos (familiar), photos whose label looks
wrong (audit), and what drove a prediction (explain)."""
