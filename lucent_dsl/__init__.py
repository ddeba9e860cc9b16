"""lucent_dsl: feature visualization as an algebra of objectives."""
