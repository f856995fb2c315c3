# Targets for the end-to-end run and infra benchmarks (see Makefile).
