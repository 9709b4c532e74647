"""The click commands, by group: data (synth, splits, check, merge), stages (extract, finetune, train, eval,
report, compare), serving (inspect, predict, live, export) and bench. Thin: parse, call the library, print. Only
`ucfpipe.cli` imports this package; the library never does."""
