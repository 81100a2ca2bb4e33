"""What DDP needs beyond Lightning's defaults: every prediction row written once, unpadded gathers, and the fit's
progress carried back to the main process under ddp_spawn."""
