"""The report layer: result files in, rows, comparisons, run health, power and findings out.

Everything that summarises a results directory lives here, so the CLI tables (`pefthub bench`,
`health`, `findings`, `compare`, `plan`) and the site report the same numbers from one rule per
concern (docs/architecture.md, "Where each rule lives").
"""
