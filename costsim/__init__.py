"""costsim: analytical cost-and-memory simulator for large language models.

Data flows one way: specs (YAML / HF config.json) -> simulator (pure engine) -> reports / CLI.
"""

__version__ = "0.1.0"
