"""Small helpers shared by the entry points, strategies and data modules."""
