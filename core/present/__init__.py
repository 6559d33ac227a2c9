"""What a room reads: the sentences about a run, the charts, and the self-contained HTML report."""
