import pytest

from merginguriel_core.errors import ConfigError
from merginguriel_core.params import Param, parse_assignments, resolve_params

DENSITY = Param("density", float, 0.5, "fraction kept", minimum=0.0, min_inclusive=False, maximum=1.0)
SEED = Param("rescale", bool, True, "rescale survivors")


def test_defaults_filled_and_values_converted():
    assert resolve_params([DENSITY, SEED], {}, "strategy 'x'") == {"density": 0.5, "rescale": True}
    assert resolve_params([DENSITY, SEED], {"density": "0.25", "rescale": "no"}, "s") == {
        "density": 0.25,
        "rescale": False,
    }


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "nan"])
def test_out_of_range_names_value_and_interval(value):
    with pytest.raises(ConfigError, match=r"density=.* of strategy 'ties' is out of range; allowed: \(0, 1\]"):
        resolve_params([DENSITY], {"density": value}, "strategy 'ties'")


def test_density_one_is_allowed():
    assert resolve_params([DENSITY], {"density": "1"}, "s")["density"] == 1.0


def test_unknown_name_lists_allowed():
    with pytest.raises(ConfigError, match=r"unknown parameter 'densty' for strategy 'ties'; allowed: density, rescale"):
        resolve_params([DENSITY, SEED], {"densty": "0.5"}, "strategy 'ties'")


def test_not_a_number():
    with pytest.raises(ConfigError, match=r"density='abc' of s is not a valid float"):
        resolve_params([DENSITY], {"density": "abc"}, "s")


def test_parse_assignments():
    assert parse_assignments(["density=0.5,t=0.3", "k = 2"], "--param") == {"density": "0.5", "t": "0.3", "k": "2"}
    with pytest.raises(ConfigError, match=r"--param 'density' is not KEY=VALUE"):
        parse_assignments(["density"], "--param")


def test_key_given_twice():
    with pytest.raises(ConfigError, match=r"--param gives t twice"):
        parse_assignments(["t=0.3", "t=0.4"], "--param")
