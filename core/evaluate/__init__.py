"""How good a run is: test metrics, intervals and do-nothing baselines, the owner's pass-or-inspect
decision, and whether more photos would help (the learning curve, with its sentence in words)."""
