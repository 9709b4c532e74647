"""The backbone table, the per-frame feature extractor built from it, the sequence classifier, and data
parallel placement. Imports only core."""
