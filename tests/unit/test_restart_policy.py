"""The restart policy on made-up uptimes: no clock, no sleeps."""

from circusd.restart import MAX_DELAY, STABLE_AFTER, RestartPolicy


def test_a_healthy_process_is_respawned_at_once_and_forgets_failures():
    policy = RestartPolicy(max_retry=5)
    policy.record_exit(0.1)
    policy.record_exit(0.1)
    assert policy.record_exit(STABLE_AFTER + 1) == 0.0
    assert policy.failures == 0


def test_young_deaths_back_off_with_a_growing_capped_delay():
    policy = RestartPolicy(max_retry=-1)
    delays = [policy.record_exit(0.01) for _ in range(12)]
    assert delays[0] == 0.0
    assert all(b >= a for a, b in zip(delays, delays[1:], strict=False))
    assert delays[2] > delays[1] > 0
    assert delays[-1] == MAX_DELAY


def test_gives_up_after_max_retry_failures_in_a_row():
    policy = RestartPolicy(max_retry=2)
    assert policy.record_exit(None) is not None
    assert policy.record_exit(0.5) is not None
    assert policy.record_exit(None) is None


def test_zero_max_retry_gives_up_at_the_first_failure():
    assert RestartPolicy(max_retry=0).record_exit(0.2) is None


def test_a_crash_loop_spawns_at_most_six_times_in_ten_seconds():
    policy = RestartPolicy(max_retry=5)
    elapsed, spawns = 0.0, 1
    while (delay := policy.record_exit(0.0)) is not None:
        elapsed += delay
        if elapsed > 10:
            break
        spawns += 1
    assert spawns <= 6
