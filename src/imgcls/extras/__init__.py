"""Extras around the core: the loader bench, the mask competition (layout, generator), synthetic photos, the
multirun summary. Nothing in the core path imports these; configs name them by `_target_`."""
