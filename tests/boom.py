"""A genuine bug, not a setting: `+callbacks.boom._target_=boom.Boom` (tests/ on PYTHONPATH) raises RuntimeError
while Hydra builds it (`+callbacks.boom.when=init`, the default) or when training starts (`when=fit`)."""

from lightning.pytorch.callbacks import Callback


class Boom(Callback):
    def __init__(self, when: str = "init") -> None:
        self.when = when
        if when == "init":
            raise RuntimeError("boom while building the callback")

    def setup(self, trainer, pl_module, stage: str) -> None:
        raise RuntimeError("boom when training starts")
