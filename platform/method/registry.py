"""The methods: one registered `Method` per name, and what each one is made of.

A method is a predicate over client-side parameter names (the inspectable set of what
trains: `head.prompts`, `tail.*`), whether the server's body trains, whether the whole
model sits on the client (nothing split), whether the model has prompts, whether the
data is pooled, and the client's round as a function. The round loop, backends and
accounting are shared, so every method is measured the same way.

    sfprompt     method/sfprompt.py: prompts + tail on the client, body frozen on the
                 server; EL2N pruning, local-loss update, split training
    sfl, fl, fl_prompt, centralized   method/baselines.py
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sfprompt.platform.config.schema import Config
from sfprompt.platform.method.client import ClientResult, ClientTask, ClientWorker, State
from sfprompt.platform.registry import Registry

ClientRound = Callable[[Config, ClientWorker, ClientTask, State, object], ClientResult]


@dataclass(frozen=True)
class Method:
    trains: Callable[[str], bool]  # client-side parameter name -> trained on the client?
    client_round: ClientRound
    server_trains: bool = False    # does the server's body train?
    client_body: bool = False      # the whole model is on the client: nothing is split
    prompts: bool = True           # the model gets `prompt.length` prompts
    pooled: bool = False           # one client holds all training data (no federation)
    local_path: bool = False       # the round uses the local path (head -> tail)


METHODS: Registry[Method] = Registry("method")


def register_method(name: str, trains: Callable[[str], bool], **options):
    """Register the decorated client round as method `name` (options: Method's fields)."""
    def add(fn: ClientRound) -> ClientRound:
        METHODS.add(name, Method(trains, fn, **options))
        return fn
    return add


def prompt_length(cfg: Config) -> int:
    """Prompts of the model `cfg` trains: none for the methods that fine-tune weights."""
    return cfg.prompt.length if METHODS[cfg.train.method].prompts else 0


