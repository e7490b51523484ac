"""The registry answers who must act for a warning's target, and never raises."""

from __future__ import annotations

from engine.directory import Directory
from engine.model import AreaTarget, PhoneTarget, ResidentTarget
from engine.registry.responders import RegistryDirectory
from tests.small_county import make_registry


def county():
    reg = make_registry()
    add = reg.add_resident
    ids = {
        "contact": add(
            "A", name="甲", phone="13800000001", address="1", grid="01-11", officer="P01"
        ),
        "plain": add("B", name="乙", phone="13800000002", address="2", grid="01-21"),
        "member": add(
            "C", name="丙", phone="13800000003", address="3", grid="01-21", tags=["grid_member"]
        ),
        "cadre": add(
            "D", name="丁", phone="13800000004", address="4", grid="01-21", tags=["village_cadre"]
        ),
        "far_cadre": add(
            "E", name="戊", phone="13800000005", address="5", grid="02-11", tags=["village_cadre"]
        ),
        "south": add("F", name="己", phone="13800000006", address="6", grid="02-11"),
    }
    return reg, RegistryDirectory(reg), ids


def test_is_a_directory() -> None:
    assert isinstance(county()[1], Directory)


def test_resident_with_contact_gets_their_own_officer_and_station_ladder() -> None:
    _, d, ids = county()
    r = d.responders(ResidentTarget(id=ids["contact"]))
    assert (r.grid_officer, r.duty_officer, r.chief) == ("P01", "D01", None)
    assert (r.resident, r.grid, r.station, r.unresolved) == (ids["contact"], "01-11", "01", None)


def test_resident_without_contact_gets_the_grids_officer_and_neighbours() -> None:
    _, d, ids = county()
    r = d.responders(ResidentTarget(id=ids["plain"]))
    assert r.grid_officer == "P02"  # the auxiliary is the only one answering for 01-21
    # Grid members before village cadres; never themselves; nobody from another village.
    assert r.visitors == (f"resident:{ids['member']}", f"resident:{ids['cadre']}")
    own = d.responders(ResidentTarget(id=ids["member"]))
    assert f"resident:{ids['member']}" not in own.visitors


def test_visitors_follow_tag_changes() -> None:
    reg, d, ids = county()
    d.responders(ResidentTarget(id=ids["south"]))
    reg.set_tag(ids["south"], "grid_member")
    reg.set_tag(ids["far_cadre"], "village_cadre", on=False)
    r = d.responders(ResidentTarget(id=ids["far_cadre"]))
    assert r.visitors == (f"resident:{ids['south']}",)
    assert (r.grid_officer, r.chief, r.duty_officer) == ("P03", "C02", None)


def test_phone_targets_resolve_through_the_registry() -> None:
    _, d, ids = county()
    assert d.resident_by_phone("+86 138-0000-0002") == ids["plain"]
    r = d.responders(PhoneTarget(phone="13800000002"))
    assert r.resident == ids["plain"]
    missing = d.responders(PhoneTarget(phone="13912345678"))
    assert missing.resident is None and missing.county_centre == "county_centre"
    assert "5678" in missing.unresolved and "13912345678" not in missing.unresolved


def test_areas_and_unknowns() -> None:
    reg, d, ids = county()
    grid = d.responders(AreaTarget(area="01-12"))
    assert (grid.grid_officer, grid.grid, grid.station) == ("P01", "01-12", "01")
    village = d.responders(AreaTarget(area="village:01-02"))
    assert (village.grid_officer, village.station) == ("P02", "01")
    station = d.responders(AreaTarget(area="02"))
    assert (station.grid_officer, station.chief) == (None, "C02")
    assert "not a known grid" in d.responders(AreaTarget(area="99-99")).unresolved
    reg.remove_resident(ids["plain"])
    gone = d.responders(ResidentTarget(id=ids["plain"]))
    assert gone.resident is None and "not a live resident" in gone.unresolved
    assert d.responders(ResidentTarget(id=10_000)).unresolved
