"""The backbone table, the per-frame feature extractor built from it, the sequence classifier, the training
callback both stages share, and data parallel placement. Imports only core."""
