"""Rule files: loaded once, validated strictly, turned into typed policies.

Every error names the file, the key and what was expected, so an operator can fix a rule file
without reading code.
"""

from engine.rules.escalation import (
    ContactStep,
    EscalationRules,
    LevelPolicy,
    OfficerStep,
    load_escalation,
)
from engine.rules.loading import RuleError, default_rules_dir, load_toml

__all__ = [
    "ContactStep",
    "EscalationRules",
    "LevelPolicy",
    "OfficerStep",
    "RuleError",
    "default_rules_dir",
    "load_escalation",
    "load_toml",
]
