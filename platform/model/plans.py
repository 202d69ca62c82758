"""Split plans: which (head_blocks, tail_blocks) each client holds, and the one naming
of the state that clients holding different splits train.

    fixed    every client holds split.head_blocks : split.tail_blocks (the default)
    by_tier  split.tiers names a split per device tier; other tiers hold the fixed one
    fit      per device, the split.candidates split with the shortest simulated round
             that fits its memory (sim/splitplan.py, on meta tensors, once per device)

One model serves every split: each client's cut is `SplitModel.cut` of the run's
*reference* split, which holds the fewest head blocks and the most tail blocks any
client may hold, and shares every parameter with it. The global state is named as the
reference's client state, so a tail block has one name whatever the client: a client
with t tail blocks trains the reference's last t (`tail.blocks.i` of its own is the
reference's `tail.blocks.{i + T - t}`, T the reference's tail). A block some clients
train in their tail is body for the others, and the server runs it at its aggregated
value, since the whole global state is loaded into the shared model before any
client's work (method/planned.py). No block may be in one client's head and another's
tail (the head is frozen and downloaded once): validation refuses such plans.
"""

from __future__ import annotations

from sfprompt.platform.config.schema import SplitConfig
from sfprompt.platform.errors import ConfigError

Split = tuple[int, int]  # (head_blocks, tail_blocks)
PLANS = ("fixed", "by_tier", "fit")
_TAIL = "tail.blocks."


def parse_splits(key: str, spec: str) -> list[Split]:
    """"h:t,h:t,..." as (head, tail) pairs, in order; a one-line error naming `key`."""
    pairs = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        parts = item.split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(f"{key}: {item!r} is not head:tail (two integers >= 0)")
        pairs.append((int(parts[0]), int(parts[1])))
    if not pairs:
        raise ConfigError(f"{key}: needs at least one head:tail split, got {spec!r}")
    return pairs


def parse_tiers(spec: str) -> dict[str, Split]:
    """split.tiers, "tier=head:tail,...", as {tier: (head, tail)}."""
    tiers: dict[str, Split] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        tier, sep, split = item.partition("=")
        if not sep or not tier.strip():
            raise ConfigError(f"split.tiers: {item!r} is not tier=head:tail")
        if tier.strip() in tiers:
            raise ConfigError(f"split.tiers: tier {tier.strip()!r} is given twice")
        tiers[tier.strip()] = parse_splits("split.tiers", split)[0]
    return tiers


def plan_splits_of(cfg: SplitConfig) -> list[Split]:
    """Every split a client of this plan may hold (for the reference and validation)."""
    fixed = (cfg.head_blocks, cfg.tail_blocks)
    if cfg.plan == "by_tier":
        return [fixed, *parse_tiers(cfg.tiers).values()]
    if cfg.plan == "fit":
        return parse_splits("split.candidates", cfg.candidates)
    return [fixed]


def reference_split(cfg: SplitConfig) -> Split:
    """The split the model is built at and the global state named by: the fewest head
    blocks and the most tail blocks of the plan (the fixed split itself under `fixed`)."""
    splits = plan_splits_of(cfg)
    return min(h for h, _ in splits), max(t for _, t in splits)


def to_client_name(name: str, tail: int, reference_tail: int) -> str:
    """A reference-named entry as a client holding `tail` tail blocks names it."""
    if not name.startswith(_TAIL):
        return name
    index, rest = name[len(_TAIL):].split(".", 1)
    return f"{_TAIL}{int(index) - (reference_tail - tail)}.{rest}"


def to_reference_name(name: str, tail: int, reference_tail: int) -> str:
    """A client's entry (it holds `tail` tail blocks) by its reference name."""
    if not name.startswith(_TAIL):
        return name
    index, rest = name[len(_TAIL):].split(".", 1)
    return f"{_TAIL}{int(index) + reference_tail - tail}.{rest}"


def holds(name: str, tail: int, reference_tail: int) -> bool:
    """Whether a client holding `tail` tail blocks trains the reference-named entry:
    every entry but the reference's tail blocks before that client's last `tail`."""
    if not name.startswith(_TAIL):
        return True
    return int(name[len(_TAIL):].split(".", 1)[0]) >= reference_tail - tail
