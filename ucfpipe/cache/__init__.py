"""The feature cache on disk: HDF5 shards and their manifest, written whole and read back verified. Imports only core."""
