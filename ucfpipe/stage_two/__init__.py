"""Stage two: cached features -> a trained, evaluated classifier (batches, train, runs, ensembles,
evaluate, metrics, plots, report, compare). Never imports stage_one."""
