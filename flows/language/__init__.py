"""The blueprint language: its models, loading and validation, expressions, inputs and secrets."""
