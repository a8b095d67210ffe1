"""Option value converters: what is accepted and what each error says."""

import signal

import pytest

from circusd.config import values
from circusd.errors import ValueProblem


@pytest.mark.parametrize("text", ["term", "TERM", "SIGTERM", "sigterm", "15", 15])
def test_signals_by_any_spelling(text):
    assert values.signum(text) == signal.SIGTERM


def test_realtime_signals_by_offset():
    assert values.signum("SIGRTMIN+2") == signal.SIGRTMIN + 2


@pytest.mark.parametrize("bad", ["SIGBOGUS", "", 0, 10**6, -1, True, None])
def test_bad_signals_are_refused_with_the_value(bad):
    with pytest.raises(ValueProblem, match="signal"):
        values.signum(bad)


@pytest.mark.parametrize(("text", "mode"), [("077", 0o77), ("0o22", 0o22), ("0", 0)])
def test_modes_are_octal(text, mode):
    assert values.octal(text) == mode


def test_a_decimal_looking_mode_is_not_octal():
    with pytest.raises(ValueProblem, match="octal"):
        values.octal("089")


@pytest.mark.parametrize("bad", ["nan", "inf", "-1", True, "abc", 1e9])
def test_numbers_must_be_finite_and_in_range(bad):
    with pytest.raises(ValueProblem):
        values.number(bad)


def test_rlimit_soft_and_hard_separately():
    assert values.rlimit("100:200") == (100, 200)
    assert values.rlimit("50") == (50, 50)


def test_user_zero_is_a_value():
    assert values.ident("0") == 0
    assert values.ident(0) == 0
    assert values.ident("") is None
