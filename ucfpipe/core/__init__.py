"""Generic helpers every layer may use: errors and exit codes, files (atomic writes), locks, interrupts,
quiet start, random state, provenance. Imports nothing else of ucfpipe."""
