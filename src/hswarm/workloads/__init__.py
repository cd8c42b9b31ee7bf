"""Ready-made encrypted workloads: programs with their data and a correctness check."""
