"""The error users fix by changing a setting, not code: shown as one line naming the key and the fix."""


class ConfigError(ValueError):
    """A wrong config value or input. The message names the key (or file) and what to do; no traceback is
    shown for it on the command line (it is still in the run's log file)."""
