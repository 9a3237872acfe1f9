"""What checking a caller's token costs a request: booking.auth.keys.Verifier, in process.

Two cases for RS256 and ES256: the key already cached by the worker (every request but the
first), and a refetch of the key set from a local JWKS server before each check (the first
request of a worker, a rotation). Prints the median of many runs; docs/auth.md quotes it.
Run: .venv/bin/python bench/verify_cost.py
"""

import math
import statistics
import timeit

from booking.auth.keys import Verifier
from booking.config import Config
from harness.jwks import AUDIENCE, ISSUER, JwksServer, SigningKey

RUNS = 15


def median_us(check, number: int) -> float:
    times = timeit.repeat(check, number=number, repeat=RUNS)
    return statistics.median(times) / number * 1e6


def measure(config: Config, key: SigningKey) -> tuple[float, float]:
    """Median µs per check: with the key cached, and with the key set fetched first."""
    verifier = Verifier(config)
    token = key.token("alice")
    verifier.verify(token)  # the first fetch

    def refetched() -> None:
        verifier.keys._fetched_at = verifier.keys._tried_at = -math.inf  # as if stale
        verifier.verify(token)

    return median_us(lambda: verifier.verify(token), 500), median_us(refetched, 50)


def main() -> None:
    keys = [SigningKey("RS256"), SigningKey("ES256")]
    jwks = JwksServer(keys)
    config = Config(auth_jwks_url=jwks.url, auth_issuer=ISSUER, auth_audience=AUDIENCE)
    try:
        for key in keys:
            cached, fetched = measure(config, key)
            print(
                f"{key.algorithm}: cached key {cached:.0f} µs, refetched key set {fetched:.0f} µs"
            )
    finally:
        jwks.stop()


if __name__ == "__main__":
    main()
