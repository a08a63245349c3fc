"""vicflow's built-in plugins, registered like any third-party plugin (see manager.DEFAULT_PLUGINS)."""
