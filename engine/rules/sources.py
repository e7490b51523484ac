"""Where each rule file comes from: packaged defaults, then a site's folder, then flags.

Why file by file: a site that only changes its rosters keeps the packaged ladders and picks up
their fixes with every release; a site that rewrites its ladders owns the whole file. A flag
(``--escalation FILE``, say) beats both, for one run. :func:`load_rules` reads the files the
machine needs (escalation, rosters, silences, correlation), checks them against each other, and
returns one :class:`~engine.rules.escalation.EscalationRules` carrying all of them; the
taxonomy and the campaign caps are read by their owners through :func:`rule_path`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec

from engine.rules.correlation import load_correlation
from engine.rules.escalation import EscalationRules, load_escalation
from engine.rules.loading import RuleError, default_rules_dir
from engine.rules.roster import load_rosters
from engine.rules.silences import load_silences

RULE_FILES: Final = (
    "escalation.toml",
    "rosters.toml",
    "silences.toml",
    "correlation.toml",
    "taxonomy.toml",
    "campaigns.toml",
)
"""Every rule file a site's folder may hold."""


def rule_path(
    name: str, site: Path | None = None, overrides: Mapping[str, Path] | None = None
) -> Path:
    """The file to read for ``name``: a flag's, else the site folder's, else the packaged one."""
    if name not in RULE_FILES:
        raise ValueError(f"{name} is not a rule file ({', '.join(RULE_FILES)})")
    if overrides and name in overrides:
        return Path(overrides[name])
    if site is not None and (site / name).is_file():
        return site / name
    return default_rules_dir() / name


def check_site(site: Path) -> None:
    """A site folder must exist and hold at least one rule file (a typo in ``--rules`` would
    otherwise run the packaged rules without a word)."""
    if not site.is_dir():
        raise RuleError(site, "", "a folder of rule files (--rules DIR)")
    if not any((site / name).is_file() for name in RULE_FILES):
        raise RuleError(site, "", f"a folder with at least one of {', '.join(RULE_FILES)}")


def sources(
    site: Path | None = None, overrides: Mapping[str, Path] | None = None
) -> dict[str, Path]:
    """Every rule file and where it comes from, in :data:`RULE_FILES` order."""
    return {name: rule_path(name, site, overrides) for name in RULE_FILES}


def load_rules(
    site: Path | None = None, overrides: Mapping[str, Path] | None = None
) -> EscalationRules:
    """The machine's rules from packaged defaults, a site folder and flags, checked across
    files: silences and correlation may only name kinds the escalation rules define."""
    if site is not None:
        check_site(site)
    escalation = load_escalation(rule_path("escalation.toml", site, overrides))
    kinds = frozenset(escalation.kinds)
    rosters = load_rosters(rule_path("rosters.toml", site, overrides))
    silences_file = rule_path("silences.toml", site, overrides)
    silences = load_silences(silences_file)
    for i, s in enumerate(silences.items):
        if s.kind is not None and s.kind not in kinds:
            known = ", ".join(sorted(kinds))
            raise RuleError(
                silences_file, f"silences[{i}].kind", f"a kind of the escalation rules ({known})"
            )
    correlation = load_correlation(rule_path("correlation.toml", site, overrides), kinds=kinds)
    return msgspec.structs.replace(
        escalation, rosters=rosters, silences=silences, correlation=correlation
    )
