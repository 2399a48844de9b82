"""Who may do what to a job or a gallery share: the one rule every command and button asks.

Job ids are public (every result message shows one) and Discord tells a bot whether someone
manages *the server the interaction came from*, nothing about other servers. So a manager's
rights reach only the jobs and shares of that server; "Manage Server" somewhere else means
nothing here. The rules:

- the owner (who made the job; for a share, who wrote the prompt) may act from anywhere;
- a manager of the job's own server may cancel it, delete its result message and remove its
  share, but only while acting in that server;
- members of the job's own server may show it, read its seed, share it and use it (upscale,
  vary, re-roll: by its buttons or by id);
- a private result (its owner, or the owner of an image it was upscaled from, chose
  "results: private") is shown, seeded and shared by that owner only — managers included;
  members of its server may still upscale, vary and re-roll what they see in the channel
  (the new job is theirs, and it is still not theirs to share);
- nobody else may do anything, and a job made in DMs belongs to its owner alone.

`decide` is pure (no storage, no Discord) so the whole table is tested directly;
`bot.service.Tessera.authorize` gathers the facts (owner, server, privacy) and raises the
refusal as a `TesseraError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Act(StrEnum):
    """Something someone asks to do to a job or a share."""

    CANCEL = "cancel"  # /cancel
    DELETE = "delete"  # 🗑 Delete under an upscale: removes the result message
    SHARE = "share"  # /share, ❤️ Share
    REMOVE_SHARE = "remove share"  # 🗑 on a gallery post
    SHOW = "show"  # /show: post the result again, with its buttons
    SEED = "seed"  # /seed, the ✉️ reaction
    USE = "use"  # U1–U4, V1–V4, 🔄, /upscale and /variation by id: make a new job from it


@dataclass(frozen=True)
class Actor:
    """Who is asking, and where.

    `guild_id` is the server the command or button was used in (None in DMs and for the CLI);
    `manages_guild` is whether they have Manage Server (or Administrator) in *that* server.
    """

    user_id: int
    guild_id: int | None = None
    manages_guild: bool = False

    def __post_init__(self) -> None:
        if self.guild_id is None and self.manages_guild:
            raise ValueError("nobody manages a server in DMs")


@dataclass(frozen=True)
class Subject:
    """What the rule needs to know about a job or share."""

    owner_id: int | None
    guild_id: int | None  # the server it was made (or shared) in; None: DMs or the CLI
    private: bool = False  # someone other than the actor keeps these results private


# Manager-or-owner actions and what refusing each says. Refusals name the action and who may
# do it; they say nothing about the job itself (its prompt, owner or server).
_MANAGED: dict[Act, str] = {
    Act.CANCEL: "That job is not yours to cancel: only the person who started it or a manager of the server "
                "it was made in can cancel it.",
    Act.DELETE: "Only the person who made this image or a manager of the server it was made in can delete it.",
    Act.REMOVE_SHARE: "Only the person who made this image or a manager of the server it was shared in can "
                      "remove it from the gallery.",
}
_PRIVATE: dict[Act, str] = {
    Act.SHARE: "This image belongs to someone who keeps their results private, so only they can share it.",
    Act.SHOW: "That job belongs to someone who keeps their results private, so only they can show it.",
    Act.SEED: "That job belongs to someone who keeps their results private, so only they can see its seed.",
}
_ELSEWHERE: dict[Act, str] = {
    Act.SHARE: "Only the person who made this image can share it outside the server it was made in.",
    Act.SHOW: "That job is not yours to show: it was not made in this server, so only the person who made it "
              "can show it here.",
    Act.SEED: "That job is not yours: it was not made in this server, so only the person who made it can see "
              "its seed here.",
    Act.USE: "That job was not made in this server, so only the person who made it can upscale, vary or "
             "re-roll it here.",
}


def decide(actor: Actor, act: Act, subject: Subject) -> str | None:
    """None if `actor` may do `act` to `subject`, else the refusal to show them."""
    owner = subject.owner_id is not None and actor.user_id == subject.owner_id
    at_home = subject.guild_id is not None and actor.guild_id == subject.guild_id
    if act in _MANAGED:
        return None if owner or (at_home and actor.manages_guild) else _MANAGED[act]
    if subject.private and act in _PRIVATE:
        return _PRIVATE[act]
    return None if owner or at_home else _ELSEWHERE[act]


__all__ = ["Act", "Actor", "Subject", "decide"]
