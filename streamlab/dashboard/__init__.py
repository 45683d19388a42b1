"""Live browser dashboard of a running pipeline."""
