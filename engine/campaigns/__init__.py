"""Targeted broadcast campaigns: plan (pure, vectorised) and dispatch (trio) police messages.

``plan`` decides, for every resident of an audience, whether they get the content (from their
contact officer's chat account, or by SMS) or why not (frequency cap, already have it); the
``dispatch`` shell paces sends per officer account, waits for officers' confirmation of routine
content, defers routine content out of quiet hours, and counts progress.
"""

from engine.campaigns.campaign import (
    Campaign,
    CampaignAction,
    CampaignError,
    ChatSend,
    ConfirmRequest,
    Media,
    Plan,
    Progress,
    Reason,
    SendTask,
    SmsSend,
    TaskClosed,
)
from engine.campaigns.dispatch import CampaignService
from engine.campaigns.ledger import Ledger
from engine.campaigns.planning import apply_plan, plan_campaign
from engine.campaigns.policy import CampaignPolicy, load_campaign_policy

__all__ = [
    "Campaign",
    "CampaignAction",
    "CampaignError",
    "CampaignPolicy",
    "CampaignService",
    "ChatSend",
    "ConfirmRequest",
    "Ledger",
    "Media",
    "Plan",
    "Progress",
    "Reason",
    "SendTask",
    "SmsSend",
    "TaskClosed",
    "apply_plan",
    "load_campaign_policy",
    "plan_campaign",
]
