"""Rule files: loaded once, validated strictly, turned into typed policies.

Every error names the file, the key and what was expected, so an operator can fix a rule file
without reading code.
"""

from engine.rules.loading import RuleError, default_rules_dir, load_toml

__all__ = ["RuleError", "default_rules_dir", "load_toml"]
