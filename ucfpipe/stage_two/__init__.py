"""Stage two: cached features -> a trained, evaluated classifier (batches, train with clip_plan, run_setup and
keeper, runs, ensembles, evaluate, metrics, order_blind, plots, setups, report and its page, compare). Never
imports stage_one."""
