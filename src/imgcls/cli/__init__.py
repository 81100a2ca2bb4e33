"""The command line around the tasks: one Hydra entry point factory (`hydra_entry`), the wrapper every task runs in
(one-line errors, W&B closed, the run dir printed), the error translation and a fast `--help`."""
