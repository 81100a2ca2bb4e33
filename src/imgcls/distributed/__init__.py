"""What DDP needs beyond Lightning's defaults: every prediction row written once, unpadded gathers, and under
ddp_spawn the fit's progress carried back to the main process and the spawned ranks' logs kept."""
