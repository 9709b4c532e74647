"""The search for the best stage-two model (`ucfpipe tune`): a layer above stage_two, like serving.

space (the TOML search space) -> study (Optuna storage, create-or-load, tags) -> objective (one trial = one real
`train` run) -> loop (exactly K finished trials across processes) -> best (best.toml, retrain, eval once) ->
tune (the orchestration and the files of a tune directory). Optuna is imported lazily, inside functions."""
