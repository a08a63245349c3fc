"""The `vicflow` command line: its commands, what it prints, its progress display and how it dies."""
