"""Secure aggregation by pairwise additive masks: the aggregator learns only the sum.

Every pair of clients (i, j) in a round agrees on a seed by X25519 key agreement
(the ``cryptography`` package) and expands it into a mask of uniformly random
64-bit integers; ``i`` adds the mask, ``j`` subtracts it. Updates are encoded in
fixed point (``FRACTION_BITS``) modulo 2**64, so one masked update is uniform
noise while the masks cancel exactly in the sum (Bonawitz et al., 2017, without
the self-mask and secret-sharing layer).

A client that drops out after the keys went round leaves its masks uncancelled;
the survivors then reveal the masks they shared with it (``unmask``), which the
aggregator subtracts. That is safe because the round is closed: an update from a
dropped client that arrives later is discarded, never added (the full protocol
uses self-masks and Shamir shares to keep even that case private).

>>> import numpy as np
>>> names = ["a", "b", "c"]
>>> clients = {n: MaskingClient(n, round_id=1) for n in names}
>>> keys = {n: c.public_key() for n, c in clients.items()}
>>> updates = {n: np.full(4, i + 1.0) for i, n in enumerate(names)}
>>> total = SecureSum(names, size=4)
>>> for n in ["a", "b"]:  # "c" drops out after the keys went round
...     total.add(n, clients[n].mask(updates[n], keys))
>>> for n in total.survivors():
...     total.correct(n, clients[n].unmask(total.dropped()))
>>> total.result().tolist()
[3.0, 3.0, 3.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from models._errors import FederatedError

#: Fixed-point precision of masked values: 2**-24 ~ 6e-8 per client.
FRACTION_BITS = 24


def encode_fixed(vector: np.ndarray) -> np.ndarray:
    """``vector`` in fixed point as uint64 (two's complement modulo 2**64)."""
    scaled = np.round(np.asarray(vector, np.float64) * 2.0**FRACTION_BITS)
    if scaled.size and np.abs(scaled).max() >= 2.0**62:
        raise FederatedError(
            f"a value of {np.abs(vector).max():.3g} does not fit secure aggregation's fixed "
            f"point (|x| < 2**{62 - FRACTION_BITS}); clip updates before masking"
        )
    return scaled.astype(np.int64).view(np.uint64)


def decode_fixed(encoded: np.ndarray) -> np.ndarray:
    """The float64 values of a fixed-point uint64 vector (sums included)."""
    return np.asarray(encoded, np.uint64).view(np.int64) / 2.0**FRACTION_BITS


class MaskingClient:
    """One client's side of one round: a fresh key pair, its masked vector, and revealed masks."""

    def __init__(self, client_id: str, *, round_id: int) -> None:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        self.client_id = client_id
        self.round_id = round_id
        self._key = X25519PrivateKey.generate()
        self._peers: dict[str, bytes] = {}
        self._size = 0

    def public_key(self) -> bytes:
        """The raw 32-byte X25519 public key to hand to the other clients of the round."""
        from cryptography.hazmat.primitives import serialization

        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def mask(self, vector: np.ndarray, peer_keys: Mapping[str, bytes]) -> np.ndarray:
        """``vector`` in fixed point plus the pairwise masks with every peer in ``peer_keys``."""
        self._peers = {p: k for p, k in peer_keys.items() if p != self.client_id}
        self._size = len(vector)
        masked = encode_fixed(vector)
        for peer in self._peers:
            masked += self._signed_mask(peer)  # uint64 arithmetic wraps modulo 2**64
        return masked

    def unmask(self, dropped: Iterable[str]) -> np.ndarray:
        """The sum of the masks this client added for peers in ``dropped`` (to subtract)."""
        total = np.zeros(self._size, np.uint64)
        for peer in dropped:
            if peer not in self._peers:
                raise FederatedError(
                    f"client {self.client_id!r} shared no mask with {peer!r} in round "
                    f"{self.round_id}; only clients whose keys went round can have dropped",
                    client=self.client_id,
                )
            total += self._signed_mask(peer)
        return total

    def _signed_mask(self, peer: str) -> np.ndarray:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        shared = self._key.exchange(X25519PublicKey.from_public_bytes(self._peers[peer]))
        low, high = sorted((self.client_id, peer))
        info = f"edgeray-secagg/{self.round_id}/{low}/{high}".encode()
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
        mask = np.random.PCG64(int.from_bytes(seed, "big")).random_raw(self._size)
        mask = np.asarray(mask, np.uint64)
        return mask if self.client_id == low else np.uint64(0) - mask


class SecureSum:
    """The aggregator's side: adds masked vectors, subtracts revealed masks, decodes the sum.

    ``participants`` are the clients whose keys went round; any of them that has
    not ``add``-ed by the time the round closes is ``dropped()``, and every
    survivor must then ``correct`` with ``unmask(dropped())`` before ``result()``.
    """

    def __init__(self, participants: Sequence[str], *, size: int) -> None:
        self.participants = list(participants)
        self._sum = np.zeros(size, np.uint64)
        self._added: list[str] = []
        self._corrected: set[str] = set()

    def add(self, client: str, masked: np.ndarray) -> None:
        if client not in self.participants or client in self._added:
            raise FederatedError(
                f"secure sum got a vector from {client!r}, which is not a participant of this "
                f"round or already sent one (participants: {', '.join(self.participants)})",
                client=client,
            )
        masked = np.asarray(masked, np.uint64)
        if masked.shape != self._sum.shape:
            raise FederatedError(
                f"client {client!r} sent a masked vector of shape {masked.shape}; the round's "
                f"is {self._sum.shape}",
                client=client,
            )
        self._sum += masked
        self._added.append(client)

    def survivors(self) -> list[str]:
        return list(self._added)

    def dropped(self) -> list[str]:
        return [p for p in self.participants if p not in self._added]

    def correct(self, client: str, revealed: np.ndarray) -> None:
        """Subtract the masks ``client`` shared with the dropped clients."""
        self._sum -= np.asarray(revealed, np.uint64)
        self._corrected.add(client)

    def result(self) -> np.ndarray:
        """The plain float64 sum of the survivors' vectors."""
        if not self._added:
            raise FederatedError("secure sum has no vectors: every client dropped out")
        missing = [c for c in self._added if c not in self._corrected] if self.dropped() else []
        if missing:
            raise FederatedError(
                f"clients {', '.join(self.dropped())} dropped out, and survivors "
                f"{', '.join(missing)} have not revealed their masks with them; the sum would be "
                "noise: ask each survivor for unmask(dropped) first"
            )
        return decode_fixed(self._sum)
