"""The per-user rate limit: a fixed window, exact under concurrency, with the same rules on Redis and Django's cache."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ImproperlyConfigured

from inference import services, streams
from modelfactory.tests.factories import UserFactory

from .runs_support import clear_rate_limits

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


@pytest.mark.parametrize(("rate", "parsed"), [("60/minute", (60, 60)), (" 5 / second ", (5, 1)), ("1/day", (1, 86400))])
def test_rates_parse_as_count_per_window(rate, parsed) -> None:
    assert services.parse_rate(rate) == parsed


@pytest.mark.parametrize("rate", ["", "60", "60/fortnight", "-1/minute", "sixty/minute"])
def test_a_malformed_rate_setting_is_a_configuration_error(rate) -> None:
    with pytest.raises(ImproperlyConfigured, match="INFERENCE_RATE_LIMIT"):
        services.parse_rate(rate)


def test_concurrent_requests_never_take_more_than_the_allowance(settings) -> None:
    if not streams.uses_redis():
        pytest.skip("the broker is not Redis here")
    settings.INFERENCE_RATE_LIMIT = "5/hour"
    user = UserFactory()
    outcomes: list[str] = []

    def ask() -> None:
        try:
            services._rate_check(user)
            outcomes.append("ok")
        except services.RateLimited:
            outcomes.append("limited")

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 5 and outcomes.count("limited") == 15


def test_threads_that_meet_the_redis_client_first_together_share_one(settings) -> None:
    # a client made twice by threads that missed the cache together was closed under the other's pipeline when
    # collected: Redis "Bad file descriptor" errors at the first burst of concurrent submissions
    if not streams.uses_redis():
        pytest.skip("the broker is not Redis here")
    settings.INFERENCE_RATE_LIMIT = "1000/hour"
    user = UserFactory()
    streams._client_made.cache_clear()
    start = threading.Barrier(32)
    clients: list[int] = []
    errors: list[BaseException] = []

    def ask() -> None:
        start.wait()
        try:
            clients.append(id(streams._client()))
            services._rate_check(user)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(clients) == 32 and len(set(clients)) == 1


def test_without_redis_the_cache_counts_the_window(settings) -> None:
    settings.BROKER_KIND = "filesystem"
    settings.INFERENCE_RATE_LIMIT = "2/minute"
    user, other = UserFactory(), UserFactory()
    services._rate_check(user)
    services._rate_check(user)
    with pytest.raises(services.RateLimited) as limited:
        services._rate_check(user)
    assert 1 <= limited.value.retry_after <= 60
    services._rate_check(other)
