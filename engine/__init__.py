"""warn-dispatch: a real-time warning-dispatch engine for community policing.

This module is the public API for systems that embed the engine: everything a program needs is
importable from ``engine`` directly, and the names below are the promise. Modules not named
here are internal and may change.

The layers, lowest first (each imports only from layers below it; ``tests/test_layers.py``
checks it on every run):

    errors, explain, privacy          the error root; msgspec errors in people's words; masking
    model                             the messages: warnings, feedback, actions, responders
    audience, journal                 the expression language and bitsets; the durable log
    rules, directory                  validated rule files; who-answers-for-a-target protocol
    machine, registry, transport      the pure state machine; residents; transports
    durability, campaigns, stats,     journal records and replay; broadcasts; statistics;
    group (leases, journal), access   partitions and fenced state in Redis; roles and tokens
    scheduler, window_tags            the trio loop that owns every warning; warned_7d ...
    service                           transports -> journal -> ack; outbox; clean shutdown
    app                               the composition root
    group.member, group.router ...    a group of engines: one app per owned partition
    cli                               the command line (simulate joins it from the simulator)

Names are loaded on first use (PEP 562), so ``import engine.model`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # assembling and running an engine
    "App": "engine.app",
    "AppConfig": "engine.app",
    "open_app": "engine.app",
    "Engine": "engine.scheduler",
    "ServiceStats": "engine.service",
    "serve": "engine.service",
    # a group of engines over Redis
    "GroupConfig": "engine.group.member",
    "GroupMember": "engine.group.member",
    "FencedError": "engine.group.journal",
    "RegistryChange": "engine.registry.changes",
    "decode_change": "engine.registry.changes",
    "apply_change": "engine.registry.changes",
    # the registry and audiences
    "Registry": "engine.registry.registry",
    "RegistryDirectory": "engine.registry.responders",
    "CountySpec": "engine.registry.synthetic",
    "generate_county": "engine.registry.synthetic",
    # messages
    "WarningInstruction": "engine.model",
    "FeedbackEvent": "engine.model",
    "Acknowledged": "engine.model",
    "CallResult": "engine.model",
    "MessageRead": "engine.model",
    "VisitDone": "engine.model",
    "Outcome": "engine.model",
    "Action": "engine.model",
    "Responders": "engine.model",
    "decode_warning": "engine.model",
    "decode_feedback": "engine.model",
    # rules, journal, campaigns, statistics
    "EscalationRules": "engine.rules.escalation",
    "load_escalation": "engine.rules.escalation",
    "Journal": "engine.journal",
    "FsyncPolicy": "engine.journal",
    "Campaign": "engine.campaigns",
    "CampaignService": "engine.campaigns",
    "Stats": "engine.stats",
    "Summary": "engine.stats",
    # errors
    "WarnDispatchError": "engine.errors",
    "InvalidMessage": "engine.model",
    "InvalidWarning": "engine.model",
    "InvalidFeedback": "engine.model",
    "AudienceError": "engine.audience.expr",
    "CampaignError": "engine.campaigns",
    "JournalError": "engine.journal",
    "RuleError": "engine.rules.loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # what type checkers and editors see; explicit re-exports, as trio does
    from engine.app import (
        App as App,
    )
    from engine.app import (
        AppConfig as AppConfig,
    )
    from engine.app import (
        open_app as open_app,
    )
    from engine.audience.expr import AudienceError as AudienceError
    from engine.campaigns import (
        Campaign as Campaign,
    )
    from engine.campaigns import (
        CampaignError as CampaignError,
    )
    from engine.campaigns import (
        CampaignService as CampaignService,
    )
    from engine.errors import WarnDispatchError as WarnDispatchError
    from engine.group.journal import FencedError as FencedError
    from engine.group.member import GroupConfig as GroupConfig
    from engine.group.member import GroupMember as GroupMember
    from engine.journal import (
        FsyncPolicy as FsyncPolicy,
    )
    from engine.journal import (
        Journal as Journal,
    )
    from engine.journal import (
        JournalError as JournalError,
    )
    from engine.model import (
        Acknowledged as Acknowledged,
    )
    from engine.model import (
        Action as Action,
    )
    from engine.model import (
        CallResult as CallResult,
    )
    from engine.model import (
        FeedbackEvent as FeedbackEvent,
    )
    from engine.model import (
        InvalidFeedback as InvalidFeedback,
    )
    from engine.model import (
        InvalidMessage as InvalidMessage,
    )
    from engine.model import (
        InvalidWarning as InvalidWarning,
    )
    from engine.model import (
        MessageRead as MessageRead,
    )
    from engine.model import (
        Outcome as Outcome,
    )
    from engine.model import (
        Responders as Responders,
    )
    from engine.model import (
        VisitDone as VisitDone,
    )
    from engine.model import (
        WarningInstruction as WarningInstruction,
    )
    from engine.model import (
        decode_feedback as decode_feedback,
    )
    from engine.model import (
        decode_warning as decode_warning,
    )
    from engine.registry.changes import RegistryChange as RegistryChange
    from engine.registry.changes import apply_change as apply_change
    from engine.registry.changes import decode_change as decode_change
    from engine.registry.registry import Registry as Registry
    from engine.registry.responders import RegistryDirectory as RegistryDirectory
    from engine.registry.synthetic import (
        CountySpec as CountySpec,
    )
    from engine.registry.synthetic import (
        generate_county as generate_county,
    )
    from engine.rules.escalation import (
        EscalationRules as EscalationRules,
    )
    from engine.rules.escalation import (
        load_escalation as load_escalation,
    )
    from engine.rules.loading import RuleError as RuleError
    from engine.scheduler import Engine as Engine
    from engine.service import (
        ServiceStats as ServiceStats,
    )
    from engine.service import (
        serve as serve,
    )
    from engine.stats import (
        Stats as Stats,
    )
    from engine.stats import (
        Summary as Summary,
    )
