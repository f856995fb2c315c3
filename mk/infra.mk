# Targets for infra (see Makefile).
