"""What a room reads: every sentence a stakeholder reads (words), the charts, and the self-contained
HTML report."""
