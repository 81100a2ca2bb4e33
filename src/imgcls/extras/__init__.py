"""Extras around the core: the loader bench, the mask competition (layout, submission template, generator),
synthetic photos, the multirun summary. The core data and model packages never import these; configs name them by
`_target_`, and the predict task uses the competition's submission template."""
