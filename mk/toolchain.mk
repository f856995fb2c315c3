# Targets for toolchain (see Makefile).
