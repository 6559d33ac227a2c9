"""The run store: an SQLite database of runs and their live metrics, one folder per run with its files
and its model card."""
