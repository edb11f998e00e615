"""Tables, study tables, the cost table, Markdown printing, sample grids."""
