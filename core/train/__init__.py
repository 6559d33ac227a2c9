"""Training: a run's settings (config), the loop and its steps (mechanism), and the session that plans
the stages within a time limit (policy); time estimates, and the background jobs the dashboard starts."""
