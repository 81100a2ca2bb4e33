"""The data-feeding benchmark: loader rates per pipeline and worker count vs the model's own rate."""
