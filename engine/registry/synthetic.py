"""A synthetic county generated from a seed, shaped like the real one the platform serves.

Defaults: 1.3 M residents in 30 stations, 600 villages/communities and 2,400 grids; 1,400
officers and auxiliaries; 750,000 residents are an officer's chat contact. Tag densities are
skewed (many elderly, very few key-vehicle drivers) and clustered by village (fishing villages
have fishermen), so ``grid:X & tag`` is as selective as it is in life.

Everything is vectorised: a county builds in seconds and is saved as a registry snapshot, so it
is generated once.
"""

from __future__ import annotations

import msgspec
import numpy as np

from engine.registry.registry import Registry
from engine.registry.units import Jurisdiction, Officer, Role, Unit
from engine.rules.taxonomy import Taxonomy, load_taxonomy

#: Bump when the same spec would generate a different county, so cached snapshots are redone.
GENERATOR_VERSION = 2


class CountySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What to generate. Every field can be set from the command line or a TOML file."""

    residents: int = 1_300_000
    contacts: int = 750_000
    officers: int = 1_400
    stations: int = 30
    villages: int = 600
    grids_per_village: int = 4
    seed: int = 20_261_125


#: Densities of well-known tags (share of residents), from county statistics where we have them.
KNOWN_DENSITY: dict[str, float] = {
    "elderly": 0.21,
    "elderly_alone": 0.035,
    "minor": 0.17,
    "student": 0.14,
    "left_behind_child": 0.018,
    "disabled": 0.055,
    "key_vehicle_driver": 0.0015,
    "school_bus_driver": 0.0003,
    "truck_driver": 0.012,
    "ebike_rider": 0.34,
    "shop_owner": 0.04,
    "hotel_staff": 0.003,
    "fraud_victim": 0.002,
    "fraud_high_risk": 0.05,
    "antifraud_app": 0.31,
    "warned_7d": 0.0008,
    "warned_30d": 0.003,
    "antifraud_msg_7d": 0.22,
    "grid_member": 0.008,
    "village_cadre": 0.003,
    "volunteer": 0.02,
    "teacher": 0.011,
    "veteran": 0.016,
    "migrant_worker": 0.13,
    "renter": 0.085,
}
#: Tags drawn only from the members of another tag (living alone implies elderly).
SUBSET_OF: dict[str, str] = {
    "elderly_alone": "elderly",
    "left_behind_child": "minor",
    "student": "minor",
    "warned_7d": "warned_30d",
    "fraud_victim": "fraud_high_risk",
}

_SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
)
_GIVEN = list("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红玉梅文斌辉鹏飞云海燕")
_PLACES = list("东西南北上下前后大小新老青石山水河湖桥林竹松梅兰溪塘岭湾坪")
_SUFFIX = ["村", "村", "村", "社区"]


def _names(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two- and three-character Chinese names, UTF-8 encoded."""
    sur = np.array(_SURNAMES)[rng.integers(0, len(_SURNAMES), n)]
    g1 = np.array(_GIVEN)[rng.integers(0, len(_GIVEN), n)]
    g2 = np.where(rng.random(n) < 0.7, np.array(_GIVEN)[rng.integers(0, len(_GIVEN), n)], "")
    return np.char.encode(np.char.add(np.char.add(sur, g1), g2), "utf-8")


def _tag_densities(rng: np.random.Generator, taxonomy: Taxonomy) -> np.ndarray:
    """Known densities where we have them; a Zipf-like spread (0.005% to 8%) for the rest."""
    dens = np.empty(len(taxonomy))
    unknown = [i for i, k in enumerate(taxonomy.keys) if k not in KNOWN_DENSITY]
    ranks = rng.permutation(len(unknown)) + 1
    dens[unknown] = np.clip(0.08 / ranks**0.85, 0.00005, 0.08)
    for k, d in KNOWN_DENSITY.items():
        if k in taxonomy:
            dens[taxonomy.index(k)] = d
    return dens


def build_units(spec: CountySpec) -> tuple[Jurisdiction, list[Officer]]:
    """Stations, villages, grids and officers, named the way the county names them."""
    rng = np.random.default_rng(spec.seed + 1)
    stations = [
        Unit(f"{s + 1:02d}", f"{_PLACES[s % len(_PLACES)]}城派出所") for s in range(spec.stations)
    ]
    villages: list[Unit] = []
    grids: list[Unit] = []
    # Villages in station order, so ids (given grid by grid) keep each station contiguous too.
    village_station = np.arange(spec.villages) * spec.stations // spec.villages
    seq = np.zeros(spec.stations, dtype=int)
    grid_seq = np.zeros(spec.stations, dtype=int)
    for v in range(spec.villages):
        st = int(village_station[v])
        seq[st] += 1
        name = "".join(rng.choice(_PLACES, 2)) + _SUFFIX[v % len(_SUFFIX)]
        vkey = f"{st + 1:02d}-v{seq[st]:02d}"
        villages.append(Unit(vkey, name, stations[st].key))
        for _ in range(spec.grids_per_village):
            grid_seq[st] += 1
            grids.append(
                Unit(f"{st + 1:02d}-{grid_seq[st]:02d}", f"{name}第{grid_seq[st]}网格", vkey)
            )
    jurisdiction = Jurisdiction(stations, villages, grids)

    officers: list[Officer] = []
    for s, station in enumerate(stations):
        officers.append(Officer(f"C{s + 1:02d}", f"{station.name}所长", "chief", station.key))
        officers.append(Officer(f"D{s + 1:02d}1", "值班民警", "duty_officer", station.key))
        officers.append(Officer(f"D{s + 1:02d}2", "值班民警", "duty_officer", station.key))
    grid_roles = spec.officers - len(officers)
    if grid_roles < spec.villages:
        raise ValueError(
            f"{spec.officers} officers cannot cover {spec.villages} villages: each village"
            f" needs one, and each station three more (a chief and two duty officers)"
        )
    per_village = np.full(spec.villages, grid_roles // spec.villages)
    per_village[rng.permutation(spec.villages)[: grid_roles % spec.villages]] += 1
    for v, village in enumerate(villages):
        st = int(village_station[v])
        vseq = int(village.key.split("-v")[1])
        vgrids = tuple(
            g.key for g in grids[v * spec.grids_per_village : (v + 1) * spec.grids_per_village]
        )
        for k in range(per_village[v]):
            # P0312: the community officer of village 12 of station 03; A03121: an auxiliary.
            key = f"P{st + 1:02d}{vseq:02d}" if k == 0 else f"A{st + 1:02d}{vseq:02d}{k}"
            role: Role = "community_officer" if k == 0 else "auxiliary"
            name = _SURNAMES[(v + k) % len(_SURNAMES)] + ("警官" if k == 0 else "辅警")
            officers.append(Officer(key, name, role, stations[st].key, vgrids))
    return jurisdiction, officers


def generate_county(
    spec: CountySpec | None = None, taxonomy: Taxonomy | None = None, chunk_words: int | None = None
) -> Registry:
    """Build a registry for ``spec`` (default: the real county's shape)."""
    spec = spec or CountySpec()
    taxonomy = taxonomy or load_taxonomy()
    rng = np.random.default_rng(spec.seed)
    jurisdiction, officers = build_units(spec)
    kwargs = {} if chunk_words is None else {"chunk_words": chunk_words}
    reg = Registry(taxonomy, jurisdiction, officers, **kwargs)
    n = spec.residents
    n_grids = len(jurisdiction.units["grid"])

    # Village sizes are log-normal (a town community is ten times a hamlet); grids split them.
    village_weight = rng.lognormal(0.0, 0.6, spec.villages)
    grid_weight = np.repeat(village_weight, spec.grids_per_village) * rng.uniform(0.6, 1.4, n_grids)
    per_grid = rng.multinomial(n, grid_weight / grid_weight.sum())
    grid_of = np.repeat(np.arange(n_grids, dtype=np.int32), per_grid)  # ids given grid by grid

    # Contacts: a resident may add one of the officers who answer for their village.
    officer_of = np.full(n, -1, dtype=np.int32)
    contacts = rng.choice(n, size=min(spec.contacts, n), replace=False)
    village_officers: dict[int, list[int]] = {}
    for i, o in enumerate(officers):
        if o.grids:
            v = int(jurisdiction.grid_village[jurisdiction.index["grid"][o.grids[0]]])
            village_officers.setdefault(v, []).append(i)
    counts = np.array([len(village_officers.get(v, [])) for v in range(spec.villages)])
    first = np.concatenate([[0], np.cumsum(counts)])
    flat = np.array([o for v in range(spec.villages) for o in village_officers.get(v, [])])
    cv = jurisdiction.grid_village[grid_of[contacts]]
    pick = first[cv] + (rng.random(contacts.size) * counts[cv]).astype(np.int64)
    officer_of[contacts] = flat[pick]

    # Tags: k members per tag, drawn village-weighted (clustering), or from a parent tag.
    densities = _tag_densities(rng, taxonomy)
    village_of_grid = jurisdiction.grid_village
    village_pop = np.bincount(village_of_grid, weights=per_grid, minlength=spec.villages)
    village_start = np.concatenate([[0], np.cumsum(village_pop)]).astype(np.int64)
    tags: dict[str, np.ndarray] = {}
    order = sorted(range(len(taxonomy)), key=lambda i: taxonomy.keys[i] in SUBSET_OF)
    for i in order:
        key = taxonomy.keys[i]
        k = int(rng.binomial(n, densities[i]))
        if k == 0:
            continue
        parent = SUBSET_OF.get(key)
        if parent in tags:
            pool = tags[parent]
            members = pool[rng.random(pool.size) < min(1.0, k / max(pool.size, 1))]
        else:
            affinity = village_pop * rng.lognormal(0.0, 0.8, spec.villages)
            drawn = rng.choice(spec.villages, size=k, p=affinity / affinity.sum())
            members = village_start[drawn] + (rng.random(k) * village_pop[drawn]).astype(np.int64)
        tags[key] = np.unique(members)

    serial = np.arange(n)
    ext_ids = np.char.add(b"R", np.char.zfill(serial.astype("S"), 8))
    phones = (13_000_000_000 + rng.integers(0, 6_999_999_999, n)).astype("S11")
    village_names = np.array([u.name for u in jurisdiction.units["village"]])
    house = rng.integers(1, 300, n).astype(str)
    addresses = np.char.encode(
        np.char.add(np.char.add(village_names[village_of_grid[grid_of]], house), "号"), "utf-8"
    )
    reg.add_residents(ext_ids, _names(rng, n), phones, addresses, grid_of, officer_of, tags)
    return reg
