"""Pipeline stages: one module each, one entry function from input artifact to output artifact."""
