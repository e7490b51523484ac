"""The root of every error warn-dispatch raises on purpose.

One family, so that a caller (the command line, a service, an embedder) can catch
:class:`WarnDispatchError` and print one clear line, while code that needs to tell cases apart
catches the precise subclass. Each subclass lives beside the concept it is about and also keeps
the built-in base it always had (``ValueError`` for bad input, ``TimeoutError`` ...), so older
``except ValueError`` code still works::

    WarnDispatchError
    ├── InvalidMessage (engine.model)        a warning or feedback refused at the edge
    │   ├── InvalidWarning, InvalidFeedback
    ├── RuleError (engine.rules.loading)     a rule file: file, key, what was expected
    ├── RegistryError (engine.registry.units), SnapshotError (engine.registry.snapshot)
    ├── AudienceError (engine.audience.expr) an expression: position, closest names
    ├── CampaignError (engine.campaigns.campaign) and its subclasses
    ├── JournalError (engine.journal.disk)   corrupt, locked, failed, unreadable format
    └── RedisCommandTimeout (engine.transport.redis_clients)

Nothing else lives here: this module imports nothing, so every layer may import it.
"""

from __future__ import annotations


class WarnDispatchError(Exception):
    """Base of every error warn-dispatch raises deliberately; its message is for people."""
