"""Single-core ceilings: real hashlib and pyeclib runs on a small buffer."""

import pytest

from bench.ceilings import Ceilings, measure_ceilings


def test_measures_every_primitive_and_names_the_slowest_as_put_bottleneck() -> None:
    ceilings = measure_ceilings(total_bytes=8 * 1024 * 1024, repeats=1)
    assert set(ceilings.gb_per_s) == {"sha256", "md5", "rs_encode"}, ceilings.errors
    assert all(speed > 0 for speed in ceilings.gb_per_s.values())
    put = ceilings.put_ceiling()
    assert put is not None
    assert put[1] == min(ceilings.gb_per_s.values())
    assert ceilings.get_ceiling() == ("sha256", ceilings.gb_per_s["sha256"])


def test_bottleneck_ignores_unmeasured_primitives_and_json_round_trips() -> None:
    ceilings = Ceilings(gb_per_s={"sha256": 1.4, "md5": 0.6}, errors={"rs_encode": "no ISA-L"})
    assert ceilings.put_ceiling() == ("md5", 0.6)
    assert ceilings.bottleneck(("rs_encode",)) is None
    document = ceilings.to_json()
    assert document["put"] == {"primitive": "md5", "gb_per_s": 0.6}
    assert document["get"] == {"primitive": "sha256", "gb_per_s": 1.4}
    assert Ceilings.from_json(document) == ceilings


def test_from_json_rejects_wrong_shapes() -> None:
    with pytest.raises(TypeError):
        Ceilings.from_json({"gb_per_s": [1.0]})
    with pytest.raises(KeyError):
        Ceilings.from_json({})
