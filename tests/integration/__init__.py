"""Integration tests on real databases: threads, worker processes, faults, restarts,
migrations, the Worker end to end and the benchmark smoke run."""
