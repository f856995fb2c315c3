# Targets for services (see Makefile).
