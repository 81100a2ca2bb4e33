"""`python -m imgcls.shards [data=...] output=<folder or s3://bucket/prefix>`: streamed shards (configs/shards.yaml)."""

import imgcls  # noqa: F401  (offline defaults)
from imgcls.cli.entry import hydra_entry

main = hydra_entry("shards", "imgcls.tasks.shards:shards")

if __name__ == "__main__":
    main()
