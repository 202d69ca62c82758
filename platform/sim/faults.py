"""Injected faults (`[faults]`): which client crashes, which messages are lost or delayed.

Every draw comes from a generator seeded by (run seed, round, client, a stream of its
own), like availability (protocols.py) and jitter (clock.py): a run's faults do not
depend on the backend, on who else was sampled, or on whether the run was resumed.

    client crash   decided before the client's work is handed out (`ClientTask.crash`):
                   the local backend skips the work, the ray backend's client actor
                   exits on receiving it (so the pool's recovery really runs); either
                   way the client is "failed" and nothing of its work is counted
    server crash   at `faults.server_crash_round` (the backends' `crash_server`)
    message loss   per transmission; a lost message is retransmitted until it arrives,
                   so the client is never dropped for it, but every loss costs the
                   message's bytes and time again (retransmitted_bytes, comm time)
    delay spike    per transmission, retransmissions included: `delay_spike_s` more

Loss and spikes touch only the virtual clock and the fault columns: the work that ran
is the same, so accuracy and the bytes of each kind (`bytes.<kind>`: the method's own
traffic) do not change. Messages of one kind are taken as equally large (their mean
size), as the clock's per-kind sums already are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sfprompt.platform.config.schema import FaultsConfig
from sfprompt.platform.seeds import stream
from sfprompt.platform.wire.link import KINDS

_CRASH_STREAM = 0xC4A5
_MESSAGE_STREAM = 0x1055


def client_crashes(cfg: FaultsConfig, seed: int, round_: int, client: int) -> bool:
    """Whether `client` crashes in `round_` (its own draw; never when the rate is 0)."""
    if cfg.client_crash <= 0:
        return False
    return bool(stream(seed, round_, client, _CRASH_STREAM).random() < cfg.client_crash)


@dataclass(frozen=True)
class MessageFaults:
    """What loss and spikes did to one client's messages in one round."""

    lost: int = 0  # transmissions lost (each one was sent again)
    retransmitted_bytes: int = 0
    spikes: int = 0
    seconds: float = 0.0  # simulated seconds added to the client's comm time

    def columns(self) -> dict[str, float]:
        return {"faults.lost_messages": self.lost,
                "faults.retransmitted_bytes": self.retransmitted_bytes,
                "faults.delay_spikes": self.spikes}


def message_faults(cfg: FaultsConfig, message_seconds, nbytes: Mapping[str, int],
                   messages: Mapping[str, int], seed: int, round_: int,
                   client: int) -> MessageFaults:
    """Loss and spikes over one client's messages (`messages[kind]` carrying
    `nbytes[kind]` in all); `message_seconds(kind, nbytes)` is one transmission's time
    on the client's link (clock.message_seconds under its profile)."""
    if cfg.message_loss <= 0 and cfg.delay_spike <= 0:
        return MessageFaults()
    rng = stream(seed, round_, client, _MESSAGE_STREAM)
    lost = extra_bytes = spikes = 0
    seconds = 0.0
    for kind in KINDS:  # fixed order: the same draws on every host
        m = messages.get(kind, 0)
        if m == 0:
            continue
        # Transmissions until m successes: m + NegativeBinomial(m, 1 - p) failures.
        k_lost = int(rng.negative_binomial(m, 1.0 - cfg.message_loss)) if cfg.message_loss else 0
        size = nbytes.get(kind, 0) / m
        k_spikes = int(rng.binomial(m + k_lost, cfg.delay_spike)) if cfg.delay_spike else 0
        lost += k_lost
        extra_bytes += round(k_lost * size)
        spikes += k_spikes
        seconds += k_lost * message_seconds(kind, size) + k_spikes * cfg.delay_spike_s
    return MessageFaults(lost, extra_bytes, spikes, seconds)
