"""`python -m imgcls.eda [data=...]`: an EDA report of a dataset (configs/eda.yaml)."""

import imgcls  # noqa: F401  (offline defaults)
from imgcls.cli.entry import hydra_entry

main = hydra_entry("eda", "imgcls.tasks.eda:eda")

if __name__ == "__main__":
    main()
