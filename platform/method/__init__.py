"""The methods: SFPrompt's round (`sfprompt`), the baselines (`baselines`), the steps
they are made of (`steps`), EL2N pruning, what trains (`trainable`), the client
worker and the body server. Importing this package registers every method.
"""

# The methods register themselves (method/registry.py) when their module is imported.
from sfprompt.platform.method import baselines, sfprompt  # noqa: F401
