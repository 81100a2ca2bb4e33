"""`python -m imgcls.bench [data=...] [bench.num_workers=[0,2]] [bench.baselines=true]` (configs/bench.yaml)."""

import imgcls  # noqa: F401  (offline defaults)
from imgcls.cli.entry import hydra_entry

main = hydra_entry("bench", "imgcls.tasks.bench:bench")

if __name__ == "__main__":
    main()
