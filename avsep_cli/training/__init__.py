"""Training code, kept apart from the models: the shared trainer, its config, and one system per method."""
