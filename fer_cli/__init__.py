"""The `fer` command: the one top floor that may reach fer_core, components and pipelines."""
