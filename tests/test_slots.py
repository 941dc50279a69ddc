"""The classes whose ``__init__`` fills their slots by hand (config/slots.py) behave as generated dataclasses."""

from __future__ import annotations

import dataclasses

import pytest

from optimizely_async.config.entities import ExperimentInfo
from optimizely_async.config.optimizely_config import OptimizelyExperiment, OptimizelyVariable, OptimizelyVariation

CLASSES = [ExperimentInfo, OptimizelyExperiment, OptimizelyVariable, OptimizelyVariation]


@pytest.mark.parametrize("cls", CLASSES)
def test_every_field_gets_its_own_argument(cls: type) -> None:
    fields = dataclasses.fields(cls)
    values = [object() for _ in fields]
    by_position = cls(*values)
    by_keyword = cls(**{f.name: v for f, v in zip(fields, values, strict=True)})
    for made in (by_position, by_keyword):
        assert [getattr(made, f.name) for f in fields] == values
    assert getattr(dataclasses.replace(by_position, **{fields[0].name: "other"}), fields[0].name) == "other"


@pytest.mark.parametrize("cls", CLASSES)
def test_defaults_are_the_declared_ones(cls: type) -> None:
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING]
    made = cls(*[object() for _ in required])
    for f in fields[len(required) :]:
        assert getattr(made, f.name) == f.default


@pytest.mark.parametrize("cls", CLASSES)
def test_they_stay_frozen(cls: type) -> None:
    made = cls(*["x" for _ in dataclasses.fields(cls)])
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.key = "y"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del made.key
    with pytest.raises(TypeError):
        cls(*["x" for _ in range(len(dataclasses.fields(cls)) + 1)])
