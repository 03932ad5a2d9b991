"""Input pipelines: sources, host transforms and Grain loaders."""
