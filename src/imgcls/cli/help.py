"""`python train.py --help`: Hydra's help page, listing only the options a user can pick, in about a second.

Hydra's own `--help` lists every folder under configs/ as a group and every file in it as an option (so base
files such as `model/_common` and folders no default selects, such as `data/corrections`, look like choices),
leaves out `hydra/launcher`, and spends ~2 s building one config repository per folder to do so.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

# Hydra's groups a user picks from the command line (hydra/launcher=local|slurm, see configs/hydra/launcher).
HYDRA_GROUPS = ("hydra/launcher",)


def config_groups(cfg: DictConfig) -> str:
    """`group: option, ...` for each group the composed config selects from (`hydra.runtime.choices`), plus
    `HYDRA_GROUPS`; files starting with `_` are bases other options build on, not choices."""
    loader = GlobalHydra.instance().config_loader()
    choices = cfg.hydra.runtime.choices
    ours = sorted(g for g in choices if g != "hydra" and not g.startswith("hydra/"))
    groups = ours + [g for g in HYDRA_GROUPS if g in choices]
    lines = []
    for group in groups:
        options = [o for o in sorted(loader.get_group_options(group)) if not o.startswith("_")]
        if options:
            now = choices[group]
            lines.append(f"{group}: {', '.join(options)}" + (f"  (now: {now})" if now is not None else ""))
    return "\n".join(lines) + "\n"


def print_help(config_dir: str, config_name: str, overrides: Sequence[str]) -> None:
    """The page `hydra.help.template` describes (configs/hydra/default.yaml), for the config these `overrides`
    compose."""
    with initialize_config_dir(config_dir=config_dir, version_base="1.3", job_name=config_name):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        groups = config_groups(cfg)
    template = string.Template(cfg.hydra.help.template)
    job = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
    print(template.safe_substitute(APP_CONFIG_GROUPS=groups, CONFIG=job, FLAGS_HELP="", HYDRA_CONFIG_GROUPS=""))
